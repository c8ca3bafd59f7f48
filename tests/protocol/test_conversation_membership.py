"""The engine with a verified membership log: the server lists devices, the log decides.

``Server`` stands for an operator who controls the directory and the rosters:
it serves the log and a device list, and tests write ghosts straight into
that list, as an operator would into the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sotto.protocol import errors
from sotto.protocol.certificates import PrekeyCertificate
from sotto.protocol.content import Text
from sotto.protocol.conversation import Address, Conversation, LocalDevice, Member, MembershipChange
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    MemberEntry,
    MembershipState,
    Rebind,
    Remove,
    Role,
    sign_operation,
    verify_log,
)
from sotto.protocol.safety import IdentityTracker

from .helpers import NOW, Party, add_device, drbg, make_party

CONV = "room-1"


@dataclass
class Server:
    log: list[bytes] = field(default_factory=list)
    devices: list[Member] = field(default_factory=list)  # what the operator's table says
    state: MembershipState | None = None
    now: int = NOW

    def append(self, signer: Party, change: Change) -> None:
        self.now += 1000
        data = sign_operation(
            signer.device, signer.identity_public, self.state, change, now=self.now,
            conversation_id=CONV,
        )  # fmt: skip
        identities = [m.identity for m in self.devices] + [signer.identity_public]
        if self.state is None:
            self.state = verify_log([data], identities, conversation_id=CONV, now=self.now)
        else:
            self.state = self.state.extend([data], identities, now=self.now)
        self.log.append(data)

    def list_device(self, party: Party) -> None:
        self.devices.append(Member(party.certificate, party.identity_public))


@dataclass
class Client:
    party: Party
    conv: Conversation
    seen: int = 0  # operations already given to the engine

    @classmethod
    def of(cls, party: Party) -> Client:
        local = LocalDevice(party.device, party.identity_public, IdentityTracker())
        return cls(party, Conversation(CONV, local, rng=drbg("conv/" + "/".join(party.address))))

    def sync(self, server: Server) -> MembershipChange:
        new = server.log[self.seen :]
        change = self.conv.update_membership(
            new, server.devices, now=server.now, served_seq=len(server.log) - 1
        )
        self.seen = len(server.log)
        return change

    def send(self, text: str, now: int) -> tuple[set[Address], bytes]:
        prekeys: dict[Address, PrekeyCertificate] = {}
        for address in self.conv.prekeys_needed(now=now):
            prekeys[address] = _PREKEYS[address]
        out = self.conv.prepare_send(Text(text), now=now, prekeys=prekeys)
        return {d.address for d in out.distributions}, out.envelope


_PREKEYS: dict[Address, PrekeyCertificate] = {}


def _entry(party: Party, role: int = Role.MEMBER) -> MemberEntry:
    return MemberEntry.of(party.user_id, party.identity_public, role)


@pytest.fixture
def room(alice: Party, bob: Party) -> tuple[Server, Client]:
    server = Server()
    for party in (alice, bob):
        server.list_device(party)
        _PREKEYS[party.address] = party.prekey()
    server.append(
        alice, Create(ConversationKind.ROOM, (_entry(alice, Role.MODERATOR), _entry(bob)))
    )
    client = Client.of(alice)
    client.sync(server)
    return server, client


def _register(party: Party) -> Party:
    _PREKEYS[party.address] = party.prekey()
    return party


def test_operator_inserted_member_gets_no_chain_key_and_the_client_says_why(
    room: tuple[Server, Client],
):
    server, alice = room
    mallory = _register(make_party("mallory"))
    server.list_device(mallory)  # straight into the table: no membership operation
    change = alice.sync(server)
    assert [(r.address, r.code) for r in change.refused] == [(("mallory", "phone"), "not_a_member")]
    recipients, _ = alice.send("hello", server.now)
    assert recipients == {("bob", "phone")}


def test_operator_inserted_device_for_a_member_gets_no_chain_key(
    room: tuple[Server, Client], bob: Party
):
    """The operator cannot certify a device under Bob's identity, so it makes its own 'bob'."""
    server, alice = room
    ghost = _register(make_party("bob", "tablet", seed="operator-made bob"))
    server.list_device(ghost)
    change = alice.sync(server)
    assert [(r.address, r.code) for r in change.refused] == [(("bob", "tablet"), "bad_certificate")]
    recipients, _ = alice.send("hello", server.now)
    assert ("bob", "tablet") not in recipients
    # Nothing the ghost sends is accepted either.
    assert ("bob", "tablet") not in alice.conv.members


def test_members_new_device_is_accepted_and_shown(room: tuple[Server, Client], bob: Party):
    server, alice = room
    alice.send("first", server.now)
    laptop = _register(add_device(bob, "laptop"))
    server.list_device(laptop)
    change = alice.sync(server)
    assert change.new_devices == (("bob", "laptop"),)
    assert change.joined == ()
    assert change.refused == ()
    recipients, _ = alice.send("second", server.now)  # a new device rotates the chain
    assert recipients == {("bob", "phone"), ("bob", "laptop")}


def test_added_and_removed_members_are_shown_and_removal_rotates(
    room: tuple[Server, Client], alice: Party, carol: Party
):
    server, client = room
    server.list_device(_register(carol))
    server.append(alice, Add((_entry(carol),)))
    change = client.sync(server)
    assert change.joined == ("carol",)
    assert ("carol", "phone") in client.send("to three", server.now)[0]
    server.append(alice, Remove(("carol",)))  # the operator still lists carol's device
    change = client.sync(server)
    assert change.left == ("carol",)
    assert change.removed == (("carol", "phone"),)
    assert [r.code for r in change.refused] == ["not_a_member"]
    recipients, _ = client.send("without carol", server.now)
    assert recipients == {("bob", "phone")}


def test_forged_or_truncated_log_changes_nothing(room: tuple[Server, Client], alice: Party):
    server, client = room
    before = client.conv.serialize()
    with pytest.raises(errors.LogTruncated):
        client.conv.update_membership([], server.devices, now=server.now, served_seq=-1)
    carol = _register(make_party("carol"))
    server.append(alice, Add((_entry(carol),)))
    forged = bytearray(server.log[-1])
    forged[-5] ^= 1
    with pytest.raises(errors.ForgedOperation):
        client.conv.update_membership([bytes(forged)], server.devices, now=server.now)
    assert client.conv.serialize() == before


def test_identity_bound_by_the_log_must_match_the_trusted_one(
    room: tuple[Server, Client], bob: Party
):
    """A rebind the operator made up (its own 'bob' identity) is never trusted silently."""
    server, alice = room
    assert alice.conv.local.tracker.get("bob") is not None  # recorded at the first sync
    impostor = _register(make_party("bob", seed="operator-made bob"))
    server.devices = [m for m in server.devices if m.user_id != "bob"]
    server.list_device(impostor)
    server.append(impostor, Rebind(impostor.identity_public.fingerprint))
    before = alice.conv.serialize()
    with pytest.raises(errors.IdentityChanged):
        alice.sync(server)
    assert alice.conv.serialize() == before


def test_unverified_roster_is_refused_once_the_log_is_verified(room: tuple[Server, Client]):
    server, alice = room
    with pytest.raises(errors.NotPermitted):
        alice.conv.set_members(alice.conv.members.values(), now=server.now)


def test_removed_user_cannot_send(room: tuple[Server, Client], alice: Party, bob: Party):
    server, _ = room
    bob_client = Client.of(bob)
    bob_client.sync(server)
    server.append(alice, Remove(("bob",)))
    bob_client.sync(server)
    assert not bob_client.conv.is_member
    with pytest.raises(errors.NotAMember):
        bob_client.send("still here?", server.now)


def test_direct_conversation_is_exactly_its_two_identities(alice: Party, bob: Party):
    server = Server()
    for party in (alice, bob):
        server.list_device(_register(party))
    server.append(alice, Create(ConversationKind.DIRECT, (_entry(alice), _entry(bob))))
    mallory = _register(make_party("mallory"))
    server.list_device(mallory)
    client = Client.of(alice)
    change = client.sync(server)
    assert client.conv.membership is not None
    assert client.conv.membership.kind == ConversationKind.DIRECT
    assert [r.code for r in change.refused] == ["not_a_member"]
    assert client.send("hi", server.now)[0] == {("bob", "phone")}


def test_verified_membership_survives_persistence(
    room: tuple[Server, Client], carol: Party, alice: Party
):
    server, client = room
    client.send("one", server.now)
    server.list_device(_register(carol))
    server.append(alice, Add((_entry(carol),)))
    client.sync(server)
    data = client.conv.serialize()
    restored = Conversation.parse(data, client.conv.local)
    assert restored.serialize() == data
    assert restored.membership == client.conv.membership
    with pytest.raises(errors.NotPermitted):
        restored.set_members(restored.members.values(), now=server.now)
    # Incremental: the restored engine continues from its head.
    server.append(alice, Remove(("carol",)))
    change = restored.update_membership(server.log[-1:], server.devices, now=server.now)
    assert change.left == ("carol",)
