"""The SDK follows a paged sync's ``resume`` token to the last page."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sotto.client.server import ServerConfig
from sotto_server.dal.conversations import Conversation, ConversationsStore, Member
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER
from sotto_server.logic.messaging import SYNC_PAGE_CONVERSATIONS
from tests.conversations.test_catchup import now_ms, seed_messages
from tests.support.logs import creation
from tests.support.stack import Stack, seed_device

from .conftest import enroll_person, open_messenger


def test_sync_follows_the_resume_token(stack: Stack, server: ServerConfig, tmp_path: Path) -> None:
    """One more conversation with news than a page reads: two pages, the second resumed."""
    handle = f"reader{secrets.token_hex(4)}"
    user_id = enroll_person(stack, server, tmp_path, handle)
    messenger = open_messenger(tmp_path, handle)
    sender, witness = seed_device(stack), seed_device(stack)
    store = ConversationsStore(stack.client("dynamodb"), stack.table("MessagesTable"))
    rooms = []
    for _ in range(SYNC_PAGE_CONVERSATIONS + 1):
        cid = f"room-{secrets.token_hex(12)}"
        store.create(
            Conversation(cid, "room", sender.network_id, sender.user_id, now_ms(), 0, 1, 2),
            [Member(sender.user_id, "moderator", 0), Member(user_id, "member", 0)],
            {f"{sender.user_id}/{sender.device_id}"},
            max_per_user=MAX_CONVERSATIONS_PER_USER,
            log=creation(cid, sender, witness),  # never read: this test syncs only
        )
        # Opaque to sync; the SDK reports each as unreadable and moves on.
        seed_messages(stack, cid, sender, 1, 1)
        rooms.append(cid)

    calls: list[dict[str, Any]] = []
    original = messenger.session.request_parts

    def recording(action: str, **fields: Any) -> list[dict[str, Any]]:
        parts = original(action, **fields)
        if action == "sync":
            calls.append({"sent": fields, "resume": parts[-1].get("resume")})
        return parts

    messenger.session.request_parts = recording  # type: ignore[method-assign]
    try:
        messenger.sync()
    finally:
        messenger.close()
    assert len(calls) == 2
    assert "resume" not in calls[0]["sent"]
    assert calls[0]["resume"]
    assert calls[1]["sent"] == {"resume": calls[0]["resume"]}
    assert calls[1]["resume"] is None
    cursors = store.cursors_of(messenger.local.address[1], rooms)
    assert cursors == dict.fromkeys(rooms, 1)
