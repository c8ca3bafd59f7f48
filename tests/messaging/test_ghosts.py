"""A hostile server operator adds a ghost to a room: the clients give it nothing.

The operator here writes the tables directly, as someone who runs the
servers can: a user nobody added becomes a member with a device in the
roster; a member gets a device certified by an identity the operator made;
the stored log is cut short or reordered. The SDK must distribute no chain
key to the ghost, refuse to send rather than include it, name what it
refused, and refuse a log that does not verify.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sotto.client.errors import MessagingError
from sotto.client.events import MessageEvent, NoticeEvent
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from sotto.protocol.membership import verify_log
from sotto_server.dal.conversations import ConversationsStore, Member
from sotto_server.dal.directory import DeviceRecord, DirectoryStore
from sotto_server.logic.identity import signing_key_der
from tests.support.people import Seeded, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Ghosts"})["network_id"])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def conversations(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def directory(stack: Stack) -> DirectoryStore:
    return DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))


def mailbox(stack: Stack, device_id: str) -> int:
    return int(
        stack.client("dynamodb").query(
            TableName=stack.table("MessagesTable"),
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"MAIL#{device_id}"}},
            Select="COUNT",
        )["Count"]
    )


def insert_member(stack: Stack, cid: str, user_id: str, device_id: str) -> None:
    """What an operator with table access writes: a member and a roster device, no operation."""
    store = conversations(stack)
    conversation = store.get(cid)
    assert conversation is not None
    items: list[Any] = [
        store._membership_moved(conversation, 1),
        {
            "Update": {
                "TableName": stack.table("MessagesTable"),
                "Key": {"pk": {"S": f"CONV#{cid}"}, "sk": {"S": "ROSTER"}},
                "UpdateExpression": "ADD devices :d",
                "ExpressionAttributeValues": {":d": {"SS": [f"{user_id}/{device_id}"]}},
            }
        },
        *store._joins(cid, "room", Member(user_id, "member", conversation.last_seq), 5000),
    ]
    store._transact(items, {})


def room_of_three(stack: Stack, network: str, home: Path) -> tuple[Seeded, Seeded, str]:
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
        messenger.send_text("#ops", "before the ghost")
    return alice, bob, cid


def test_a_ghost_member_gets_no_key_and_the_sender_says_why(stack, network, home):
    alice, bob, cid = room_of_three(stack, network, home)
    ghost = seed_person(stack, network)
    ghost_device = ghost.devices[0].device_id
    insert_member(stack, cid, ghost.user_id, ghost_device)
    before = mailbox(stack, ghost_device)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        with pytest.raises(MessagingError, match="does not justify") as refused:
            messenger.send_text("#ops", "not for ghosts")
        assert ghost_device in str(refused.value)
        events = messenger.sync()
        # The client never showed the ghost as a member.
        assert ghost.user_id not in {m["user_id"] for m in messenger.members("#ops")}
    refusals = [e for e in events if isinstance(e, NoticeEvent) and e.code == "not_a_member"]
    assert refusals
    assert ghost_device in refusals[0].detail
    assert mailbox(stack, ghost_device) == before  # no distribution reached the ghost
    # Bob's client refuses the ghost too, and a message from it is not accepted.
    with messenger_for(stack, home, bob.devices[0]) as messenger:
        got = [e.text for e in messenger.sync() if isinstance(e, MessageEvent)]
        assert got == ["before the ghost"]
        assert ghost.user_id not in {m["user_id"] for m in messenger.members(cid)}


def test_a_device_certified_by_an_operator_identity_gets_no_key(stack, network, home):
    alice, bob, cid = room_of_three(stack, network, home)
    # A device for Bob, certified by an identity the operator made (not Bob's).
    forged = IdentityKeyPair.generate()
    now = int(time.time() * 1000)
    device = DeviceSecrets.create(forged, bob.user_id, "dev-operator00", now=now)
    directory(stack).put_device(
        DeviceRecord(
            device_id="dev-operator00",
            user_id=bob.user_id,
            network_id=network,
            signing_key=signing_key_der(device.certificate.device_key),
            status="active",
            created_at=now,
            certificate=device.certificate.serialize(),
        )
    )
    deadline = time.monotonic() + 10  # the directory stream puts it in Bob's rosters
    while f"{bob.user_id}/dev-operator00" not in conversations(stack).roster(cid):
        assert time.monotonic() < deadline, "the roster worker never added the device"
        time.sleep(0.1)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        with pytest.raises(MessagingError, match="dev-operator00"):
            messenger.send_text("#ops", "not for the operator")
        events = messenger.sync()
        members = {m["user_id"]: m["devices"] for m in messenger.members("#ops")}
    assert members[bob.user_id] == 1  # Bob's real device only
    assert any(
        isinstance(e, NoticeEvent) and e.code == "bad_certificate" and "dev-operator00" in e.detail
        for e in events
    )
    assert mailbox(stack, "dev-operator00") == 0


def test_a_log_served_short_or_reordered_is_not_trusted(stack, network, home):
    alice, bob, cid = room_of_three(stack, network, home)
    carol, dave = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.add_members("#ops", [carol.user_id])
        messenger.add_members("#ops", [dave.user_id])
    table, client = stack.table("MessagesTable"), stack.client("dynamodb")

    def item(sk: str) -> dict[str, Any]:
        key = {"pk": {"S": f"CONV#{cid}"}, "sk": {"S": sk}}
        return dict(client.get_item(TableName=table, Key=key)["Item"])

    ops = [bytes(item(f"LOG#{seq:08d}")["op"]["B"]) for seq in range(3)]
    with messenger_for(stack, home, bob.devices[0]) as messenger:
        assert {m["user_id"] for m in messenger.members(cid)} >= {dave.user_id}  # seq 2 verified
        # Withheld, consistently: the newest operation gone, the head moved back to seq 1.
        assert alice.devices[0].identity is not None
        identity = alice.devices[0].identity.public
        earlier = verify_log(ops[:2], [identity], conversation_id=cid, now=int(time.time() * 1000))
        client.delete_item(
            TableName=table, Key={"pk": {"S": f"CONV#{cid}"}, "sk": {"S": "LOG#00000002"}}
        )
        client.put_item(
            TableName=table,
            Item={**item("LOGSTATE"), "state": {"B": earlier.serialize()}, "seq": {"N": "1"}},
        )
        with pytest.raises(MessagingError, match=r"does not verify.*log_truncated"):
            messenger.members(cid)
    # Reordered: operation 2 stored where operation 1 was. A new reader refuses it too.
    client.put_item(TableName=table, Item={**item("LOG#00000001"), "op": {"B": ops[2]}})
    with (
        messenger_for(stack, home, dave.devices[0]) as messenger,
        pytest.raises(MessagingError, match="does not verify"),
    ):
        messenger.members(cid)
