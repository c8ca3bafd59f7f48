"""Pending invites: listing, revoking, reissuing a lost one, and inviting many at once.

A code is shown once, when it is made; the server keeps only its hash. So a
lost code is not recovered but reissued: the old code stops working and a
new one is made for the same user id and handle, in one transaction.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from sotto.frames.requests import BulkInviteRequest, InviteRequest

from ..dal.directory import MAX_FAILED_ENROLLMENTS, Conflict, DirectoryStore, Invite
from .codes import hash_code, new_code
from .errors import ErrorCode, Refused

if TYPE_CHECKING:
    from sotto.frames.answers_admin import (
        BulkInviteAnswer,
        BulkRefusal,
        InviteAnswer,
        InviteItem,
        InviteRevokedAnswer,
        InvitesAnswer,
    )

__all__ = ["bulk_invite", "list_invites", "new_invite", "reissue_invite", "revoke_invite"]

_HANDLE = re.compile(r"^[a-z0-9._-]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# TTL deletes an invite a day after it lapses; use checks the exact time.
_TTL_GRACE_S = 86400


def _ttl(invite: Invite) -> int:
    return invite.expires_at // 1000 + _TTL_GRACE_S


def new_invite(
    directory: DirectoryStore,
    network_id: str,
    request: InviteRequest,
    now_ms: int,
    *,
    display_name: str = "",
    groups: frozenset[str] = frozenset(),
) -> InviteAnswer:
    code = new_code()
    invite = Invite(
        code_hash=hash_code(code),
        network_id=network_id,
        user_id=f"usr-{secrets.token_hex(8)}",
        handle=request.handle,
        created_at=now_ms,
        expires_at=now_ms + request.ttl_s * 1000,
        used=False,
        display_name=display_name,
        groups=groups,
    )
    try:
        directory.create_invite(invite, ttl_expires_at=_ttl(invite))
    except Conflict as conflict:
        if conflict.reason == "no_such_network":
            raise Refused(ErrorCode.NOT_FOUND, "no such network") from None
        raise Refused(ErrorCode.CONFLICT, f"handle {request.handle!r} is taken") from None
    return _shown(invite, code)


def _shown(invite: Invite, code: str) -> InviteAnswer:
    answer: InviteAnswer = {
        "code": code,
        "network_id": invite.network_id,
        "user_id": invite.user_id,
        "handle": invite.handle,
        "expires_at": invite.expires_at,
    }
    if invite.display_name:
        answer["display_name"] = invite.display_name
    if invite.groups:
        answer["groups"] = sorted(invite.groups)
    return answer


def _listed(invite: Invite, now_ms: int) -> InviteItem:
    state = (
        "locked"
        if invite.failed_attempts >= MAX_FAILED_ENROLLMENTS
        else "expired"
        if invite.expires_at <= now_ms
        else "pending"
    )
    return {
        "user_id": invite.user_id,
        "handle": invite.handle,
        "display_name": invite.display_name,
        "groups": ",".join(sorted(invite.groups)),
        "state": state,
        "failed_attempts": invite.failed_attempts,
        "created_at": invite.created_at,
        "expires_at": invite.expires_at,
    }


def list_invites(directory: DirectoryStore, network_id: str, now_ms: int) -> InvitesAnswer:
    if directory.get_network(network_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such network")
    invites = sorted(directory.pending_invites(network_id), key=lambda i: (i.created_at, i.handle))
    return {
        "network_id": network_id,
        "invites": [_listed(i, now_ms) for i in invites if not i.revoked],
    }


def _pending(directory: DirectoryStore, network_id: str, user_id: str) -> Invite:
    invite = directory.pending_invite(network_id, user_id)
    if invite is None or invite.revoked:
        raise Refused(ErrorCode.NOT_FOUND, "no pending invite for this user in this network")
    return invite


def revoke_invite(directory: DirectoryStore, network_id: str, user_id: str) -> InviteRevokedAnswer:
    """The code stops working at once and the handle is free again."""
    invite = _pending(directory, network_id, user_id)
    try:
        directory.revoke_invite(invite)
    except Conflict:
        raise Refused(
            ErrorCode.CONFLICT, "the invite was used before it could be revoked"
        ) from None
    return {"network_id": network_id, "user_id": user_id, "handle": invite.handle, "revoked": True}


def reissue_invite(
    directory: DirectoryStore, network_id: str, user_id: str, ttl_s: int, now_ms: int
) -> InviteAnswer:
    """A new code for the same user and handle; the old code (lost, locked) stops working."""
    old = _pending(directory, network_id, user_id)
    code = new_code()
    new = Invite(
        code_hash=hash_code(code),
        network_id=network_id,
        user_id=old.user_id,
        handle=old.handle,
        created_at=now_ms,
        expires_at=now_ms + ttl_s * 1000,
        used=False,
        display_name=old.display_name,
        groups=old.groups,
    )
    try:
        directory.reissue_invite(old, new, ttl_expires_at=_ttl(new))
    except Conflict:
        raise Refused(
            ErrorCode.CONFLICT, "the invite was used before it could be reissued"
        ) from None
    return _shown(new, code)


def bulk_invite(
    directory: DirectoryStore, network_id: str, request: BulkInviteRequest, now_ms: int
) -> BulkInviteAnswer:
    """Invite every row that can be; report each row made and each refused, with why."""
    if directory.get_network(network_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such network")
    known = {group.name for group in directory.list_groups(network_id)}
    created: list[InviteAnswer] = []
    refused: list[BulkRefusal] = []
    seen: set[str] = set()
    for row in request.invites:
        reason = None
        if not _HANDLE.match(row.handle):
            reason = "a handle is 1-32 of a-z 0-9 . _ -"
        elif _CONTROL.search(row.display_name) or len(row.display_name) > 100:
            reason = "a display name is at most 100 printable characters"
        elif row.handle in seen:
            reason = "handle repeated in this request"
        elif row.group and row.group not in known:
            reason = f"no security group {row.group!r} in this network"
        if reason is None:
            try:
                created.append(
                    new_invite(
                        directory,
                        network_id,
                        InviteRequest(handle=row.handle, ttl_s=request.ttl_s),
                        now_ms,
                        display_name=row.display_name,
                        groups=frozenset([row.group]) if row.group else frozenset(),
                    )
                )
            except Refused as refusal:
                reason = refusal.message
        seen.add(row.handle)
        if reason is not None:
            refused.append({"row": row.row, "handle": row.handle, "reason": reason})
    return {"network_id": network_id, "created": created, "refused": refused}
