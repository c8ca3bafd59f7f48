"""Conversation routes: create direct conversations and rooms, add members, list, rosters.

A conversation's roster is the set of its members' active devices; every
change of it moves ``roster_version``, so senders rotate their chains.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from ..dal.conversations import Conversation, ConversationsStore, Member
from ..dal.directory import Conflict, DirectoryStore
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome, paginate
from .principal import Principal
from .requests import (
    AddMembersRequest,
    ConversationDevicesRequest,
    CreateConversationRequest,
    ListConversationsRequest,
)

__all__ = [
    "MAX_ROOM_MEMBERS",
    "Stores",
    "add_members",
    "conversation_devices",
    "create_conversation",
    "direct_id",
    "list_conversations",
    "member_of",
    "roster_entry",
]

MAX_ROOM_MEMBERS = 1000


@dataclass(frozen=True)
class Stores:
    directory: DirectoryStore
    conversations: ConversationsStore


def roster_entry(user_id: str, device_id: str) -> str:
    return f"{user_id}/{device_id}"


def direct_id(first: str, second: str) -> str:
    """The one direct conversation of two users, whoever creates it."""
    pair = "\x00".join(sorted((first, second)))
    return "dm-" + hashlib.sha256(b"sotto-direct-v1\x00" + pair.encode()).hexdigest()[:32]


def _frame(conversation: Conversation, members: list[Member]) -> dict[str, Any]:
    return {
        "conversation_id": conversation.conversation_id,
        "kind": conversation.kind,
        "members": [{"user_id": m.user_id, "role": m.role} for m in members],
        "roster_version": conversation.roster_version,
        "last_seq": conversation.last_seq,
        "created_at": conversation.created_at,
    }


def member_of(
    stores: Stores, caller: Principal, cid: str, rid: str | None
) -> tuple[Conversation, Member]:
    """The conversation and the caller's membership; not_found for non-members."""
    conversation = stores.conversations.get(cid)
    member = stores.conversations.member(cid, caller.user_id) if conversation else None
    if conversation is None or member is None or conversation.network_id != caller.network_id:
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)
    return conversation, member


def _active_devices(stores: Stores, user_ids: list[str]) -> set[str]:
    return {
        roster_entry(user_id, device_id)
        for user_id in user_ids
        for device_id, _certificate, status in stores.directory.list_devices(user_id)
        if status == "active"
    }


def _check_peers(stores: Stores, caller: Principal, user_ids: list[str], rid: str | None) -> None:
    for user_id in user_ids:
        user = stores.directory.get_user(user_id)
        if user is None or user.network_id != caller.network_id or user.status != "active":
            raise Refused(ErrorCode.NOT_FOUND, f"no such user {user_id!r}", rid)


def create_conversation(
    stores: Stores, caller: Principal, request: CreateConversationRequest, now_ms: int
) -> Outcome:
    rid = request.id
    if request.kind == "direct":
        if request.user_id is None or request.members:
            raise Refused(ErrorCode.BAD_REQUEST, "a direct conversation names one user_id", rid)
        if request.user_id == caller.user_id:
            raise Refused(ErrorCode.BAD_REQUEST, "a direct conversation needs another user", rid)
        others = [request.user_id]
        cid = direct_id(caller.user_id, request.user_id)
        existing = stores.conversations.get(cid)
        if existing is not None:
            conversation, _ = member_of(stores, caller, cid, rid)
            return _answer(stores, conversation, rid)
    else:
        if request.user_id is not None:
            raise Refused(ErrorCode.BAD_REQUEST, "a room names its members", rid)
        others = sorted(set(request.members) - {caller.user_id})
        cid = f"room-{secrets.token_hex(12)}"
    _check_peers(stores, caller, others, rid)
    users = [caller.user_id, *others]
    role_of_creator = "moderator" if request.kind == "room" else "member"
    members = [Member(caller.user_id, role_of_creator, 0)] + [
        Member(u, "member", 0) for u in others
    ]
    conversation = Conversation(
        conversation_id=cid,
        kind=request.kind,
        network_id=caller.network_id,
        created_by=caller.user_id,
        created_at=now_ms,
        last_seq=0,
        roster_version=1,
        member_count=len(members),
    )
    # Two devices creating the same direct conversation at once get the same one.
    devices = _active_devices(stores, users)
    with contextlib.suppress(Conflict):
        stores.conversations.create(conversation, members, devices)
        _join_late_devices(stores, cid, users, devices)
    conversation, _ = member_of(stores, caller, cid, rid)
    return _answer(stores, conversation, rid)


def _answer(stores: Stores, conversation: Conversation, rid: str | None) -> Outcome:
    members = stores.conversations.members(conversation.conversation_id)
    frame = {"action": "conversation", "id": rid, "conversation": _frame(conversation, members)}
    return Outcome(replies=[frame])


def add_members(
    stores: Stores, caller: Principal, request: AddMembersRequest, now_ms: int
) -> Outcome:
    rid = request.id
    conversation, member = member_of(stores, caller, request.conversation_id, rid)
    if conversation.kind != "room":
        raise Refused(ErrorCode.FORBIDDEN, "members are added to rooms only", rid)
    if member.role != "moderator":
        raise Refused(ErrorCode.FORBIDDEN, "only moderators add members", rid)
    current = {m.user_id for m in stores.conversations.members(conversation.conversation_id)}
    new = sorted(set(request.user_ids) - current)
    if not new:
        return _answer(stores, conversation, rid)
    if len(current) + len(new) > MAX_ROOM_MEMBERS:
        raise Refused(ErrorCode.BAD_REQUEST, f"rooms have at most {MAX_ROOM_MEMBERS} members", rid)
    _check_peers(stores, caller, new, rid)
    devices = _active_devices(stores, new)
    for _ in range(20):
        # Members added now see messages from the next seq on.
        joining = [Member(user_id, "member", conversation.last_seq) for user_id in new]
        try:
            stores.conversations.add_members(conversation, joining, devices)
            break
        except Conflict:
            conversation, _ = member_of(stores, caller, request.conversation_id, rid)
    else:
        raise Refused(ErrorCode.CONFLICT, "the room is changing; retry", rid)
    _join_late_devices(stores, conversation.conversation_id, new, devices)
    conversation, _ = member_of(stores, caller, request.conversation_id, rid)
    return _answer(stores, conversation, rid)


def _join_late_devices(stores: Stores, cid: str, user_ids: list[str], devices: set[str]) -> None:
    """Devices the new members linked while they were being added join now.

    The directory stream adds a linked device to its user's conversations,
    but one linked after the devices above were read and processed before
    the members were written would find no membership yet: one of the two
    always sees the other.
    """
    for entry in sorted(_active_devices(stores, user_ids) - devices):
        user_id, device_id = entry.split("/", 1)
        stores.conversations.roster_add(cid, user_id, device_id)


def list_conversations(
    stores: Stores, caller: Principal, request: ListConversationsRequest, now_ms: int
) -> Outcome:
    listed = []
    for cid, kind, role, _joined in stores.conversations.user_conversations(caller.user_id):
        conversation = stores.conversations.get(cid)
        if conversation is None:
            continue
        listed.append(
            {
                "conversation_id": cid,
                "kind": kind,
                "role": role,
                "roster_version": conversation.roster_version,
                "member_count": conversation.member_count,
                "last_seq": conversation.last_seq,
            }
        )
    header = {"action": "conversations", "id": request.id}
    return Outcome(replies=paginate(header, "conversations", listed))


def conversation_devices(
    stores: Stores, caller: Principal, request: ConversationDevicesRequest, now_ms: int
) -> Outcome:
    rid = request.id
    conversation, _ = member_of(stores, caller, request.conversation_id, rid)
    members = stores.conversations.members(conversation.conversation_id)
    roster = stores.conversations.roster(conversation.conversation_id)
    # One request per 100 users and per 100 devices, whatever the room size.
    users = stores.directory.get_users([m.user_id for m in members])
    pairs = [entry.split("/", 1) for entry in sorted(roster)]
    devices = stores.directory.get_devices([device_id for _, device_id in pairs])
    entries: list[dict[str, Any]] = [
        {
            "type": "member",
            "user_id": member.user_id,
            "role": member.role,
            "identity_key": b64(users[member.user_id].identity_key),
        }
        for member in members
        if member.user_id in users
    ]
    for user_id, device_id in pairs:
        device = devices.get(device_id)
        if device is None or device.status != "active":
            continue
        entries.append(
            {
                "type": "device",
                "user_id": user_id,
                "device_id": device_id,
                "certificate": b64(device.certificate),
            }
        )
    header = {
        "action": "conversation_devices",
        "id": rid,
        "conversation_id": conversation.conversation_id,
        "roster_version": conversation.roster_version,
    }
    pages = paginate(header, "entries", entries)
    for page in pages:
        items = page.pop("entries")
        page["members"] = [_untyped(e) for e in items if e["type"] == "member"]
        page["devices"] = [_untyped(e) for e in items if e["type"] == "device"]
    return Outcome(replies=pages)


def _untyped(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "type"}
