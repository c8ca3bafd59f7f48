"""A prepared message is never lost without a word (issue 14, item 12, first cause).

A device prepares a message (its state saved: the message must go out), then
stops before the server confirms it. Meanwhile the room's roster moves. The
next command's sync used to drop the message silently on ``stale_devices``;
now it prepares it again for the new roster and sends it, keeps it through a
refusal that may pass, and names a message it cannot send.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sotto.client.events import MessageEvent, NoticeEvent
from sotto.protocol.content import Text
from sotto.protocol.conversation import MessageTimers
from sotto_server.dal.conversations import ConversationsStore
from tests.support.people import Seeded, add_device, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Outbox"})["network_id"])


def texts(events: Sequence[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def prepared_then_crash(stack: Stack, home: Path, alice: Seeded, cid: str, text: str, **t: int):
    """Prepare and save, then stop before anything is sent (a crash, a dropped network)."""
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger._prepare(cid, Text(text), timers=MessageTimers(**t), to_user=None)
        messenger.save()
        assert len(messenger.state.outbox) == 1


def wait_for_roster(stack: Stack, cid: str, entry: str) -> None:
    store = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
    deadline = time.monotonic() + 30
    while entry not in store.roster(cid):
        assert time.monotonic() < deadline, f"{entry} never joined the roster"
        time.sleep(0.2)


def test_a_prepared_message_survives_a_roster_change(stack, network, tmp_path: Path):
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
        messenger.send_text("#ops", "first")
    prepared_then_crash(stack, tmp_path, alice, cid, "prepared before the laptop")
    laptop = add_device(stack, bob)
    wait_for_roster(stack, cid, f"{bob.user_id}/{laptop.device_id}")

    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.sync()  # flushes the outbox first: stale_devices, prepared again, sent
        assert messenger.state.outbox == []
        [kept] = [m for m in messenger.history(cid) if m.text == "prepared before the laptop"]
        assert kept.seq is not None
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["first", "prepared before the laptop"]
    with messenger_for(stack, tmp_path, laptop) as messenger:
        assert texts(messenger.sync()) == ["prepared before the laptop"]


def test_a_prepared_message_that_expired_meanwhile_is_named_not_sent(
    stack, network, tmp_path: Path
):
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
        messenger.send_text("#ops", "first")
    prepared_then_crash(stack, tmp_path, alice, cid, "short-lived", expires_in_ms=1500)
    laptop = add_device(stack, bob)
    wait_for_roster(stack, cid, f"{bob.user_id}/{laptop.device_id}")
    time.sleep(1.6)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        events = messenger.sync()
        assert messenger.state.outbox == []
    assert any(
        isinstance(e, NoticeEvent) and e.code == "expired" and "prepared earlier" in e.detail
        for e in events
    ), events


def test_a_send_after_a_crash_sends_what_was_prepared_first(stack, network, tmp_path: Path):
    """Prepared (its first distribution opening bob's session) and never sent; the
    roster moved; back up, the person sends again before anything synced. The
    prepared message goes first, and both reach every device in order."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
    prepared_then_crash(stack, tmp_path, alice, cid, "prepared before the crash")
    laptop = add_device(stack, bob)
    wait_for_roster(stack, cid, f"{bob.user_id}/{laptop.device_id}")
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "said after it")
        assert messenger.state.outbox == []
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["prepared before the crash", "said after it"]
    with messenger_for(stack, tmp_path, laptop) as messenger:
        assert texts(messenger.sync()) == ["prepared before the crash", "said after it"]


def test_a_send_refused_at_distribute_opens_its_sessions_again(stack, network, tmp_path: Path):
    """The first try's distributions opened a session to bob's phone and were refused
    (carol had left: a distribution to her device is refused outright). The retry
    must open bob's session again, not continue one his phone never saw."""
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id, carol.user_id])
        messenger.engine(cid)  # the roster as it is now, kept for the send
        with messenger_for(stack, tmp_path, carol.devices[0]) as leaving:
            leaving.leave(cid)
        store = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
        deadline = time.monotonic() + 30
        while any(entry.startswith(carol.user_id) for entry in store.roster(cid)):
            assert time.monotonic() < deadline, "carol never left the roster"
            time.sleep(0.2)
        messenger.send_text("#ops", "after carol left")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        assert texts(messenger.sync()) == ["after carol left"]


def test_a_prepared_message_that_cannot_be_prepared_again_is_named_not_dropped(
    stack, network, tmp_path: Path
):
    """An older version's outbox kept no content: when the roster moved under it, the
    message was dropped without a word; now a notice names it."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
        messenger.send_text("#ops", "first")
        item = messenger._prepare(cid, Text("from an older version"), timers=None, to_user=None)
        item.content = b""
        messenger.save()
    laptop = add_device(stack, bob)
    wait_for_roster(stack, cid, f"{bob.user_id}/{laptop.device_id}")
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        events = messenger.sync()
        assert messenger.state.outbox == []
        assert [m.text for m in messenger.history(cid)] == ["first"]
    assert any(
        isinstance(e, NoticeEvent)
        and e.code == "stale_devices"
        and e.detail.startswith("a message prepared earlier was not sent")
        for e in events
    ), events
