"""The receive rules of a device, pure: what a key distribution that did not open means,
which parked envelopes to try again and in what order, when to ask a sender again.

The protocol engine opens distributions and envelopes (``Conversation``); these
functions decide what its outcome means for the device's records. They do no
I/O, read no clock (``now`` is passed in) and touch no keys. The ``Messenger``
feeds them the engine's outcome and applies their answers (the saves, the asks,
the acks, the receipts), and ``tests/client/test_inbox_core.py`` drives them in
memory.

The rules (docs/architecture.md, "Receiving"):

* a distribution over a session this device does not hold yet is kept
  (``hold``, in ``ConversationRecord.held_keys``): the one that opens the session
  may come later in the same batch, or in the sync a lost push starts. Kept ones
  are tried again in rounds while any opens (``held_rounds``); only after a
  complete sync does a last round ask their senders again (``key_failed`` with
  ``final``): asked sooner, a sender sends its chain only from where it is now
  (docs/protocol.md §16.4) and the messages before are lost;
* a used or unknown prekey, or a session step used twice (a sender rolled
  back), asks the sender again; a replayed distribution is ignored; anything
  else is a notice;
* a sender device is asked at most once per conversation every
  ``ASK_AGAIN_MS`` (``ask_due``), counted in the conversation's record, so a
  command run after another does not ask again at once;
* an envelope whose chain has not come is parked (``park``); parked ones are
  tried again in seq order, and one still waiting for its key holds the later
  ones back (``Retry``); a complete sync without the key ends the wait;
* an envelope from an identity not trusted any more is kept, holding nothing
  back, until the person accepts or rejects the new key (``untrusted``);
* a receipt marks each outgoing message once per user and kind, ``read``
  winning over ``delivered`` (``apply_receipt``); receipts go in contents of
  ``RECEIPT_IDS`` ids (``receipt_contents``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from sotto.protocol.content import Receipt
from sotto.protocol.distribution import DistributionMode, KeyDistribution
from sotto.protocol.envelope import Envelope
from sotto.protocol.errors import (
    MessageExpired,
    MessageKeyUnavailable,
    PrekeyError,
    ProtocolError,
    ReplayedMessage,
    UnknownChain,
    UnknownSession,
)
from sotto.protocol.sessions import NO_SESSION

from .events import NoticeEvent
from .store import MAX_HELD_KEYS, PendingItem

if TYPE_CHECKING:
    from sotto.protocol.conversation import Address

    from .store import ConversationRecord

__all__ = [
    "ASK_AGAIN_MS",
    "RECEIPT_IDS",
    "Key",
    "KeyDecision",
    "Opened",
    "Retry",
    "Unopened",
    "apply_receipt",
    "ask_due",
    "envelope_failed",
    "expired",
    "header",
    "held_rounds",
    "hold",
    "key_failed",
    "overflow",
    "park",
    "receipt_contents",
    "untrusted",
]

ASK_AGAIN_MS = 10 * 60 * 1000  # one redistribution request per sender device this often
RECEIPT_IDS = 256  # message ids per receipt


# -- key distributions -----------------------------------------------------------------


class Key(Enum):
    """What becomes of a key distribution the engine did not install."""

    IGNORE = "ignore"  # a retried distribute: the chain is installed already
    HOLD = "hold"  # its session may still come: kept and tried again (``held_rounds``)
    ASK = "ask"  # ask its sender again (docs/protocol.md §16.4), naming ``session_id``
    NOTICE = "notice"  # it cannot be repaired: say so


@dataclass(frozen=True)
class KeyDecision:
    then: Key
    sender: Address | None = None  # ASK: the device to ask
    session_id: bytes = NO_SESSION  # ASK: the session it should drop
    notice: NoticeEvent | None = None  # NOTICE


def header(data: bytes) -> KeyDistribution | None:
    """A distribution's parsed header, or None if it does not parse."""
    with contextlib.suppress(ProtocolError):
        return KeyDistribution.parse(data)
    return None


def key_failed(
    cid: str, exc: ProtocolError, kd: KeyDistribution | None, *, final: bool
) -> KeyDecision:
    """What the engine's refusal ``exc`` of distribution ``kd`` (its header) means.

    ``final``: the last try after a complete sync (nothing more is in the mailbox, so
    a session still missing is lost). Before it, a distribution over an unknown
    session is held, never asked for.
    """
    if isinstance(exc, ReplayedMessage):
        return KeyDecision(Key.IGNORE)
    if isinstance(exc, UnknownSession):
        if not final:
            return KeyDecision(Key.HOLD)
        # Lost state or an expired session: ask the sender again (§16.4).
        return KeyDecision(Key.ASK, exc.peer, exc.session_id)
    if kd is not None and isinstance(exc, PrekeyError):
        # A used or unknown prekey: ask the sender again (§16.4).
        return KeyDecision(Key.ASK, (kd.sender_user_id, kd.sender_device_id), NO_SESSION)
    in_session = kd is not None and kd.mode == DistributionMode.SESSION
    if kd is not None and in_session and isinstance(exc, MessageKeyUnavailable):
        # Another distribution at a session step already used (a repeat of the same one
        # is refused as replayed first): the sender's state was rolled back (§16.4).
        # Asked, it drops that session and sends its chain again through HPKE.
        return KeyDecision(Key.ASK, (kd.sender_user_id, kd.sender_device_id), kd.session_id)
    notice = NoticeEvent(cid, exc.code, f"a key distribution failed: {exc}")
    return KeyDecision(Key.NOTICE, notice=notice)


def hold(record: ConversationRecord, data: bytes) -> bool:
    """Keep a distribution for a session not held yet; True if it was not kept already."""
    if data in record.held_keys:
        return False
    record.held_keys.append(data)
    return True


def overflow(record: ConversationRecord) -> list[KeyDistribution]:
    """Take the held distributions beyond ``MAX_HELD_KEYS`` off the record, oldest first,
    and return their headers: each is to be asked for again at once.

    Outside a complete sync a conversation keeps 64 (junk from an insider must not grow
    the state without end); one pushed out used to be dropped without a word, and its
    chain's messages then waited for a key that was never coming. A complete sync keeps
    them all: its last round asks for every one still held.
    """
    dropped = record.held_keys[:-MAX_HELD_KEYS]
    del record.held_keys[:-MAX_HELD_KEYS]
    return [kd for kd in map(header, dropped) if kd is not None]


def held_rounds(records: Mapping[str, ConversationRecord], *, complete: bool) -> Iterator[bool]:
    """The rounds of trying the held distributions again: yields, per round, whether it
    is the last try (its failures are asked for).

    One that opens may install the session another needs, so rounds go on while the
    number held goes down; after a complete sync, one more round asks for the rest.
    The caller takes each conversation's ``held_keys`` and tries them, between yields.
    """
    held = _held(records)
    while held:
        yield False
        held, before = _held(records), held
        if held == before:
            break
    if complete and _held(records):
        yield True


def _held(records: Mapping[str, ConversationRecord]) -> int:
    return sum(len(r.held_keys) for r in records.values())


def ask_due(record: ConversationRecord, sender: Address, now: int) -> bool:
    """May ``sender`` be asked again for its chain at ``now``? If so, it counts as asked.

    One request per sender device and conversation every ``ASK_AGAIN_MS`` (each is
    answered with a new distribution). Requests older than that are forgotten, and
    so is one stamped in the future (a clock set back must not silence a sender).
    """
    record.asked = {who: at for who, at in record.asked.items() if 0 <= now - at < ASK_AGAIN_MS}
    who = f"{sender[0]}/{sender[1]}"
    if who in record.asked:
        return False
    record.asked[who] = now
    return True


# -- envelopes ---------------------------------------------------------------------------


class Opened(Enum):
    """What becomes of an envelope the engine did not open."""

    PARK = "park"  # its chain's key has not come: kept until it does
    DROP = "drop"  # expired unread (its key deleted), or opened already
    NOTICE = "notice"  # rejected: say so


@dataclass(frozen=True)
class Unopened:
    then: Opened
    notice: NoticeEvent | None = None


def envelope_failed(
    cid: str, exc: ProtocolError, *, seq: int | None, sender: Address | None, waited: bool
) -> Unopened:
    """What the refusal ``exc`` of envelope ``seq`` from ``sender`` means (``sender``
    None: its header did not parse). ``waited``: it was parked before."""
    if sender is None:
        return Unopened(
            Opened.NOTICE, NoticeEvent(cid, exc.code, f"unreadable message #{seq}: {exc}")
        )
    if isinstance(exc, UnknownChain):
        return Unopened(Opened.PARK)
    if isinstance(exc, MessageExpired | ReplayedMessage):
        return Unopened(Opened.DROP)
    who = f"{sender[0]}/{sender[1]}"
    text = f"message #{seq} from {who} rejected: {exc}"
    if waited and isinstance(exc, MessageKeyUnavailable):
        # A redistributed chain starts where the sender is now (§16.4): what this
        # device waited for was sent before it, and its key is gone on both sides.
        text = (
            f"message #{seq} from {who} cannot be read on this device: it lost its keys"
            " and was sent them again only after this message; later ones are readable"
        )
    return Unopened(Opened.NOTICE, NoticeEvent(cid, exc.code, text))


def park(
    record: ConversationRecord, data: bytes, server_time: int, seq: int | None, *, waiting: bool
) -> PendingItem:
    """Keep an envelope whose chain has not come. A conversation message (``seq``)
    that ``waiting`` holds the later ones back; mail never does."""
    parked = PendingItem(data, server_time, seq, waiting=waiting and seq is not None)
    record.pending.append(parked)
    return parked


def untrusted(record: ConversationRecord, data: bytes, server_time: int, seq: int) -> None:
    """A conversation message from an identity not trusted any more: kept (holding none
    back) until the person accepts or rejects the new key, and processed for the cursor."""
    record.pending.append(PendingItem(data, server_time, seq))
    record.mark_seen(seq)


class Retry:
    """One pass over a conversation's parked envelopes, in seq order (mail first).

    Iterate it for the ``(item, waiting)`` to open; tell it what became of each
    (``parked``, ``untrusted``; an envelope shown or dropped needs no word). A message
    parked again while waiting keeps the later messages parked, untried; with
    ``give_up`` nothing waits any more: what opens is shown, what does not stays
    parked without holding others back.
    """

    def __init__(self, record: ConversationRecord, *, give_up: bool = False) -> None:
        self.record, self.give_up = record, give_up
        self._queue = sorted(record.pending, key=lambda p: -1 if p.seq is None else p.seq)
        record.pending = []
        self._blocked = False

    def __iter__(self) -> Iterator[tuple[PendingItem, bool]]:
        for item in self._queue:
            if self._blocked and item.seq is not None:
                self.record.pending.append(item)
                continue
            yield item, item.waiting and not self.give_up

    def parked(self, item: PendingItem) -> None:
        """The envelope tried was parked again (``park``) as ``item``."""
        if item.waiting:
            self._blocked = True

    def untrusted(self, item: PendingItem) -> None:
        """The envelope tried names an identity not trusted any more: kept, not waiting."""
        item.waiting = False
        self.record.pending.append(item)


def expired(envelope: bytes, now: int) -> bool:
    """A parked envelope past its expiry (or unreadable): nothing will show it."""
    try:
        parsed = Envelope.parse(envelope).header
    except ProtocolError:
        return True
    return bool(parsed.expires_at) and parsed.expires_at <= now


# -- receipts ------------------------------------------------------------------------------


def apply_receipt(
    record: ConversationRecord, user_id: str, receipt: Receipt
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Mark the outgoing messages ``receipt`` names as delivered to or read by
    ``user_id``: the ids that changed (sorted) and their seqs.

    Every device of a user sends its receipt: a person sees one per message and kind
    (delivered, then read), from whichever device was first.
    """
    kind = "read" if receipt.kind == Receipt.READ else "delivered"
    ids = {m.hex() for m in receipt.message_ids}
    changed: set[str] = set()
    seqs: list[int] = []
    for stored in record.history:
        if stored.outgoing and stored.message_id in ids:
            before = stored.receipts.get(user_id)
            if before == "read" or before == kind:
                continue
            stored.receipts[user_id] = kind
            changed.add(stored.message_id)
            if stored.seq is not None:
                seqs.append(stored.seq)
    return tuple(sorted(changed)), tuple(seqs)


def receipt_contents(
    delivered: Mapping[tuple[str, str], Iterable[bytes]], *, read: bool
) -> list[tuple[str, str, Receipt]]:
    """The receipts to send: ``(conversation, user, receipt)``, ``RECEIPT_IDS`` ids each."""
    kind = Receipt.READ if read else Receipt.DELIVERED
    out: list[tuple[str, str, Receipt]] = []
    for (cid, user_id), message_ids in delivered.items():
        ids = list(message_ids)
        for start in range(0, len(ids), RECEIPT_IDS):
            out.append((cid, user_id, Receipt(kind, tuple(ids[start : start + RECEIPT_IDS]))))
    return out
