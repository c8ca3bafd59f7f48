"""The public HTTP routes: enrollment with an invite, and a new device's link requests.

Nothing here is authenticated by the caller's identity (they have none yet);
a one-time code is the credential, every attempt is rate limited, and an
unknown, used or expired code gets one and the same answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sotto.frames.requests import EnrollLookupRequest, EnrollRequest, LinkRequest, LinkStatusRequest
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import VerifyingKey

from ..dal.directory import MAX_FAILED_ENROLLMENTS, Conflict, Invite, LinkRecord
from . import limits
from .audit import Actor, AuditEvent
from .codes import hash_code
from .errors import ErrorCode, Refused
from .frames import b64
from .identity import check_enrollment
from .key_directory import Stores, link_state

if TYPE_CHECKING:
    from sotto.frames.answers_http import (
        EnrolledAnswer,
        EnrollLookupAnswer,
        LinkRequestAnswer,
        LinkStatusAnswer,
    )

__all__ = ["enroll", "link_request", "link_status", "lookup"]

_NO_CODE = "unknown, used or expired code"


def _limit(stores: Stores, bucket: str, subject: str, now_ms: int) -> None:
    try:
        limits.check(stores.guards, bucket, subject, now_ms // 1000, stores.limit_scale)
    except limits.RateLimited as limited:
        raise Refused(
            ErrorCode.RATE_LIMITED,
            "too many attempts; retry later",
            retry_after_s=limited.retry_after_s,
        ) from None


def _open_invite(stores: Stores, code: str, now_ms: int) -> Invite:
    invite = stores.directory.get_invite(hash_code(code))
    if invite is None or invite.used or invite.revoked or invite.expires_at <= now_ms:
        state = (
            "unknown"
            if invite is None
            else "used"
            if invite.used
            else "revoked"
            if invite.revoked
            else "expired"
        )
        raise Refused(ErrorCode.NOT_FOUND, _NO_CODE, log_detail=f"invite {state}")
    if invite.failed_attempts >= MAX_FAILED_ENROLLMENTS:
        # Only a holder of the code gets here: telling them it is locked leaks nothing.
        raise Refused(
            ErrorCode.FORBIDDEN,
            "this invite is locked after too many failed enrollments; "
            "ask your administrator to reissue it",
        )
    return invite


def lookup(
    stores: Stores, request: EnrollLookupRequest, source_ip: str, now_ms: int
) -> EnrollLookupAnswer:
    _limit(stores, "enroll_ip", source_ip, now_ms)
    invite = _open_invite(stores, request.code, now_ms)
    network = stores.directory.get_network(invite.network_id)
    return {
        "network_id": invite.network_id,
        "network_name": network.name if network else "",
        "user_id": invite.user_id,
        "handle": invite.handle,
        "expires_at": invite.expires_at,
    }


def enroll(stores: Stores, request: EnrollRequest, source_ip: str, now_ms: int) -> EnrolledAnswer:
    _limit(stores, "enroll_ip", source_ip, now_ms)
    invite = _open_invite(stores, request.code, now_ms)
    anonymous = Actor("anonymous", source_ip)
    try:
        user, device, signed_prekey = check_enrollment(
            invite,
            request.identity_key,
            request.device_certificate,
            request.signed_prekey,
            now_ms=now_ms,
        )
    except Refused as refused:
        # Garbage certificates cost the invite, not the network's enrollment budget.
        failures = stores.directory.fail_enrollment(invite)
        stores.record(
            AuditEvent(
                invite.network_id,
                "enrollment.failed",
                anonymous,
                {"user_id": invite.user_id, "handle": invite.handle},
                outcome="refused",
                detail={"reason": refused.code.value, "failed_attempts": failures},
            )
        )
        if failures == MAX_FAILED_ENROLLMENTS:
            stores.record(
                AuditEvent(
                    invite.network_id,
                    "invite.locked",
                    anonymous,
                    {"user_id": invite.user_id, "handle": invite.handle},
                    detail={"failed_attempts": failures},
                )
            )
        raise
    # Counted only once the certificates verify: one unused invite can no
    # longer burn the network's hourly budget with garbage.
    _limit(stores, "enroll_network", invite.network_id, now_ms)
    try:
        stores.directory.enroll(invite, user, device, signed_prekey, now_ms)
    except Conflict as conflict:
        if conflict.reason == "invite_unusable":
            raise Refused(ErrorCode.NOT_FOUND, _NO_CODE, log_detail="invite lost a race") from None
        raise Refused(ErrorCode.CONFLICT, conflict.reason.replace("_", " ")) from None
    stores.record(
        AuditEvent(
            user.network_id,
            "enrollment.succeeded",
            anonymous,
            {"user_id": user.user_id, "device_id": device.device_id, "handle": user.handle},
        )
    )
    return {"network_id": user.network_id, "user_id": user.user_id, "device_id": device.device_id}


def _link(stores: Stores, code: str) -> LinkRecord:
    link_id = stores.directory.find_link(hash_code(code))
    link = stores.directory.get_link(link_id) if link_id else None
    if link is None:
        raise Refused(ErrorCode.NOT_FOUND, _NO_CODE)
    return link


def link_request(
    stores: Stores, request: LinkRequest, source_ip: str, now_ms: int
) -> tuple[LinkRequestAnswer, LinkRecord]:
    """Attach a new device to a link; returns the answer and the link (to notify its creator)."""
    _limit(stores, "enroll_ip", source_ip, now_ms)
    link = _link(stores, request.code)
    if link_state(link, now_ms) != "open":
        raise Refused(ErrorCode.NOT_FOUND, _NO_CODE)
    try:
        VerifyingKey.parse(request.device_key)
    except (ProtocolError, ValueError):
        raise Refused(ErrorCode.BAD_REQUEST, "device_key is not a P-384 public key") from None
    if stores.directory.get_device(request.device_id) is not None:
        raise Refused(ErrorCode.CONFLICT, "device id taken")
    try:
        stores.directory.request_link(link.link_id, request.device_id, request.device_key, now_ms)
    except Conflict:
        raise Refused(ErrorCode.NOT_FOUND, _NO_CODE) from None
    user = stores.directory.get_user(link.user_id)
    stores.record(
        AuditEvent(
            link.network_id,
            "link.requested",
            Actor("anonymous", source_ip),
            {"user_id": link.user_id, "device_id": request.device_id, "link_id": link.link_id},
        )
    )
    answer: LinkRequestAnswer = {
        "network_id": link.network_id,
        "user_id": link.user_id,
        "handle": user.handle if user else "",
        "link_id": link.link_id,
    }
    return answer, link


def link_status(
    stores: Stores, request: LinkStatusRequest, source_ip: str, now_ms: int
) -> LinkStatusAnswer:
    _limit(stores, "link_poll_ip", source_ip, now_ms)
    link = _link(stores, request.code)
    answer: LinkStatusAnswer = {"state": link_state(link, now_ms)}
    if link.state == "approved":
        answer["device_certificate"] = b64(link.certificate)
    return answer
