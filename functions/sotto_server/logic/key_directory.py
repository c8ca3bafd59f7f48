"""The key directory's WebSocket routes: prekeys, bundles, device lists, device links.

Each route takes the caller (vouched for by the $connect authorizer), its
parsed request and the stores; it returns the answer frames for the caller and
any notices for other devices. The handler does the I/O around it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sotto.frames import paginate_lists
from sotto.frames.requests import (
    FetchBundlesRequest,
    LinkApproveRequest,
    LinkCreateRequest,
    LinkPendingRequest,
    ListDevicesRequest,
    LookupUserRequest,
    PrekeyStatusRequest,
    PublishPrekeysRequest,
)

from ..dal.directory import (
    MAX_ONE_TIME_PREKEYS,
    Conflict,
    DeviceRecord,
    DirectoryStore,
    LinkRecord,
    UserRecord,
)
from ..dal.guards import GuardsStore
from ..dal.retention import RetentionStore
from . import limits
from .audit import Actor, AuditEvent
from .codes import hash_code, new_code
from .errors import ErrorCode, Refused
from .frames import b64
from .identity import (
    check_device_certificate,
    check_prekeys,
    parse_device_certificate,
    signing_key_der,
)
from .outcome import Outcome
from .policy import check_device_count, effective_policy
from .principal import Principal

if TYPE_CHECKING:
    from sotto.frames.answers import Bundle, BundlesHeader, PrekeysLowPush, Unavailable
    from sotto.frames.answers_devices import (
        DeviceItem,
        DevicesHeader,
        LinkApprovedAnswer,
        LinkCreatedAnswer,
        LinkPendingAnswer,
        PrekeysPublishedAnswer,
        PrekeyStatusAnswer,
        UserAnswer,
    )

__all__ = [
    "LINK_TTL_MS",
    "LOW_PREKEYS",
    "Stores",
    "fetch_bundles",
    "link_approve",
    "link_create",
    "link_pending",
    "list_devices",
    "lookup_user",
    "prekey_status",
    "publish_prekeys",
]

# Owners are told to replenish below this many one-time prekeys.
LOW_PREKEYS = 10
LINK_TTL_MS = 10 * 60 * 1000


@dataclass(frozen=True)
class Stores:
    directory: DirectoryStore
    guards: GuardsStore
    # Multiplies every rate limit (``SOTTO_RATE_LIMIT_SCALE``).
    limit_scale: float = 1.0
    # Records an audit event (handlers/_audit.py); None where nothing is audited.
    audit: Callable[[AuditEvent], object] | None = None
    # Closes every socket of a device (a revocation); None where nothing is closed.
    close_sockets: Callable[[str], object] | None = None
    retention: RetentionStore | None = None

    def record(self, event: AuditEvent) -> None:
        if self.audit is not None:
            self.audit(event)


def _limit(
    stores: Stores,
    bucket: str,
    subject: str,
    now_ms: int,
    request_id: str | None,
    *,
    cost: int = 1,
) -> None:

    try:
        limits.check(stores.guards, bucket, subject, now_ms // 1000, stores.limit_scale, cost=cost)
    except limits.RateLimited as limited:
        raise Refused(
            ErrorCode.RATE_LIMITED,
            "too many requests; retry later",
            request_id,
            retry_after_s=limited.retry_after_s,
        ) from None


def _own_device(stores: Stores, caller: Principal, request_id: str | None) -> DeviceRecord:
    # Read with the frame's standing check; read again only outside a frame.
    device = caller.device or stores.directory.get_device(caller.device_id)
    if device is None or not device.certificate:
        raise Refused(ErrorCode.FORBIDDEN, "this device has no certificate", request_id)
    return device


def _peer(stores: Stores, caller: Principal, user_id: str, request_id: str | None) -> UserRecord:
    """A user of the caller's network; others do not exist as far as the caller knows."""
    user = stores.directory.get_user(user_id)
    if user is None or user.network_id != caller.network_id:
        raise Refused(ErrorCode.NOT_FOUND, "no such user", request_id)
    return user


def publish_prekeys(
    stores: Stores, caller: Principal, request: PublishPrekeysRequest, now_ms: int
) -> Outcome:
    rid = request.id
    if request.signed_prekey is None and not request.one_time_prekeys:
        raise Refused(ErrorCode.BAD_REQUEST, "nothing to publish", rid)
    _limit(stores, "publish_device", caller.device_id, now_ms, rid)
    _limit(stores, "publish_network", caller.network_id, now_ms, rid)
    device = _own_device(stores, caller, rid)
    certificate = parse_device_certificate(device.certificate)
    checked = check_prekeys(
        certificate,
        request.signed_prekey,
        list(request.one_time_prekeys),
        now_ms=now_ms,
        request_id=rid,
    )
    try:
        stores.directory.put_prekeys(caller.device_id, checked.signed, checked.one_time, now_ms)
    except Conflict as conflict:
        if conflict.reason == "too_many_prekeys":
            raise Refused(
                ErrorCode.CONFLICT,
                f"a device holds at most {MAX_ONE_TIME_PREKEYS} one-time prekeys",
                rid,
            ) from None
        raise Refused(
            ErrorCode.CONFLICT,
            "one-time prekey ids must follow on from those already published",
            rid,
        ) from None
    answer: PrekeysPublishedAnswer = {
        "action": "prekeys_published",
        "id": rid,
        "one_time_prekeys": stores.directory.count_one_time_prekeys(caller.device_id),
    }
    return Outcome(replies=[answer])


def prekey_status(
    stores: Stores, caller: Principal, request: PrekeyStatusRequest, now_ms: int
) -> Outcome:
    directory = stores.directory
    answer: PrekeyStatusAnswer = {
        "action": "prekey_status",
        "id": request.id,
        "one_time_prekeys": directory.count_one_time_prekeys(caller.device_id),
        "signed_prekey_expires_at": directory.signed_prekey_expiry(caller.device_id),
    }
    return Outcome(replies=[answer])


def fetch_bundles(
    stores: Stores, caller: Principal, request: FetchBundlesRequest, now_ms: int
) -> Outcome:
    """One prekey for each named device: a one-time prekey while any is left, else signed.

    Counted in bundles against the caller's device and network, so one
    sender may fetch what a 1000-member room's rotation needs in one go.
    """
    rid = request.id
    wanted = list(dict.fromkeys((d.user_id, d.device_id) for d in request.devices))
    _limit(stores, "fetch_device", caller.device_id, now_ms, rid, cost=len(wanted))
    _limit(stores, "fetch_network", caller.network_id, now_ms, rid, cost=len(wanted))
    directory = stores.directory
    owners = directory.device_owners([device_id for _, device_id in wanted])
    unavailable: list[Unavailable] = []
    eligible: list[tuple[str, str]] = []
    for user_id, device_id in wanted:
        owner = owners.get(device_id)
        if owner is None or owner[:2] != (user_id, caller.network_id):
            unavailable.append({"user_id": user_id, "device_id": device_id, "reason": "unknown"})
        elif owner[2] != "active":
            unavailable.append({"user_id": user_id, "device_id": device_id, "reason": "revoked"})
        else:
            eligible.append((user_id, device_id))
    outcome = Outcome()
    taken = directory.take_prekeys(
        [device_id for _, device_id in eligible], cleanup=outcome.afterwards
    )
    bundles: list[Bundle] = []
    low: list[tuple[str, PrekeysLowPush]] = []
    for user_id, device_id in eligible:
        if device_id not in taken:
            unavailable.append({"user_id": user_id, "device_id": device_id, "reason": "no_prekey"})
            continue
        kind, certificate, left = taken[device_id]
        if left < LOW_PREKEYS:
            low.append((device_id, {"action": "prekeys_low", "one_time_prekeys": left}))
        bundles.append(
            {"user_id": user_id, "device_id": device_id, "kind": kind, "prekey": b64(certificate)}
        )
    header: BundlesHeader = {"action": "bundles", "id": rid}
    outcome.notices = low
    outcome.replies = paginate_lists(header, {"bundles": bundles, "unavailable": unavailable})
    return outcome


def list_devices(
    stores: Stores, caller: Principal, request: ListDevicesRequest, now_ms: int
) -> Outcome:
    user = _peer(stores, caller, request.user_id, request.id)
    devices: list[DeviceItem] = [
        {"device_id": device_id, "certificate": b64(certificate), "status": status}
        for device_id, certificate, status in stores.directory.list_devices(user.user_id)
    ]
    header: DevicesHeader = {
        "action": "devices",
        "id": request.id,
        "user_id": user.user_id,
        "identity_key": b64(user.identity_key),
    }
    return Outcome(replies=paginate_lists(header, {"devices": devices}))


def lookup_user(
    stores: Stores, caller: Principal, request: LookupUserRequest, now_ms: int
) -> Outcome:
    """A person of the caller's network by handle (or a user id's handle), with their key.

    Another network's users, invited handles not yet enrolled and unknown
    handles all answer the same ``not_found``. The identity key is what the
    client pins on first contact; safety numbers remain how people verify it.
    """
    rid = request.id
    _limit(stores, "lookup_device", caller.device_id, now_ms, rid)
    user_id = request.user_id
    if request.handle is not None:
        user_id = stores.directory.find_handle(caller.network_id, request.handle)
        if user_id is None:
            raise Refused(ErrorCode.NOT_FOUND, "no such user", rid)
    assert user_id is not None  # the model holds exactly one of the two
    user = _peer(stores, caller, user_id, rid)
    answer: UserAnswer = {
        "action": "user",
        "id": rid,
        "user_id": user.user_id,
        "handle": user.handle,
        "status": user.status,
        "identity_key": b64(user.identity_key),
    }
    return Outcome(replies=[answer])


def link_create(
    stores: Stores, caller: Principal, request: LinkCreateRequest, now_ms: int
) -> Outcome:
    _limit(stores, "link_device", caller.device_id, now_ms, request.id)
    _own_device(stores, caller, request.id)
    _room_for_a_device(stores, caller, request.id)
    code = new_code()
    link = LinkRecord(
        link_id=f"lnk-{secrets.token_hex(8)}",
        code_hash=hash_code(code),
        network_id=caller.network_id,
        user_id=caller.user_id,
        created_by=caller.device_id,
        created_at=now_ms,
        expires_at=now_ms + LINK_TTL_MS,
        state="open",
    )
    stores.directory.create_link(link, ttl_expires_at=link.expires_at // 1000 + 3600)
    answer: LinkCreatedAnswer = {
        "action": "link_created",
        "id": request.id,
        "link_id": link.link_id,
        "code": code,
        "expires_at": link.expires_at,
    }
    return Outcome(replies=[answer])


def _room_for_a_device(
    stores: Stores, caller: Principal, rid: str | None, *, reserve: bool = False
) -> int | None:
    """The policy's devices-per-user cap: checked when a link opens and when it is approved.

    ``reserve`` (an approval), under a cap: the version of the user's device slot,
    read before counting (the approval moves it on, so two approvals cannot both
    pass the same count). None otherwise.
    """
    groups = caller.user.groups if caller.user is not None else None
    policy = effective_policy(stores.directory, caller.network_id, caller.user_id, groups=groups)
    if policy["max_devices"] is None:
        return None
    slot = stores.directory.device_slot(caller.user_id) if reserve else None
    active = sum(
        1
        for _id, _cert, status in stores.directory.list_devices(caller.user_id)
        if status == "active"
    )
    check_device_count(policy, active, rid)
    return slot


def _own_link(stores: Stores, caller: Principal, link_id: str, rid: str | None) -> LinkRecord:
    link = stores.directory.get_link(link_id)
    if link is None or link.user_id != caller.user_id:
        raise Refused(ErrorCode.NOT_FOUND, "no such link", rid)
    return link


def link_state(link: LinkRecord, now_ms: int) -> str:
    if link.state != "approved" and now_ms >= link.expires_at:
        return "expired"
    return link.state


def link_pending(
    stores: Stores, caller: Principal, request: LinkPendingRequest, now_ms: int
) -> Outcome:
    link = _own_link(stores, caller, request.link_id, request.id)
    frame: LinkPendingAnswer = {
        "action": "link_pending",
        "id": request.id,
        "link_id": link.link_id,
        "state": link_state(link, now_ms),
    }
    if link.device_id:
        frame["device_id"] = link.device_id
        frame["device_key"] = b64(link.device_key)
    return Outcome(replies=[frame])


def link_approve(
    stores: Stores, caller: Principal, request: LinkApproveRequest, now_ms: int
) -> Outcome:
    rid = request.id
    link = _own_link(stores, caller, request.link_id, rid)
    if link_state(link, now_ms) != "requested":
        raise Refused(ErrorCode.CONFLICT, f"link is {link_state(link, now_ms)}", rid)
    user = caller.user or stores.directory.get_user(caller.user_id)
    if user is None or user.status != "active":
        raise Refused(ErrorCode.FORBIDDEN, "user is not active", rid)
    slot = _room_for_a_device(stores, caller, rid, reserve=True)
    try:
        certificate = check_device_certificate(
            request.certificate, user.identity_key, user_id=user.user_id, now_ms=now_ms
        )
    except Refused as refused:
        raise Refused(refused.code, refused.message, rid) from None
    if (
        certificate.device_id != link.device_id
        or certificate.device_key.serialize() != link.device_key
    ):
        raise Refused(
            ErrorCode.INVALID_CERTIFICATE, "certificate is for another device than requested", rid
        )
    device = DeviceRecord(
        device_id=certificate.device_id,
        user_id=user.user_id,
        network_id=user.network_id,
        signing_key=signing_key_der(certificate.device_key),
        status="active",
        created_at=now_ms,
        certificate=request.certificate,
    )
    try:
        stores.directory.approve_link(link, device, caller.device_id, now_ms, slot=slot)
    except Conflict as conflict:
        if conflict.reason in ("approver_not_active", "user_not_active"):
            raise Refused(ErrorCode.FORBIDDEN, "this device may no longer approve", rid) from None
        if conflict.reason == "devices_changed":
            raise Refused(
                ErrorCode.CONFLICT,
                "this user's devices changed while the link was approved: approve it again",
                rid,
            ) from None
        raise Refused(ErrorCode.CONFLICT, conflict.reason.replace("_", " "), rid) from None
    stores.record(
        AuditEvent(
            caller.network_id,
            "link.approved",
            Actor("device", caller.device_id, caller.user_id),
            {"user_id": user.user_id, "device_id": device.device_id},
        )
    )
    # The new device joins its user's conversation rosters through the
    # directory stream (the ``rosters`` function), not in this request.
    answer: LinkApprovedAnswer = {
        "action": "link_approved",
        "id": rid,
        "device_id": device.device_id,
    }
    return Outcome(replies=[answer])
