"""Opening what arrives: key distributions (mail), envelopes, their content.

What a failure means is decided in ``inbox``: a distribution over a session
not held yet is held and tried again, a missing one asked for again; an
envelope whose chain has not come is parked and holds its conversation's
later messages back. A batch collects what to save, acknowledge and report.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from sotto.protocol.content import Control, File, Location, Receipt, Text
from sotto.protocol.conversation import Address, Received
from sotto.protocol.envelope import Envelope
from sotto.protocol.errors import ProtocolError, UnknownSender
from sotto.protocol.room import ROOM_PROFILE, RoomProfile

from .. import delivery, files, inbox, self_sync
from ..encoding import b64d, b64e
from ..errors import ClientError, TrustError
from ..events import Event, MessageEvent, NoticeEvent, ReceiptEvent
from ..inbox import Key, Opened
from ..outbox import DISTRIBUTIONS_PER_FRAME
from ..store import ConversationRecord, PendingItem, StoredMessage
from .sending import Sending, _shown

__all__ = ["Opening"]


@dataclass
class _Batch:
    """One round of receiving: what to save, then acknowledge, then report."""

    events: list[Event]
    mail_ids: list[str]
    read: list[dict[str, Any]]
    delivered: dict[tuple[str, str], list[bytes]]  # (conversation, sender user) -> ids
    # Distributions this device could not open: (conversation, sender, session id) to ask.
    asks: list[tuple[str, Address, bytes]] = field(default_factory=list)
    # A complete sync: nothing more is in the mailbox, so a key still missing is lost.
    complete: bool = False


class Opening(Sending):
    """One batch's mail and messages opened and applied; redistribution asked and answered."""

    def _mail_item(self, item: dict[str, Any], batch: _Batch, *, read: bool) -> None:
        mail_id = str(item.get("mail_id"))
        if mail_id in self.state.seen_mail:
            batch.mail_ids.append(mail_id)  # acknowledged before? then again: it is harmless
            return
        self.state.remember_mail(mail_id)
        batch.mail_ids.append(mail_id)
        self._dirty = True
        cid = str(item.get("conversation_id"))
        data = b64d(item.get("data"), "mail data")
        server_time = delivery.server_time(item)
        if item.get("kind") == "distribution":
            self._distribution(cid, data, batch, read=read)
        else:
            self._envelope(cid, data, server_time, None, batch, read=read)

    def _distribution(
        self, cid: str, data: bytes, batch: _Batch, *, read: bool, final: bool = False
    ) -> None:
        """Install a key distribution; what one that fails means is ``inbox.key_failed``
        (``final``: the last try after a complete sync)."""
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                conversation.receive_distribution(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)  # a device we have not seen yet
                conversation.receive_distribution(data, now=now)
        except ProtocolError as exc:
            decision = inbox.key_failed(cid, exc, inbox.header(data), final=final)
            if decision.then is Key.HOLD:
                # Kept for the session's opener, later in this batch or in the sync a lost
                # push starts: _retry_held tries it again, and asks only after a complete
                # sync (its last round's failures; a complete sync's are all kept till then).
                record = self._record(cid)
                self._dirty = inbox.hold(record, data) or self._dirty
                for dropped in [] if batch.complete else inbox.overflow(record):
                    sender = (dropped.sender_user_id, dropped.sender_device_id)
                    batch.asks.append((cid, sender, dropped.session_id))
            elif decision.then is Key.ASK and decision.sender is not None:
                batch.asks.append((cid, decision.sender, decision.session_id))
            elif decision.notice is not None:
                batch.events.append(decision.notice)
            return
        self._retry_pending(cid, batch, read=read)

    def _retry_held(self, batch: _Batch, *, read: bool) -> None:
        """Open the distributions kept for a session this device did not hold yet, in the
        rounds ``inbox.held_rounds`` says; the last round's failures are asked for."""
        for final in inbox.held_rounds(self.state.conversations, complete=batch.complete):
            for cid, record in list(self.state.conversations.items()):
                held, record.held_keys = record.held_keys, []
                for data in held:
                    self._dirty = True
                    self._distribution(cid, data, batch, read=read, final=final)

    def _ask_again(self, batch: _Batch) -> None:
        """Send each redistribution request, once per sender device and ten minutes."""
        now = self._clock()
        for cid, sender, session_id in batch.asks:
            if not inbox.ask_due(self._record(cid), sender, now):
                continue
            try:
                request = self._engine(cid).redistribution_request(sender, session_id)
                self.send(cid, request, to_user=sender[0])
            except (ProtocolError, ClientError) as exc:
                batch.events.append(
                    NoticeEvent(cid, "redistribution", f"could not ask {sender[1]} again: {exc}")
                )

    def _redistribute(self, batch: _Batch) -> None:
        """Answer devices that asked for this device's chain: one distribution each."""
        for cid, conversation in list(self._live.items()):
            asked = conversation.redistribution_requests
            chain_id = conversation.sender_chain_id
            if not asked or chain_id is None:
                continue
            now = self._clock()
            unsent: list[bytes] = []
            try:
                prekeys = self._prekeys(conversation, list(asked), now)
                for address in asked:
                    with contextlib.suppress(ProtocolError):  # no prekey: it asks again later
                        unsent.append(
                            conversation.redistribute(address, prekeys.get(address), now=now).data
                        )
                self.save()  # the sessions advanced: before anything leaves
                while unsent:
                    chunk = unsent[:DISTRIBUTIONS_PER_FRAME]
                    self._call(
                        "distribute",
                        conversation_id=cid,
                        chain_id=b64e(chain_id),
                        distributions=[b64e(d) for d in chunk],
                    )
                    del unsent[: len(chunk)]
            except ClientError as exc:
                # Those not sent are not asked again until their devices ask: the sessions
                # they opened must not be continued meanwhile.
                self._unsent(unsent)
                batch.events.append(
                    NoticeEvent(cid, "redistribution", f"could not send a key again: {exc}")
                )

    def _retry_pending(self, cid: str, batch: _Batch, *, read: bool, give_up: bool = False) -> None:
        """Open what waited, in the order ``inbox.Retry`` gives, as far as it now opens."""
        retry = inbox.Retry(self._record(cid), give_up=give_up)
        for pending, waiting in retry:
            try:
                parked = self._envelope(
                    cid,
                    pending.envelope,
                    pending.server_time,
                    pending.seq,
                    batch,
                    read=read,
                    waited=True,
                    waiting=waiting,
                )
            except TrustError as exc:
                batch.events.append(NoticeEvent(cid, "identity_changed", str(exc)))
                retry.untrusted(pending)  # until the person accepts or rejects the new key
                continue
            if parked is not None:
                retry.parked(parked)

    def _message_item(
        self, item: dict[str, Any], batch: _Batch, *, read: bool, highest: dict[str, int]
    ) -> None:
        cid, seq = str(item.get("conversation_id")), item.get("seq")
        if not isinstance(seq, int):
            return
        highest[cid] = max(highest.get(cid, 0), seq)
        record = self._record(cid)
        waiting = sum(1 for p in record.pending if p.waiting)
        decision = delivery.arrival(record, seq, waiting)
        if decision is delivery.Arrival.HAD:
            return
        data = b64d(item.get("envelope"), "envelope")
        server_time = delivery.server_time(item)
        if decision is delivery.Arrival.RELEASE:
            # Held back long enough (a long catch-up): stop waiting, show what opens.
            self._retry_pending(cid, batch, read=read, give_up=True)
        if decision is delivery.Arrival.HOLD:
            # An earlier message of this conversation waits for its key: this one is
            # shown after it, not before (kept, and saved before it is acknowledged).
            inbox.park(record, data, server_time, seq, waiting=True)
        else:
            self._envelope(cid, data, server_time, seq, batch, read=read)
        record.mark_seen(seq)
        self._dirty = True

    def _envelope(
        self,
        cid: str,
        data: bytes,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        read: bool,
        waited: bool = False,
        waiting: bool = True,
    ) -> PendingItem | None:
        """Open and show one envelope; what one that does not open means is
        ``inbox.envelope_failed``. Returns the item parked to wait for its chain's key.

        ``waiting``: a parked conversation message holds back the later ones.
        """
        try:
            header = Envelope.parse(data).header
        except ProtocolError as exc:
            failed = inbox.envelope_failed(cid, exc, seq=seq, sender=None, waited=waited)
            return self._unopened(cid, failed, data, server_time, seq, batch, waiting=waiting)
        sender = (header.sender_user_id, header.sender_device_id)
        if sender == self.local.address:
            return None  # our own: its plaintext was kept when it was sent
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                received = conversation.receive_envelope(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)
                received = conversation.receive_envelope(data, now=now)
        except ProtocolError as exc:
            failed = inbox.envelope_failed(cid, exc, seq=seq, sender=sender, waited=waited)
            return self._unopened(cid, failed, data, server_time, seq, batch, waiting=waiting)
        self._deliver_content(cid, received, server_time, seq, batch, read=read)
        return None

    def _unopened(
        self,
        cid: str,
        failed: inbox.Unopened,
        data: bytes,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        waiting: bool,
    ) -> PendingItem | None:
        if failed.then is Opened.PARK:
            return inbox.park(self._record(cid), data, server_time, seq, waiting=waiting)
        if failed.notice is not None:
            batch.events.append(failed.notice)
        return None

    def _deliver_content(
        self,
        cid: str,
        received: Received,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        read: bool,
    ) -> None:
        record = self._record(cid)
        user_id, device_id = received.sender
        content, header = received.content, received.header
        name = self.display_name(record)
        if isinstance(content, Receipt):
            ids, seqs = inbox.apply_receipt(record, user_id, content)
            if ids:
                kind = "read" if content.kind == Receipt.READ else "delivered"
                who = self.name_of(user_id)
                batch.events.append(
                    ReceiptEvent(cid, name, user_id, device_id, kind, ids, seqs, sender=who)
                )
            return
        if isinstance(content, Control) and content.kind == Control.REDISTRIBUTE:
            return  # the engine took it: this device answers in _redistribute
        if isinstance(content, Control) and content.kind == ROOM_PROFILE:
            self._room_profile(record, content, received, batch)
            return
        if isinstance(content, Control) and content.kind == Control.DEVICE_SYNC:
            batch.events += self_sync.received(self, cid, content, received)
            return  # contacts and labels: not a message, no receipt
        if not isinstance(content, Text | File | Location):
            batch.events.append(
                NoticeEvent(cid, "unsupported", f"a {type(content).__name__} message (not shown)")
            )
            return
        now = self._clock()
        text, attachment, location = _shown(content)
        stored = StoredMessage(
            message_id=header.message_id.hex(),
            sender_user_id=user_id,
            sender_device_id=device_id,
            text=text,
            attachment=attachment,
            location=location,
            timestamp=header.timestamp,
            server_time=server_time,
            seq=seq,
            expires_at=header.expires_at,
            burn_after_read_s=header.burn_after_read_s,
            outgoing=user_id == self.info.user_id,
            first_read_at=now if read else None,
        )
        record.add_history(stored)
        batch.events.append(
            MessageEvent(
                conversation_id=cid,
                conversation=name,
                seq=seq,
                sender_user_id=user_id,
                sender_device_id=device_id,
                text=text,
                message_id=stored.message_id,
                attachment=None if attachment is None else files.public_attachment(attachment),
                location=location,
                timestamp=header.timestamp,
                server_time=server_time,
                expires_at=header.expires_at,
                burn_after_read_s=header.burn_after_read_s,
                outgoing=stored.outgoing,
                sender=self.name_of(user_id),
            )
        )
        if user_id == self.info.user_id:
            return  # our own other device: no receipts to ourselves
        batch.delivered.setdefault((cid, user_id), []).append(header.message_id)
        if read and header.burn_after_read_s and seq is not None:
            batch.read.append({"conversation_id": cid, "seq": seq})

    def _room_profile(
        self, record: ConversationRecord, content: Control, received: Received, batch: _Batch
    ) -> None:
        try:
            profile = RoomProfile.from_control(content)
        except ProtocolError as exc:
            batch.events.append(
                NoticeEvent(record.conversation_id, exc.code, f"a bad room profile: {exc}")
            )
            return
        if received.header.timestamp < record.profile_at:
            return  # an older profile arriving late
        record.room_name, record.topic = profile.name, profile.topic
        record.profile_at = received.header.timestamp
        self._dirty = True
        who = self.name_of(received.sender[0])
        topic = f" (topic: {profile.topic})" if profile.topic else ""
        batch.events.append(
            NoticeEvent(
                record.conversation_id,
                "room_profile",
                f"{who} named the room {profile.name}{topic}",
            )
        )
