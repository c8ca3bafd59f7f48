"""Messaging on the server: conversations, ordered storage, sync, chains, expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sotto.protocol.conversation import MessageTimers
from tests.support.logs import add_fields, create_fields, direct_fields
from tests.support.stack import Socket, Stack, b64, seed_device

from .peers import Peer


@pytest.fixture
def pair(stack: Stack) -> Iterator[tuple[Peer, Peer]]:
    alice, bob = Peer.open(stack, seed_device(stack)), Peer.open(stack, seed_device(stack))
    yield alice, bob
    alice.close()
    bob.close()


def direct(alice: Peer, bob: Peer) -> str:
    fields = direct_fields(alice.socket, alice.device, bob.device.user_id)
    answer = alice.socket.request("create_conversation", **fields)
    cid = str(answer["conversation"]["conversation_id"])
    alice.join(cid)
    bob.join(cid)
    return cid


def message_items(stack: Stack, cid: str) -> int:
    return int(
        stack.client("dynamodb").query(
            TableName=stack.table("MessagesTable"),
            KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
            ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MSG#"}},
            Select="COUNT",
        )["Count"]
    )


def test_direct_conversation_is_the_same_whoever_creates_it(pair):
    alice, bob = pair
    first = alice.socket.request(
        "create_conversation", **direct_fields(alice.socket, alice.device, bob.device.user_id)
    )
    second = bob.socket.request(
        "create_conversation", **direct_fields(bob.socket, bob.device, alice.device.user_id)
    )
    assert first["conversation"]["conversation_id"] == second["conversation"]["conversation_id"]
    assert {m["user_id"] for m in first["conversation"]["members"]} == {
        alice.device.user_id,
        bob.device.user_id,
    }


def test_message_round_trip_in_order_with_acks(pair):
    alice, bob = pair
    cid = direct(alice, bob)
    acks = [alice.send(cid, f"hello {i}") for i in range(3)]
    assert [a["seq"] for a in acks] == [1, 2, 3]
    assert bob.sync() == [(cid, 1, "hello 0"), (cid, 2, "hello 1"), (cid, 3, "hello 2")]
    assert bob.sync() == []  # acknowledged: nothing twice
    reply = bob.send(cid, "hi alice")
    assert reply["seq"] == 4
    assert alice.sync() == [(cid, 4, "hi alice")]


def test_live_push_carries_the_stored_message(pair):
    alice, bob = pair
    cid = direct(alice, bob)
    sent = alice.send(cid, "pushed")
    pushed = bob.socket.push("message")
    assert (pushed["conversation_id"], pushed["seq"]) == (cid, sent["seq"])


def test_duplicate_send_is_stored_once_and_acked_the_same(stack, pair):
    alice, bob = pair
    cid = direct(alice, bob)
    first = alice.send(cid, "once")
    again = alice.socket.request("send", conversation_id=cid, envelope=b64(alice.last_envelope))
    assert again["seq"] == first["seq"]
    assert again["message_id"] == first["message_id"]
    assert message_items(stack, cid) == 1


def test_send_without_distribution_names_the_missing_devices(pair):
    alice, bob = pair
    cid = direct(alice, bob)
    answer = alice.send(cid, "no keys sent", distribute=False)
    assert answer["code"] == "stale_devices"
    assert answer["missing"] == [bob.device.device_id]
    assert answer["extra"] == []


def test_new_member_device_makes_the_old_chain_stale(stack, pair):
    alice, bob = pair
    cid = direct(alice, bob)
    alice.send(cid, "first")
    # Bob's second device arrives (seeded as a new user joining a room is the
    # same roster change; here a room shows it).
    carol = Peer.open(stack, seed_device(stack))
    room = alice.socket.request(
        "create_conversation", **create_fields(alice.socket, alice.device, [bob.device.user_id])
    )["conversation"]["conversation_id"]
    alice.join(room)
    alice.send(room, "before carol")
    added = alice.socket.request(
        "add_members", **add_fields(alice.socket, alice.device, room, [carol.device.user_id])
    )
    assert added["conversation"]["roster_version"] == 2
    stale = alice.socket.request(
        "send", conversation_id=room, envelope=b64(_reuse_chain(alice, room))
    )
    assert stale["code"] == "stale_devices"
    assert stale["missing"] == [carol.device.device_id]
    alice.refresh(room)
    assert alice.send(room, "after carol")["action"] == "sent"
    carol.join(room)
    assert carol.sync() == [(room, 2, "after carol")]  # no history from before joining
    carol.close()


def _reuse_chain(peer: Peer, cid: str) -> bytes:
    """An envelope on the peer's current chain, without the rotation a roster change needs."""
    from sotto.protocol.content import Text

    outgoing = peer.conversations[cid].prepare_send(Text("stale"), now=int(time.time() * 1000))
    return outgoing.envelope


def test_concurrent_senders_get_gap_free_order(stack):
    peers = [Peer.open(stack, seed_device(stack)) for _ in range(4)]
    fields = create_fields(peers[0].socket, peers[0].device, [p.device.user_id for p in peers[1:]])
    room = peers[0].socket.request("create_conversation", **fields)["conversation"][
        "conversation_id"
    ]
    for peer in peers:
        peer.join(room)

    def burst(peer: Peer) -> list[int]:
        return [peer.send(room, f"{peer.device.device_id} {i}")["seq"] for i in range(5)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        seqs = sorted(s for batch in pool.map(burst, peers) for s in batch)
    assert seqs == list(range(1, 21))
    received = peers[0].sync()
    assert [seq for _, seq, _ in received] == sorted(seq for _, seq, _ in received)
    assert len(received) == 15  # everyone else's messages, once
    for peer in peers:
        peer.close()


def test_non_member_can_neither_send_nor_see(stack, pair):
    alice, bob = pair
    cid = direct(alice, bob)
    with Socket(stack, seed_device(stack)) as mallory:
        answer = mallory.request("send", conversation_id=cid, envelope=b64(b"x" * 100))
        assert answer["code"] == "not_found"
        assert mallory.request("conversation_devices", conversation_id=cid)["code"] == "not_found"
        assert mallory.answers("sync")[0]["messages"] == []


def test_tampered_envelope_is_refused(pair):
    alice, bob = pair
    cid = direct(alice, bob)
    alice.send(cid, "genuine")
    tampered = bytearray(alice.last_envelope)
    tampered[-120] ^= 1
    answer = alice.socket.request("send", conversation_id=cid, envelope=b64(bytes(tampered)))
    assert answer["code"] == "invalid_envelope"


def test_expired_message_is_not_delivered(pair):
    alice, bob = pair
    cid = direct(alice, bob)
    first = alice.send(cid, "self-destructs", timers=MessageTimers(expires_in_ms=3000))
    assert first.get("seq") == 1, first
    alice.send(cid, "stays")
    time.sleep(3.2)
    assert bob.sync() == [(cid, 2, "stays")]


def test_read_ack_starts_burn_on_the_server(stack, pair):
    alice, bob = pair
    cid = direct(alice, bob)
    alice.send(cid, "burn after reading", timers=MessageTimers(burn_after_read_s=1))
    assert bob.sync() == [(cid, 1, "burn after reading")]
    bob.socket.request("ack", read=[{"conversation_id": cid, "seq": 1}])
    item = stack.client("dynamodb").get_item(
        TableName=stack.table("MessagesTable"),
        Key={"pk": {"S": f"CONV#{cid}"}, "sk": {"S": f"MSG#{1:012d}"}},
    )["Item"]
    assert 0 < int(item["expires_at_ms"]["N"]) <= time.time() * 1000 + 1500


def test_add_members_is_for_moderators_of_rooms(stack, pair):
    alice, bob = pair
    cid = direct(alice, bob)
    carol = seed_device(stack)
    # A direct conversation has no add: whatever the operation, it is refused.
    room = alice.socket.request(
        "create_conversation", **create_fields(alice.socket, alice.device, [bob.device.user_id])
    )["conversation"]["conversation_id"]
    signed_for_room = add_fields(alice.socket, alice.device, room, [carol.user_id])
    refused = alice.socket.request("add_members", conversation_id=cid, op=signed_for_room["op"])
    assert refused["code"] == "forbidden"
    by_member = bob.socket.request(
        "add_members", **add_fields(bob.socket, bob.device, room, [carol.user_id])
    )
    assert by_member["code"] == "forbidden"
    assert "not_moderator" in by_member["message"]
    listed = bob.socket.answers("list_conversations")[0]["conversations"]
    assert {c["conversation_id"] for c in listed} >= {cid, room}


def test_an_ack_naming_a_mail_item_twice_is_answered(pair):
    """A retried distribute stores the same mail id again (ids derive from what mail
    carries) and pushes it twice; a device acknowledging both copies in one ack was
    refused by DynamoDB ("item keys contain duplicates"): an integration error, no answer.
    """
    alice, bob = pair
    cid = direct(alice, bob)
    alice.send(cid, "with a new chain")  # its distribution is bob's mail
    mail_ids = [m["mail_id"] for part in bob.socket.answers("sync") for m in part["mail"]]
    assert mail_ids
    request_id = bob.socket.send({"action": "ack", "mail": mail_ids + mail_ids})
    answer = bob.socket.answer(request_id, timeout=10)
    assert answer["action"] == "acked"
    assert bob.socket.answers("sync")[0]["mail"] == []  # deleted, once
