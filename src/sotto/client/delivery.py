"""The delivery rules of a device, pure: which messages to process, in what order,
when to sync, what to acknowledge.

Fed the frames a device received and its per-conversation cursors (every seq
up to ``cursor`` accounted for, ``seen`` the processed seqs above it), these
functions decide; they do no I/O, read no clock and touch no keys. The
``Messenger`` applies their answers (opens envelopes, saves, sends the acks),
and ``tests/client/test_delivery.py`` drives them against an in-memory
server that drops, repeats and reorders pushes and loses acks.

The rules (docs/architecture.md, "Delivery order"):

* a conversation's messages are processed once and in seq order;
* a push above a gap is not processed (nor acknowledged): the sync the gap
  starts brings it again, after the missing ones (``following``);
* a batch goes in seq order per conversation, with mail merged by time
  (``receive_order``, docs/protocol.md §14.5);
* a message whose chain key has not come holds its conversation's later
  messages back, up to ``MAX_HELD`` of them (``arrival``);
* anything held, any gap, any seq seen above the cursor starts a sync
  (``behind``);
* an ack carries at most the server's limits per frame (``ack_frames``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .store import ConversationRecord

__all__ = [
    "ACK_LIMITS",
    "MAX_HELD",
    "Arrival",
    "Cursor",
    "ack_frames",
    "arrival",
    "behind",
    "following",
    "receive_order",
    "server_time",
]

# Held back behind a message whose key has not come, at most (then the wait ends:
# what opens is shown). Under the store's MAX_PENDING, so every held message is
# saved before it is acknowledged.
MAX_HELD = 200
# Per ack frame, under the server's AckRequest bounds (100 cursors, 500 mail ids,
# 200 read refs): what a batch acknowledges goes in as many frames as it needs.
ACK_LIMITS = {"cursors": 100, "mail": 400, "read": 200}


class Cursor(Protocol):
    """What the rules read of a conversation's record (``store.ConversationRecord``)."""

    @property
    def cursor(self) -> int: ...

    @property
    def seen(self) -> set[int]: ...


def server_time(item: Mapping[str, Any]) -> int:
    """A frame's ``server_time`` (the server's, so checked: 0 when it is not an integer)."""
    value = item.get("server_time")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _seq(item: Mapping[str, Any]) -> int | None:
    seq = item.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def receive_order(
    mail: Iterable[dict[str, Any]], messages: Iterable[dict[str, Any]]
) -> list[tuple[bool, dict[str, Any]]]:
    """Mail and messages in the order to process them: ``(is_message, item)``.

    A conversation's messages go in seq order. The server stamps ``server_time``
    when a send arrives and assigns the seq when it stores it, so two concurrent
    sends can carry times out of seq order; a message's place in time is therefore
    the latest time of its conversation's messages up to it. Mail is merged by its
    own time before the messages placed at or after it, so a distribution (always
    stored before the envelopes that need it) comes before them, and a device
    catching up still installs chains in the order they were made
    (docs/protocol.md §14.5).
    """
    by_conversation: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for message in messages:
        by_conversation.setdefault(str(message.get("conversation_id")), []).append(
            (_seq(message) or 0, message)
        )
    keyed: list[tuple[int, int, int, int, dict[str, Any]]] = [
        (server_time(item), 0, 0, index, item) for index, item in enumerate(mail)
    ]
    for items in by_conversation.values():
        latest = 0
        for index, (seq, message) in enumerate(sorted(items, key=lambda entry: entry[0])):
            latest = max(latest, server_time(message))
            keyed.append((latest, 1, seq, index, message))
    keyed.sort(key=lambda entry: entry[:4])
    return [(kind == 1, item) for _, kind, _, _, item in keyed]


def following(
    pushes: Iterable[dict[str, Any]], records: Mapping[str, Cursor]
) -> tuple[list[dict[str, Any]], bool]:
    """The pushed messages that follow on from what the device has, in seq order, and
    whether any lie above a gap.

    Those above a gap are left out: the sync that fills the gap brings them again
    (they are not acknowledged), after the missing ones. A push for a seq the
    device has (a sync brought it first, or it came twice) is left out too.
    """
    by_conversation: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for push in pushes:
        seq = _seq(push)
        if seq is not None:
            by_conversation.setdefault(str(push.get("conversation_id")), []).append((seq, push))
    ready: list[dict[str, Any]] = []
    gap = False
    for cid, items in by_conversation.items():
        record = records.get(cid)
        have, seen = (record.cursor, record.seen) if record is not None else (0, set())
        for seq, push in sorted(items, key=lambda item: item[0]):
            while have + 1 in seen:
                have += 1
            if seq <= have or seq in seen:
                continue
            if seq != have + 1:
                gap = True
                break
            ready.append(push)
            have = seq
    return ready, gap


class Arrival(Enum):
    """What to do with a conversation message that arrived (``arrival``)."""

    HAD = "had"  # processed before: a push and a sync page both brought it
    OPEN = "open"  # open and show it now
    HOLD = "hold"  # an earlier message waits for its key: keep this one behind it
    RELEASE = "release"  # held back long enough: stop waiting, show what opens, then open


def arrival(record: Cursor, seq: int, waiting: int) -> Arrival:
    """Decide for message ``seq`` given how many of its conversation's messages wait."""
    if seq <= record.cursor or seq in record.seen:
        return Arrival.HAD
    if waiting >= MAX_HELD:
        return Arrival.RELEASE
    return Arrival.HOLD if waiting else Arrival.OPEN


def behind(records: Iterable[ConversationRecord], *, gap: bool, needs_sync: bool) -> bool:
    """After a batch of pushes: does the device need a sync before it can go on?

    A gap below a push, a seq seen above the cursor (one below it is missing), a
    message held for its key, a distribution held for its session: the sync
    brings what is missing, and what was held comes out after it in order.
    """
    if gap or needs_sync:
        return True
    return any(r.seen or r.held_keys or any(p.waiting for p in r.pending) for r in records)


def ack_frames(
    cursors: Mapping[str, int], mail: Sequence[str], read: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ``ack`` frames' fields for a batch: each within ``ACK_LIMITS``, together
    naming every cursor, mail id and read ref once, in order; none if nothing."""
    pending = sorted(cursors.items())
    if not (pending or mail or read):
        return []
    frames: list[dict[str, Any]] = []
    m, r, c = ACK_LIMITS["mail"], ACK_LIMITS["read"], ACK_LIMITS["cursors"]
    while not frames or mail or read or pending:
        frames.append(
            {"mail": list(mail[:m]), "read": list(read[:r]), "cursors": dict(pending[:c])}
        )
        mail, read, pending = mail[m:], read[r:], pending[c:]
    return frames
