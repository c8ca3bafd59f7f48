"""Rooms, many devices and moderation through the SDK, at the deployment's default limits.

Everything here runs on ``default_stack`` (``--rate-limit-scale 1``), with
people enrolled from their own addresses: what a real sender meets.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sotto.client.devices import list_devices
from sotto.client.events import Event, MessageEvent, NoticeEvent
from sotto.protocol.errors import ProtocolError
from sotto_server.dal.conversations import ConversationsStore
from tests.support.people import Seeded, add_device, messenger_for, seed_person
from tests.support.stack import Stack, admin

ROOM_SIZE = 100
DEVICES = 25


@pytest.fixture(scope="module")
def network(default_stack: Stack) -> str:
    return str(admin(default_stack, "POST", "/networks", {"name": "At the defaults"})["network_id"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sotto-home-defaults")


def texts(events: list[Event], cid: str) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent) and e.conversation_id == cid]


def store(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def receive(stack: Stack, home: Path, person: Seeded, cid: str) -> list[str]:
    """Every device of ``person`` syncs; the texts each decrypted in ``cid``."""
    got = []
    for device in person.devices:
        with messenger_for(stack, home, device) as messenger:
            got.append(texts(messenger.sync(), cid))
    return [t for per_device in got for t in per_device]


def test_a_100_member_room_gets_its_first_message_out(default_stack, network, home):
    stack = default_stack
    with ThreadPoolExecutor(max_workers=4) as pool:
        people = list(pool.map(lambda _: seed_person(stack, network), range(ROOM_SIZE)))
    sender, *members = people
    with messenger_for(stack, home, sender.devices[0]) as messenger:
        cid = messenger.create_room("hundred", [m.user_id for m in members])
        started = time.monotonic()
        sent = messenger.send_text("#hundred", "hello, hundred")
        took = time.monotonic() - started
    print(f"first message to a {ROOM_SIZE}-member room: {took:.1f} s")
    assert sent.seq == 1
    # The server took the send only because the chain reached every member device.
    recorded = store(stack).chain(cid, sender.devices[0].device_id)
    assert recorded is not None
    assert {e.split("/", 1)[0] for e in recorded[1]} == {m.user_id for m in members}
    # And members decrypt it (a sample: each one's sync is a second or so).
    for member in members[::11]:
        assert receive(stack, home, member, cid) == ["hello, hundred"]


@pytest.fixture(scope="module")
def many(default_stack: Stack, network: str) -> Seeded:
    person = seed_person(default_stack, network)
    for _ in range(DEVICES - 1):
        add_device(default_stack, person)
    return person


def test_a_user_with_25_devices_is_listed_messaged_and_links_more(
    default_stack, network, home, many
):
    stack = default_stack
    with messenger_for(stack, home, many.devices[0]) as own:
        listing = list_devices(own.info, own.keys, many.user_id)
    assert len([d for d in listing.devices if d.status == "active"]) == DEVICES
    assert all(d.verified for d in listing.devices)

    friend = seed_person(stack, network)
    with messenger_for(stack, home, friend.devices[0]) as messenger:
        cid = messenger.direct(many.user_id)
        sent = messenger.send_text(cid, "to all of you")
    assert sent.seq == 1
    recorded = store(stack).chain(cid, friend.devices[0].device_id)
    assert recorded is not None
    assert len(recorded[1]) == DEVICES
    for device in many.devices[:: DEVICES // 4]:
        with messenger_for(stack, home, device) as receiver:
            assert texts(receiver.sync(), cid) == ["to all of you"]

    # A 26th device joins the conversation's roster (through the directory stream).
    newest = add_device(stack, many)
    deadline = time.monotonic() + 30
    entry = f"{many.user_id}/{newest.device_id}"
    while entry not in store(stack).roster(cid):
        assert time.monotonic() < deadline, "the new device never joined the roster"
        time.sleep(0.2)
    with messenger_for(stack, home, friend.devices[0]) as messenger:
        messenger.send_text(cid, "and to the newest")
    with messenger_for(stack, home, newest) as receiver:
        assert texts(receiver.sync(), cid) == ["and to the newest"]


def test_moderators_remove_and_the_removed_read_nothing_that_follows(default_stack, network, home):
    stack = default_stack
    alice, bob, carol, dave = (seed_person(stack, network) for _ in range(4))
    with messenger_for(stack, home, alice.devices[0]) as moderator:
        cid = moderator.create_room("mod", [bob.user_id, carol.user_id, dave.user_id])
        moderator.set_room_profile("#mod", "Field team", "coordination")
        moderator.send_text("#mod", "before")
    assert receive(stack, home, carol, cid) == ["before"]
    with messenger_for(stack, home, carol.devices[0]) as removed:
        removed.sync()
        old_state = removed.engine(cid).serialize()
    with messenger_for(stack, home, alice.devices[0]) as moderator:
        moderator.set_role("#mod", bob.user_id, "moderator")
        members = {m["user_id"]: m["role"] for m in moderator.members("#mod")}
        assert members[bob.user_id] == "moderator"
        moderator.remove_members("#mod", [carol.user_id])
        after = moderator.send_text("#mod", "after carol left")
    # Bob reads it, and sees who was removed and what the room is called.
    with messenger_for(stack, home, bob.devices[0]) as member:
        events = member.sync()
        assert texts(events, cid) == ["before", "after carol left"]
        assert member.state.conversations[cid].room_name == "Field team"
        assert member.display_name(member.state.conversations[cid]) == "#Field team"
    # Carol is not served the message, and her old chain keys cannot open it.
    assert receive(stack, home, carol, cid) == []
    (stored,) = [m for m in store(stack).messages_after(cid, 0, 10) if m.seq == after.seq]
    with messenger_for(stack, home, carol.devices[0]) as removed:
        engine = type(removed.engine(cid)).parse(old_state, removed.local)
        with pytest.raises(ProtocolError):
            engine.receive_envelope(stored.envelope, now=int(time.time() * 1000))
    # Dave, online, is told at once.
    with messenger_for(stack, home, dave.devices[0]) as watcher:
        watcher.sync()
        with messenger_for(stack, home, alice.devices[0]) as moderator:
            moderator.remove_members("#mod", [bob.user_id])
        notices: list[NoticeEvent] = []
        deadline = time.monotonic() + 10
        while not notices and time.monotonic() < deadline:
            notices = [e for e in watcher.poll(0.5) if isinstance(e, NoticeEvent)]
    assert any("removed" in n.detail for n in notices), notices


def test_anyone_may_leave_but_a_room_keeps_a_moderator(default_stack, network, home):
    stack = default_stack
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as moderator:
        moderator.create_room("leaving", [bob.user_id])
        with pytest.raises(Exception, match="keeps at least one moderator"):
            moderator.leave("#leaving")
    with messenger_for(stack, home, bob.devices[0]) as member:
        member.conversations()
        cid = next(iter(member.state.conversations))
        member.leave(cid)
        assert member.state.conversations[cid].left
