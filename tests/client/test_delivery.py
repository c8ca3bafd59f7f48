"""The delivery rules (``sotto.client.delivery``) in memory, against a fake server.

Like h11's ConnectionPair: devices built from the pure rules and the real
``ConversationRecord`` talk to an in-memory server that stores each
conversation's messages by seq, pushes them (dropped, repeated, reordered at
will), serves sync pages from the device's acknowledged cursors, and loses
acks. A device saves its records (as JSON, the way the store does) before it
acknowledges or hands anything out, and a crash throws away everything it had
not saved (what it saved but had not handed out it shows from its history when
it is reopened, as the soak counts it). Whatever the schedule, each device
shows every message of every conversation once and in seq order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.client import delivery
from sotto.client.delivery import ACK_LIMITS, Arrival, ack_frames, arrival, behind, following
from sotto.client.store import ConversationRecord, PendingItem

Frame = dict[str, Any]
PAGE = 3  # messages per sync page: small, so catch-ups take several pages


@dataclass
class FakeServer:
    """Conversations' messages by seq; per device the acknowledged cursors."""

    messages: dict[str, list[Frame]] = field(default_factory=dict)
    acked: dict[str, dict[str, int]] = field(default_factory=dict)

    def store(self, cid: str, server_time: int) -> Frame:
        log = self.messages.setdefault(cid, [])
        frame = {"conversation_id": cid, "seq": len(log) + 1, "server_time": server_time}
        log.append(frame)
        return frame

    def sync_page(self, device: str, after: dict[str, int]) -> tuple[list[Frame], dict[str, int]]:
        """Up to PAGE messages above the cursors, and the seq each conversation was read to."""
        cursors = {**self.acked.get(device, {}), **after}
        page: list[Frame] = []
        through: dict[str, int] = {}
        for cid, log in sorted(self.messages.items()):
            for frame in log[cursors.get(cid, 0) :]:
                if len(page) == PAGE:
                    return page, through
                page.append(dict(frame))
                through[cid] = frame["seq"]
        return page, through

    def ack(self, device: str, fields: Frame) -> None:
        assert len(fields["cursors"]) <= ACK_LIMITS["cursors"]
        mine = self.acked.setdefault(device, {})
        for cid, cursor in fields["cursors"].items():
            mine[cid] = max(mine.get(cid, 0), cursor)


class Crashed(Exception):
    pass


@dataclass
class Device:
    """A device of the pure rules: records saved as JSON, shown what it handed out."""

    name: str
    server: FakeServer
    rng: random.Random
    crash_rate: float = 0.0
    ack_loss_rate: float = 0.0
    saved: dict[str, Frame] = field(default_factory=dict)
    # Opened and saved with the records (the history), not yet handed out.
    saved_history: list[tuple[str, int]] = field(default_factory=list)
    records: dict[str, ConversationRecord] = field(default_factory=dict)
    shown: dict[str, list[int]] = field(default_factory=dict)
    pushes: list[Frame] = field(default_factory=list)

    def _record(self, cid: str) -> ConversationRecord:
        return self.records.setdefault(cid, ConversationRecord(cid, "room"))

    def _maybe_crash(self) -> None:
        if self.rng.random() < self.crash_rate:
            self.records = {  # the process died: what is on disk is what it has
                cid: ConversationRecord.from_json(data) for cid, data in self.saved.items()
            }
            self.pushes.clear()  # and its socket with it
            # Reopened, it shows from its history what it saved but never handed out.
            for cid, seq in self.saved_history:
                self.shown.setdefault(cid, []).append(seq)
            self.saved_history = []
            raise Crashed

    def _process(self, items: list[Frame]) -> list[tuple[str, int]]:
        opened: list[tuple[str, int]] = []
        for is_message, item in delivery.receive_order([], items):
            assert is_message
            cid, seq = item["conversation_id"], item["seq"]
            record = self._record(cid)
            if arrival(record, seq, 0) is Arrival.OPEN:
                opened.append((cid, seq))
                record.mark_seen(seq)
        return opened

    def _save_ack_hand_out(self, opened: list[tuple[str, int]]) -> None:
        self._maybe_crash()  # before the save: nothing of this batch happened
        self.saved = {cid: r.to_json() for cid, r in self.records.items()}
        self.saved_history = list(opened)
        self._maybe_crash()  # saved, not acknowledged: the server sends it again
        cursors = {cid: r.cursor for cid, r in self.records.items() if r.cursor > r.acked}
        for fields in ack_frames(cursors, [], []):
            if self.rng.random() >= self.ack_loss_rate:
                self.server.ack(self.name, fields)
        for cid, r in self.records.items():
            r.acked = max(r.acked, cursors.get(cid, 0))
        self.saved_history = []
        for cid, seq in opened:
            self.shown.setdefault(cid, []).append(seq)

    def sync(self) -> None:
        after: dict[str, int] = {}
        while True:
            page, through = self.server.sync_page(self.name, after)
            opened = self._process(page)
            for cid, seq in through.items():
                self._record(cid).advance(seq)
                after[cid] = seq
            if len(page) < PAGE:
                for record in self.records.values():
                    record.settle(record.cursor)
            self._save_ack_hand_out(opened)
            if len(page) < PAGE:
                return

    def poll(self) -> None:
        batch, self.pushes = self.pushes, []
        ready, gap = following(batch, self.records)
        self._save_ack_hand_out(self._process(ready))
        if behind(self.records.values(), gap=gap, needs_sync=False):
            self.sync()

    def step(self, action: str) -> None:
        try:
            self.poll() if action == "poll" else self.sync()
        except Crashed:
            self.sync_after_restart()

    def sync_after_restart(self) -> None:
        while True:
            try:
                self.sync()  # a reopened device syncs before it hands out a push
                return
            except Crashed:
                continue


def deliver(server: FakeServer, devices: list[Device], frame: Frame, rng: random.Random) -> None:
    for device in devices:
        roll = rng.random()
        if roll < 0.2:
            continue  # the push was lost
        copies = 2 if roll > 0.9 else 1  # or it came twice
        for _ in range(copies):
            device.pushes.insert(rng.randrange(len(device.pushes) + 1), dict(frame))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    sends=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=40),
    crash_rate=st.sampled_from([0.0, 0.05, 0.2]),
    ack_loss_rate=st.sampled_from([0.0, 0.3]),
)
def test_every_message_is_shown_once_and_in_order_whatever_the_network_does(
    seed: int, sends: list[str], crash_rate: float, ack_loss_rate: float
) -> None:
    rng = random.Random(seed)
    server = FakeServer()
    devices = [
        Device(f"d{i}", server, random.Random(seed + i), crash_rate, ack_loss_rate)
        for i in range(2)
    ]
    for clock, cid in enumerate(sends):
        # Server times may cross seqs (stamped before the seq is given).
        frame = server.store(cid, server_time=1000 + clock * 10 - rng.randrange(15))
        deliver(server, devices, frame, rng)
        for device in devices:
            if rng.random() < 0.5:
                device.step(rng.choice(["poll", "poll", "sync"]))
    for device in devices:
        device.crash_rate = 0.0
        device.step("poll")
        device.step("sync")
        for cid, log in server.messages.items():
            assert device.shown.get(cid, []) == list(range(1, len(log) + 1)), (device.name, cid)


def test_a_push_above_a_gap_is_left_for_the_sync() -> None:
    record = ConversationRecord("c", "room", cursor=4)
    pushes = [{"conversation_id": "c", "seq": s} for s in (7, 5, 5)]
    ready, gap = following(pushes, {"c": record})
    assert [p["seq"] for p in ready] == [5]
    assert gap


def test_pushes_for_seqs_already_seen_are_left_out() -> None:
    record = ConversationRecord("c", "room", cursor=4, seen={6})
    pushes = [{"conversation_id": "c", "seq": s} for s in (4, 5, 6, 7)]
    ready, gap = following(pushes, {"c": record})
    assert [p["seq"] for p in ready] == [5, 7]
    assert not gap


def test_hostile_seqs_are_never_ready() -> None:
    pushes = [{"conversation_id": "c", "seq": s} for s in (True, "1", None, 1.0)]
    assert following(pushes, {}) == ([], False)


def test_a_message_behind_a_waiting_one_is_held_until_max_held() -> None:
    record = ConversationRecord("c", "room", cursor=1)
    assert arrival(record, 1, 0) is Arrival.HAD
    assert arrival(record, 2, 0) is Arrival.OPEN
    assert arrival(record, 3, 1) is Arrival.HOLD
    assert arrival(record, 3, delivery.MAX_HELD) is Arrival.RELEASE


def test_anything_held_or_missing_calls_for_a_sync() -> None:
    quiet = ConversationRecord("c", "room", cursor=3)
    assert not behind([quiet], gap=False, needs_sync=False)
    assert behind([quiet], gap=True, needs_sync=False)
    assert behind([quiet], gap=False, needs_sync=True)
    assert behind([ConversationRecord("c", "room", seen={5})], gap=False, needs_sync=False)
    held = ConversationRecord("c", "room", held_keys=[b"k"])
    assert behind([held], gap=False, needs_sync=False)
    waiting = ConversationRecord("c", "room", pending=[PendingItem(b"e", 0, 4, waiting=True)])
    assert behind([waiting], gap=False, needs_sync=False)
    parked = ConversationRecord("c", "room", pending=[PendingItem(b"e", 0, 4, waiting=False)])
    assert not behind([parked], gap=False, needs_sync=False)


@given(
    cursors=st.dictionaries(
        st.text("abc", min_size=1, max_size=4), st.integers(0, 99), max_size=250
    ),
    mail=st.integers(0, 1300),
    read=st.integers(0, 450),
)
def test_acks_stay_within_the_server_limits_and_name_everything_once(
    cursors: dict[str, int], mail: int, read: int
) -> None:
    mail_ids = [f"m{i}" for i in range(mail)]
    reads = [{"conversation_id": "c", "seq": i} for i in range(read)]
    frames = ack_frames(cursors, mail_ids, reads)
    if not (cursors or mail_ids or reads):
        assert frames == []
        return
    for fields in frames:
        assert len(fields["mail"]) <= ACK_LIMITS["mail"]
        assert len(fields["read"]) <= ACK_LIMITS["read"]
        assert len(fields["cursors"]) <= ACK_LIMITS["cursors"]
    assert [m for f in frames for m in f["mail"]] == mail_ids
    assert [r for f in frames for r in f["read"]] == reads
    joined: dict[str, int] = {}
    for fields in frames:
        assert not set(joined) & set(fields["cursors"])
        joined |= fields["cursors"]
    assert joined == cursors
