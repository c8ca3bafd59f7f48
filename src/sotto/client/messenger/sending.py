"""Sending: prepare and save, then deliver the same bytes; refusals and the outbox.

What a refusal means is ``outbox.refused``, for a live send and a flush alike;
this module applies it (discard, repair the roster, start again after a
restored keystore) and fetches the prekeys a new chain's distributions need.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

from sotto.frames.answers import BundlesPart, DistributedAnswer, SentAnswer
from sotto.protocol.certificates import PrekeyCertificate
from sotto.protocol.content import Content, File, Location, Text, parse_content
from sotto.protocol.conversation import Address, Conversation, MessageTimers
from sotto.protocol.distribution import DistributionMode, KeyDistribution
from sotto.protocol.errors import PrekeysRequired, ProtocolError
from sotto.protocol.sessions import NO_SESSION

from .. import files, outbox
from ..encoding import b64d
from ..errors import ClientError, FrameError, MessagingError
from ..outbox import MAX_SEND_ATTEMPTS, Mode, SentMessage, Then
from ..store import OutboxItem, StoredMessage
from .conversations import Conversations
from .core import _operation, _shaped

__all__ = ["Sending"]

BUNDLES_PER_REQUEST = 100  # docs/api.md: at most 100 devices per fetch_bundles
# Envelopes to one user skip an iteration for every other member; rotate before the
# receivers' 256-step skip limit (docs/protocol.md §6) could be reached.
MAX_PRIVATE_SENDS = 128


class Sending(Conversations):
    """``send`` and what it takes: preparing, prekeys, delivering, the outbox."""

    def send_text(
        self, target: str, text: str, *, expires_s: int = 0, burn_s: int = 0
    ) -> SentMessage:
        cid = self.resolve(target)
        if self._enforce_policy:
            self._ensure_policy()
            timers = self.policy.timers(expires_s, burn_s)
        else:
            timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        return self.send(cid, Text(text), timers=timers)

    @_operation
    def send(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None = None,
        to_user: str | None = None,
        files: list[str] | None = None,
    ) -> SentMessage:
        """Prepare, save, distribute (if the chain is new), send; on a refusal, what
        ``outbox.refused`` says (repair and prepare again, or raise).

        ``files``: the uploads the content refers to (``client/files.py``).
        """
        if self._enforce_policy:
            self._ensure_policy()
            self.policy.check_content(content)
        if self.state.outbox and not self._flushing:
            # What an earlier run prepared goes first: it was said first, and its
            # distributions may open the sessions this message's continue (§16).
            self.flush_outbox()
        for attempt in range(MAX_SEND_ATTEMPTS):
            item = self._prepare(cid, content, timers=timers, to_user=to_user)
            item.files = list(files or [])
            self.save()
            try:
                return self._deliver(item)
            except FrameError as exc:
                decision = self._refusal(item, exc, Mode.LIVE, attempt, self._clock())
                if decision.then is not Then.AGAIN:
                    self.save()
                    raise
                if decision.roster_moved:
                    self._repair(cid, exc)
        raise AssertionError("unreachable")

    def _refusal(
        self, item: OutboxItem, exc: FrameError, mode: Mode, attempt: int, now: int
    ) -> outbox.Decision:
        """What ``outbox.refused`` decides, applied as far as it is the same for a live
        send and a flush: discarded unless kept, the restored keystore's chains gone."""
        decision = outbox.refused(
            item, code=exc.code, action=exc.action, mode=mode, attempt=attempt, now=now
        )
        if decision.then is not Then.KEEP:
            self._discard(item)
        if decision.restored:
            self._restored()
        return decision

    def _repair(self, cid: str, exc: FrameError) -> None:
        """The roster moved: read it again, refuse ghosts, start a new chain."""
        self._retention = None  # enabled, disabled or rotated since: ask again
        self.refresh(cid)
        self._refuse_ghosts(cid, exc)
        self._engine(cid).request_rotation()

    def _restored(self) -> None:
        """The server holds another message of this device at a chain position this state
        is about to use again: the keystore is older than the last send (restored from
        a backup, a snapshot, a copy put back). docs/protocol.md §14.6: no conversation
        continues its sender chain (each next send distributes a new one) and no send
        session continues (the next distributions go through HPKE again).
        """
        for cid, record in self.state.conversations.items():
            if record.state is not None or cid in self._live:
                self._engine(cid).restored()
        self.state.sessions.restored()
        self._dirty = True
        self.save()

    def _prepare(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None,
        to_user: str | None,
    ) -> OutboxItem:
        conversation = self._engine(cid)
        conversation.set_retention(self._retention_state()[0])
        record = self._record(cid)
        if timers is None and self._enforce_policy and self.policy.max_expiry_s is not None:
            # Receipts and controls too: under an expiry limit every envelope expires.
            timers = self.policy.timers(0, 0)
        if record.private_sends >= MAX_PRIVATE_SENDS:
            conversation.request_rotation()
        for _ in range(2):
            now = self._clock()
            needed = conversation.prekeys_needed(now=now)
            prekeys = self._prekeys(conversation, needed, now) if needed else {}
            try:
                outgoing = conversation.prepare_send(
                    content, now=now, timers=timers, prekeys=prekeys
                )
                break
            except PrekeysRequired:
                conversation = self.refresh(cid)  # the roster moved under us
                conversation.set_retention(self._retention_state()[0])
        else:
            raise MessagingError("could not fetch a prekey for every member device")
        # A new chain reached everyone; then count envelopes only some members can see.
        if outgoing.distributions or to_user is None:
            record.private_sends = 0
        if to_user is not None:
            record.private_sends += 1
        item = OutboxItem(
            conversation_id=cid,
            message_id=outgoing.message_id.hex(),
            envelope=outgoing.envelope,
            chain_id=outgoing.header.chain_id,
            distributions=[d.data for d in outgoing.distributions],
            to_user=to_user,
            content=content.serialize(),
            expires_at=outgoing.header.expires_at,
            burn_after_read_s=outgoing.header.burn_after_read_s,
        )
        record.outbox.append(item)
        if isinstance(content, Text | File | Location):
            header = outgoing.header
            text, attachment, location = _shown(content)
            record.add_history(
                StoredMessage(
                    message_id=item.message_id,
                    sender_user_id=self.info.user_id,
                    sender_device_id=self.info.device_id,
                    text=text,
                    attachment=attachment,
                    location=location,
                    timestamp=header.timestamp,
                    server_time=None,
                    seq=None,
                    expires_at=header.expires_at,
                    burn_after_read_s=header.burn_after_read_s,
                    outgoing=True,
                )
            )
        self._dirty = True
        return item

    def _prekeys(
        self, conversation: Conversation, needed: list[Address], now: int
    ) -> dict[Address, PrekeyCertificate]:
        """One prekey per device from ``fetch_bundles`` (100 devices a request, the
        requests in flight together), each checked against the member's
        certificate; a prekey that does not verify is dropped. A request sent
        again after a lost connection spends prekeys the first one took: the
        server hands each one-time prekey out once, whoever asks.
        """
        wanted = sorted(set(needed))
        batches = [
            wanted[start : start + BUNDLES_PER_REQUEST]
            for start in range(0, len(wanted), BUNDLES_PER_REQUEST)
        ]
        joined = self._call_many(
            "fetch_bundles",
            [{"devices": [{"user_id": u, "device_id": d} for u, d in b]} for b in batches],
        )
        asked = set(wanted)
        found: dict[Address, PrekeyCertificate] = {}
        for answer in (_shaped(BundlesPart, "fetch_bundles", a) for a in joined):
            for bundle in answer["bundles"]:
                address = (bundle["user_id"], bundle["device_id"])
                member = conversation.members.get(address)
                if address not in asked or member is None:
                    continue
                try:
                    prekey = PrekeyCertificate.parse(b64d(bundle["prekey"], "prekey"))
                    prekey.verify(member.certificate, now=now)
                except (ProtocolError, ClientError):
                    continue
                found[address] = prekey
        return found

    def _deliver(self, item: OutboxItem) -> SentMessage:
        """Distributions first, then the envelope, the same bytes on every retry
        (``outbox.distribute_frames``, ``send_fields``); the answer applied to the record."""
        frames = outbox.distribute_frames(item)
        if frames:
            _shaped(DistributedAnswer, "distribute", self._call("distribute", **frames[0]))
            for distributed in self._call_many("distribute", frames[1:]) if frames[1:] else []:
                _shaped(DistributedAnswer, "distribute", distributed)
            item.distributed = True
        fields = outbox.send_fields(item)
        for attempt in itertools.count():
            try:
                answer = _shaped(SentAnswer, "send", self._call("send", **fields))
                break
            except FrameError as exc:
                delay = outbox.resend_after(exc.code, attempt)
                if delay is None:
                    raise
                time.sleep(delay)
        self._dirty = True
        return outbox.confirm(self._record(item.conversation_id), item, answer)

    def _refuse_ghosts(self, cid: str, error: FrameError) -> None:
        """Stop when the server insists on devices the verified log does not justify.

        The server accepts a message only when its chain reached the roster;
        a roster holding a device the log refuses (a ghost member, a device
        certified by another identity) can never be satisfied without handing
        it the key. Say so instead of retrying.
        """
        missing = {str(d) for d in (error.details or {}).get("missing") or []}
        ghosts = sorted(a for a in self._refused.get(cid, {}) if a[1] in missing)
        if not ghosts:
            return
        self.save()
        named = ", ".join(
            f"device {d} of {self.name_of(u)} ({self._refused[cid][(u, d)]})" for u, d in ghosts
        )
        raise MessagingError(
            f"not sent: the server requires the key for {named}, which the conversation's"
            " signed membership log does not justify; the message would reach a device"
            " nobody added. Report this to your administrator."
        )

    def _discard(self, item: OutboxItem) -> None:
        """A prepared message that will not be sent as it is: out of the outbox and history.

        If its distributions never reached the server, the sessions they opened
        never reached their devices either: forgotten, so the next distribution
        to those devices opens one again through HPKE. Continued instead, it
        would reach a device that cannot open it, and the chain it carries (and
        the messages on it) would be lost to that device (docs/protocol.md §16.4).
        """
        outbox.withdraw(self._record(item.conversation_id), item)
        if not item.distributed:
            self._unsent(item.distributions)
        self._dirty = True

    def _unsent(self, distributions: Iterable[bytes]) -> None:
        """Forget the send sessions these distributions (which never left) opened."""
        for data in distributions:
            kd = KeyDistribution.parse(data)
            if kd.mode == DistributionMode.PREKEY and kd.session_id != NO_SESSION:
                address = (kd.recipient_user_id, kd.recipient_device_id)
                self.state.sessions.drop_send(address, kd.session_id)
        self._dirty = True

    @_operation
    def flush_outbox(self) -> list[SentMessage]:
        """Send what a previous run prepared but could not confirm (same bytes).

        A message is never dropped without a word (``outbox.refused``): refused
        because the roster moved, it is prepared again for the new roster and
        sent; refused for a reason that may pass (rate limit, server error), it
        stays for the next run; refused for good or expired, a notice names it.
        """
        sent: list[SentMessage] = []
        if self._flushing:
            return sent
        self._flushing = True
        try:
            self._flush(sent)
        finally:
            self._flushing = False
        return sent

    def _flush(self, sent: list[SentMessage]) -> None:
        for item in list(self.state.outbox):
            if outbox.expired(item, self._clock()):
                self._discard(item)
                self._notices.append(outbox.unsent_notice(item, Then.EXPIRED))
                continue
            try:
                sent.append(self._deliver(item))
            except FrameError as exc:
                now = self._clock()
                decision = self._refusal(item, exc, Mode.FLUSH, 0, now)
                if decision.then is Then.KEEP:
                    raise  # the next command sends the same bytes
                if decision.then is Then.AGAIN:
                    sent.append(self._send_again(item, exc, decision, now))
                else:
                    notice = outbox.unsent_notice(item, decision.then, exc.code, str(exc))
                    self._notices.append(notice)

    def _send_again(
        self, item: OutboxItem, exc: FrameError, decision: outbox.Decision, now: int
    ) -> SentMessage:
        """A flushed message prepared anew (a new chain, the roster as it is now) and sent.
        It is off the outbox: whatever stops it now, a notice names it."""
        cid = item.conversation_id
        try:
            if decision.roster_moved:
                self._repair(cid, exc)
            timers, content = outbox.timers_left(item, now), parse_content(item.content)
            return self.send(cid, content, timers=timers, to_user=item.to_user, files=item.files)
        except (ClientError, ProtocolError) as failed:
            code = failed.code if isinstance(failed, FrameError | ProtocolError) else "not_sent"
            self._notices.append(outbox.unsent_notice(item, Then.REFUSED, code, str(failed)))
            raise


def _shown(
    content: Text | File | Location,
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """A content's history text, and the file or location it carries."""
    if isinstance(content, File):
        return files.file_text(content), files.attachment_record(content), None
    if isinstance(content, Location):
        place = files.location_record(content.latitude_e7, content.longitude_e7, content.label)
        return files.location_text(place), None, place
    return content.text, None, None
