"""The SDK follows a paged sync's ``resume`` token to the last page."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sotto.client.messenger import Messenger
from sotto.client.server import ServerConfig
from sotto_server.dal.conversations import Conversation, ConversationsStore, Member
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER
from sotto_server.logic.messaging import SYNC_PAGE_CONVERSATIONS
from tests.conversations.test_catchup import now_ms, seed_messages
from tests.support.logs import creation
from tests.support.stack import Stack, seed_device

from .conftest import enroll_person, open_messenger


def news_in_rooms(stack: Stack, server: ServerConfig, home: Path) -> tuple[Messenger, list[str]]:
    """A new person's Messenger, one more conversation with news than a page reads."""
    handle = f"reader{secrets.token_hex(4)}"
    user_id = enroll_person(stack, server, home, handle)
    messenger = open_messenger(home, handle)
    sender, witness = seed_device(stack), seed_device(stack)
    rooms = []
    for _ in range(SYNC_PAGE_CONVERSATIONS + 1):
        cid = f"room-{secrets.token_hex(12)}"
        store(stack).create(
            Conversation(cid, "room", sender.network_id, sender.user_id, now_ms(), 0, 1, 2),
            [Member(sender.user_id, "moderator", 0), Member(user_id, "member", 0)],
            {f"{sender.user_id}/{sender.device_id}"},
            max_per_user=MAX_CONVERSATIONS_PER_USER,
            log=creation(cid, sender, witness),  # never read: these tests sync only
        )
        # Opaque to sync; the SDK reports each as unreadable and moves on.
        seed_messages(stack, cid, sender, 1, 1)
        rooms.append(cid)
    return messenger, rooms


def store(stack: Stack) -> ConversationsStore:
    return ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))


def record_syncs(messenger: Messenger, *, corrupt: bool = False) -> list[dict[str, Any]]:
    """Each sync request's fields and the token its answer carried; ``corrupt``: the
    first answer's token is replaced by one the server cannot read."""
    calls: list[dict[str, Any]] = []
    original = messenger.session.request_parts

    def recording(action: str, **fields: Any) -> list[dict[str, Any]]:
        if action != "sync":
            return original(action, **fields)
        call: dict[str, Any] = {"sent": fields, "resume": None}
        calls.append(call)
        parts = original(action, **fields)
        call["resume"] = parts[-1].get("resume")
        if corrupt and len(calls) == 1:
            parts = [{**p, "resume": "not-a-token"} for p in parts]
        return parts

    messenger.session.request_parts = recording  # type: ignore[method-assign]
    return calls


def test_sync_follows_the_resume_token(stack: Stack, server: ServerConfig, tmp_path: Path) -> None:
    """Two pages, the second resumed from the first's token."""
    messenger, rooms = news_in_rooms(stack, server, tmp_path)
    calls = record_syncs(messenger)
    try:
        messenger.sync()
    finally:
        messenger.close()
    assert len(calls) == 2
    assert "resume" not in calls[0]["sent"]
    assert calls[0]["resume"]
    assert calls[1]["sent"] == {"resume": calls[0]["resume"]}
    assert calls[1]["resume"] is None
    cursors = store(stack).cursors_of(messenger.local.address[1], rooms)
    assert cursors == dict.fromkeys(rooms, 1)


def test_a_refused_token_syncs_from_the_cursors(
    stack: Stack, server: ServerConfig, tmp_path: Path
) -> None:
    messenger, rooms = news_in_rooms(stack, server, tmp_path)
    calls = record_syncs(messenger, corrupt=True)
    try:
        messenger.sync()
    finally:
        messenger.close()
    assert [c["sent"] for c in calls] == [{}, {"resume": "not-a-token"}, {}]
    cursors = store(stack).cursors_of(messenger.local.address[1], rooms)
    assert cursors == dict.fromkeys(rooms, 1)
