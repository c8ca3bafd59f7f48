"""Members see who joined, who left and a member's new device (issue 8, item 1), by name.

The words come from the verified log and the certificates, never from the
server's push: what a person is told is what the signatures say.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sotto.client.events import Event, NoticeEvent
from sotto_server.dal.conversations import ConversationsStore
from tests.support.people import add_device, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Notices"})["network_id"])


def notices(events: list[Event]) -> list[str]:
    return [e.detail for e in events if isinstance(e, NoticeEvent)]


def test_joins_leaves_and_new_devices_are_shown(stack, network, tmp_path: Path):
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
        messenger.send_text("#ops", "hello")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        shown = notices(messenger.sync())
    assert f"{alice.devices[0].handle} created the room with 2 members" in shown

    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.add_members("#ops", [carol.user_id])
        messenger.send_text("#ops", "welcome")
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        shown = notices(messenger.sync())
    assert f"{alice.devices[0].handle} added {carol.devices[0].handle}" in shown

    laptop = add_device(stack, bob)  # bob links a laptop; the stream adds it to the roster
    store = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
    deadline = time.monotonic() + 30
    while f"{bob.user_id}/{laptop.device_id}" not in store.roster(cid):
        assert time.monotonic() < deadline, "the new device never joined the roster"
        time.sleep(0.2)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        shown = notices(messenger.sync())  # bob's receipts came after the roster moved
        messenger.send_text("#ops", "to bob's laptop too")
        shown += notices(messenger.sync())
    assert any(f"has a new device ({laptop.device_id})" in n for n in shown), shown

    with messenger_for(stack, tmp_path, carol.devices[0]) as messenger:
        messenger.sync()
        messenger.leave(cid)
    with messenger_for(stack, tmp_path, bob.devices[0]) as messenger:
        shown = notices(messenger.sync())
    assert f"{carol.devices[0].handle} left" in shown
