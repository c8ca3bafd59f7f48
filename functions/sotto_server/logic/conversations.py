"""Conversation routes: direct conversations, rooms and self conversations, their members
and moderators, rosters.

Who is in a conversation is its signed membership log (docs/protocol.md §15):
every change arrives as an operation signed by the caller's device, which
the server verifies as a client would (``MembershipState.extend``, with the
identity keys of its directory) and stores at its seq, once, in the same
transaction that changes its own members and roster. The server keeps its
roster derived from the log (the member users' active devices, all
certified by the identity the log binds) and serves the log; it can
withhold operations, never invent one. Every change is pushed to the
devices it concerns (``membership``), the stored state being the truth.

A user belongs to at most ``MAX_CONVERSATIONS_PER_USER`` conversations and
creates rooms at a bounded rate, so nobody can bury another user in rooms;
and anybody added can leave. A *self* conversation (§15.1) is one user's own
devices: only that user creates it, under the id derived from its user id,
and nobody is ever added to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sotto.frames import paginate_lists
from sotto.frames.requests import (
    MAX_ROOM_ADD,
    MAX_ROOM_CREATE,
    AddMembersRequest,
    ConversationDevicesRequest,
    CreateConversationRequest,
    IdentitiesRequest,
    LeaveRequest,
    ListConversationsRequest,
    MembershipLogRequest,
    RemoveMembersRequest,
    SetRoleRequest,
)
from sotto.protocol.errors import NotModerator, ProtocolError, SelfPromotion
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.membership import (
    Add,
    ConversationKind,
    Create,
    Leave,
    MembershipOperation,
    MembershipState,
    Remove,
    Role,
    SetRole,
    direct_conversation_id,
    self_conversation_id,
    verify_log,
)

from ..dal.conversations import Conversation, ConversationsStore, LogAppend, Member
from ..dal.directory import Conflict, DirectoryStore
from ..dal.files import FilesStore
from ..dal.guards import GuardsStore
from ..dal.retention import RetentionStore
from . import limits
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome
from .principal import Principal

if TYPE_CHECKING:
    from sotto.frames.answers import MembershipPush
    from sotto.frames.answers_conversations import (
        ConversationAnswer,
        ConversationDevicesHeader,
        ConversationInfo,
        ConversationsHeader,
        IdentitiesHeader,
        LeftAnswer,
        ListedConversation,
        LogOperation,
        MembershipLogHeader,
        RosterDevice,
        RosterMember,
        SignerIdentity,
        UnknownUser,
        UserIdentity,
    )

__all__ = [
    "MAX_CONVERSATIONS_PER_USER",
    "MAX_ROOM_MEMBERS",
    "Stores",
    "add_members",
    "conversation_devices",
    "create_conversation",
    "direct_id",
    "identities",
    "leave",
    "list_conversations",
    "member_of",
    "membership_log",
    "remove_members",
    "roster_entry",
    "set_role",
]

MAX_ROOM_MEMBERS = 1000
# Direct conversations and rooms together; a user leaves rooms to make room.
MAX_CONVERSATIONS_PER_USER = 5000
# A membership change retries this often when the conversation moves under it.
_RETRIES = 20
# Operations a membership_log answer carries (a client asks again while ``more``).
MAX_LOG_PAGE = 100


@dataclass(frozen=True)
class Stores:
    directory: DirectoryStore
    conversations: ConversationsStore
    guards: GuardsStore | None = None
    limit_scale: float = 1.0
    # Retention identities (None: retention is off everywhere, as in unit tests).
    retention: RetentionStore | None = None
    # File records (messages that refer to uploads, burn-on-read of their files).
    files: FilesStore | None = None


def roster_entry(user_id: str, device_id: str) -> str:
    return f"{user_id}/{device_id}"


def direct_id(first: str, second: str) -> str:
    """The one direct conversation of two users (docs/protocol.md §15.1)."""
    return direct_conversation_id(first, second)


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


def _frame(conversation: Conversation, members: list[Member], log_seq: int) -> ConversationInfo:
    return {
        "conversation_id": conversation.conversation_id,
        "kind": conversation.kind,
        "members": [{"user_id": m.user_id, "role": m.role} for m in members],
        "roster_version": conversation.roster_version,
        "last_seq": conversation.last_seq,
        "created_at": conversation.created_at,
        "log_seq": log_seq,
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


_ROOM_ID = re.compile(r"^room-[0-9a-f]{24}$")
_KIND_NAMES = {
    ConversationKind.DIRECT: "direct",
    ConversationKind.ROOM: "room",
    ConversationKind.SELF: "self",
}
_ROLES = {Role.MEMBER: "member", Role.MODERATOR: "moderator"}


def _operation(data: bytes, caller: Principal, cid: str, rid: str | None) -> MembershipOperation:
    """A well-formed operation for ``cid``, signed (so it says) by the caller's device."""
    try:
        op = MembershipOperation.parse(data)
    except ProtocolError as error:
        raise Refused(
            ErrorCode.INVALID_OPERATION, f"membership operation refused ({error.code})", rid
        ) from None
    if op.conversation_id != cid:
        raise Refused(ErrorCode.INVALID_OPERATION, "operation is for another conversation", rid)
    if (op.signer.user_id, op.signer.device_id) != (caller.user_id, caller.device_id):
        raise Refused(ErrorCode.INVALID_OPERATION, "operation is signed by another device", rid)
    return op


def _identities(
    stores: Stores, caller: Principal, user_ids: list[str], rid: str | None
) -> dict[str, IdentityPublicKey]:
    """The directory's identity keys of active users of the caller's network."""
    users = stores.directory.get_users(user_ids)
    found: dict[str, IdentityPublicKey] = {}
    for user_id in user_ids:
        user = users.get(user_id)
        if user is None or user.network_id != caller.network_id or user.status != "active":
            raise Refused(ErrorCode.NOT_FOUND, f"no such user {user_id!r}", rid)
        found[user_id] = IdentityPublicKey.parse(user.identity_key)
    return found


def _verified(
    stores: Stores,
    caller: Principal,
    state: MembershipState | None,
    data: bytes,
    op: MembershipOperation,
    now_ms: int,
    rid: str | None,
) -> MembershipState:
    """Verify the operation exactly as a client does; entries must name directory identities."""
    entries = op.change.members if isinstance(op.change, Create | Add) else ()
    named = [e.user_id for e in entries]
    keys = _identities(stores, caller, sorted({caller.user_id, *named}), rid)
    for entry in entries:
        if entry.fingerprint != keys[entry.user_id].fingerprint:
            raise Refused(
                ErrorCode.INVALID_OPERATION,
                f"the operation binds {entry.user_id!r} to another identity than the directory's",
                rid,
            )
    try:
        if state is None:
            return verify_log([data], keys.values(), conversation_id=op.conversation_id, now=now_ms)
        return state.extend([data], keys.values(), now=now_ms)
    except (NotModerator, SelfPromotion) as error:
        raise Refused(ErrorCode.FORBIDDEN, f"{error.detail} ({error.code})", rid) from None
    except ProtocolError as error:
        raise Refused(
            ErrorCode.INVALID_OPERATION,
            f"membership operation refused: {error.detail or error.code} ({error.code})",
            rid,
        ) from None


def _state_of(stores: Stores, cid: str) -> MembershipState | None:
    raw = stores.conversations.log_state(cid)
    return None if raw is None else MembershipState.parse(raw)


def create_conversation(
    stores: Stores, caller: Principal, request: CreateConversationRequest, now_ms: int
) -> Outcome:
    rid, cid = request.id, request.conversation_id
    op = _operation(request.op, caller, cid, rid)
    if not isinstance(op.change, Create) or op.seq != 0:
        raise Refused(ErrorCode.INVALID_OPERATION, "a conversation starts with a create", rid)
    kind = op.change.conversation_kind
    direct = kind in (ConversationKind.DIRECT, ConversationKind.SELF)  # one per user(s)
    users = sorted(e.user_id for e in op.change.members)
    if caller.user_id not in users:
        raise Refused(ErrorCode.INVALID_OPERATION, "the creator must be a member", rid)
    if direct:
        if kind == ConversationKind.SELF and cid != self_conversation_id(caller.user_id):
            raise Refused(ErrorCode.BAD_REQUEST, "a self conversation's id is its user's", rid)
        if kind == ConversationKind.DIRECT and cid != direct_conversation_id(*users):
            raise Refused(ErrorCode.BAD_REQUEST, "a direct conversation's id is its users'", rid)
        if stores.conversations.member(cid, caller.user_id) is not None:
            conversation, _ = member_of(stores, caller, cid, rid)
            return _answer(stores, conversation, rid)
        limit(stores, "direct_create_user", caller.user_id, now_ms, rid)
    else:
        if not _ROOM_ID.match(cid):
            raise Refused(ErrorCode.BAD_REQUEST, "a room's id is room- and 24 hex digits", rid)
        if len(users) > MAX_ROOM_CREATE + 1:
            raise Refused(
                ErrorCode.BAD_REQUEST,
                f"a room starts with at most {MAX_ROOM_CREATE + 1} members",
                rid,
            )
        limit(stores, "room_create_user", caller.user_id, now_ms, rid)
    state = _verified(stores, caller, None, request.op, op, now_ms, rid)
    members = [
        Member(user_id, _ROLES[entry.role], 0) for user_id, entry in sorted(state.members.items())
    ]
    conversation = Conversation(
        conversation_id=cid,
        kind=_KIND_NAMES[kind],
        network_id=caller.network_id,
        created_by=caller.user_id,
        created_at=now_ms,
        last_seq=0,
        roster_version=1,
        member_count=len(members),
    )
    devices = _active_devices(stores, users)
    log = LogAppend(0, request.op, state.serialize())
    try:
        stores.conversations.create(
            conversation, members, devices, max_per_user=MAX_CONVERSATIONS_PER_USER, log=log
        )
    except Conflict as conflict:
        refused = _too_many(conflict, rid)
        if refused is not None:
            raise refused from None
        if not direct:
            raise Refused(ErrorCode.CONFLICT, "a conversation with this id exists", rid) from None
        # Both users created their direct conversation at once: the first one stands.
    else:
        _join_late_devices(stores, cid, users, devices)
    conversation, _ = member_of(stores, caller, cid, rid)
    outcome = _answer(stores, conversation, rid)
    others = [u for u in users if u != caller.user_id]
    outcome.notices = _membership_notices(
        stores, conversation, "added", others, caller, set(), 0, request.op
    )
    return outcome


def _answer(stores: Stores, conversation: Conversation, rid: str | None) -> Outcome:
    """The conversation as it is now (re-read: the caller just changed it)."""
    conversation = stores.conversations.get(conversation.conversation_id) or conversation
    members = stores.conversations.members(conversation.conversation_id)
    frame: ConversationAnswer = {
        "action": "conversation",
        "id": rid,
        "conversation": _frame(
            conversation, members, _log_seq(stores, conversation.conversation_id)
        ),
    }
    return Outcome(replies=[frame])


def _log_seq(stores: Stores, cid: str) -> int:
    state = _state_of(stores, cid)
    return -1 if state is None else state.seq


def _membership_notices(
    stores: Stores,
    conversation: Conversation,
    change: str,
    user_ids: list[str],
    caller: Principal,
    also: set[str],
    seq: int,
    op: bytes,
) -> list[tuple[str, MembershipPush]]:
    """``membership`` pushes (with the signed operation) to the roster and ``also``."""
    roster = stores.conversations.roster(conversation.conversation_id) | also
    current = stores.conversations.get(conversation.conversation_id) or conversation
    notice: MembershipPush = {
        "action": "membership",
        "conversation_id": conversation.conversation_id,
        "kind": conversation.kind,
        "change": change,
        "users": user_ids,
        "by": caller.user_id,
        "roster_version": current.roster_version,
        "seq": seq,
        "op": b64(op),
    }
    return [
        (entry.split("/", 1)[1], notice)
        for entry in sorted(roster)
        if entry.split("/", 1)[1] != caller.device_id
    ]


def _room_change(
    stores: Stores,
    caller: Principal,
    request: AddMembersRequest | RemoveMembersRequest | SetRoleRequest | LeaveRequest,
    now_ms: int,
) -> tuple[Conversation, MembershipOperation, MembershipState, MembershipState]:
    """The room, the caller's operation, and the verified states before and after it."""
    rid, cid = request.id, request.conversation_id
    conversation, _member = member_of(stores, caller, cid, rid)
    if conversation.kind != "room":
        raise Refused(
            ErrorCode.FORBIDDEN, f"a {conversation.kind} conversation's members never change", rid
        )
    op = _operation(request.op, caller, cid, rid)
    before = _state_of(stores, cid)
    if before is None:
        raise Refused(ErrorCode.CONFLICT, "this conversation has no membership log", rid)
    if op.seq != before.seq + 1:
        raise Refused(
            ErrorCode.CONFLICT,
            "the membership log moved: read it again and sign after its head",
            rid,
            details={"log_seq": before.seq},
        )
    after = _verified(stores, caller, before, request.op, op, now_ms, rid)
    return conversation, op, before, after


def _keeps_a_moderator(after: MembershipState, rid: str | None) -> None:
    if after.members and not after.moderators:
        raise Refused(
            ErrorCode.CONFLICT,
            "a room keeps at least one moderator: promote another member first",
            rid,
        )


def add_members(
    stores: Stores, caller: Principal, request: AddMembersRequest, now_ms: int
) -> Outcome:
    rid, cid = request.id, request.conversation_id
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    conversation, op, before, after = _room_change(stores, caller, request, now_ms)
    if not isinstance(op.change, Add):
        raise Refused(ErrorCode.INVALID_OPERATION, "add_members takes an add operation", rid)
    if len(op.change.members) > MAX_ROOM_ADD:
        raise Refused(ErrorCode.BAD_REQUEST, f"an add names at most {MAX_ROOM_ADD} users", rid)
    new = sorted(set(after.members) - set(before.members))
    if len(after.members) > MAX_ROOM_MEMBERS:
        raise Refused(ErrorCode.BAD_REQUEST, f"rooms have at most {MAX_ROOM_MEMBERS} members", rid)
    devices = _active_devices(stores, new)
    joining = [Member(u, _ROLES[after.members[u].role], conversation.last_seq) for u in new]
    log = LogAppend(op.seq, request.op, after.serialize())
    for _ in range(_RETRIES):
        # Members added now see messages from the next seq on.
        joining = [Member(m.user_id, m.role, conversation.last_seq) for m in joining]
        try:
            stores.conversations.add_members(
                conversation, joining, devices, max_per_user=MAX_CONVERSATIONS_PER_USER, log=log
            )
            break
        except Conflict as conflict:
            refused = _too_many(conflict, rid)
            if refused is not None:
                raise refused from None
            if _log_seq(stores, cid) != before.seq:
                raise Refused(
                    ErrorCode.CONFLICT, "the membership log moved: read it again", rid
                ) from None
            conversation, _ = member_of(stores, caller, cid, rid)  # a message landed: again
    else:
        raise Refused(ErrorCode.CONFLICT, "the room is changing; retry", rid)
    _join_late_devices(stores, cid, new, devices)
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(
        stores, conversation, "added", new, caller, set(), op.seq, request.op
    )
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
    request: RemoveMembersRequest | LeaveRequest,
    now_ms: int,
) -> tuple[Conversation, list[str], set[str], int]:
    """Apply a remove or a leave: the room, the users gone, their devices, the op's seq."""
    rid, cid = request.id, request.conversation_id
    conversation, op, before, after = _room_change(stores, caller, request, now_ms)
    leaving = sorted(set(before.members) - set(after.members))
    _keeps_a_moderator(after, rid)
    log = LogAppend(op.seq, request.op, after.serialize())
    for _ in range(_RETRIES):
        roster = stores.conversations.roster(cid)
        devices = {e for e in roster if e.split("/", 1)[0] in leaving}
        try:
            stores.conversations.remove_members(conversation, leaving, devices, log=log)
        except Conflict:
            if _log_seq(stores, cid) != before.seq:
                raise Refused(
                    ErrorCode.CONFLICT, "the membership log moved: read it again", rid
                ) from None
            conversation = stores.conversations.get(cid) or conversation
            continue
        return conversation, leaving, devices, op.seq
    raise Refused(ErrorCode.CONFLICT, "the room is changing; retry", rid)


def remove_members(
    stores: Stores, caller: Principal, request: RemoveMembersRequest, now_ms: int
) -> Outcome:
    rid = request.id
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    op = _operation(request.op, caller, request.conversation_id, rid)
    if not isinstance(op.change, Remove):
        raise Refused(ErrorCode.INVALID_OPERATION, "remove_members takes a remove operation", rid)
    if len(op.change.users) > MAX_ROOM_ADD:
        raise Refused(ErrorCode.BAD_REQUEST, f"a remove names at most {MAX_ROOM_ADD} users", rid)
    conversation, gone, devices, seq = _remove(stores, caller, request, now_ms)
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(
        stores, conversation, "removed", gone, caller, devices, seq, request.op
    )
    return outcome


def leave(stores: Stores, caller: Principal, request: LeaveRequest, now_ms: int) -> Outcome:
    rid, cid = request.id, request.conversation_id
    op = _operation(request.op, caller, cid, rid)
    if not isinstance(op.change, Leave):
        raise Refused(ErrorCode.INVALID_OPERATION, "leave takes a leave operation", rid)
    conversation, gone, devices, seq = _remove(stores, caller, request, now_ms)
    notices = _membership_notices(
        stores, conversation, "left", gone, caller, devices, seq, request.op
    )
    left: LeftAnswer = {"action": "left", "id": rid, "conversation_id": cid}
    return Outcome(replies=[left], notices=notices)


def set_role(stores: Stores, caller: Principal, request: SetRoleRequest, now_ms: int) -> Outcome:
    rid = request.id
    limit(stores, "membership_device", caller.device_id, now_ms, rid)
    conversation, op, _before, after = _room_change(stores, caller, request, now_ms)
    if not isinstance(op.change, SetRole):
        raise Refused(ErrorCode.INVALID_OPERATION, "set_role takes a set_role operation", rid)
    _keeps_a_moderator(after, rid)
    role = _ROLES[op.change.role]
    try:
        stores.conversations.set_role(
            conversation,
            op.change.user_id,
            role,
            log=LogAppend(op.seq, request.op, after.serialize()),
        )
    except Conflict:
        raise Refused(ErrorCode.CONFLICT, "the membership log moved: read it again", rid) from None
    change = "promoted" if role == "moderator" else "demoted"
    outcome = _answer(stores, conversation, rid)
    outcome.notices = _membership_notices(
        stores, conversation, change, [op.change.user_id], caller, set(), op.seq, request.op
    )
    return outcome


def membership_log(
    stores: Stores, caller: Principal, request: MembershipLogRequest, now_ms: int
) -> Outcome:
    """The stored operations after ``after``, with the head seq and the signers' identities."""
    rid, cid = request.id, request.conversation_id
    member_of(stores, caller, cid, rid)
    head = _log_seq(stores, cid)
    ops = stores.conversations.log_operations(cid, request.after, limit=MAX_LOG_PAGE)
    signers = sorted({MembershipOperation.parse(op).signer.user_id for _, op in ops})
    users = stores.directory.get_users(signers)
    header: MembershipLogHeader = {
        "action": "membership_log",
        "id": rid,
        "conversation_id": cid,
        "head_seq": head,
        "more": bool(ops) and ops[-1][0] < head,
    }
    operations: list[LogOperation] = [{"seq": seq, "op": b64(op)} for seq, op in ops]
    identities: list[SignerIdentity] = [
        {"user_id": u, "identity_key": b64(users[u].identity_key)} for u in signers if u in users
    ]
    return Outcome(
        replies=paginate_lists(header, {"operations": operations, "identities": identities})
    )


def identities(
    stores: Stores, caller: Principal, request: IdentitiesRequest, now_ms: int
) -> Outcome:
    """Identity keys of users of the caller's network (the client pins them on first sight)."""
    limit(stores, "identities_device", caller.device_id, now_ms, request.id)
    wanted = sorted(set(request.user_ids))
    users = stores.directory.get_users(wanted)
    found: list[UserIdentity] = [
        {"user_id": u, "handle": users[u].handle, "identity_key": b64(users[u].identity_key)}
        for u in wanted
        if u in users and users[u].network_id == caller.network_id and users[u].status == "active"
    ]
    unknown: list[UnknownUser] = [
        {"user_id": u} for u in sorted(set(wanted) - {f["user_id"] for f in found})
    ]
    header: IdentitiesHeader = {"action": "identities", "id": request.id}
    return Outcome(replies=paginate_lists(header, {"identities": found, "unknown": unknown}))


def list_conversations(
    stores: Stores, caller: Principal, request: ListConversationsRequest, now_ms: int
) -> Outcome:
    mine = stores.conversations.user_conversations(caller.user_id)
    # One batched read per 100 conversations, not one per conversation.
    found = stores.conversations.get_many([cid for cid, *_ in mine])
    listed: list[ListedConversation] = [
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
    header: ConversationsHeader = {"action": "conversations", "id": request.id}
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
    member_entries: list[RosterMember] = [
        {
            "user_id": member.user_id,
            "role": member.role,
            "handle": users[member.user_id].handle,
            "identity_key": b64(users[member.user_id].identity_key),
        }
        for member in members
        if member.user_id in users
    ]
    device_entries: list[RosterDevice] = []
    for user_id, device_id in pairs:
        device = devices.get(device_id)
        if device is None or device.status != "active":
            continue
        device_entries.append(
            {"user_id": user_id, "device_id": device_id, "certificate": b64(device.certificate)}
        )
    header: ConversationDevicesHeader = {
        "action": "conversation_devices",
        "id": rid,
        "conversation_id": conversation.conversation_id,
        "roster_version": conversation.roster_version,
    }
    return Outcome(
        replies=paginate_lists(header, {"members": member_entries, "devices": device_entries})
    )
