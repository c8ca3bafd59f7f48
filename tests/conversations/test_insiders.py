"""Hostile insiders: each attack a member of the network tried, refused at the defaults.

Run on the stack at the deployment's default rate limits (``default_stack``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
from websockets.sync.client import connect

from sotto.frames.requests import SendRequest, SyncRequest
from sotto.protocol.content import Receipt, Text
from sotto.protocol.conversation import MessageTimers
from sotto_server.dal.conversations import ConversationsStore, StoredMessage
from sotto_server.dal.directory import DirectoryStore
from sotto_server.logic import conversations as logic
from sotto_server.logic import messaging
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER
from sotto_server.logic.errors import Refused
from sotto_server.logic.principal import Principal
from tests.support.logs import add_fields, create_fields, direct_fields, leave_fields
from tests.support.stack import Stack, admin, b64, seed_device

from .peers import Peer


@pytest.fixture(scope="module")
def network(default_stack: Stack) -> str:
    return str(admin(default_stack, "POST", "/networks", {"name": "Insiders"})["network_id"])


@pytest.fixture
def trio(default_stack: Stack, network: str) -> Iterator[tuple[Peer, Peer, Peer]]:
    peers = tuple(
        Peer.open(default_stack, seed_device(default_stack, network_id=network), prekeys=5)
        for _ in range(3)
    )
    yield peers  # type: ignore[misc]
    for peer in peers:
        peer.close()


def directory(stack: Stack) -> DirectoryStore:
    return DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))


def store(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def room(owner: Peer, *others: Peer) -> str:
    fields = create_fields(owner.socket, owner.device, [p.device.user_id for p in others])
    answer = owner.socket.request("create_conversation", **fields)
    cid = str(answer["conversation"]["conversation_id"])
    for peer in (owner, *others):
        peer.join(cid)
    return cid


def mail_items(stack: Stack, device_id: str) -> int:
    return int(
        stack.client("dynamodb").query(
            TableName=stack.table("MessagesTable"),
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"MAIL#{device_id}"}},
            Select="COUNT",
        )["Count"]
    )


# -- forced membership -------------------------------------------------------------


def test_anyone_added_to_a_room_can_leave_it(trio):
    mallory, victim, _ = trio
    cid = room(mallory, victim)
    left = victim.socket.request("leave", **leave_fields(victim.socket, victim.device, cid))
    assert left == {"action": "left", "id": left["id"], "conversation_id": cid}
    listed = victim.socket.answers("list_conversations")
    assert cid not in {c["conversation_id"] for p in listed for c in p["conversations"]}
    # ...and is sent nothing more: a key distribution to the victim is refused.
    with pytest.raises(AssertionError, match="for a device outside the conversation"):
        mallory.send(cid, "after you left")
    assert mail_items(victim.stack, victim.device.device_id) == 0


def test_room_creation_is_rate_limited_per_user(default_stack, network):
    creator = Peer.open(default_stack, seed_device(default_stack, network_id=network), prekeys=0)
    with creator.socket:
        codes = [
            creator.socket.request(
                "create_conversation", **create_fields(creator.socket, creator.device, [])
            ).get("code", "conversation")
            for _ in range(31)
        ]
    assert codes[:30] == ["conversation"] * 30
    assert codes[30] == "rate_limited"


def test_nobody_is_put_in_more_than_the_cap_of_conversations(default_stack, trio):
    mallory, victim, _ = trio
    # The victim is already at the cap (its count seeded; 5000 real rooms are not needed).
    stack = default_stack
    stack.client("dynamodb").put_item(
        TableName=stack.table("MessagesTable"),
        Item={
            "pk": {"S": f"USERCONV#{victim.device.user_id}"},
            "sk": {"S": "COUNT"},
            "conversations": {"N": str(MAX_CONVERSATIONS_PER_USER)},
        },
    )
    answer = mallory.socket.request(
        "create_conversation",
        **create_fields(mallory.socket, mallory.device, [victim.device.user_id]),
    )
    assert answer["code"] == "conflict"
    assert victim.device.user_id in answer["message"]
    cid = room(mallory)
    answer = mallory.socket.request(
        "add_members", **add_fields(mallory.socket, mallory.device, cid, [victim.device.user_id])
    )
    assert answer["code"] == "conflict"
    assert store(stack).member(cid, victim.device.user_id) is None


def test_sync_reads_messages_only_of_conversations_with_news(default_stack, network):
    """A user put in 300 quiet rooms: sync reads their heads in 3 batches, queries none."""
    stack = default_stack
    victim, other = seed_device(stack, network_id=network), seed_device(stack, network_id=network)
    from tests.identity.test_revocation import seed_rooms

    rooms = seed_rooms(stack, victim, other, 300)
    counting = CountingConversations(store(stack))
    stores = logic.Stores(directory(stack), counting)  # type: ignore[arg-type]
    caller = Principal(victim.device_id, victim.user_id, victim.network_id)
    outcome = messaging.sync(stores, caller, SyncRequest(action="sync"), int(time.time() * 1000))
    assert outcome.replies[-1]["messages"] == []
    assert "messages_after" not in counting.calls
    assert counting.calls.count("get_many") == 1
    # One room with news: only it is queried.
    store(stack).append(
        store(stack).get(rooms[7]),  # type: ignore[arg-type]
        StoredMessage(rooms[7], 0, b"x", other.device_id, "ab" * 16, int(time.time() * 1e3), 0, 0),
    )
    counting.calls.clear()
    outcome = messaging.sync(stores, caller, SyncRequest(action="sync"), int(time.time() * 1000))
    assert [m["conversation_id"] for m in outcome.replies[-1]["messages"]] == [rooms[7]]
    assert counting.calls.count("messages_after") == 1


# -- mailbox flooding ----------------------------------------------------------------


def test_a_frame_repeating_a_recipient_is_refused(trio):
    alice, bob, _ = trio
    cid = room(alice, bob)
    conversation = alice.conversations[cid]
    outgoing = conversation.prepare_send(
        Text("x"),
        now=int(time.time() * 1000),
        prekeys=alice.prekeys_for(cid),
    )
    (distribution,) = outgoing.distributions
    answer = alice.socket.request(
        "distribute",
        conversation_id=cid,
        chain_id=b64(outgoing.header.chain_id),
        distributions=[b64(distribution.data)] * 40,
    )
    assert answer["code"] == "invalid_envelope"
    assert "repeats a recipient" in answer["message"]
    assert mail_items(alice.stack, bob.device.device_id) == 0


def test_repeated_distributions_and_receipts_are_stored_once(trio):
    alice, bob, _ = trio
    cid = room(alice, bob)
    conversation = alice.conversations[cid]
    outgoing = conversation.prepare_send(
        Text("x"), now=int(time.time() * 1000), prekeys=alice.prekeys_for(cid)
    )
    (distribution,) = outgoing.distributions
    for _ in range(30):
        answer = alice.socket.request(
            "distribute",
            conversation_id=cid,
            chain_id=b64(outgoing.header.chain_id),
            distributions=[b64(distribution.data)],
        )
        assert answer["action"] == "distributed"
    assert mail_items(alice.stack, bob.device.device_id) == 1
    receipt = conversation.prepare_send(
        Receipt(Receipt.DELIVERED, (outgoing.message_id,)), now=int(time.time() * 1000)
    )
    for _ in range(5):
        sent = alice.socket.request(
            "send", conversation_id=cid, envelope=b64(receipt.envelope), to_user=bob.device.user_id
        )
        assert sent["mailbox"] is True
    assert mail_items(alice.stack, bob.device.device_id) == 2


def test_junk_mail_never_holds_messages_back(default_stack, trio):
    """Mail and messages have separate sync budgets: 300 junk mail items, messages still come."""
    alice, bob, _ = trio
    cid = room(alice, bob)
    alice.send(cid, "real message")
    items = [
        {
            "PutRequest": {
                "Item": {
                    "pk": {"S": f"MAIL#{bob.device.device_id}"},
                    "sk": {"S": f"M#{i:032x}"},
                    "conversation_id": {"S": cid},
                    "kind": {"S": "distribution"},
                    "data": {"B": b"junk"},
                    "from_device": {"S": alice.device.device_id},
                    "server_time": {"N": "1"},
                }
            }
        }
        for i in range(300)
    ]
    client = default_stack.client("dynamodb")
    for start in range(0, len(items), 25):
        client.batch_write_item(
            RequestItems={default_stack.table("MessagesTable"): items[start : start + 25]}
        )
    (part, *rest) = bob.socket.answers("sync")
    messages = [m for p in (part, *rest) for m in p["messages"]]
    assert [m["seq"] for m in messages] == [1]
    assert part["more"] is True  # the junk continues on the next page


def test_new_chains_per_device_are_bounded(default_stack, trio):
    """Each new chain is mail for every device of a room: 120 per device and hour."""
    alice, bob, _ = trio
    cid = room(alice, bob)
    codes = []
    for _ in range(121):
        conversation = alice.conversations[cid]
        conversation.request_rotation()
        outgoing = conversation.prepare_send(
            Text("x"),
            now=int(time.time() * 1000),
            prekeys=alice.prekeys_for(cid),
        )
        answer = alice.socket.request(
            "distribute",
            conversation_id=cid,
            chain_id=b64(outgoing.header.chain_id),
            distributions=[b64(d.data) for d in outgoing.distributions],
        )
        codes.append(answer.get("code", answer["action"]))
    assert codes[:120] == ["distributed"] * 120
    assert codes[120] == "rate_limited"


# -- burn and acks -------------------------------------------------------------------


def test_a_member_added_later_cannot_start_the_burn_of_an_earlier_message(trio):
    alice, bob, carol = trio
    cid = room(alice, bob)
    sent = alice.send(cid, "burns after reading", timers=MessageTimers(burn_after_read_s=60))
    answer = alice.socket.request(
        "add_members", **add_fields(alice.socket, alice.device, cid, [carol.device.user_id])
    )
    assert answer["action"] == "conversation"
    carol.join(cid)
    acked = carol.socket.request(
        "ack", read=[{"conversation_id": cid, "seq": sent["seq"]}], cursors={}, mail=[]
    )
    assert acked["action"] == "acked"
    (message,) = store(alice.stack).messages_after(cid, 0, limit=5)
    assert message.expires_at == 0  # no burn started


def test_an_ack_takes_at_most_100_cursors(trio):
    alice, *_ = trio
    answer = alice.socket.request(
        "ack", cursors={f"room-{i}": 1 for i in range(101)}, mail=[], read=[]
    )
    assert answer["code"] == "bad_request"


# -- timing oracle --------------------------------------------------------------------


class CountingConversations:
    """Wraps the store and records which reads a route makes."""

    def __init__(self, inner: ConversationsStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.inner, name)


def test_send_to_a_conversation_of_others_reads_one_item_keyed_by_the_caller(default_stack):
    """Existing or not, a conversation the caller is not in costs the same single read."""
    stack = default_stack
    alice, bob, eve = (seed_device(stack) for _ in range(3))
    cid = logic.direct_id(alice.user_id, bob.user_id)
    peer = Peer.open(stack, alice, prekeys=0)
    with peer.socket:
        peer.socket.request("create_conversation", **direct_fields(peer.socket, alice, bob.user_id))
    for target in (cid, logic.direct_id(alice.user_id, eve.user_id)):  # exists / does not
        counting = CountingConversations(store(stack))
        stores = logic.Stores(
            DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable")),
            counting,  # type: ignore[arg-type]
        )
        request = SendRequest.model_validate(
            {"action": "send", "conversation_id": target, "envelope": "eA"}
        )
        caller = Principal(eve.device_id, eve.user_id, eve.network_id)
        with pytest.raises(Refused) as refused:
            messaging.send(stores, caller, request, 0)
        assert refused.value.code == "not_found"
        assert counting.calls == ["member"]


# -- parser crashes --------------------------------------------------------------------


def test_a_5000_digit_integer_is_a_documented_error(default_stack):
    device = seed_device(default_stack)
    with connect(
        default_stack.websocket, additional_headers=device.headers(default_stack.audience)
    ) as ws:
        ws.send('{"action": "ack", "id": "r1", "cursors": {"c": ' + "9" * 5000 + "}}")
        answer = json.loads(ws.recv(timeout=10))
        ws.send('{"action": "ping", "id": "r2", "payload": ' + "1" * 5000 + "}")
        second = json.loads(ws.recv(timeout=10))
    assert (answer["action"], answer["code"]) == ("error", "bad_json")
    assert (second["action"], second["code"]) == ("error", "bad_json")


def test_a_non_utf8_http_body_is_a_documented_error(default_stack):
    parts = urlsplit(default_stack.endpoints["http"])
    connection = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    connection.request(
        "POST",
        "/v1/enroll/lookup",
        body=b'{"code": "\xff\xfe"}',
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 400
    assert body["code"] == "bad_json"
