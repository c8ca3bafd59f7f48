"""The server's side of the membership log: it stores only operations that verify.

Each test signs operations as a member device would (or as a hostile member
would try) and sends them over a real socket; the server must refuse every
operation a client would refuse, change nothing when it does, and serve the
log it stored, page by page.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from sotto.protocol.membership import (
    Add,
    Leave,
    MemberEntry,
    MembershipOperation,
    Remove,
    Role,
    SetRole,
    self_conversation_id,
    verify_log,
)
from sotto_server.dal.conversations import ConversationsStore
from tests.support.logs import (
    create_fields,
    log_state,
    self_fields,
    sign,
)
from tests.support.people import Seeded, add_device
from tests.support.stack import SeededDevice, Socket, Stack, b64, seed_device, unb64


@pytest.fixture
def people(stack: Stack) -> Iterator[tuple[Socket, SeededDevice, SeededDevice, SeededDevice]]:
    alice, bob, carol = (seed_device(stack) for _ in range(3))
    with Socket(stack, alice) as socket:
        yield socket, alice, bob, carol


def now_ms() -> int:
    return int(time.time() * 1000)


def store(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def new_room(socket: Socket, creator: SeededDevice, *others: SeededDevice) -> str:
    answer = socket.request(
        "create_conversation", **create_fields(socket, creator, [o.user_id for o in others])
    )
    assert answer["action"] == "conversation", answer
    return str(answer["conversation"]["conversation_id"])


def entry(device: SeededDevice) -> MemberEntry:
    assert device.identity is not None
    return MemberEntry.of(device.user_id, device.identity.public)


def members(stack: Stack, cid: str) -> dict[str, str]:
    return {m.user_id: m.role for m in store(stack).members(cid)}


def test_a_room_is_its_verified_log(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    added = socket.request(
        "add_members", conversation_id=cid, op=b64(sign(alice, state, Add((entry(carol),))))
    )
    assert added["conversation"]["log_seq"] == 1
    assert members(stack, cid) == {
        alice.user_id: "moderator",
        bob.user_id: "member",
        carol.user_id: "member",
    }
    # The log the server serves verifies from scratch to the same members.
    served = log_state(socket, cid)
    assert served.seq == 1
    assert set(served.members) == set(members(stack, cid))


def test_an_operation_signed_by_another_device_is_refused(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    # Bob's device signs; Alice's socket presents it: the signer must be the caller.
    by_bob = sign(bob, state, Add((entry(carol),)))
    answer = socket.request("add_members", conversation_id=cid, op=b64(by_bob))
    assert answer["code"] == "invalid_operation"
    assert "signed by another device" in answer["message"]
    assert carol.user_id not in members(stack, cid)


def test_an_entry_binding_another_identity_is_refused(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    wrong = MemberEntry(carol.user_id, secrets.token_bytes(32))
    answer = socket.request(
        "add_members", conversation_id=cid, op=b64(sign(alice, state, Add((wrong,))))
    )
    assert answer["code"] == "invalid_operation"
    assert "another identity than the directory's" in answer["message"]
    assert log_state(socket, cid).seq == 0


def test_a_tampered_operation_is_refused(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    op = bytearray(sign(alice, state, Add((entry(carol),))))
    op[-5] ^= 0x01  # inside the signature
    answer = socket.request("add_members", conversation_id=cid, op=b64(bytes(op)))
    assert answer["code"] == "invalid_operation"
    assert "membership_forged" in answer["message"]
    assert log_state(socket, cid).seq == 0


def test_replayed_skipped_and_forked_operations_change_nothing(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    add = sign(alice, state, Add((entry(carol),)))
    assert (
        socket.request("add_members", conversation_id=cid, op=b64(add))["action"] == "conversation"
    )
    # The same operation again: its seq is taken.
    replayed = socket.request("add_members", conversation_id=cid, op=b64(add))
    assert replayed["code"] == "conflict"
    assert replayed["log_seq"] == 1
    # An operation two past the head (a gap), and one after a head that is not the log's.
    after = log_state(socket, cid)
    promote = sign(alice, after, SetRole(bob.user_id, Role.MODERATOR))  # never sent
    unsent = after.extend([promote], [alice.identity.public], now=now_ms())
    skipped = sign(alice, unsent, Remove((carol.user_id,)))
    assert (
        socket.request("remove_members", conversation_id=cid, op=b64(skipped))["code"] == "conflict"
    )
    forked = sign(alice, state, Remove((bob.user_id,)))  # signed after seq 0 again
    assert (
        socket.request("remove_members", conversation_id=cid, op=b64(forked))["code"] == "conflict"
    )
    assert log_state(socket, cid).seq == 1
    assert set(members(stack, cid)) == {alice.user_id, bob.user_id, carol.user_id}


def test_an_operation_for_another_conversation_is_refused(stack, people):
    socket, alice, bob, carol = people
    first, second = new_room(socket, alice, bob), new_room(socket, alice, bob)
    op = sign(alice, log_state(socket, first), Add((entry(carol),)))
    answer = socket.request("add_members", conversation_id=second, op=b64(op))
    assert answer["code"] == "invalid_operation"
    assert "another conversation" in answer["message"]


def test_a_member_cannot_promote_itself_or_remove_others(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob, carol)
    state = log_state(socket, cid)
    with Socket(stack, bob) as bobs:
        promote = bobs.request(
            "set_role",
            conversation_id=cid,
            op=b64(sign(bob, state, SetRole(bob.user_id, Role.MODERATOR))),
        )
        remove = bobs.request(
            "remove_members",
            conversation_id=cid,
            op=b64(sign(bob, state, Remove((carol.user_id,)))),
        )
    assert (promote["code"], remove["code"]) == ("forbidden", "forbidden")
    assert "self_promotion" in promote["message"]
    assert "not_moderator" in remove["message"]
    assert members(stack, cid)[bob.user_id] == "member"


def test_two_moderators_racing_cannot_both_append_at_one_seq(stack, people):
    socket, alice, bob, carol = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    promote = sign(alice, state, SetRole(bob.user_id, Role.MODERATOR))
    assert (
        socket.request("set_role", conversation_id=cid, op=b64(promote))["action"] == "conversation"
    )
    promoted = log_state(socket, cid)
    with Socket(stack, bob) as bobs:
        # Both sign at seq 2; Bob's lands first, Alice's finds the log moved.
        by_bob = bobs.request(
            "add_members", conversation_id=cid, op=b64(sign(bob, promoted, Add((entry(carol),))))
        )
        by_alice = socket.request(
            "remove_members",
            conversation_id=cid,
            op=b64(sign(alice, promoted, Remove((bob.user_id,)))),
        )
    assert by_bob["action"] == "conversation"
    assert by_alice["code"] == "conflict"
    assert "membership log moved" in by_alice["message"]
    assert set(members(stack, cid)) == {alice.user_id, bob.user_id, carol.user_id}


def test_the_log_is_served_in_pages_that_verify(stack, people):
    socket, alice, bob, _ = people
    cid = new_room(socket, alice, bob)
    state = log_state(socket, cid)
    for index in range(104):  # 105 operations: two pages
        role = Role.MODERATOR if index % 2 == 0 else Role.MEMBER
        op = sign(alice, state, SetRole(bob.user_id, role))
        assert (
            socket.request("set_role", conversation_id=cid, op=b64(op))["action"] == "conversation"
        )
        state = state.extend([op], [alice.identity.public], now=now_ms())
    first = socket.answers("membership_log", conversation_id=cid, after=-1)
    page = [o for part in first for o in part["operations"]]
    assert [o["seq"] for o in page] == list(range(100))
    assert (first[0]["more"], first[0]["head_seq"]) == (True, 104)
    rest = socket.answers("membership_log", conversation_id=cid, after=99)
    tail = [o for part in rest for o in part["operations"]]
    assert [o["seq"] for o in tail] == list(range(100, 105))
    assert rest[0]["more"] is False
    ops = [unb64(o["op"]) for o in page + tail]
    assert all(MembershipOperation.parse(op).conversation_id == cid for op in ops)
    keys = [alice.identity.public]
    assert verify_log(ops, keys, conversation_id=cid, now=state.timestamp).head == state.head


# ---- self conversations: one user's own devices (§15.1) ----------------------------------


def test_a_self_conversation_is_its_users_devices_only(stack, people):
    socket, alice, bob, _carol = people
    laptop = add_device(stack, Seeded([alice]))
    fields = self_fields(alice)
    cid = fields["conversation_id"]
    assert cid == self_conversation_id(alice.user_id)
    created = socket.request("create_conversation", **fields)
    assert created["action"] == "conversation", created
    assert created["conversation"]["kind"] == "self"
    assert created["conversation"]["members"] == [{"user_id": alice.user_id, "role": "member"}]
    # Any device of the user may create it; again, it is the same conversation.
    with Socket(stack, laptop) as other:
        again = other.request("create_conversation", **self_fields(laptop))
        assert again["conversation"]["conversation_id"] == cid
        devices = other.answers("conversation_devices", conversation_id=cid)
        listed = {d["device_id"] for p in devices for d in p.get("devices", [])}
        assert listed == {alice.device_id, laptop.device_id}  # every device of the user
    listing = socket.answers("list_conversations")
    kinds = {c["conversation_id"]: c["kind"] for p in listing for c in p["conversations"]}
    assert kinds[cid] == "self"
    # Nobody is ever added, whoever signs it.
    state = log_state(socket, cid)
    added = socket.request(
        "add_members", conversation_id=cid, op=b64(sign(alice, state, Add((entry(bob),))))
    )
    assert added["code"] == "forbidden", added
    left = socket.request("leave", conversation_id=cid, op=b64(sign(alice, state, Leave())))
    assert left["code"] == "forbidden", left
    assert members(stack, cid) == {alice.user_id: "member"}


def test_nobody_creates_or_reads_another_users_self_conversation(stack, people):
    socket, alice, bob, _carol = people
    mine = self_conversation_id(alice.user_id)
    with Socket(stack, bob) as intruder:
        # bob's self conversation under alice's id, or under any id but its own
        for cid in (mine, f"self-{secrets.token_hex(16)}"):
            refused = intruder.request("create_conversation", **self_fields(bob, cid=cid))
            assert refused["code"] == "bad_request", refused
        # alice's self conversation, signed by bob: bob is not its member
        refused = intruder.request("create_conversation", **self_fields(bob, member=alice))
        assert refused["code"] == "invalid_operation", refused
        # a room under a self id
        room = create_fields(intruder, bob, [alice.user_id], cid=mine)
        assert intruder.request("create_conversation", **room)["code"] == "bad_request"
        assert store(stack).get(mine) is None
        # once alice has it, bob can neither read it nor join it
        assert socket.request("create_conversation", **self_fields(alice))["action"] == (
            "conversation"
        )
        for action, extra in (
            ("conversation_devices", {}),
            ("membership_log", {"after": -1}),
            ("send", {"envelope": "AAAA"}),
        ):
            answer = intruder.request(action, conversation_id=mine, **extra)
            assert answer["code"] == "not_found", (action, answer)
        again = intruder.request("create_conversation", **self_fields(bob, member=alice))
        assert again["code"] == "invalid_operation", again
        state = log_state(socket, mine)
        joined = intruder.request(
            "add_members", conversation_id=mine, op=b64(sign(bob, state, Add((entry(bob),))))
        )
        assert joined["code"] == "not_found", joined
    assert members(stack, mine) == {alice.user_id: "member"}
