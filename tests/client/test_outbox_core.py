"""The send rules (``sotto.client.outbox``) in memory: no server, no clock, no socket.

What a refusal means is one table: every error code docs/api.md lists, for the
``send`` and the ``distribute`` it can refuse, in a live send and in a flush of
the outbox. A hypothesis run then plays sequences of refusals through the
rules the way the ``Messenger`` applies them (``Device`` below, its send path
in miniature) and finds every message sent, kept for the next command, raised
to the caller of its live send, or named in a notice: never lost without a
word. Last, the frames a prepared message needs: chunked at the server's limit,
the same bytes on every try.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.client.encoding import b64d
from sotto.client.events import NoticeEvent
from sotto.client.outbox import (
    DISTRIBUTIONS_PER_FRAME,
    MAX_SEND_ATTEMPTS,
    RETRY_LATER,
    Decision,
    Mode,
    Then,
    confirm,
    distribute_frames,
    expired,
    refused,
    resend_after,
    send_fields,
    timers_left,
    unsent_notice,
    withdraw,
)
from sotto.client.store import ConversationRecord, OutboxItem, StoredMessage
from sotto.frames.answers import SentAnswer
from sotto.protocol.content import Receipt, Text, parse_content
from sotto.protocol.conversation import Conversation, LocalDevice, Member, MessageTimers
from sotto.protocol.envelope import Envelope
from sotto.protocol.safety import IdentityTracker
from sotto_server.logic.errors import ErrorCode
from tests.protocol.helpers import NOW, drbg, make_party

CID = "room-0123456789abcdef01234567"
FRAME_MS = 600  # each frame's round trip: a message can expire between two of them
DOCS = Path(__file__).parents[2] / "docs" / "api.md"


def documented_codes() -> list[str]:
    """The codes of docs/api.md's error table (WebSocket section)."""
    text = DOCS.read_text()
    table = text[text.index("| code | meaning |") : text.index("### Answers in parts")]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)


@functools.cache
def envelope(expires_in_ms: int = 0) -> bytes:
    """A real envelope of one sender to one other device (``confirm`` reads its timers)."""
    alice, bob = make_party("usr-a"), make_party("usr-b")
    local = LocalDevice(alice.device, alice.identity_public, IdentityTracker())
    engine = Conversation(CID, local, rng=drbg("outbox"))
    engine.set_members([Member(p.certificate, p.identity_public) for p in (alice, bob)], now=NOW)
    timers = MessageTimers(expires_in_ms=expires_in_ms)
    sent = engine.prepare_send(
        Text("hi"), now=NOW, prekeys={bob.address: bob.prekey()}, timers=timers
    )
    return sent.envelope


def item_of(
    text: str = "hello",
    *,
    message_id: str = "ab" * 16,
    expires_at: int = 0,
    distributions: int = 3,
    to_user: str | None = None,
    content: bytes | None = None,
) -> OutboxItem:
    return OutboxItem(
        conversation_id=CID,
        message_id=message_id,
        envelope=envelope(),
        chain_id=bytes(16),
        distributions=[i.to_bytes(4, "big") * 8 for i in range(distributions)],
        to_user=to_user,
        content=Text(text).serialize() if content is None else content,
        expires_at=expires_at,
    )


# -- what a refusal means ----------------------------------------------------------

# Per code: (send refused live, send refused in a flush, distribute refused live,
# distribute refused in a flush), on a first attempt of a message that can be prepared
# again and has not expired. "roster": prepared again after the roster's repair;
# "restored": prepared again after dropping the restored keystore's chains.
TABLE: dict[str, tuple[str, str, str, str]] = {
    "bad_json": ("refused", "refused", "roster", "roster"),
    "unknown_action": ("refused", "refused", "roster", "roster"),
    "bad_request": ("refused", "refused", "roster", "roster"),
    "invalid_certificate": ("refused", "refused", "roster", "roster"),
    "not_found": ("refused", "refused", "roster", "roster"),
    "forbidden": ("refused", "refused", "roster", "roster"),
    # distribute: a distribution for a device outside the roster
    "invalid_envelope": ("refused", "refused", "roster", "roster"),
    "invalid_operation": ("refused", "refused", "roster", "roster"),
    "stale_devices": ("roster", "roster", "roster", "roster"),
    "rolled_back": ("restored", "restored", "restored", "restored"),
    # May pass: a flush keeps it; a live send raises it. A limited new chain is no
    # moved roster (a live send used to rotate and hit the chain limit again).
    "conflict": ("refused", "keep", "refused", "keep"),
    "rate_limited": ("refused", "keep", "refused", "keep"),
    "internal_error": ("refused", "keep", "refused", "keep"),
    # The device lost its standing: nothing to repair (a live send used to read the
    # roster again over a socket the server closes).
    "revoked": ("refused", "refused", "refused", "refused"),
    "suspended": ("refused", "refused", "refused", "refused"),
    "policy_violation": ("refused", "refused", "roster", "roster"),
    "too_large": ("refused", "refused", "roster", "roster"),
    "incomplete_upload": ("refused", "refused", "roster", "roster"),
    "gone": ("refused", "refused", "roster", "roster"),
}
DECISIONS = {
    "refused": Decision(Then.REFUSED),
    "keep": Decision(Then.KEEP),
    "roster": Decision(Then.AGAIN, roster_moved=True),
    "restored": Decision(Then.AGAIN, restored=True),
}
CASES = [
    ("send", Mode.LIVE),
    ("send", Mode.FLUSH),
    ("distribute", Mode.LIVE),
    ("distribute", Mode.FLUSH),
]


def test_the_table_names_every_code_the_server_documents_and_has() -> None:
    assert set(documented_codes()) == {str(code) for code in ErrorCode}
    assert sorted(TABLE) == sorted(documented_codes())


@pytest.mark.parametrize("code", sorted(TABLE))
@pytest.mark.parametrize(("case"), range(4), ids=[f"{a}-{m.value}" for a, m in CASES])
def test_client_decides_each_documented_refusal_once_for_live_and_flush(
    code: str, case: int
) -> None:
    action, mode = CASES[case]
    decision = refused(item_of(), code=code, action=action, mode=mode, attempt=0, now=NOW)
    assert decision == DECISIONS[TABLE[code][case]]


@pytest.mark.parametrize("code", ["stale_devices", "rolled_back"])
def test_client_live_send_prepares_again_at_most_max_attempts_times(code: str) -> None:
    thens = [
        refused(item_of(), code=code, action="send", mode=Mode.LIVE, attempt=a, now=NOW).then
        for a in range(MAX_SEND_ATTEMPTS)
    ]
    assert thens == [Then.AGAIN] * (MAX_SEND_ATTEMPTS - 1) + [Then.REFUSED]
    # The restored keystore is dropped even on the last one: every next send would fail.
    last = refused(item_of(), code=code, action="send", mode=Mode.LIVE, attempt=9, now=NOW)
    assert last.restored is (code == "rolled_back")


def test_client_flush_names_an_expired_message_instead_of_preparing_it_again() -> None:
    item = item_of(expires_at=NOW)
    assert expired(item, NOW)
    assert not expired(item, NOW - 1)
    assert not expired(item_of(), NOW)
    stale = refused(item, code="stale_devices", action="send", mode=Mode.FLUSH, attempt=0, now=NOW)
    assert stale == Decision(Then.EXPIRED, roster_moved=True)
    # Live: the message was prepared just now, its expiry is its own.
    live = refused(item, code="stale_devices", action="send", mode=Mode.LIVE, attempt=0, now=NOW)
    assert live.then is Then.AGAIN
    # Kept: the next flush's own check says it expired.
    limited = refused(item, code="rate_limited", action="send", mode=Mode.FLUSH, attempt=0, now=NOW)
    assert limited.then is Then.KEEP


def test_client_flush_names_a_message_it_cannot_prepare_again() -> None:
    """An older version's outbox kept no content: it used to be dropped without a word."""
    legacy = item_of(content=b"")
    decision = refused(
        legacy, code="stale_devices", action="send", mode=Mode.FLUSH, attempt=0, now=NOW
    )
    assert decision.then is Then.REFUSED
    notice = unsent_notice(legacy, decision.then, "stale_devices", "send failed")
    assert notice == NoticeEvent(
        CID, "stale_devices", "a message prepared earlier was not sent: send failed"
    )


def test_client_notice_quotes_the_start_of_the_message_it_names() -> None:
    long = item_of("a  long\nline " + "x" * 80)
    notice = unsent_notice(long, Then.EXPIRED)
    assert notice.code == "expired"
    assert (
        notice.detail
        == f'a message prepared earlier ("a long line {"x" * 27}\u2026") expired unsent'
    )
    receipt = item_of(content=Receipt(Receipt.READ, (bytes(16),)).serialize())
    assert unsent_notice(receipt, Then.REFUSED, "forbidden", "no").detail.startswith("a receipt ")
    with pytest.raises(ValueError, match="not lost"):
        unsent_notice(long, Then.KEEP)


def test_client_prepares_again_with_what_was_left_of_the_expiry() -> None:
    item = item_of(expires_at=NOW + 5000)
    item.burn_after_read_s = 30
    assert timers_left(item, NOW + 1000) == MessageTimers(expires_in_ms=4000, burn_after_read_s=30)
    assert timers_left(item_of(), NOW) == MessageTimers()


# -- never lost without a word -----------------------------------------------------


@dataclass
class Refusal(Exception):
    code: str
    action: str


@dataclass
class Device:
    """The Messenger's send path in miniature, over the pure rules: ``send`` and
    ``flush`` as ``Messenger.send`` and ``Messenger.flush_outbox`` apply them, against a
    server that refuses each frame as the script says (then accepts everything)."""

    script: list[tuple[str, str] | None]
    now: int = NOW
    record: ConversationRecord = field(default_factory=lambda: ConversationRecord(CID, "room"))
    stored: list[str] = field(default_factory=list)  # texts the server stored, in order
    raised: list[str] = field(default_factory=list)  # texts whose live send raised
    notices: list[NoticeEvent] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    frames: int = 0  # frames sent, to bound the work a refusal can cause

    def _refusal(self, action: str) -> None:
        self.frames += 1
        self.now += FRAME_MS
        step = self.script.pop(0) if self.script else None
        if step is not None and step[1] == action:
            raise Refusal(*step)

    def _deliver(self, item: OutboxItem) -> None:
        for _ in distribute_frames(item):
            self._refusal("distribute")
        item.distributed = True
        self._refusal("send")
        answer: SentAnswer = {
            "action": "sent",
            "id": None,
            "conversation_id": CID,
            "message_id": item.message_id,
            "server_time": self.now,
            "seq": len(self.stored) + 1,
        }
        self.stored.append(text_of(item))
        confirm(self.record, item, answer)

    def _prepare(self, text: str, expires_in_ms: int, legacy: bool) -> OutboxItem:
        item = item_of(
            text,
            message_id=f"{next(self.ids):032x}",
            expires_at=self.now + expires_in_ms if expires_in_ms else 0,
            content=b"" if legacy else None,
        )
        item.files = [text]  # the test's own label: which message an item was
        self.record.outbox.append(item)
        return item

    def send(self, text: str, expires_in_ms: int = 0) -> None:
        try:
            for attempt in range(MAX_SEND_ATTEMPTS):
                item = self._prepare(text, expires_in_ms, legacy=False)
                try:
                    return self._deliver(item)
                except Refusal as exc:
                    decision = refused(
                        item,
                        code=exc.code,
                        action=exc.action,
                        mode=Mode.LIVE,
                        attempt=attempt,
                        now=self.now,
                    )
                    if decision.then is not Then.KEEP:
                        withdraw(self.record, item)
                    if decision.then is not Then.AGAIN:
                        raise
            raise AssertionError("unreachable")
        except Refusal:
            self.raised.append(text)
            raise

    def flush(self) -> None:
        for item in list(self.record.outbox):
            if expired(item, self.now):
                withdraw(self.record, item)
                self.notices.append(unsent_notice(item, Then.EXPIRED))
                continue
            try:
                self._deliver(item)
            except Refusal as exc:
                decision = refused(
                    item, code=exc.code, action=exc.action, mode=Mode.FLUSH, attempt=0, now=self.now
                )
                if decision.then is Then.KEEP:
                    return  # the refusal goes up: this command ends, the outbox stays
                withdraw(self.record, item)
                if decision.then is not Then.AGAIN:
                    self.notices.append(unsent_notice(item, decision.then, exc.code, "refused"))
                    continue
                assert item.content, "prepared again from nothing: lost without a word"
                content = parse_content(item.content)
                assert isinstance(content, Text)
                try:
                    left = timers_left(item, self.now).expires_in_ms
                    assert left > 0 or not item.expires_at, "prepared again after its expiry"
                    self.send(content.text, left)
                except Refusal as again:
                    self.notices.append(unsent_notice(item, Then.REFUSED, again.code, "refused"))
                    self.raised.remove(content.text)  # the notice names it, not the error
                    return


def text_of(item: OutboxItem) -> str:
    return item.files[0]


CODES = sorted(TABLE)
steps = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(CODES), st.sampled_from(["send", "distribute"])),
)
commands = st.lists(
    st.tuples(
        st.sampled_from(["send", "crash", "flush", "wait"]),
        st.sampled_from([0, 1000, 1500, 5000]),  # expiry, ms
        st.booleans(),  # prepared by an older version that kept no content
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(script=st.lists(steps, max_size=60), commands=commands)
def test_every_message_is_sent_kept_or_named_never_lost_without_a_word(
    script: list[tuple[str, str] | None], commands: list[tuple[str, int, bool]]
) -> None:
    device = Device(list(script))
    texts: list[str] = []
    for index, (command, expiry, legacy) in enumerate(commands):
        text = f"m{index}"
        if command == "send":
            texts.append(text)
            with contextlib.suppress(Refusal):  # raised: the caller is told (``raised``)
                device.send(text, expiry)
        elif command == "crash":  # prepared and saved, the answer never came
            texts.append(text)
            device._prepare(text, expiry, legacy)
        elif command == "flush":
            device.flush()
        else:
            device.now += 2000
    device.script.clear()
    device.flush()
    assert device.record.outbox == []
    named = [n for n in device.notices if n.conversation_id == CID]
    for text in texts:
        fates = [
            device.stored.count(text),
            device.raised.count(text),
            sum(f'("{text}")' in n.detail for n in named),
            # a legacy item has no text to quote: its notice is the bare one, counted below
        ]
        assert sum(fates) <= 1, (text, fates)
    bare = sum('prepared earlier ("' not in n.detail for n in named)
    told = sum(text in device.stored or text in device.raised for text in texts)
    quoted = sum(any(f'("{text}")' in n.detail for n in named) for text in texts)
    assert told + quoted + bare == len(texts), (device.stored, device.raised, named)
    # Every refusal took a step of the script; then each message went in one try.
    assert device.frames <= len(script) + 2 * len(texts)  # a distribute and a send


# -- the frames a prepared message needs --------------------------------------------


@given(count=st.integers(0, 5 * DISTRIBUTIONS_PER_FRAME + 3))
def test_distributions_go_in_frames_at_the_limit_in_order(count: int) -> None:
    item = item_of(distributions=count)
    frames = distribute_frames(item)
    assert all(len(f["distributions"]) <= DISTRIBUTIONS_PER_FRAME for f in frames)
    assert all(len(f["distributions"]) == DISTRIBUTIONS_PER_FRAME for f in frames[:-1])
    assert len(frames) == -(-count // DISTRIBUTIONS_PER_FRAME)
    assert [b64d(d, "d") for f in frames for d in f["distributions"]] == item.distributions
    assert {f["chain_id"] for f in frames} <= {"AAAAAAAAAAAAAAAAAAAAAA"}
    assert all(f["conversation_id"] == CID for f in frames)


def test_distributions_go_once_and_the_send_is_the_same_bytes_every_time() -> None:
    item = item_of(distributions=DISTRIBUTIONS_PER_FRAME + 1, to_user="usr-b")
    item.files = ["obj-1"]
    first, again = distribute_frames(item), distribute_frames(OutboxItem.from_json(item.to_json()))
    assert first == again
    assert [len(f["distributions"]) for f in first] == [DISTRIBUTIONS_PER_FRAME, 1]
    fields = send_fields(item)
    assert fields == send_fields(OutboxItem.from_json(item.to_json()))
    assert b64d(fields["envelope"], "e") == item.envelope
    assert (fields["to_user"], fields["files"]) == ("usr-b", ["obj-1"])
    assert set(send_fields(item_of())) == {"conversation_id", "envelope"}
    item.distributed = True
    assert distribute_frames(item) == []


def test_a_conflicting_send_is_sent_again_a_few_times_then_raised() -> None:
    delays = [resend_after("conflict", attempt) for attempt in range(MAX_SEND_ATTEMPTS)]
    assert delays == [0.05, 0.1, None]
    assert all(resend_after(code, 0) is None for code in TABLE if code != "conflict")
    assert sorted(RETRY_LATER) == ["conflict", "internal_error", "rate_limited"]


# -- the answer applied ---------------------------------------------------------------


def history_line(item: OutboxItem) -> StoredMessage:
    return StoredMessage(item.message_id, "usr-a", "phone", "hello", NOW, None, None, 0, 0, True)


def test_a_sent_answer_takes_the_message_off_the_outbox_and_stamps_its_seq() -> None:
    record = ConversationRecord(CID, "room", cursor=4)
    item = item_of()
    record.outbox.append(item)
    record.add_history(history_line(item))
    answer: SentAnswer = {
        "action": "sent",
        "id": "r1",
        "conversation_id": CID,
        "message_id": item.message_id,
        "server_time": NOW + 9,
        "seq": 5,
    }
    sent = confirm(record, item, answer)
    assert (sent.seq, sent.server_time, sent.message_id) == (5, NOW + 9, item.message_id)
    assert record.outbox == []
    assert record.cursor == 5
    assert (record.history[0].seq, record.history[0].server_time) == (5, NOW + 9)
    assert confirm(record, item, answer) == sent  # answered twice: the same, nothing more


def test_a_mailbox_answer_marks_no_seq_and_delete_at_follows_the_envelope() -> None:
    record = ConversationRecord(CID, "room", cursor=4)
    item = item_of(to_user="usr-b")
    item.envelope = envelope(60_000)
    record.outbox.append(item)
    answer: SentAnswer = {
        "action": "sent",
        "id": None,
        "conversation_id": CID,
        "message_id": item.message_id,
        "server_time": NOW,
        "mailbox": True,
    }
    sent = confirm(record, item, answer)
    assert (sent.seq, record.cursor, record.seen, record.outbox) == (0, 4, set(), [])
    assert sent.delete_at == Envelope.parse(item.envelope).header.expires_at == NOW + 60_000


def test_a_withdrawn_message_leaves_the_outbox_and_the_history() -> None:
    record = ConversationRecord(CID, "room")
    item, other = item_of(), item_of(message_id="cd" * 16)
    record.outbox += [item, other]
    record.add_history(history_line(item))
    record.add_history(history_line(other))
    withdraw(record, item)
    withdraw(record, item)  # twice: nothing more
    assert record.outbox == [other]
    assert [m.message_id for m in record.history] == [other.message_id]
