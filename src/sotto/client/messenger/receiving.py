"""Receiving: sync and pushes, each batch saved before it is acknowledged.

A sync reads every page of what was missed; a poll hands out the pushes
waiting, unless a gap or a lost connection calls for a sync first. Events a
call saved before it raised are owed to the next call (``_owing``); a sync
that raised is still owed (``_until_done``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sotto.frames import answers
from sotto.frames.answers import AckedAnswer, ShapeError, SyncPart
from sotto.protocol.errors import ProtocolError

from .. import delivery, inbox, self_sync
from ..encoding import b64d
from ..errors import ClientError, ConnectionLost, FrameError, MessagingError, TrustError
from ..events import Event, MessageEvent, NoticeEvent
from ..store import OutboxItem
from .core import Core, _operation, _shaped
from .opening import Opening, _Batch
from .safety import Safety

__all__ = ["Receiving"]

T = TypeVar("T")
P = ParamSpec("P")
C = TypeVar("C", bound=Core)  # the part a decorated method belongs to


def _until_done(
    method: Callable[Concatenate[C, P], T],
) -> Callable[Concatenate[C, P], T]:
    """A sync that raised is still owed: the next poll syncs before it hands out a push."""

    def run(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self._needs_sync = True
            raise

    functools.update_wrapper(run, method)
    return run


def _owing(
    method: Callable[Concatenate[C, P], list[Event]],
) -> Callable[Concatenate[C, P], list[Event]]:
    """Events saved by a call that then raised are still the caller's: the next call
    hands them out first (they were saved and may be acknowledged, so no sync repeats
    them)."""

    def run(self: C, /, *args: P.args, **kwargs: P.kwargs) -> list[Event]:
        owed, self._owed = self._owed, []
        try:
            return owed + method(self, *args, **kwargs)
        except BaseException:
            self._owed[:0] = owed
            raise

    functools.update_wrapper(run, method)
    return run


class Receiving(Opening, Safety):
    """``sync``, ``poll`` and ``listen``; acknowledgements, receipts and ``mark_read``."""

    @_owing
    @_until_done
    @_operation
    def sync(self, *, read: bool = False) -> list[Event]:
        """Everything missed, page by page: process, save, then acknowledge.

        ``read=True``: the caller displays the messages now (receipts say "read",
        burn-on-read clocks start); otherwise receipts say "delivered".
        """
        self._needs_sync = False
        self._ensure_policy()
        self.flush_outbox()
        events: list[Event] = []
        try:
            return self._sync_pages(events, read=read)
        except BaseException:
            self._owed[:0] = events  # the pages already saved
            raise

    def _sync_pages(self, events: list[Event], *, read: bool) -> list[Event]:
        # The server's continuation: the next page reads on from where this one stopped.
        resume: dict[str, Any] = {}
        while True:
            try:
                parts = [_shaped(SyncPart, "sync", p) for p in self._call_parts("sync", **resume)]
            except FrameError as exc:
                if not resume or exc.code != "bad_request":
                    raise
                # A token this server no longer takes (a new version deployed mid-sync):
                # start from the cursors, which never skips anything.
                resume = {}
                continue
            token = parts[-1].get("resume")
            resume = {} if token is None else {"resume": token}
            # _receive reads the (checked) items as plain dicts.
            mail = cast("list[dict[str, Any]]", [m for p in parts for m in p["mail"]])
            messages = cast("list[dict[str, Any]]", [m for p in parts for m in p["messages"]])
            more = any(p["more"] for p in parts)
            # The server's own extension: the last seq it scanned per conversation (its
            # sender's own messages and expired ones are skipped, so seqs have gaps).
            through: dict[str, int] = {}
            for part in parts:
                for cid, seq in part["through"].items():
                    through[cid] = max(through.get(cid, 0), seq)
            rosters = {cid: version for part in parts for cid, version in part["rosters"].items()}
            events += self._roster_moved(rosters)
            events += self._receive(mail, messages, read=read, complete=not more, through=through)
            if not more:
                return events + self_sync.settle(self)

    def _roster_moved(self, rosters: dict[str, int]) -> list[Event]:
        """Verify again the membership of known conversations whose roster moved meanwhile.

        Pushes tell an online device; a device that was away hears of a join,
        a leave or a new device here, from the verified log, before it reads
        the messages that followed.
        """
        events: list[Event] = []
        for cid, version in rosters.items():
            record = self.state.conversations.get(cid)
            if record is None or record.left or version == record.roster_version:
                continue
            if record.state is None and cid not in self._live:
                continue  # never verified here: the first message's refresh verifies it
            try:
                self.refresh(cid)
            except MessagingError as exc:
                events.append(NoticeEvent(cid, "bad_membership_log", str(exc)))
            except FrameError as exc:
                events.append(
                    NoticeEvent(cid, exc.code, f"could not read the membership log: {exc}")
                )
        return events + self._drain_notices()

    @_owing
    def poll(self, timeout: float, *, read: bool = False) -> list[Event]:
        """Wait up to ``timeout`` s for pushes (unlocked); process every one that is waiting.

        A lost connection is reopened and followed by a sync; a gap in a
        conversation's seqs is filled by a sync.
        """
        if self._needs_sync:
            return self.sync(read=read)
        try:
            first = self.session.next_push(timeout)
        except ConnectionLost:
            self._reconnect()
            return self.sync(read=read)
        if first is None:
            with self.operation():
                self.purge()
            return []
        frames = [first]
        with contextlib.suppress(ConnectionLost):
            while (frame := self.session.next_push(0)) is not None:
                frames.append(frame)
        with self.operation():
            return self._process_pushes(frames, read=read)

    def _process_pushes(self, frames: list[dict[str, Any]], *, read: bool) -> list[Event]:
        frames = self._checked_pushes(frames)
        mail = [f for f in frames if f.get("action") == "mail"]
        messages, gap = delivery.following(
            (f for f in frames if f.get("action") == "message"), self.state.conversations
        )
        for frame in frames:
            if frame.get("action") == "policy":
                self._set_policy(frame)
        if any(f.get("action") == "prekeys_low" for f in frames):
            # Replenishing reconnects if the socket just closed; if it still fails, listening
            # goes on (the server says prekeys_low again when the count drops further).
            with contextlib.suppress(ClientError):
                self.replenish_prekeys()
        events: list[Event] = []
        for frame in frames:
            if frame.get("action") == "membership":
                events += self._membership(frame)
        try:
            events += self._receive(mail, messages, read=read, complete=False) if frames else []
            if mail or messages:
                events += self_sync.settle(self)  # a device heard from may be owed a snapshot
            return events + self._sync_if_behind(gap=gap, read=read)
        except BaseException:
            self._owed[:0] = events
            raise

    def _sync_if_behind(self, *, gap: bool, read: bool) -> list[Event]:
        records = self.state.conversations.values()
        if delivery.behind(records, gap=gap, needs_sync=self._needs_sync):
            return self.sync(read=read)
        return []

    def _checked_pushes(self, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each push of a known action checked against its shape (``sotto.frames.answers``);
        a malformed one is dropped, and a sync fetches what it may have announced."""
        checked: list[dict[str, Any]] = []
        for frame in frames:
            shape = answers.PUSHES.get(str(frame.get("action")))
            if shape is None:
                checked.append(frame)  # not one of ours to check: handled (or ignored) below
                continue
            try:
                checked.append(answers.parse(shape, frame))
            except ShapeError:
                self._needs_sync = True
        return checked

    def listen(self, *, read: bool = True, poll_s: float = 1.0) -> Iterator[Event]:
        """Sync, then yield events as they arrive, until the caller stops iterating."""
        yield from self.sync(read=read)
        while True:
            yield from self.poll(poll_s, read=read)

    def _receive(
        self,
        mail: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        *,
        read: bool,
        complete: bool,
        through: dict[str, int] | None = None,
    ) -> list[Event]:
        batch = _Batch([], [], [], {}, complete=complete)
        highest: dict[str, int] = {}
        for is_message, item in delivery.receive_order(mail, messages):
            try:
                if is_message:
                    self._message_item(item, batch, read=read, highest=highest)
                else:
                    self._mail_item(item, batch, read=read)
            except TrustError as exc:
                cid = str(item.get("conversation_id"))
                batch.events.append(NoticeEvent(cid, "identity_changed", str(exc)))
                seq = item.get("seq")
                if is_message and isinstance(seq, int):
                    data = b64d(item.get("envelope"), "envelope")
                    inbox.untrusted(self._record(cid), data, delivery.server_time(item), seq)
        for cid, seq in (through or {}).items():
            if cid in self.state.conversations:
                self.state.conversations[cid].advance(seq)
        self._retry_held(batch, read=read)
        if complete:
            for cid, record in list(self.state.conversations.items()):
                if any(p.waiting for p in record.pending):
                    # The sync is complete and the key did not come: stop waiting for it,
                    # and show what waited behind it.
                    self._retry_pending(cid, batch, read=read, give_up=True)
                record.settle(highest.get(cid, record.cursor))
        batch.events += self._drain_notices()
        receipts = self._prepare_receipts(batch, read=read)
        self.save()  # before anything is acknowledged or sent
        try:
            for receipt in receipts:
                with contextlib.suppress(FrameError):
                    self._deliver(receipt)
            self._redistribute(batch)
            self._ask_again(batch)
            self._ack(batch)
        except BaseException:
            self._owed[:0] = batch.events  # saved: owed to the caller, not to be shown again
            raise
        return batch.events

    def _ack(self, batch: _Batch) -> None:
        cursors = {
            cid: r.cursor for cid, r in self.state.conversations.items() if r.cursor > r.acked
        }
        frames = delivery.ack_frames(cursors, batch.mail_ids, batch.read)
        if not frames:
            return
        for fields in frames:
            _shaped(AckedAnswer, "ack", self._call("ack", **fields))
        for cid, cursor in cursors.items():
            self.state.conversations[cid].acked = cursor
        self._dirty = True

    def _membership(self, frame: dict[str, Any]) -> list[Event]:
        """A ``membership`` push: the log moved; what changed is read from the verified log.

        The push's own words (who, what) are the server's and are not shown:
        the notices come from the operations that verify. A push saying this
        user was removed or left ends the conversation here (the server can
        deny service anyway; it gains nothing it could not have by silence).
        """
        cid = str(frame.get("conversation_id"))
        users = [str(u) for u in frame.get("users") or []]
        change = str(frame.get("change"))
        record = self._record(cid, kind=str(frame.get("kind") or "room"))
        if self.info.user_id in users and change in ("removed", "left"):
            record.left = True
            self._live.pop(cid, None)
            record.state = None
            self._refused.pop(cid, None)
            self._dirty = True
            verb = "left" if change == "left" else "were removed from"
            return [NoticeEvent(cid, "membership", f"you {verb} {self.display_name(record)}")]
        if self.info.user_id in users and change == "added":
            record.left = False
        try:
            self.refresh(cid)
        except MessagingError as exc:
            return [NoticeEvent(cid, "bad_membership_log", str(exc))]
        except FrameError as exc:
            return [NoticeEvent(cid, exc.code, f"could not read the membership log: {exc}")]
        return self._drain_notices()

    def _prepare_receipts(self, batch: _Batch, *, read: bool) -> list[OutboxItem]:
        if not self.policy.receipts(self._receipts):
            return []
        items = []
        for cid, user_id, content in inbox.receipt_contents(batch.delivered, read=read):
            try:
                items.append(self._prepare(cid, content, timers=None, to_user=user_id))
            except (ClientError, ProtocolError) as exc:
                batch.events.append(NoticeEvent(cid, "receipt", f"receipt not sent: {exc}"))
        return items

    @_operation
    def mark_read(self, events: list[Event]) -> None:
        """The person has now seen these messages: read receipts, burn clocks start."""
        batch = _Batch([], [], [], {})
        now = self._clock()
        for event in events:
            if not isinstance(event, MessageEvent) or event.outgoing:
                continue
            record = self._record(event.conversation_id)
            for stored in record.history:
                if stored.message_id == event.message_id and stored.first_read_at is None:
                    stored.first_read_at = now
            batch.delivered.setdefault((event.conversation_id, event.sender_user_id), []).append(
                bytes.fromhex(event.message_id)
            )
            if event.burn_after_read_s and event.seq is not None:
                batch.read.append({"conversation_id": event.conversation_id, "seq": event.seq})
        receipts = self._prepare_receipts(batch, read=True)
        self.save()
        for item in receipts:
            with contextlib.suppress(FrameError):
                self._deliver(item)
        self._ack(batch)
