"""Contacts and room labels reach the user's other devices end-to-end encrypted.

A person adds a contact and labels a room on one device; their other device
resolves ``send NAME`` and ``#LABEL`` after a sync, a device linked later
gets them too, and no table, object or log line of the stack holds either
name in any form.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sotto.client.events import Event, MessageEvent, ReceiptEvent
from sotto.client.messenger import Messenger
from sotto.client.server import ServerConfig
from sotto.protocol.membership import direct_conversation_id, self_conversation_id
from sotto_server.dal.conversations import ConversationsStore
from tests.support.stack import Stack

from .conftest import Team, enroll_person, link_second_device, open_messenger, texts, wait_for
from .test_plaintext_scan import _forms, _stored


def _quiet(events: list[Event], cid: str) -> None:
    """Nothing of the self conversation is shown: no message, no receipt."""
    assert [e for e in events if isinstance(e, MessageEvent) and e.conversation_id == cid] == []
    assert [e for e in events if isinstance(e, ReceiptEvent) and e.conversation_id == cid] == []


def test_contacts_and_labels_reach_the_users_other_devices(
    stack: Stack, server: ServerConfig, team: Team, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(4)
    contact, other_contact = f"quokka-robert-{suffix}", f"pangolin-carla-{suffix}"
    label = f"ultraviolet-skunkworks-{suffix}"
    name = f"dana{suffix}"
    dana = enroll_person(stack, server, tmp_path, name)
    link_second_device(server, tmp_path, name, f"{name}-2")
    d1, d2 = open_messenger(tmp_path, name), open_messenger(tmp_path, f"{name}-2")
    opened: list[Messenger] = [d1, d2]
    [b1, _b2] = team.bob.devices
    mine = self_conversation_id(dana)
    try:
        d1.sync()
        d2.sync()
        conversations = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
        # carol, with one device, added contacts too: nothing is sent, no self conversation
        assert conversations.get(self_conversation_id(team.carol.user_id)) is None

        # GIVEN dana's first device adds contacts and labels a room bob made
        d1.add_contact(contact, team.bob.user_id)
        d1.add_contact(other_contact, team.carol.user_id)
        room = b1.create_room(f"r{suffix}", [dana])
        d1.label_room(room, f"#{label}")
        assert conversations.get(mine) is not None  # made by dana's first device to sync

        # WHEN her second device syncs
        events = d2.sync()

        # THEN it names bob and the room as she does, and can send by those names
        _quiet(events, mine)
        assert d2.state.contacts[contact] == team.bob.user_id
        assert d2.state.contacts[other_contact] == team.carol.user_id
        assert d2.resolve(f"#{label}") == room
        sent = d2.send_text(contact, "hello bob, by the name my phone gave you")
        assert sent.conversation_id == direct_conversation_id(dana, team.bob.user_id)
        d2.send_text(f"#{label}", "hello room, by its label")
        assert "hello room, by its label" in texts(wait_for(b1, 1, room), room)
        # the self conversation is no chat, and nothing acknowledges its messages
        assert mine not in {row["conversation_id"] for row in d2.conversations()}
        assert d2.history(room)
        assert d2.state.conversations[mine].history == []
        _quiet(d1.sync(), mine)

        # A removal on one device is a removal on the other.
        d2.remove_contact(contact)
        d1.sync()
        assert contact not in d1.state.contacts
        assert d1.state.contacts[other_contact] == team.carol.user_id

        # A device linked later says hello; the first device to hear it sends the state.
        link_second_device(server, tmp_path, name, f"{name}-3")
        d3 = open_messenger(tmp_path, f"{name}-3")
        opened.append(d3)
        d3.sync()
        d1.sync()
        d3.sync()
        assert d3.resolve(f"#{label}") == room
        assert d3.state.contacts.get(other_contact) == team.carol.user_id
        assert contact not in d3.state.contacts

        # AND the server never held a contact name or a label, in any form
        corpus = _stored(stack)
        needles = {"contact": contact, "other contact": other_contact, "label": label}
        leaks = [
            f"{what} in {where}"
            for what, secret in needles.items()
            for form in _forms(secret.encode())
            for where, data in corpus.items()
            if form in data
        ]
        assert leaks == []
    finally:
        for device in opened:
            device.close()
