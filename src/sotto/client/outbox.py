"""The send rules of a device, pure: what a prepared message asks of the server, what
the server's answer does to the record, and what a refusal means.

A prepared message (``store.OutboxItem``) is saved before anything leaves, and
goes out byte-identically on every retry; these functions build its frames,
apply the ``sent`` answer and decide what each refusal means. They do no I/O,
read no clock (``now`` is passed in) and touch no keys. The ``Messenger``
applies their answers (the network calls, the engine's repairs, the saves),
and ``tests/client/test_outbox_core.py`` drives them in memory.

A refusal (``refused``) is decided once for both ways a message leaves, a live
``send`` and the ``flush_outbox`` of what an earlier run prepared:

* ``rate_limited``, ``conflict``, ``internal_error`` may pass: a flushed
  message stays in the outbox for the next command (``KEEP``); a live send
  raises them (its caller decides);
* ``rolled_back``: the keystore is older than its last send (restored from a
  backup); the device drops its sender chains and send sessions (§14.6) and
  prepares the message again;
* ``stale_devices``, and any other refusal of ``distribute`` (a device
  outside the roster is ``invalid_envelope``): the roster moved; read it
  again, rotate the chain, prepare again;
* a live send prepares again at most ``MAX_SEND_ATTEMPTS`` times; a flushed
  message whose expiry passed is named in a notice (``EXPIRED``) instead;
* anything else is for good (``REFUSED``): a live send raises it, a flush
  names the message in a notice. Nothing is ever dropped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from sotto.protocol.content import Text, parse_content
from sotto.protocol.conversation import MessageTimers
from sotto.protocol.envelope import Envelope
from sotto.protocol.errors import ProtocolError

from .encoding import b64e
from .events import NoticeEvent

if TYPE_CHECKING:
    from sotto.frames.answers import SentAnswer

    from .store import ConversationRecord, OutboxItem

__all__ = [
    "DISTRIBUTIONS_PER_FRAME",
    "MAX_SEND_ATTEMPTS",
    "RETRY_LATER",
    "Decision",
    "Mode",
    "SentMessage",
    "Then",
    "confirm",
    "distribute_frames",
    "expired",
    "refused",
    "resend_after",
    "send_fields",
    "timers_left",
    "unsent_notice",
    "withdraw",
]

DISTRIBUTIONS_PER_FRAME = 40  # docs/api.md: at most 40 per distribute frame
MAX_SEND_ATTEMPTS = 3  # a live send's preparations (and a send frame's conflict retries)
# Refusals that may pass: a prepared message stays in the outbox for the next command.
RETRY_LATER = frozenset({"rate_limited", "conflict", "internal_error"})
PREVIEW = 40  # characters of a text quoted in the notice naming it
# The device or its user lost its standing: the socket closes next, nothing can repair it.
STANDING = frozenset({"revoked", "suspended"})


@dataclass(frozen=True)
class SentMessage:
    conversation_id: str
    message_id: str
    seq: int
    server_time: int
    delete_at: int | None


class Mode(Enum):
    """How the message is leaving."""

    LIVE = "live"  # ``send``: prepared just now, the caller waits for the answer
    FLUSH = "flush"  # ``flush_outbox``: prepared by an earlier command that could not confirm it


class Then(Enum):
    """What becomes of a refused message."""

    KEEP = "keep"  # stays in the outbox; the refusal goes up, the next command sends it
    AGAIN = "again"  # off the outbox; its content prepared again (a new chain) and sent
    EXPIRED = "expired"  # off the outbox; it would be prepared again, but it expired
    REFUSED = "refused"  # off the outbox for good: raised (live) or named in a notice (flush)


@dataclass(frozen=True)
class Decision:
    then: Then
    # The keystore is older than the last send: drop the sender chains and send sessions
    # (docs/protocol.md §14.6), whatever ``then`` is, as every next send would be refused.
    restored: bool = False
    # The roster moved: read it again (refusing ghosts) and rotate, before ``AGAIN``.
    roster_moved: bool = False


def refused(
    item: OutboxItem, *, code: str, action: str, mode: Mode, attempt: int, now: int
) -> Decision:
    """What the refusal ``code`` of ``action`` (``distribute`` or ``send``) means for
    ``item``, on the ``attempt``-th preparation (from 0) of a live send or in a flush."""
    if code in RETRY_LATER:
        # Before the distribute rule: a rate-limited chain is no moved roster (a new chain
        # would be limited the same way).
        return Decision(Then.KEEP if mode is Mode.FLUSH else Then.REFUSED)
    restored = code == "rolled_back"
    roster_moved = code == "stale_devices" or (
        action == "distribute" and not restored and code not in STANDING
    )
    if not (restored or roster_moved):
        return Decision(Then.REFUSED)
    if mode is Mode.LIVE:
        last = attempt >= MAX_SEND_ATTEMPTS - 1
        return Decision(Then.REFUSED if last else Then.AGAIN, restored, roster_moved)
    if not item.content:  # prepared by a version that kept no content: cannot be redone
        return Decision(Then.REFUSED, restored, roster_moved)
    if expired(item, now):
        return Decision(Then.EXPIRED, restored, roster_moved)
    return Decision(Then.AGAIN, restored, roster_moved)


def expired(item: OutboxItem, now: int) -> bool:
    """Past its expiry: a flush sends it no more (the server would refuse it anyway)."""
    return bool(item.expires_at) and item.expires_at <= now


def timers_left(item: OutboxItem, now: int) -> MessageTimers:
    """The timers to prepare ``item`` again with: what was left of its expiry at ``now``."""
    return MessageTimers(
        expires_in_ms=item.expires_at - now if item.expires_at else 0,
        burn_after_read_s=item.burn_after_read_s,
    )


def unsent_notice(item: OutboxItem, then: Then, code: str = "", refusal: str = "") -> NoticeEvent:
    """The notice naming a flushed message that will not go out: it ``EXPIRED``, or was
    ``REFUSED`` with ``code`` (``refusal``: the error's words)."""
    cid, named = item.conversation_id, _named(item)
    if then is Then.EXPIRED:
        return NoticeEvent(cid, "expired", f"{named} expired unsent")
    if then is Then.REFUSED:
        return NoticeEvent(cid, code, f"{named} was not sent: {refusal}")
    raise ValueError(f"a message that is {then.value} is not lost: no notice")


def _named(item: OutboxItem) -> str:
    """How a notice names a prepared message: its text's start, quoted; else its kind."""
    try:
        content = parse_content(item.content)
    except ProtocolError:  # none kept (an older version's outbox), or unreadable
        return "a message prepared earlier"
    if not isinstance(content, Text):
        return f"a {type(content).__name__.lower()} prepared earlier"
    text = " ".join(content.text.split())
    quoted = text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "\u2026"
    return f'a message prepared earlier ("{quoted}")'


def distribute_frames(item: OutboxItem) -> list[dict[str, Any]]:
    """The ``distribute`` frames' fields, ``DISTRIBUTIONS_PER_FRAME`` each, in order; none
    once they went out. The first goes alone (it records the new chain), the rest
    together (a frame stored twice overwrites itself)."""
    if item.distributed or not item.distributions:
        return []
    step = DISTRIBUTIONS_PER_FRAME
    return [
        {
            "conversation_id": item.conversation_id,
            "chain_id": b64e(item.chain_id),
            "distributions": [b64e(d) for d in item.distributions[start : start + step]],
        }
        for start in range(0, len(item.distributions), step)
    ]


def send_fields(item: OutboxItem) -> dict[str, Any]:
    """The ``send`` frame's fields: the same bytes on every retry (the server de-duplicates
    on the message id)."""
    fields: dict[str, Any] = {
        "conversation_id": item.conversation_id,
        "envelope": b64e(item.envelope),
    }
    if item.to_user is not None:
        fields["to_user"] = item.to_user
    if item.files:
        fields["files"] = item.files
    return fields


def resend_after(code: str, attempt: int) -> float | None:
    """Seconds to wait before sending the same frame again after refusal ``code`` on the
    ``attempt``-th try (from 0), or None to give up. ``conflict``: another member's send
    took the same seq, ours is not stored."""
    if code != "conflict" or attempt >= MAX_SEND_ATTEMPTS - 1:
        return None
    return 0.05 * (attempt + 1)


def withdraw(record: ConversationRecord, item: OutboxItem) -> None:
    """Take a message that will not go out as prepared off the outbox and the history."""
    if item in record.outbox:
        record.outbox.remove(item)
    record.history = [m for m in record.history if m.message_id != item.message_id]


def confirm(record: ConversationRecord, item: OutboxItem, answer: SentAnswer) -> SentMessage:
    """Apply the ``sent`` answer: the message leaves the outbox; a conversation message's
    seq is marked seen (no sync brings this device its own message) and its history
    line gets the seq and the server's time."""
    if item in record.outbox:
        record.outbox.remove(item)
    seq, server_time = answer.get("seq"), answer["server_time"]
    if seq is not None and item.to_user is None:
        record.mark_seen(seq)
        for stored in record.history:
            if stored.message_id == item.message_id:
                stored.seq = seq
                stored.server_time = server_time
    return SentMessage(
        conversation_id=item.conversation_id,
        message_id=item.message_id,
        seq=0 if seq is None else seq,
        server_time=server_time,
        delete_at=Envelope.parse(item.envelope).header.delete_at(None),
    )
