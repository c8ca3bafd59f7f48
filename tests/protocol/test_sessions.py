"""Pairwise sessions: one HPKE per device pair, then a forward-secret symmetric ratchet.

Devices share one ``PairwiseSessions`` across their conversations, as a
client would; ``Net`` delivers nothing by itself, tests choose the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sotto.protocol import errors
from sotto.protocol.certificates import PrekeyCertificate, Revocations
from sotto.protocol.content import Control, Text
from sotto.protocol.conversation import Address, Conversation, LocalDevice, Member, Outgoing
from sotto.protocol.distribution import DistributionMode, KeyDistribution
from sotto.protocol.safety import IdentityTracker
from sotto.protocol.sessions import (
    MAX_SESSION_SKIP,
    SESSION_MAX_AGE_MS,
    SESSION_RETENTION_MS,
    PairwiseSessions,
)

from .helpers import DAY, NOW, Party, drbg, make_party


@dataclass
class Device:
    party: Party
    local: LocalDevice
    convs: dict[str, Conversation] = field(default_factory=dict)
    mailbox: list[bytes] = field(default_factory=list)
    inbox: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def sessions(self) -> PairwiseSessions:
        assert self.local.sessions is not None
        return self.local.sessions


class Net:
    def __init__(self, parties: list[Party], conversations: tuple[str, ...] = ("room-1",)) -> None:
        self.devices: dict[Address, Device] = {}
        self.prekeys_used = 0
        for party in parties:
            party.device.new_one_time_prekeys(5, now=NOW - DAY, rng=drbg(party.user_id))
            local = LocalDevice(
                party.device, party.identity_public, IdentityTracker(), sessions=PairwiseSessions()
            )
            self.devices[party.address] = Device(party, local)
        members = [Member(p.certificate, p.identity_public) for p in parties]
        for device in self.devices.values():
            for cid in conversations:
                conv = Conversation(cid, device.local, rng=drbg(f"{cid}/{device.party.address}"))
                conv.set_members(members, now=NOW)
                device.convs[cid] = conv

    def __getitem__(self, name: str) -> Device:
        user, _, device = name.partition("/")
        return self.devices[(user, device or "phone")]

    def prekey(self, address: Address) -> PrekeyCertificate:
        self.prekeys_used += 1
        return self.devices[address].party.device.current_signed_prekey()

    def send(self, name: str, text: str, cid: str = "room-1", *, now: int = NOW) -> Outgoing:
        sender = self[name]
        conv = sender.convs[cid]
        prekeys = {a: self.prekey(a) for a in conv.prekeys_needed(now=now)}
        out = conv.prepare_send(Text(text), now=now, prekeys=prekeys)
        for d in out.distributions:
            self.devices[d.address].mailbox.append(d.data)
        for address, device in self.devices.items():
            if address != sender.party.address:
                device.inbox.append((cid, out.envelope))
        return out

    def deliver(self, name: str, *, now: int = NOW) -> list[str]:
        device = self[name]
        results: list[str] = []
        for data in device.mailbox:
            cid = KeyDistribution.parse(data).conversation_id
            try:
                device.convs[cid].receive_distribution(data, now=now)
            except errors.ProtocolError as exc:
                results.append(exc.code)
        device.mailbox.clear()
        for cid, data in device.inbox:
            try:
                received = device.convs[cid].receive_envelope(data, now=now)
            except errors.ProtocolError as exc:
                results.append(exc.code)
            else:
                content = received.content
                results.append(content.text if isinstance(content, Text) else "control")
        device.inbox.clear()
        return results


def _modes(out: Outgoing) -> list[int]:
    return [KeyDistribution.parse(d.data).mode for d in out.distributions]


@pytest.fixture
def trio(alice: Party, bob: Party, carol: Party) -> Net:
    return Net([alice, bob, carol])


def test_first_rotation_uses_prekeys_and_later_ones_the_sessions(trio: Net):
    first = trio.send("alice", "one")
    assert _modes(first) == [DistributionMode.PREKEY] * 2
    assert trio.prekeys_used == 2
    assert trio.deliver("bob") == ["one"]
    assert trio.deliver("carol") == ["one"]
    trio["alice"].convs["room-1"].request_rotation()
    assert trio["alice"].convs["room-1"].prekeys_needed(now=NOW) == []
    second = trio.send("alice", "two")
    assert _modes(second) == [DistributionMode.SESSION] * 2
    assert trio.prekeys_used == 2  # none consumed by the second rotation
    assert max(len(d.data) for d in second.distributions) < 200
    assert trio.deliver("bob") == ["two"]
    assert trio.deliver("carol") == ["two"]


def test_one_session_serves_every_conversation_of_the_pair(alice: Party, bob: Party):
    net = Net([alice, bob], conversations=("room-1", "room-2"))
    net.send("alice", "in room 1", "room-1")
    net.deliver("bob")
    out = net.send("alice", "in room 2", "room-2")
    assert _modes(out) == [DistributionMode.SESSION]
    assert net.deliver("bob") == ["in room 2"]


def test_session_distributions_may_arrive_out_of_order(alice: Party, bob: Party):
    net = Net([alice, bob], conversations=("room-1", "room-2", "room-3"))
    net.send("alice", "a", "room-1")
    net.deliver("bob")
    net.send("alice", "b", "room-2")
    net.send("alice", "c", "room-3")
    net["bob"].mailbox.reverse()
    net["bob"].inbox.reverse()
    assert sorted(net.deliver("bob")) == ["b", "c"]


def test_replayed_session_distribution_is_refused_even_after_the_replay_set_is_lost(
    alice: Party, bob: Party
):
    net = Net([alice, bob], conversations=("room-1", "room-2"))
    net.send("alice", "x", "room-1")
    net.deliver("bob")
    out = net.send("alice", "y", "room-2")
    data = out.distributions[0].data
    net.deliver("bob")
    device = net["bob"]
    with pytest.raises(errors.ReplayedMessage):
        device.convs["room-2"].receive_distribution(data, now=NOW)
    fresh = Conversation("room-2", device.local)
    fresh.set_members(device.convs["room-2"].members.values(), now=NOW)
    with pytest.raises(errors.MessageKeyUnavailable):  # the step's seed is gone
        fresh.receive_distribution(data, now=NOW)


def test_tampered_session_distribution_does_not_open(alice: Party, bob: Party):
    net = Net([alice, bob], conversations=("room-1", "room-2"))
    net.send("alice", "x", "room-1")
    net.deliver("bob")
    data = bytearray(net.send("alice", "y", "room-2").distributions[0].data)
    data[-20] ^= 1
    with pytest.raises(errors.DecryptionFailed):
        net["bob"].convs["room-2"].receive_distribution(bytes(data), now=NOW)
    # Nothing was spent: the genuine one still opens.
    assert net.deliver("bob") == ["y"]


def test_skipped_steps_are_bounded(alice: Party, bob: Party):
    net = Net([alice, bob])
    net.send("alice", "x")
    net.deliver("bob")
    alice_conv = net["alice"].convs["room-1"]
    for _ in range(MAX_SESSION_SKIP + 1):  # distributions Bob never receives
        alice_conv.redistribute(("bob", "phone"), now=NOW)
    late = alice_conv.redistribute(("bob", "phone"), now=NOW)
    with pytest.raises(errors.TooManySkipped):
        net["bob"].convs["room-1"].receive_distribution(late.data, now=NOW)


def test_rolled_back_sender_never_repeats_a_step_key(alice: Party, bob: Party):
    """A restored backup replays the session; the salt changes the key, the receiver refuses."""
    net = Net([alice, bob], conversations=("room-1", "room-2", "room-3"))
    net.send("alice", "x", "room-1")
    net.deliver("bob")
    backup = net["alice"].sessions.serialize()
    first = net.send("alice", "y", "room-2").distributions[0].data
    net.deliver("bob")
    restored = PairwiseSessions.parse(backup)
    object.__setattr__(net["alice"].local, "sessions", restored)  # the backup is loaded
    again = net.send("alice", "z", "room-3").distributions[0].data
    a, b = KeyDistribution.parse(first), KeyDistribution.parse(again)
    assert (a.session_id, a.step) == (b.session_id, b.step)
    assert a.salt != b.salt
    assert net.deliver("bob")[0] == "message_key_unavailable"
    # Detected rollback: sessions are dropped, the next distribution goes through HPKE.
    restored.restored()
    net["alice"].convs["room-3"].request_rotation()
    assert _modes(net.send("alice", "w", "room-3")) == [DistributionMode.PREKEY]
    assert net.deliver("bob") == ["w"]


def test_receiver_that_lost_its_sessions_asks_and_the_pair_re_establishes(alice: Party, bob: Party):
    net = Net([alice, bob], conversations=("room-1", "room-2"))
    net.send("alice", "x", "room-1")
    net.send("bob", "hello alice", "room-1")
    net.deliver("alice")
    net.deliver("bob")
    object.__setattr__(net["bob"].local, "sessions", PairwiseSessions())  # state lost
    data = net.send("alice", "y", "room-2").distributions[0].data
    bob_conv = net["bob"].convs["room-2"]
    with pytest.raises(errors.UnknownSession) as caught:
        bob_conv.receive_distribution(data, now=NOW)
    assert caught.value.peer == ("alice", "phone")
    net["bob"].mailbox.clear()
    net["bob"].inbox.clear()
    # Bob asks (a signed Control message in the conversation) ...
    request = bob_conv.redistribution_request(caught.value.peer, caught.value.session_id)
    assert request.kind == Control.REDISTRIBUTE
    out = bob_conv.prepare_send(
        request, now=NOW, prekeys={a: net.prekey(a) for a in bob_conv.prekeys_needed(now=NOW)}
    )
    alice_conv = net["alice"].convs["room-2"]
    for d in out.distributions:
        alice_conv.receive_distribution(d.data, now=NOW)
    alice_conv.receive_envelope(out.envelope, now=NOW)
    # ... Alice sees the request, and the repair goes through HPKE to a prekey.
    assert alice_conv.redistribution_requests == (("bob", "phone"),)
    assert alice_conv.prekeys_needed(now=NOW) == []  # no rotation: a redistribution
    with pytest.raises(errors.PrekeysRequired):
        alice_conv.redistribute(("bob", "phone"), now=NOW)
    repair = alice_conv.redistribute(("bob", "phone"), net.prekey(("bob", "phone")), now=NOW)
    assert KeyDistribution.parse(repair.data).mode == DistributionMode.PREKEY
    assert not alice_conv.redistribution_requests
    bob_conv.receive_distribution(repair.data, now=NOW)
    net.send("alice", "after repair", "room-2")
    assert net.deliver("bob")[-1] == "after repair"


def test_request_naming_another_device_is_shown_not_obeyed(trio: Net):
    trio.send("alice", "x")
    trio.send("bob", "y")
    for name in ("alice", "bob", "carol"):
        trio.deliver(name)
    bob_conv = trio["bob"].convs["room-1"]
    request = bob_conv.redistribution_request(("carol", "phone"))
    out = bob_conv.prepare_send(request, now=NOW)
    trio["alice"].convs["room-1"].receive_envelope(out.envelope, now=NOW)
    assert trio["alice"].convs["room-1"].redistribution_requests == ()


def test_sessions_age_out_and_belong_to_the_peer_device_key(alice: Party, bob: Party):
    net = Net([alice, bob])
    net.send("alice", "x")
    net.deliver("bob")
    conv = net["alice"].convs["room-1"]
    conv.request_rotation()
    assert conv.prekeys_needed(now=NOW) == []
    assert conv.prekeys_needed(now=NOW + SESSION_MAX_AGE_MS) == [("bob", "phone")]
    sessions = net["alice"].sessions
    key, identity = bob.certificate.device_key.serialize(), bob.identity_public.fingerprint
    assert sessions.send_session(bob.address, key, identity, now=NOW) is not None
    new_key = make_party("bob", seed="bob's phone, new key").certificate.device_key.serialize()
    assert sessions.send_session(bob.address, new_key, identity, now=NOW) is None
    assert sessions.send_session(bob.address, key, bytes(32), now=NOW) is None


def test_receiver_deletes_sessions_after_their_retention(alice: Party, bob: Party):
    net = Net([alice, bob])
    net.send("alice", "x")
    net.deliver("bob")
    sessions = net["bob"].sessions
    assert len(sessions) == 1
    sessions.prune(now=NOW + SESSION_RETENTION_MS)
    assert len(sessions) == 0


def test_session_state_round_trips_and_holds_no_used_seed(alice: Party, bob: Party):
    net = Net([alice, bob], conversations=("room-1", "room-2"))
    net.send("alice", "x", "room-1")
    net.deliver("bob")
    bob_sessions = net["bob"].sessions
    data = net.send("alice", "y", "room-2").distributions[0].data
    kd = KeyDistribution.parse(data)
    [receive] = bob_sessions._receive[("alice", "phone")]
    used_seed = receive.peek(kd.step)
    net.deliver("bob")
    state = bob_sessions.serialize()
    assert used_seed not in state
    assert PairwiseSessions.parse(state).serialize() == state
    alice_state = net["alice"].sessions.serialize()
    assert PairwiseSessions.parse(alice_state).serialize() == alice_state
    for bad in (state + b"\x00", state[:-1], b"\x01" + state[1:]):
        with pytest.raises(errors.MalformedMessage):
            PairwiseSessions.parse(bad)


def test_without_a_session_store_every_rotation_seals_to_a_prekey(alice: Party, bob: Party):
    local = LocalDevice(alice.device, alice.identity_public, IdentityTracker())
    conv = Conversation("room-1", local)
    conv.set_members([Member(bob.certificate, bob.identity_public)], now=NOW)
    first = conv.prepare_send(Text("x"), now=NOW, prekeys={bob.address: bob.prekey()})
    assert KeyDistribution.parse(first.distributions[0].data).session_id == bytes(16)
    conv.request_rotation()
    assert conv.prekeys_needed(now=NOW) == [("bob", "phone")]


def test_no_session_distribution_to_a_revoked_device(alice: Party, bob: Party):
    net = Net([alice, bob])
    net.send("alice", "x")
    net.deliver("bob")
    revocations = Revocations()
    revocations.revoke("bob", "phone", revoked_at=NOW)
    object.__setattr__(net["alice"].local, "revocations", revocations)
    net["alice"].convs["room-1"].request_rotation()
    with pytest.raises(errors.DeviceRevoked):
        net.send("alice", "y")
