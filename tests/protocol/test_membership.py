"""The membership log: signed, hash-chained operations, verified from creation or incrementally."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import pytest

from sotto.protocol import errors
from sotto.protocol.certificates import DeviceRevocation, Revocations
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    MembershipOperation,
    MembershipState,
    Rebind,
    Remove,
    Role,
    SetRole,
    direct_conversation_id,
    self_conversation_id,
    sign_operation,
    verify_log,
)

from .helpers import DAY, NOW, Party, add_device, flip, make_party

CONV = "room-1"


def entry(party: Party, role: int = Role.MEMBER) -> MemberEntry:
    return MemberEntry.of(party.user_id, party.identity_public, role)


@dataclass
class Log:
    """A conversation's log as its members build it; ``state`` is the verified head."""

    parties: list[Party]
    ops: list[bytes] = field(default_factory=list)
    state: MembershipState | None = None
    now: int = NOW

    @property
    def identities(self) -> list[IdentityPublicKey]:
        return [p.identity_public for p in self.parties]

    def sign(self, party: Party, change: Change, *, conversation_id: str = CONV) -> bytes:
        self.now += 1000
        data = sign_operation(
            party.device, party.identity_public, self.state, change,
            now=self.now, conversation_id=conversation_id,
        )  # fmt: skip
        return data

    def append(self, party: Party, change: Change) -> bytes:
        data = self.sign(party, change)
        self.ops.append(data)
        self.state = verify_log(self.ops, self.identities, conversation_id=CONV, now=self.now)
        return data


@pytest.fixture
def dave() -> Party:
    return make_party("dave")


@pytest.fixture
def room(alice: Party, bob: Party, carol: Party, dave: Party) -> Log:
    log = Log([alice, bob, carol, dave])
    log.append(alice, Create(ConversationKind.ROOM, (entry(alice, Role.MODERATOR), entry(bob))))
    log.append(alice, Add((entry(carol),)))
    return log


def verify(log: Log, ops: list[bytes] | None = None) -> MembershipState:
    return verify_log(
        log.ops if ops is None else ops, log.identities, conversation_id=CONV, now=log.now
    )


# ---- a valid log -----------------------------------------------------------------


def test_room_log_verifies_from_creation(room: Log, alice: Party, bob: Party, carol: Party):
    room.append(alice, SetRole("bob", Role.MODERATOR))
    room.append(bob, Remove(("carol",)))
    room.append(alice, Leave())
    state = verify(room)
    assert dict(state.members) == {"bob": entry(bob, Role.MODERATOR)}
    assert state.seq == 4
    assert state.head == MembershipOperation.parse(room.ops[-1]).hash
    assert state.moderators == ("bob",)


def test_incremental_extension_equals_verification_from_creation(room: Log, alice: Party):
    checkpoint = verify(room, room.ops[:1])
    room.append(alice, SetRole("carol", Role.MODERATOR))
    extended = checkpoint.extend(room.ops[1:], room.identities, now=room.now)
    assert extended == verify(room)
    assert MembershipState.parse(extended.serialize()) == extended


def test_operations_round_trip(room: Log):
    for data in room.ops:
        assert MembershipOperation.parse(data).serialize() == data


def test_log_outlives_the_certificates_that_signed_it(room: Log, alice: Party):
    later = alice.certificate.expires_at + DAY  # alice's device certificate has expired
    assert verify_log(room.ops, room.identities, conversation_id=CONV, now=later) == verify(room)


# ---- forged ----------------------------------------------------------------------


def test_forged_signature_is_refused(room: Log):
    with pytest.raises(errors.ForgedOperation):
        verify(room, [room.ops[0], flip(room.ops[1], len(room.ops[1]) - 3)])


def test_altered_operation_is_refused(room: Log, dave: Party):
    op = MembershipOperation.parse(room.ops[1])
    altered = replace(op, change=Add((entry(dave),))).serialize()  # the old signature
    with pytest.raises(errors.ForgedOperation):
        verify(room, [room.ops[0], altered])


def test_operation_by_an_identity_the_log_does_not_bind_is_refused(room: Log):
    """The server makes its own 'alice' identity and device: the log binds alice's real one."""
    impostor = make_party("alice", seed="server-made alice")
    room.parties.append(impostor)
    mallory = MemberEntry("mallory", impostor.identity_public.fingerprint)
    with pytest.raises(errors.ForgedOperation):
        verify(room, [*room.ops, _by_hand(room, impostor, Add((mallory,)))])


def test_missing_identity_key_is_named(room: Log):
    with pytest.raises(errors.IdentityUnavailable):
        verify_log(room.ops, [], conversation_id=CONV, now=room.now)


# ---- replayed, reordered, forked, truncated ----------------------------------------


def test_replayed_operation_is_refused(room: Log):
    state = verify(room)
    with pytest.raises(errors.OperationReplayed):
        state.extend(room.ops[1:], room.identities, now=room.now)
    with pytest.raises(errors.OperationReplayed):
        verify(room, [*room.ops, room.ops[1]])


def test_operation_of_another_conversation_is_refused(room: Log, alice: Party, dave: Party):
    moved = _by_hand(room, alice, Add((entry(dave),)), conversation_id="room-2")
    with pytest.raises(errors.WrongConversation):
        verify(room, [*room.ops, moved])
    with pytest.raises(errors.WrongConversation):
        verify_log(room.ops, room.identities, conversation_id="room-2", now=room.now)


def test_reordered_log_is_refused(room: Log, alice: Party):
    room.append(alice, SetRole("bob", Role.MODERATOR))
    with pytest.raises(errors.OperationOutOfOrder):
        verify(room, [room.ops[0], room.ops[2], room.ops[1]])


def test_gap_in_the_log_is_refused(room: Log, alice: Party):
    room.append(alice, SetRole("bob", Role.MODERATOR))
    with pytest.raises(errors.OperationOutOfOrder):
        verify(room, [room.ops[0], room.ops[2]])


def test_fork_is_refused(room: Log, alice: Party, dave: Party):
    """The server shows some members one continuation and others another."""
    base = verify(room)
    branch_a = sign_operation(
        alice.device, alice.identity_public, base, Add((entry(dave),)), now=room.now + 1
    )
    branch_b = sign_operation(
        alice.device, alice.identity_public, base, SetRole("bob", Role.MODERATOR), now=room.now + 2
    )
    on_b = base.extend([branch_b], room.identities, now=room.now + 2)
    next_on_b = sign_operation(
        alice.device, alice.identity_public, on_b, Add((entry(dave),)), now=room.now + 3
    )
    on_a = base.extend([branch_a], room.identities, now=room.now + 3)
    with pytest.raises(errors.LogForked):
        on_a.extend([next_on_b], room.identities, now=room.now + 3)


def test_truncated_log_is_refused(room: Log):
    with pytest.raises(errors.LogTruncated):
        verify(room, room.ops[1:])  # does not start with its creation
    with pytest.raises(errors.LogTruncated):
        verify(room, [])
    state = verify(room)
    with pytest.raises(errors.LogTruncated):
        state.extend([], room.identities, now=room.now, served_seq=state.seq - 1)


def test_operation_dated_before_its_predecessor_is_refused(room: Log, alice: Party, dave: Party):
    state = verify(room)
    early = sign_operation(
        alice.device, alice.identity_public, replace(state, timestamp=0), Add((entry(dave),)),
        now=NOW - DAY // 2,
    )  # fmt: skip
    with pytest.raises(errors.OperationOutOfOrder):
        state.extend([early], room.identities, now=room.now)


# ---- who may do what ---------------------------------------------------------------


def test_member_cannot_add(room: Log, bob: Party, dave: Party):
    op = _by_hand(room, bob, Add((entry(dave),)))
    with pytest.raises(errors.NotModerator):
        verify(room, [*room.ops, op])
    with pytest.raises(errors.NotModerator):
        room.sign(bob, Add((entry(dave),)))  # the signer refuses too


def test_member_cannot_promote_itself(room: Log, bob: Party):
    with pytest.raises(errors.SelfPromotion):
        verify(room, [*room.ops, _by_hand(room, bob, SetRole("bob", Role.MODERATOR))])


def test_member_cannot_remove_a_moderator(room: Log, bob: Party):
    with pytest.raises(errors.NotModerator):
        verify(room, [*room.ops, _by_hand(room, bob, Remove(("alice",)))])


def test_outsider_cannot_sign(room: Log, dave: Party):
    with pytest.raises(errors.NotPermitted):
        verify(room, [*room.ops, _by_hand(room, dave, Leave())])


def test_member_leaves_by_itself(room: Log, carol: Party):
    room.append(carol, Leave())
    assert "carol" not in verify(room).members


def test_moderator_removes_with_remove_not_with_its_own_leave(room: Log, alice: Party):
    with pytest.raises(errors.NotPermitted):
        room.sign(alice, Remove(("alice",)))


def test_adding_a_member_twice_is_refused(room: Log, alice: Party, bob: Party):
    with pytest.raises(errors.NotPermitted):
        room.sign(alice, Add((entry(bob),)))


def test_revoked_device_cannot_sign_after_its_revocation(room: Log, alice: Party, dave: Party):
    revocations = Revocations()
    revoked_at = room.now + 500
    revocations.add(
        DeviceRevocation.issue(alice.identity, "alice", "phone", revoked_at=revoked_at),
        alice.identity_public,
    )
    # Its earlier operations still count: the log is not broken by a lost phone.
    state = verify_log(
        room.ops, room.identities, conversation_id=CONV, now=room.now, revocations=revocations
    )
    late = room.sign(alice, Add((entry(dave),)))
    with pytest.raises(errors.DeviceRevoked):
        state.extend([late], room.identities, now=room.now, revocations=revocations)


def test_another_device_of_a_moderator_signs(room: Log, alice: Party, dave: Party):
    laptop = add_device(alice, "laptop")
    room.append(laptop, Add((entry(dave),)))
    assert "dave" in verify(room).members


# ---- direct conversations and identity rebinds --------------------------------------


def test_direct_conversation_is_its_two_identities_only(alice: Party, bob: Party, carol: Party):
    log = Log([alice, bob, carol])
    log.append(alice, Create(ConversationKind.DIRECT, (entry(alice), entry(bob))))
    assert verify(log).kind == ConversationKind.DIRECT
    with pytest.raises(errors.NotPermitted):
        log.sign(alice, Add((entry(carol),)))
    with pytest.raises(errors.NotPermitted):
        log.sign(bob, Leave())
    with pytest.raises(errors.MalformedMessage):
        Create(ConversationKind.DIRECT, (entry(alice), entry(bob), entry(carol)))
    with pytest.raises(errors.MalformedMessage):
        Create(ConversationKind.DIRECT, (entry(alice, Role.MODERATOR), entry(bob)))


# ---- self conversations (one user's own devices, §15.1) --------------------------------


def test_self_conversation_id_is_derived_from_its_user():
    cid = self_conversation_id("usr-1")
    assert cid == "self-" + hashlib.sha256(b"sotto-self-v1\x00usr-1").hexdigest()[:32]
    assert cid == self_conversation_id("usr-1") != self_conversation_id("usr-2")
    assert cid != direct_conversation_id("usr-1", "usr-2")
    with pytest.raises(errors.MalformedMessage):
        self_conversation_id("not a user id")


def _self_log(party: Party, *others: Party) -> tuple[Log, str]:
    cid = self_conversation_id(party.user_id)
    log = Log([party, *others])
    log.ops.append(
        log.sign(party, Create(ConversationKind.SELF, (entry(party),)), conversation_id=cid)
    )
    log.state = verify_log(log.ops, log.identities, conversation_id=cid, now=log.now)
    return log, cid


def test_self_conversation_is_its_user_alone_and_never_changes(alice: Party, bob: Party):
    log, cid = _self_log(alice, bob)
    assert log.state is not None
    assert log.state.conversation_id == cid
    assert log.state.kind == ConversationKind.SELF
    assert dict(log.state.members) == {"alice": entry(alice)}
    assert MembershipState.parse(log.state.serialize()) == log.state
    laptop = add_device(alice, "laptop")  # any device of the user signs for it
    for change in (Add((entry(bob),)), Leave(), SetRole("alice", Role.MODERATOR)):
        with pytest.raises(errors.NotPermitted):
            sign_operation(laptop.device, alice.identity_public, log.state, change, now=log.now + 1)
    with pytest.raises(errors.MalformedMessage):
        Create(ConversationKind.SELF, (entry(alice), entry(bob)))
    with pytest.raises(errors.MalformedMessage):
        Create(ConversationKind.SELF, (entry(alice, Role.MODERATOR),))


def test_self_conversation_verifies_only_under_its_users_id(alice: Party, bob: Party):
    """Nobody makes a self conversation for another user, nor under another id."""
    mine = self_conversation_id("alice")
    # bob's device cannot create alice's self conversation: it is not its member
    with pytest.raises(errors.NotPermitted):
        sign_operation(
            bob.device, bob.identity_public, None,
            Create(ConversationKind.SELF, (entry(alice),)), now=NOW, conversation_id=mine,
        )  # fmt: skip
    # nor a self conversation of its own under alice's id (or any other)
    for cid in (mine, "room-1", direct_conversation_id("alice", "bob")):
        with pytest.raises(errors.WrongConversation):
            sign_operation(
                bob.device, bob.identity_public, None,
                Create(ConversationKind.SELF, (entry(bob),)), now=NOW, conversation_id=cid,
            )  # fmt: skip


def test_member_rebinds_itself_to_a_new_identity(room: Log, bob: Party):
    reinstalled = make_party("bob", seed="bob after a reinstall")
    room.parties.append(reinstalled)
    room.append(reinstalled, Rebind(reinstalled.identity_public.fingerprint))
    assert verify(room).fingerprint("bob") == reinstalled.identity_public.fingerprint
    # From then on only the new identity's devices sign for bob.
    with pytest.raises(errors.ForgedOperation):
        verify(room, [*room.ops, _by_hand(room, bob, Leave())])


def _by_hand(log: Log, party: Party, change: Change, *, conversation_id: str = CONV) -> bytes:
    """An operation signed without the signer's own checks (what a hostile client sends)."""
    state = verify(log)
    op = MembershipOperation(
        conversation_id, state.seq + 1, state.head, log.now + 1, party.device.certificate,
        change, bytes(96),
    )  # fmt: skip
    return replace(op, signature=party.device.signing_key.sign("membership", op.body())).serialize()
