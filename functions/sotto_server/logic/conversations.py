"""Conversation routes: direct conversations and rooms, their members and moderators, rosters.

A conversation's roster is the set of its members' active devices; every
change of it moves ``roster_version``, so senders rotate their chains. Rooms
have moderators: they add and remove members and promote or demote others;
any member may leave. Every membership change is pushed to the devices of
everyone it concerns (``membership``), the stored state being the truth.

A user belongs to at most ``MAX_CONVERSATIONS_PER_USER`` conversations and
creates rooms at a bounded rate, so nobody can bury another user in rooms;
and anybody added can leave.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..dal.conversations import Conversation, ConversationsStore, Member
from ..dal.directory import Conflict, DirectoryStore
from ..dal.guards import GuardsStore
from . import limits
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome, paginate_lists
from .principal import Principal
from .requests import (
    AddMembersRequest,
    ConversationDevicesRequest,
    CreateConversationRequest,
    LeaveRequest,
    ListConversationsRequest,
    RemoveMembersRequest,
    SetRoleRequest,
)

__all__ = [
    "MAX_CONVERSATIONS_PER_USER",
    "MAX_ROOM_MEMBERS",
    "Stores",
    "add_members",
    "conversation_devices",
    "create_conversation",
    "direct_id",
    "leave",
    "list_conversations",
    "member_of",
    "remove_members",
    "roster_entry",
    "set_role",
]

MAX_ROOM_MEMBERS = 1000
# Direct conversations and rooms together; a user leaves rooms to make room.
MAX_CONVERSATIONS_PER_USER = 5000
# A membership change retries this often when the conversation moves under it.
_RETRIES = 20


@dataclass(frozen=True)
class Stores:
    directory: DirectoryStore
    conversations: ConversationsStore
    guards: GuardsStore | None = None
    limit_scale: float = 1.0


def roster_entry(user_id: str, device_id: str) -> str:
    return f"{user_id}/{device_id}"


def direct_id(first: str, second: str) -> str:
    """The one direct conversation of two users, whoever creates it."""
    pair = "\x00".join(sorted((first, second)))
    return "dm-" + hashlib.sha256(b"sotto-direct-v1\x00" + pair.encode()).hexdigest()[:32]


def limit(stores: Stores, bucket: str, subject: str, now_ms: int, rid: str | None) -> None:
    if stores.guards is None:
        return
    try:
        limits.check(stores.guards, bucket, subject, now_ms // 1000, stores.limit_scale)
    except limits.RateLimited as limited:
        raise Refused(
            ErrorCode.RATE_LIMITED,
            "too many requests; retry later",
            rid,
            retry_after_s=limited.retry_after_s,
        ) from None


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
    """The conversation and the caller's membership; not_found for non-members.

    The caller's own membership is read first, keyed by the caller, so a
    non-member learns nothing from timing about whether the conversation exists.
    """
    member = stores.conversations.member(cid, caller.user_id)
    conversation = stores.conversations.get(cid) if member is not None else None
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
    users = stores.directory.get_users(user_ids)
    for user_id in user_ids:
        user = users.get(user_id)
        if user is None or user.network_id != caller.network_id or user.status != "active":
            raise Refused(ErrorCode.NOT_FOUND, f"no such user {user_id!r}", rid)


def _too_many(conflict: Conflict, rid: str | None) -> Refused | None:
    if not conflict.reason.startswith("too_many_conversations:"):
        return None
    user_id = conflict.reason.split(":", 1)[1]
    return Refused(
        ErrorCode.CONFLICT,
        f"user {user_id!r} is in {MAX_CONVERSATIONS_PER_USER} conversations already",
        rid,
        details={"user_id": user_id},
    )


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
        if stores.conversations.member(cid, caller.user_id) is not None:
            conversation, _ = member_of(stores, caller, cid, rid)
            return _answer(stores, conversation, rid)
        limit(stores, "direct_create_user", caller.user_id, now_ms, rid)
    else:
        if request.user_id is not None:
            raise Refused(ErrorCode.BAD_REQUEST, "a room names its members", rid)
        limit(stores, "room_create_user", caller.user_id, now_ms, rid)
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
    devices = _active_devices(stores, users)
    try:
        stores.conversations.create(
            conversation, members, devices, max_per_user=MAX_CONVERSATIONS_PER_USER
        )
    except Conflict as conflict:
        refused = _too_many(conflict, rid)
        if refused is not None:
            raise refused from None
        # Two devices creating the same direct conversation at once get the same one.
    else:
        _join_late_devices(stores, cid, users, devices)
    conversation, _ = member_of(stores, caller, cid, rid)
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(stores, conversation, "added", others, caller, set())
    return outcome


def _answer(stores: Stores, conversation: Conversation, rid: str | None) -> Outcome:
    """The conversation as it is now (re-read: the caller just changed it)."""
    conversation = stores.conversations.get(conversation.conversation_id) or conversation
    members = stores.conversations.members(conversation.conversation_id)
    frame = {"action": "conversation", "id": rid, "conversation": _frame(conversation, members)}
    return Outcome(replies=[frame])


def _membership_notices(
    stores: Stores,
    conversation: Conversation,
    change: str,
    user_ids: list[str],
    caller: Principal,
    also: set[str],
) -> list[tuple[str, dict[str, Any]]]:
    """``membership`` pushes to the roster's devices and ``also`` (those who just left)."""
    roster = stores.conversations.roster(conversation.conversation_id) | also
    current = stores.conversations.get(conversation.conversation_id) or conversation
    notice = {
        "action": "membership",
        "conversation_id": conversation.conversation_id,
        "kind": conversation.kind,
        "change": change,
        "users": user_ids,
        "by": caller.user_id,
        "roster_version": current.roster_version,
    }
    return [
        (entry.split("/", 1)[1], notice)
        for entry in sorted(roster)
        if entry.split("/", 1)[1] != caller.device_id
    ]


def _moderated_room(
    stores: Stores, caller: Principal, cid: str, rid: str | None, what: str
) -> Conversation:
    conversation, member = member_of(stores, caller, cid, rid)
    if conversation.kind != "room":
        raise Refused(ErrorCode.FORBIDDEN, f"{what} only in rooms", rid)
    if member.role != "moderator":
        raise Refused(ErrorCode.FORBIDDEN, f"only moderators {what}", rid)
    return conversation


def add_members(
    stores: Stores, caller: Principal, request: AddMembersRequest, now_ms: int
) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    conversation = _moderated_room(stores, caller, cid, rid, "add members")
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    wanted = sorted(set(request.user_ids))
    _check_peers(stores, caller, wanted, rid)
    for _ in range(_RETRIES):
        current = {m.user_id for m in stores.conversations.members(cid)}
        new = [u for u in wanted if u not in current]
        if not new:
            return _answer(stores, conversation, rid)
        if len(current) + len(new) > MAX_ROOM_MEMBERS:
            raise Refused(
                ErrorCode.BAD_REQUEST, f"rooms have at most {MAX_ROOM_MEMBERS} members", rid
            )
        devices = _active_devices(stores, new)
        # Members added now see messages from the next seq on.
        joining = [Member(user_id, "member", conversation.last_seq) for user_id in new]
        try:
            stores.conversations.add_members(
                conversation, joining, devices, max_per_user=MAX_CONVERSATIONS_PER_USER
            )
            break
        except Conflict as conflict:
            refused = _too_many(conflict, rid)
            if refused is not None:
                raise refused from None
            conversation = _moderated_room(stores, caller, cid, rid, "add members")
    else:
        raise Refused(ErrorCode.CONFLICT, "the room is changing; retry", rid)
    _join_late_devices(stores, cid, new, devices)
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(stores, conversation, "added", new, caller, set())
    return outcome


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


def _remove(
    stores: Stores,
    caller: Principal,
    cid: str,
    user_ids: list[str],
    rid: str | None,
    read: Callable[[], Conversation],
) -> tuple[Conversation, set[str]]:
    """Remove members (their devices leave the roster); retried while the room moves."""
    for _ in range(_RETRIES):
        conversation = read()
        members = {m.user_id: m for m in stores.conversations.members(cid)}
        leaving = [u for u in user_ids if u in members]
        if not leaving:
            return conversation, set()
        roster = stores.conversations.roster(cid)
        devices = {e for e in roster if e.split("/", 1)[0] in leaving}
        remaining = [m for u, m in members.items() if u not in leaving]
        if remaining and not any(m.role == "moderator" for m in remaining):
            raise Refused(
                ErrorCode.CONFLICT,
                "a room keeps at least one moderator: promote another member first",
                rid,
            )
        try:
            stores.conversations.remove_members(conversation, leaving, devices)
        except Conflict:
            continue
        return conversation, devices
    raise Refused(ErrorCode.CONFLICT, "the room is changing; retry", rid)


def remove_members(
    stores: Stores, caller: Principal, request: RemoveMembersRequest, now_ms: int
) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    _moderated_room(stores, caller, cid, rid, "remove members")
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    wanted = sorted(set(request.user_ids))
    if caller.user_id in wanted:
        raise Refused(ErrorCode.BAD_REQUEST, "to remove yourself, leave", rid)
    conversation, devices = _remove(
        stores,
        caller,
        cid,
        wanted,
        rid,
        lambda: _moderated_room(stores, caller, cid, rid, "remove members"),
    )
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(stores, conversation, "removed", wanted, caller, devices)
    return outcome


def leave(stores: Stores, caller: Principal, request: LeaveRequest, now_ms: int) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    conversation, _member = member_of(stores, caller, cid, rid)
    if conversation.kind != "room":
        raise Refused(ErrorCode.FORBIDDEN, "a direct conversation cannot be left", rid)
    conversation, devices = _remove(
        stores,
        caller,
        cid,
        [caller.user_id],
        rid,
        lambda: member_of(stores, caller, cid, rid)[0],
    )
    notices = _membership_notices(stores, conversation, "left", [caller.user_id], caller, devices)
    return Outcome(replies=[{"action": "left", "id": rid, "conversation_id": cid}], notices=notices)


def set_role(stores: Stores, caller: Principal, request: SetRoleRequest, now_ms: int) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    conversation = _moderated_room(stores, caller, cid, rid, "change roles")
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    members = {m.user_id: m for m in stores.conversations.members(cid)}
    target = members.get(request.user_id)
    if target is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such member", rid)
    if target.role != request.role:
        others = [m for u, m in members.items() if u != request.user_id]
        if request.role == "member" and not any(m.role == "moderator" for m in others):
            raise Refused(
                ErrorCode.CONFLICT,
                "a room keeps at least one moderator: promote another member first",
                rid,
            )
        try:
            stores.conversations.set_role(conversation, request.user_id, request.role)
        except Conflict:
            raise Refused(ErrorCode.NOT_FOUND, "no such member", rid) from None
    change = "promoted" if request.role == "moderator" else "demoted"
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(
        stores, conversation, change, [request.user_id], caller, set()
    )
    return outcome


def list_conversations(
    stores: Stores, caller: Principal, request: ListConversationsRequest, now_ms: int
) -> Outcome:
    mine = stores.conversations.user_conversations(caller.user_id)
    # One batched read per 100 conversations, not one per conversation.
    found = stores.conversations.get_many([cid for cid, *_ in mine])
    listed = [
        {
            "conversation_id": cid,
            "kind": kind,
            "role": role,
            "roster_version": found[cid].roster_version,
            "member_count": found[cid].member_count,
            "last_seq": found[cid].last_seq,
        }
        for cid, kind, role, _joined in mine
        if cid in found
    ]
    header = {"action": "conversations", "id": request.id}
    return Outcome(replies=paginate_lists(header, {"conversations": listed}))


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
    member_entries: list[dict[str, Any]] = [
        {
            "user_id": member.user_id,
            "role": member.role,
            "identity_key": b64(users[member.user_id].identity_key),
        }
        for member in members
        if member.user_id in users
    ]
    device_entries: list[dict[str, Any]] = []
    for user_id, device_id in pairs:
        device = devices.get(device_id)
        if device is None or device.status != "active":
            continue
        device_entries.append(
            {"user_id": user_id, "device_id": device_id, "certificate": b64(device.certificate)}
        )
    header = {
        "action": "conversation_devices",
        "id": rid,
        "conversation_id": conversation.conversation_id,
        "roster_version": conversation.roster_version,
    }
    return Outcome(
        replies=paginate_lists(header, {"members": member_entries, "devices": device_entries})
    )
