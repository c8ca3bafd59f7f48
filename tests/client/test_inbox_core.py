"""The receive rules (``sotto.client.inbox``) in memory: no server, no clock, no socket.

First the decision tables: what each refusal of a key distribution means, and of an
envelope; the ask-again limit; the pending queue's order and blocking; the held-key
rounds; receipts. Then a hypothesis run plays distributions and envelopes through
the rules the way the ``Messenger`` applies them (``Device`` below, its receive
path in miniature over a fake engine) in any order: a session's opener after the
distributions that use it, lost and repeated pushes, syncs in pages. Nothing is
asked for before a complete sync, every held key is tried again, and every message
whose key came is shown once, in seq order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.client import delivery, inbox
from sotto.client.events import NoticeEvent
from sotto.client.inbox import (
    ASK_AGAIN_MS,
    RECEIPT_IDS,
    Key,
    KeyDecision,
    Opened,
    Retry,
    apply_receipt,
    ask_due,
    envelope_failed,
    held_rounds,
    hold,
    key_failed,
    overflow,
    park,
    receipt_contents,
    untrusted,
)
from sotto.client.store import MAX_HELD_KEYS, ConversationRecord, PendingItem, StoredMessage
from sotto.protocol.content import Receipt
from sotto.protocol.distribution import (
    PREKEY_SEALED_LENGTH,
    SESSION_SEALED_LENGTH,
    DistributionMode,
    KeyDistribution,
)
from sotto.protocol.errors import (
    BadSignature,
    MessageExpired,
    MessageKeyUnavailable,
    PrekeyError,
    ProtocolError,
    ReplayedMessage,
    TooManySkipped,
    UnknownChain,
    UnknownSession,
)
from sotto.protocol.keys import ECDSA_SIGNATURE_LENGTH
from sotto.protocol.sessions import NO_SESSION
from tests.protocol.helpers import NOW

CID = "room-0123456789abcdef01234567"
SENDER = ("usr-s", "phone")
SESSION = b"\x07" * 16


def distribution(mode: int) -> KeyDistribution:
    common = dict(
        conversation_id=CID,
        sender_user_id=SENDER[0],
        sender_device_id=SENDER[1],
        recipient_user_id="usr-r",
        recipient_device_id="laptop",
        message_id=b"\x01" * 16,
        timestamp=NOW,
        mode=mode,
    )
    if mode == DistributionMode.PREKEY:
        return KeyDistribution(
            **common,  # type: ignore[arg-type]
            session_id=SESSION,
            sealed=bytes(PREKEY_SEALED_LENGTH),
            prekey_kind=1,
            prekey_id=3,
            signature=bytes(ECDSA_SIGNATURE_LENGTH),
        )
    return KeyDistribution(
        **common,  # type: ignore[arg-type]
        session_id=SESSION,
        sealed=bytes(SESSION_SEALED_LENGTH),
        step=4,
        salt=bytes(16),
    )


PREKEY, OVER_SESSION = distribution(DistributionMode.PREKEY), distribution(DistributionMode.SESSION)


def notice(exc: ProtocolError) -> KeyDecision:
    return KeyDecision(
        Key.NOTICE, notice=NoticeEvent(CID, exc.code, f"a key distribution failed: {exc}")
    )


# -- what a key distribution that did not open means -------------------------------------

# (the engine's refusal, the distribution, final?) -> the decision.
KEY_TABLE: list[tuple[ProtocolError, KeyDistribution | None, bool, KeyDecision]] = [
    (ReplayedMessage(), OVER_SESSION, False, KeyDecision(Key.IGNORE)),
    (ReplayedMessage(), OVER_SESSION, True, KeyDecision(Key.IGNORE)),
    # Its session may be opened by a distribution still to come: held, never asked.
    (UnknownSession(SENDER, SESSION), OVER_SESSION, False, KeyDecision(Key.HOLD)),
    (UnknownSession(SENDER, SESSION), None, False, KeyDecision(Key.HOLD)),
    (UnknownSession(SENDER, SESSION), OVER_SESSION, True, KeyDecision(Key.ASK, SENDER, SESSION)),
    (PrekeyError(), PREKEY, False, KeyDecision(Key.ASK, SENDER, NO_SESSION)),
    (PrekeyError(), PREKEY, True, KeyDecision(Key.ASK, SENDER, NO_SESSION)),
    (MessageKeyUnavailable(), OVER_SESSION, False, KeyDecision(Key.ASK, SENDER, SESSION)),
    (MessageKeyUnavailable(), OVER_SESSION, True, KeyDecision(Key.ASK, SENDER, SESSION)),
    (MessageKeyUnavailable("m"), PREKEY, False, notice(MessageKeyUnavailable("m"))),
    (TooManySkipped("far"), OVER_SESSION, True, notice(TooManySkipped("far"))),
    (BadSignature("bad"), PREKEY, False, notice(BadSignature("bad"))),
    (ProtocolError("odd"), None, True, notice(ProtocolError("odd"))),
    (PrekeyError("p"), None, True, notice(PrekeyError("p"))),  # no header: nobody to ask
]


@pytest.mark.parametrize(("exc", "kd", "final", "decision"), KEY_TABLE)
def test_client_decides_what_each_failed_distribution_means(
    exc: ProtocolError, kd: KeyDistribution | None, final: bool, decision: KeyDecision
) -> None:
    assert key_failed(CID, exc, kd, final=final) == decision


def test_a_distribution_header_parses_or_is_none() -> None:
    assert inbox.header(OVER_SESSION.serialize()) == OVER_SESSION
    assert inbox.header(b"\x00junk") is None


def test_held_distributions_are_kept_once() -> None:
    record = ConversationRecord(CID, "room")
    assert hold(record, b"k0")
    assert not hold(record, b"k0")
    assert record.held_keys == [b"k0"]


def distribution_from(device: str, session: int) -> bytes:
    kd = dataclasses.replace(
        OVER_SESSION, sender_device_id=device, session_id=session.to_bytes(16, "big")
    )
    return kd.serialize()


def test_held_distributions_over_the_cap_are_taken_off_to_be_asked_for() -> None:
    # Pushed out of the 64 without a word, a chain's key never came and its messages
    # waited for nothing; now each one pushed out is asked for again at once.
    record = ConversationRecord(CID, "room")
    for n in range(MAX_HELD_KEYS + 3):
        hold(record, distribution_from(f"dev-{n}", n + 1))
    dropped = overflow(record)
    assert [(kd.sender_device_id, kd.session_id) for kd in dropped] == [
        ("dev-0", b"\0" * 15 + b"\1"),
        ("dev-1", b"\0" * 15 + b"\2"),
        ("dev-2", b"\0" * 15 + b"\3"),
    ]
    assert len(record.held_keys) == MAX_HELD_KEYS
    assert overflow(record) == []
    # Saved and read again, a complete sync's held keys are all still there.
    for n in range(10):
        hold(record, distribution_from("dev-more", 1000 + n))
    again = ConversationRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again.held_keys == record.held_keys
    assert len(again.held_keys) == MAX_HELD_KEYS + 10


def rounds_taken(opens: list[int], *, complete: bool, held: int = 3) -> list[bool]:
    """The rounds ``held_rounds`` yields when round ``i`` opens ``opens[i]`` of them."""
    records = {CID: ConversationRecord(CID, "room", held_keys=[b"k"] * held)}
    finals: list[bool] = []
    for index, final in enumerate(held_rounds(records, complete=complete)):
        finals.append(final)
        assert len(finals) < 10, "rounds without end"
        record = records[CID]
        record.held_keys = record.held_keys[: len(record.held_keys) - opens[index]]
    return finals


def test_held_rounds_go_on_while_any_opens_and_a_complete_sync_adds_a_last_one() -> None:
    assert rounds_taken([1, 1, 0], complete=False) == [False, False, False]
    assert rounds_taken([1, 1, 0, 0], complete=True) == [False, False, False, True]
    assert rounds_taken([3], complete=False) == [False]
    assert rounds_taken([3], complete=True) == [False]  # all opened: nothing to ask
    assert rounds_taken([0, 0], complete=True) == [False, True]
    assert rounds_taken([], complete=True, held=0) == []


def test_a_sender_is_asked_again_once_per_conversation_and_interval() -> None:
    record, other = ConversationRecord(CID, "room"), ConversationRecord("room-other", "room")
    assert ask_due(record, SENDER, NOW)
    assert not ask_due(record, SENDER, NOW + ASK_AGAIN_MS - 1)
    assert ask_due(other, SENDER, NOW + 1)  # another conversation
    assert ask_due(record, ("usr-s", "tablet"), NOW + 1)  # another device
    assert ask_due(record, SENDER, NOW + ASK_AGAIN_MS)
    assert not ask_due(record, SENDER, NOW + ASK_AGAIN_MS + 1)  # the last ask counts
    assert ask_due(ConversationRecord(CID, "room"), SENDER, 0)  # a clock at zero asks too


def test_the_last_ask_is_kept_with_the_record_for_the_next_command() -> None:
    # Each command is a new process: kept in memory, every `sotto listen --once`
    # asked the same sender again at once, and it sent its chain again each time.
    record = ConversationRecord(CID, "room")
    assert ask_due(record, SENDER, NOW)
    reopened = ConversationRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert not ask_due(reopened, SENDER, NOW + 1)
    assert ask_due(reopened, SENDER, NOW + ASK_AGAIN_MS)


def test_old_and_future_asks_are_forgotten() -> None:
    record = ConversationRecord(CID, "room")
    for n in range(50):
        assert ask_due(record, ("usr-s", f"dev-{n}"), NOW + n)
    assert ask_due(record, SENDER, NOW + 2 * ASK_AGAIN_MS)
    assert list(record.asked) == ["usr-s/phone"]  # the record does not grow without end
    # An ask stamped ahead of the clock (the clock was set back) does not silence a sender.
    assert ask_due(record, SENDER, NOW)


# -- what an envelope that did not open means ----------------------------------------------

WHO = "usr-s/phone"


@pytest.mark.parametrize(
    ("exc", "sender", "waited", "then", "text"),
    [
        (UnknownChain(), SENDER, False, Opened.PARK, None),
        (UnknownChain(), SENDER, True, Opened.PARK, None),
        (MessageExpired(), SENDER, False, Opened.DROP, None),
        (ReplayedMessage(), SENDER, True, Opened.DROP, None),
        (ProtocolError("short"), None, False, Opened.NOTICE, "unreadable message #7: {exc}"),
        (UnknownChain("x"), None, True, Opened.NOTICE, "unreadable message #7: {exc}"),
        (
            BadSignature("sig"),
            SENDER,
            False,
            Opened.NOTICE,
            f"message #7 from {WHO} rejected: {{exc}}",
        ),
        (
            MessageKeyUnavailable("gone"),
            SENDER,
            False,
            Opened.NOTICE,
            f"message #7 from {WHO} rejected: {{exc}}",
        ),
        (
            MessageKeyUnavailable("gone"),
            SENDER,
            True,
            Opened.NOTICE,
            f"message #7 from {WHO} cannot be read on this device: it lost its keys and was"
            " sent them again only after this message; later ones are readable",
        ),
    ],
)
def test_client_decides_what_each_unopened_envelope_means(
    exc: ProtocolError, sender: tuple[str, str] | None, waited: bool, then: Opened, text: str | None
) -> None:
    decision = envelope_failed(CID, exc, seq=7, sender=sender, waited=waited)
    assert decision.then is then
    expected = None if text is None else NoticeEvent(CID, exc.code, text.format(exc=exc))
    assert decision.notice == expected


def test_a_parked_message_waits_and_parked_mail_never_does() -> None:
    record = ConversationRecord(CID, "room")
    assert park(record, b"m", 1, 3, waiting=True).waiting
    assert not park(record, b"r", 1, None, waiting=True).waiting
    assert not park(record, b"n", 1, 4, waiting=False).waiting
    assert [p.seq for p in record.pending] == [3, None, 4]


def test_an_untrusted_message_is_kept_holding_none_back_and_counted_seen() -> None:
    record = ConversationRecord(CID, "room", cursor=2)
    untrusted(record, b"m", 5, 3)
    assert record.pending == [PendingItem(b"m", 5, 3, waiting=False)]
    assert record.cursor == 3


def retry_pass(
    pending: list[PendingItem], still_missing: set[int | None], *, give_up: bool = False
) -> tuple[list[int | None], list[int | None], list[int | None]]:
    """One ``Retry`` pass where the envelopes of ``still_missing`` park again: what was
    tried, in order; what was shown; what is parked after, and waiting."""
    record = ConversationRecord(CID, "room", pending=list(pending))
    tried, shown = [], []
    retry = Retry(record, give_up=give_up)
    for item, waiting in retry:
        tried.append(item.seq)
        if item.seq in still_missing:
            retry.parked(park(record, item.envelope, item.server_time, item.seq, waiting=waiting))
        else:
            shown.append(item.seq)
    return tried, shown, [p.seq for p in record.pending if p.waiting]


def waiting_items(*seqs: int | None) -> list[PendingItem]:
    return [PendingItem(b"e", 0, seq, waiting=seq is not None) for seq in seqs]


def test_parked_envelopes_are_tried_in_seq_order_mail_first() -> None:
    tried, shown, _ = retry_pass(waiting_items(5, None, 3, 4), set())
    assert tried == shown == [None, 3, 4, 5]


def test_a_message_still_waiting_keeps_the_later_ones_parked_untried_but_not_mail() -> None:
    tried, shown, waiting = retry_pass([*waiting_items(4, 3, 5), PendingItem(b"r", 0, None)], {3})
    assert tried == [None, 3]
    assert shown == [None]
    assert waiting == [3, 4, 5]


def test_giving_up_shows_what_opens_and_parks_the_rest_waiting_no_more() -> None:
    tried, shown, waiting = retry_pass(waiting_items(3, 4, 5), {3}, give_up=True)
    assert tried == [3, 4, 5]
    assert shown == [4, 5]
    assert waiting == []


def test_an_untrusted_retry_stays_parked_not_waiting_and_blocks_nothing() -> None:
    record = ConversationRecord(CID, "room", pending=waiting_items(3, 4))
    retry = Retry(record)
    tried = []
    for item, _ in retry:
        tried.append(item.seq)
        if item.seq == 3:
            retry.untrusted(item)
    assert tried == [3, 4]
    assert [(p.seq, p.waiting) for p in record.pending] == [(3, False)]


# -- receipts ------------------------------------------------------------------------------


def outgoing(message_id: str, seq: int | None) -> StoredMessage:
    return StoredMessage(message_id, "usr-r", "laptop", "hi", NOW, NOW, seq, 0, 0, True)


def test_a_receipt_marks_each_message_once_per_user_and_kind_read_winning() -> None:
    a, b = "aa" * 16, "bb" * 16
    record = ConversationRecord(CID, "room")
    for message in (outgoing(a, 4), outgoing(b, None)):
        record.add_history(message)
    incoming = StoredMessage("cc" * 16, "usr-s", "phone", "x", NOW, NOW, 5, 0, 0, False)
    record.add_history(incoming)
    ids = (bytes.fromhex(a), bytes.fromhex(b), bytes.fromhex("cc" * 16))
    delivered, read = Receipt(Receipt.DELIVERED, ids), Receipt(Receipt.READ, ids)
    assert apply_receipt(record, "usr-s", delivered) == ((a, b), (4,))
    assert apply_receipt(record, "usr-s", delivered) == ((), ())
    assert apply_receipt(record, "usr-s", read) == ((a, b), (4,))
    assert apply_receipt(record, "usr-s", delivered) == ((), ())  # read stays read
    assert apply_receipt(record, "usr-t", read) == ((a, b), (4,))  # another user
    assert incoming.receipts == {}


def test_receipts_go_in_contents_of_at_most_receipt_ids() -> None:
    ids = [i.to_bytes(16, "big") for i in range(RECEIPT_IDS + 1)]
    out = receipt_contents({(CID, "usr-s"): ids, ("dm-1", "usr-t"): ids[:1]}, read=False)
    assert [(c, u, len(r.message_ids), r.kind) for c, u, r in out] == [
        (CID, "usr-s", RECEIPT_IDS, Receipt.DELIVERED),
        (CID, "usr-s", 1, Receipt.DELIVERED),
        ("dm-1", "usr-t", 1, Receipt.DELIVERED),
    ]
    assert [m for _, _, r in out[:2] for m in r.message_ids] == ids
    assert {r.kind for _, _, r in receipt_contents({(CID, "u"): ids}, read=True)} == {Receipt.READ}


# -- any order of arrival ------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """A key distribution: ``opens`` its session (by prekey) or comes over it."""

    mail_id: str
    session: int
    chain: int
    opens: bool


@dataclass
class FakeEngine:
    """The engine's outcomes, without crypto: sessions opened, chains installed."""

    sessions: set[int] = field(default_factory=set)
    chains: set[int] = field(default_factory=set)

    def receive_distribution(self, d: Dist) -> None:
        if d.chain in self.chains:
            raise ReplayedMessage()
        if not d.opens and d.session not in self.sessions:
            raise UnknownSession(SENDER, d.session.to_bytes(16, "big"))
        self.sessions.add(d.session)
        self.chains.add(d.chain)

    def receive_envelope(self, chain: int) -> None:
        if chain not in self.chains:
            raise UnknownChain()


@dataclass
class Device:
    """The Messenger's receive path in miniature over the pure rules (``_receive``,
    ``_distribution``, ``_retry_held``, ``_retry_pending``, ``_message_item``)."""

    dists: dict[str, Dist]
    chain_of: dict[int, int]  # seq -> chain
    engine: FakeEngine = field(default_factory=FakeEngine)
    record: ConversationRecord = field(default_factory=lambda: ConversationRecord(CID, "room"))
    seen_mail: set[str] = field(default_factory=set)
    shown: list[int] = field(default_factory=list)
    asked: list[tuple[bool, bytes]] = field(default_factory=list)  # (in a complete sync, id)

    def distribution(self, d: Dist, asks: list[bytes], *, final: bool, complete: bool) -> None:
        try:
            self.engine.receive_distribution(d)
        except ProtocolError as exc:
            decision = key_failed(CID, exc, None, final=final)
            if decision.then is Key.HOLD:
                hold(self.record, d.mail_id.encode())
            elif decision.then is Key.ASK:
                asks.append(decision.session_id)
            else:
                assert decision.then is Key.IGNORE, decision
            return
        self.retry()

    def open(self, seq: int, *, waiting: bool) -> PendingItem | None:
        try:
            self.engine.receive_envelope(self.chain_of[seq])
        except ProtocolError as exc:
            decision = envelope_failed(CID, exc, seq=seq, sender=SENDER, waited=False)
            assert decision.then is Opened.PARK
            return park(self.record, seq.to_bytes(4, "big"), 0, seq, waiting=waiting)
        self.shown.append(seq)
        return None

    def retry(self, *, give_up: bool = False) -> None:
        retry = Retry(self.record, give_up=give_up)
        for item, waiting in retry:
            assert item.seq is not None
            parked = self.open(item.seq, waiting=waiting)
            if parked is not None:
                retry.parked(parked)

    def receive(self, mail: list[str], seqs: list[int], *, complete: bool) -> None:
        asks: list[bytes] = []
        for mail_id in mail:
            if mail_id not in self.seen_mail:
                self.seen_mail.add(mail_id)
                self.distribution(self.dists[mail_id], asks, final=False, complete=complete)
        for seq in seqs:
            waiting = sum(1 for p in self.record.pending if p.waiting)
            decision = delivery.arrival(self.record, seq, waiting)
            if decision is delivery.Arrival.HAD:
                continue
            if decision is delivery.Arrival.RELEASE:
                self.retry(give_up=True)
            if decision is delivery.Arrival.HOLD:
                park(self.record, seq.to_bytes(4, "big"), 0, seq, waiting=True)
            else:
                self.open(seq, waiting=True)
            self.record.mark_seen(seq)
        for final in held_rounds({CID: self.record}, complete=complete):
            held, self.record.held_keys = self.record.held_keys, []
            for data in held:
                dist = self.dists[data.decode()]
                self.distribution(dist, asks, final=final, complete=complete)
        if complete and any(p.waiting for p in self.record.pending):
            self.retry(give_up=True)
        for session_id in asks:
            if ask_due(self.record, SENDER, NOW):
                self.asked.append((complete, session_id))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Dist], dict[int, int], list[list[str]], set[str]]:
    """Sessions, each opened by one distribution and used by later ones (a chain each,
    one message per chain); the pushes that came (any order, repeated); what was lost."""
    dists: list[Dist] = []
    for session in range(draw(st.integers(1, 3))):
        for n in range(draw(st.integers(1, 4))):
            dists.append(Dist(f"d{len(dists)}", session, len(dists), opens=n == 0))
    chain_of = {seq: d.chain for seq, d in enumerate(dists, start=1)}
    ids = [d.mail_id for d in dists]
    pushed = draw(st.lists(st.sampled_from(ids), max_size=2 * len(ids)))
    cuts = sorted(draw(st.lists(st.integers(0, len(pushed)), max_size=3)))
    batches = [pushed[a:b] for a, b in zip([0, *cuts], [*cuts, len(pushed)], strict=True)]
    lost = draw(st.sets(st.sampled_from(ids), max_size=2))
    return dists, chain_of, batches, lost


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_any_order_asks_nothing_before_a_complete_sync_and_tries_every_held_key(
    scenario: tuple[list[Dist], dict[int, int], list[list[str]], set[str]], data: st.DataObject
) -> None:
    dists, chain_of, batches, lost = scenario
    device = Device({d.mail_id: d for d in dists}, chain_of)
    for batch in batches:  # pushes: the messages come in the sync (a gap, or lost pushes)
        device.receive([m for m in batch if m not in lost], [], complete=False)
        assert device.asked == [], "asked for a key before a complete sync"
    # The sync: the mail not acknowledged yet, in any order (equal server times), in pages.
    left = [d.mail_id for d in dists if d.mail_id not in lost | device.seen_mail]
    page = data.draw(st.permutations(left))
    split = data.draw(st.integers(0, len(page)))
    seqs = sorted(chain_of)
    device.receive(page[:split], [], complete=False)
    assert device.asked == []
    device.receive(page[split:], seqs, complete=True)

    assert device.record.held_keys == [], "a held key was not tried after a complete sync"
    readable = {
        seq
        for seq, chain in chain_of.items()
        if dists[chain].mail_id not in lost
        and not any(
            d.opens and d.session == dists[chain].session for d in dists if d.mail_id in lost
        )
    }
    assert device.shown == sorted(readable), "shown: once, in seq order, all that can open"
    lost_sessions = {
        d.session
        for d in dists
        if d.mail_id not in lost
        and not d.opens
        and any(o.opens and o.session == d.session and o.mail_id in lost for o in dists)
    }
    # One ask per sender device and interval, naming a session whose opener was lost.
    assert len(device.asked) == (1 if lost_sessions else 0)
    assert all(complete for complete, _ in device.asked)
    assert {int.from_bytes(s, "big") for _, s in device.asked} <= lost_sessions
    assert not any(p.waiting for p in device.record.pending)
