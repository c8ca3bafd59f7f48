"""Two real Messengers (real profiles, real crypto) wired together by an in-memory server.

alice and bob each run the SDK's ``Messenger`` over ``fake_server.FakeServer``;
the faults are the network's and the process's: pushes dropped, duplicated
and reordered, an answer lost after the server applied the request, a device
dying between two steps and opened again from disk. Whatever happens, every
message the sender said is shown to the other side once, in seq order.

"Shown" is counted as ``bench/soak.py`` counts it: the message events handed
out, plus, when a dead device is opened again, what its history holds that
was never handed out (the backlog a person would see on screen).

The profiles keep the default Argon2id parameters: a device is opened again
only after a crash (one key derivation each).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sotto.client.encoding import b64e
from sotto.client.errors import ConnectionLost
from sotto.client.events import Event, MessageEvent, NoticeEvent
from sotto.client.messenger import Messenger
from sotto.client.messenger.core import MAX_RECONNECTS
from sotto.client.messenger.opening import _Batch
from sotto.client.profile import DeviceKeys, Profile, ProfileInfo
from sotto.client.server import ServerConfig
from sotto.client.store import PendingItem
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from tests.client.fake_server import Crash, FakeServer, PushFaults, Trip

PASSPHRASE = "correct horse battery"
ROUTINE_NOTICES = frozenset({"membership", "new_device"})
SERVER = ServerConfig(http="https://fake.invalid", websocket="wss://fake.invalid", audience="a/b")


class PairMessenger(Messenger):
    """A Messenger whose process can die: once its server says so, it writes nothing more.

    It counts the conversation messages it opens, in the device's count that outlives
    the process: a message the device has is de-duplicated by its seq, never opened
    again (the engine's replay check would hide a repeat), and what a process opened
    was saved before its next request (a crash there cannot make it open it again).
    """

    server: FakeServer
    opened: Counter[tuple[str, int]]

    def save(self) -> None:
        if self.info.device_id not in self.server.dead:
            super().save()

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
        if seq is not None and not waited:
            self.opened[cid, seq] += 1
        return super()._envelope(
            cid, data, server_time, seq, batch, read=read, waited=waited, waiting=waiting
        )


@dataclass(frozen=True)
class Shown:
    conversation_id: str
    sender_user_id: str
    seq: int | None
    text: str
    from_history: bool = False


@dataclass
class Device:
    """One person's only device: its profile on disk, its Messenger, what it showed."""

    server: FakeServer
    home: Path
    handle: str
    user_id: str = ""
    device_id: str = ""
    messenger: PairMessenger | None = None
    shown: list[Shown] = field(default_factory=list)
    notices: list[NoticeEvent] = field(default_factory=list)
    opened: Counter[tuple[str, int]] = field(default_factory=Counter)
    crashes: int = 0
    sent: list[str] = field(default_factory=list)  # texts whose send_text returned

    def enroll(self) -> None:
        """What enrollment leaves: a certified device in the directory, a profile on disk."""
        identity = IdentityKeyPair.generate()
        self.user_id, self.device_id = f"usr-{secrets.token_hex(8)}", f"dev-{secrets.token_hex(6)}"
        now = int(time.time() * 1000)
        device = DeviceSecrets.create(identity, self.user_id, self.device_id, now=now)
        self.server.add_device(
            self.user_id,
            self.handle,
            identity.public.serialize(),
            device.certificate.serialize(),
            device.current_signed_prekey().serialize(),
        )
        info = ProfileInfo(
            server=SERVER,
            network_id=self.server.network_id,
            user_id=self.user_id,
            device_id=self.device_id,
            handle=self.handle,
            created_at=now,
            holds_identity=True,
            identity_key=b64e(identity.public.serialize()),
        )
        with Profile.create(self.handle, self.home) as profile:
            profile.write_info(info)
            profile.save_keys(DeviceKeys(device, identity, 0), PASSPHRASE)  # one derivation
        self.open(profile)

    def open(self, profile: Profile | None = None) -> None:
        """A new process: the profile read from disk (a new ``Profile``: one derivation)."""
        self.server.dead.discard(self.device_id)
        profile = profile or Profile.open(self.handle, self.home)
        keys = profile.load_keys(PASSPHRASE)
        messenger = PairMessenger.open(
            profile,
            profile.read_info(),
            keys,
            PASSPHRASE,
            connect=self.server.connect(self.device_id),
        )
        messenger.server, messenger.opened = self.server, self.opened
        self.messenger = messenger

    @property
    def m(self) -> PairMessenger:
        assert self.messenger is not None
        return self.messenger

    def step(self, run: Callable[[PairMessenger], list[Event]]) -> bool:
        """Run one step; a crash opens the device again from disk. False if it crashed."""
        try:
            self.record(run(self.m))
            return True
        except Crash:
            self.crashes += 1
            self.messenger = None  # abandoned: no close, no final save
            self.open()
            self.recover()
            return False

    def send(self, to: Device | str, text: str) -> bool:
        """To the other person (their direct conversation) or into a conversation by id."""

        def run(m: PairMessenger) -> list[Event]:
            m.send_text(to if isinstance(to, str) else to.user_id, text)
            self.sent.append(text)
            return []

        return self.step(run)

    def poll(self) -> bool:
        return self.step(lambda m: m.poll(0))

    def sync(self) -> bool:
        return self.step(lambda m: m.sync())

    def record(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, MessageEvent) and not event.outgoing:
                shown = Shown(event.conversation_id, event.sender_user_id, event.seq, event.text)
                self.shown.append(shown)
            elif isinstance(event, NoticeEvent):
                self.notices.append(event)

    def recover(self) -> list[Shown]:
        """What the history holds that was never handed out (soak's ``_shown_from_history``)."""
        texts = {s.text for s in self.shown}
        backlog = sorted(
            (
                Shown(cid, stored.sender_user_id, stored.seq, stored.text, from_history=True)
                for cid, record in self.m.state.conversations.items()
                for stored in record.history
                if not stored.outgoing and stored.text not in texts
            ),
            key=lambda s: (s.conversation_id, s.seq or 0),
        )
        self.shown += backlog
        return backlog

    def said(self, cid: str | None = None) -> list[str]:
        """This device's own messages as the server ordered them (all confirmed by now)."""
        mine = [
            s
            for c, r in self.m.state.conversations.items()
            for s in r.history
            if s.outgoing and cid in (None, c)
        ]
        assert all(s.seq is not None for s in mine), "a message was never confirmed"
        return [s.text for s in sorted(mine, key=lambda s: s.seq or 0)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[FakeServer, Device, Device]]:
    server = FakeServer()
    alice, bob = Device(server, tmp_path, "alice"), Device(server, tmp_path, "bob")
    alice.enroll()
    bob.enroll()
    yield server, alice, bob
    for device in (alice, bob):
        if device.messenger is not None:
            device.messenger.close()


def settle(server: FakeServer, *devices: Device) -> None:
    """The network heals: no more faults; every device syncs until nothing moves."""
    server.trips.clear()
    server.push_faults.clear()
    for _ in range(3):
        for device in devices:
            assert device.sync()
            assert not device.m.state.outbox, "a prepared message was never sent"


def assert_once_in_order(receiver: Device, sender: Device, cid: str | None = None) -> None:
    """What ``sender`` said (in ``cid``, or anywhere) ``receiver`` showed once, in order; each
    conversation's messages shown in seq order, whoever sent them."""
    said = sender.said(cid)
    texts = [
        s.text
        for s in receiver.shown
        if s.sender_user_id == sender.user_id and cid in (None, s.conversation_id)
    ]
    assert texts == said, f"{receiver.handle} showed {texts}, {sender.handle} said {said}"
    kept = {s.text for s in receiver.shown}
    lost = [t for t in sender.sent if t not in kept]  # one conversation a test
    assert not lost, f"{sender.handle} sent {lost}, {receiver.handle} never showed them"
    for conversation in {s.conversation_id for s in receiver.shown}:
        seqs = [s.seq or 0 for s in receiver.shown if s.conversation_id == conversation]
        assert all(seqs)
        assert seqs == sorted(seqs), f"{receiver.handle} showed seqs out of order: {seqs}"
    twice = [key for key, count in receiver.opened.items() if count > 1]
    assert not twice, f"{receiver.handle} opened {twice} again"
    # A duplicate the engine refused to open again, a key that never came: none of it
    # (who created a room is news, as in the soak's ROUTINE_NOTICES).
    odd = [(n.code, n.detail) for n in receiver.notices if n.code not in ROUTINE_NOTICES]
    assert not odd, odd


def talk(alice: Device, bob: Device, rounds: int, label: str = "") -> None:
    """Both ways, each side polling its pushes after every message."""
    for n in range(rounds):
        assert alice.send(bob, f"{label}a{n}")
        bob.poll()
        assert bob.send(alice, f"{label}b{n}")
        alice.poll()


def test_a_conversation_both_ways_shows_every_message_once_in_order(
    pair: tuple[FakeServer, Device, Device],
) -> None:
    server, alice, bob = pair
    talk(alice, bob, 5)
    for _ in range(2):
        alice.poll()
        bob.poll()
    assert [s.text for s in bob.shown] == [f"a{n}" for n in range(5)]
    assert [s.text for s in alice.shown] == [f"b{n}" for n in range(5)]
    assert_once_in_order(bob, alice)
    assert_once_in_order(alice, bob)
    # Delivered live, by push: nothing was left for a catch-up to find.
    assert not alice.recover()
    assert not bob.recover()
    # Each message went out once (receipts are mail, not conversation messages).
    (conversation,) = server.conversations.values()
    assert [m.seq for m in conversation.messages] == list(range(1, 11))


def test_a_catch_up_takes_several_pages_and_shows_each_message_once(
    pair: tuple[FakeServer, Device, Device],
) -> None:
    server, alice, bob = pair
    for n in range(8):
        assert alice.send(bob, f"a{n}")
    bob.sync()
    syncs = [a for d, a in server.requests if d == bob.device_id and a == "sync"]
    assert len(syncs) >= 3  # 8 messages, 3 a page
    assert [s.text for s in bob.shown] == [f"a{n}" for n in range(8)]
    assert_once_in_order(bob, alice)


@pytest.mark.parametrize("seed", [1, 2])
def test_dropped_duplicated_and_reordered_pushes_still_show_once_in_order(
    pair: tuple[FakeServer, Device, Device], seed: int
) -> None:
    server, alice, bob = pair
    faults = {
        d.device_id: PushFaults(seed * 10 + i, drop=0.25, duplicate=0.3, reorder=0.4)
        for i, d in enumerate((alice, bob))
    }
    server.push_faults.update(faults)
    for n in range(6):
        assert alice.send(bob, f"a{n}")
        assert alice.send(bob, f"a{n}+")  # two at once: a queue to reorder
        bob.poll()
        assert bob.send(alice, f"b{n}")
        alice.poll()
    for name in ("dropped", "duplicated", "reordered"):
        assert sum(getattr(f, name) for f in faults.values()) > 0, f"no push was {name}"
    settle(server, alice, bob)
    assert_once_in_order(bob, alice)
    assert_once_in_order(alice, bob)
    assert not alice.recover()
    assert not bob.recover()


def test_a_lost_ack_answer_duplicates_nothing(pair: tuple[FakeServer, Device, Device]) -> None:
    server, alice, bob = pair
    trip = Trip(bob.device_id, "ack", applied=True, times=2)
    server.trips.append(trip)
    for n in range(4):
        assert alice.send(bob, f"a{n}")
    bob.sync()  # the first page's ack is applied, its answer lost; the retry is too
    assert trip.fired == 2
    talk(alice, bob, 2, "later-")
    settle(server, alice, bob)
    assert_once_in_order(bob, alice)
    assert_once_in_order(alice, bob)
    assert not bob.recover()


@pytest.mark.parametrize("applied", [True, False])
def test_an_ack_lost_on_every_retry_shows_the_page_once_after_all(
    pair: tuple[FakeServer, Device, Device], applied: bool
) -> None:
    """The sync raises; its saved page is owed to the next call, and the next sync (which
    the failure starts) serves the same messages again if the server never took the ack."""
    server, alice, bob = pair
    trip = Trip(bob.device_id, "ack", applied=applied, times=MAX_RECONNECTS + 1)
    server.trips.append(trip)
    for n in range(2):
        assert alice.send(bob, f"a{n}")
    with pytest.raises(ConnectionLost):
        bob.m.sync()
    assert trip.fired == MAX_RECONNECTS + 1
    assert not bob.shown
    assert bob.poll()
    assert [s.text for s in bob.shown] == ["a0", "a1"]
    settle(server, alice, bob)
    assert_once_in_order(bob, alice)


def test_a_lost_send_answer_stores_the_message_once(
    pair: tuple[FakeServer, Device, Device],
) -> None:
    server, alice, bob = pair
    talk(alice, bob, 1)
    trip = Trip(alice.device_id, "send", applied=True)
    server.trips.append(trip)
    assert alice.send(bob, "resent")  # the same bytes again: the server answers the first
    assert trip.fired == 1
    settle(server, alice, bob)
    (conversation,) = server.conversations.values()
    assert [m.seq for m in conversation.messages] == [1, 2, 3]
    assert_once_in_order(bob, alice)


@pytest.mark.parametrize(
    ("who", "action", "applied", "backlog"),
    [
        ("alice", "send", False, False),  # prepared and saved, never reached the server
        ("alice", "send", True, False),  # stored by the server, never confirmed here
        ("alice", "distribute", False, False),  # a new chain prepared, its keys not out
        ("alice", "distribute", True, False),  # the new chain's keys out, the message not
        ("bob", "send", False, True),  # a batch saved, its receipt not sent, nor the ack
        ("bob", "ack", False, True),  # a sync page saved, not acknowledged
        ("bob", "ack", True, True),  # acknowledged, the answer never heard
        ("bob", "sync", True, False),  # a page served, never processed
    ],
)
def test_a_crash_between_steps_loses_nothing_and_shows_nothing_twice(
    pair: tuple[FakeServer, Device, Device], who: str, action: str, applied: bool, backlog: bool
) -> None:
    """``backlog``: the page the dead process saved is shown from its history on reopening
    (it was never handed out), and not again when the server serves it again."""
    server, alice, bob = pair
    talk(alice, bob, 1, "before-")
    victim = alice if who == "alice" else bob
    if action == "distribute":
        (cid,) = server.conversations
        alice.m.engine(cid).request_rotation()  # the next message starts a new chain
    trip = Trip(victim.device_id, action, applied=applied, crash=True)
    server.trips.append(trip)
    crashed = False
    for n in range(5):
        crashed = not alice.send(bob, f"a{n}") or crashed
        if n % 2:
            crashed = not bob.sync() or crashed
    crashed = not bob.sync() or crashed
    assert trip.fired == 1
    assert crashed
    assert victim.crashes == 1
    talk(alice, bob, 1, "after-")
    settle(server, alice, bob)
    assert_once_in_order(bob, alice)
    assert_once_in_order(alice, bob)
    assert len(bob.shown) == 1 + 5 + 1
    assert any(s.from_history for s in bob.shown) == backlog


@pytest.mark.parametrize("seed", [20261203, 7])
def test_a_seeded_schedule_of_every_fault_shows_every_message_once_in_order(
    pair: tuple[FakeServer, Device, Device], seed: int
) -> None:
    """30 messages; pushes faulty throughout, answers lost and devices dying at random."""
    server, alice, bob = pair
    rng = random.Random(seed)
    faults = {
        d.device_id: PushFaults(rng.randrange(1 << 30), drop=0.2, duplicate=0.2, reorder=0.3)
        for d in (alice, bob)
    }
    server.push_faults.update(faults)
    devices = {"alice": alice, "bob": bob}
    crash_budget = 3  # each crash reopens a profile: one Argon2id derivation
    trips: list[Trip] = []
    for n in range(30):
        name = rng.choice(["alice", "bob"])
        sender, other = devices[name], devices["bob" if name == "alice" else "alice"]
        roll = rng.random()
        if roll < 0.2 and crash_budget:
            crash_budget -= 1
            victim = rng.choice([sender, other])
            action = rng.choice(["send", "ack", "sync", "distribute"])
            trips.append(Trip(victim.device_id, action, applied=rng.random() < 0.5, crash=True))
        elif roll < 0.35:
            action = rng.choice(["send", "ack", "sync"])
            trips.append(Trip(rng.choice([sender, other]).device_id, action, rng.random() < 0.5))
        server.trips[:] = [t for t in trips if not t.fired]
        sender.send(other, f"{name}{n}")
        for device in rng.sample([alice, bob], k=rng.randint(0, 2)):
            device.poll() if rng.random() < 0.7 else device.sync()
    fired = [t for t in trips if t.fired]
    assert any(t.crash for t in fired)
    assert any(not t.crash for t in fired)
    assert alice.crashes + bob.crashes >= 1
    settle(server, alice, bob)
    assert_once_in_order(bob, alice)
    assert_once_in_order(alice, bob)
    assert len(alice.said()) + len(bob.said()) >= 27  # a crash may take an unsaved one


def test_a_room_of_three_with_faults_shows_every_message_once_in_order(tmp_path: Path) -> None:
    """alice makes a room with bob and carol; pushes go wrong for everyone, a send's answer
    is lost, carol dies after saving a batch she had not acknowledged."""
    server = FakeServer()
    devices = [Device(server, tmp_path, handle) for handle in ("alice", "bob", "carol")]
    alice, bob, carol = devices
    try:
        for device in devices:
            device.enroll()
        cid = alice.m.create_room("team", [bob.user_id, carol.user_id])
        faults = [PushFaults(i, drop=0.2, duplicate=0.2, reorder=0.3) for i in range(len(devices))]
        server.push_faults.update((d.device_id, f) for d, f in zip(devices, faults, strict=True))
        lost = Trip(bob.device_id, "send", applied=True, skip=1)
        crash = Trip(carol.device_id, "ack", applied=False, crash=True, skip=1)
        server.trips += [lost, crash]
        for n in range(4):
            for device in devices:
                assert device.send(cid, f"{device.handle}{n}") or device is carol
                for other in devices:
                    if other is not device:
                        other.poll()
        assert lost.fired == 1
        assert crash.fired == 1
        assert carol.crashes == 1
        for name in ("dropped", "duplicated", "reordered"):
            assert sum(getattr(f, name) for f in faults) > 0, f"no push was {name}"
        settle(server, *devices)
        for receiver in devices:
            for sender in devices:
                if receiver is not sender:
                    assert_once_in_order(receiver, sender, cid)
            assert len(receiver.shown) == 8
    finally:
        for device in devices:
            if device.messenger is not None:
                device.messenger.close()
