"""Receipts reach a person once per message and kind, not once per device (issue 14, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sotto.client.events import ReceiptEvent
from tests.support.people import add_device, messenger_for, seed_person
from tests.support.stack import Stack, admin


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Receipts"})["network_id"])


def test_two_devices_delivering_make_one_receipt(stack, network, tmp_path: Path):
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    add_device(stack, bob)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        sent = messenger.send_text(bob.user_id, "did you get it?")
    for device in bob.devices:
        with messenger_for(stack, tmp_path, device) as receiver:
            receiver.sync()  # delivered, from each device
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        receipts = [e for e in messenger.sync() if isinstance(e, ReceiptEvent)]
        again = [e for e in messenger.sync() if isinstance(e, ReceiptEvent)]
        [stored] = [m for m in messenger.history(sent.conversation_id) if m.outgoing]
    assert [(r.receipt, r.message_ids) for r in receipts] == [("delivered", (sent.message_id,))]
    assert again == []
    assert stored.receipts == {bob.user_id: "delivered"}
