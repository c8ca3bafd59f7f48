"""A user's own devices revoking one of theirs: a lost laptop needs no administrator.

The request carries a DeviceRevocation signed by the user's identity key
(docs/protocol.md): whichever device sends it, the identity is what
authorizes it, so any device holding the identity key (the user's first,
typically) may revoke itself or another device of the same user. The
revocation is stored, the device's sockets closed, and its rosters follow
through the directory stream, exactly as for an administrator's revocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sotto.frames.requests import RevokeDeviceRequest
from sotto.protocol.certificates import DeviceRevocation
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey

from .audit import Actor, AuditEvent
from .errors import ErrorCode, Refused
from .key_directory import Stores
from .outcome import Outcome
from .principal import Principal

if TYPE_CHECKING:
    from sotto.frames.answers_devices import DeviceRevokedAnswer

__all__ = ["REVOCATION_FRESHNESS_MS", "revoke_device"]

# A signed revocation is accepted this long either side of its revoked_at.
REVOCATION_FRESHNESS_MS = 10 * 60 * 1000


def revoke_device(
    stores: Stores, caller: Principal, request: RevokeDeviceRequest, now_ms: int
) -> Outcome:
    rid = request.id
    user = caller.user or stores.directory.get_user(caller.user_id)
    if user is None:
        raise Refused(ErrorCode.FORBIDDEN, "user is not active", rid)
    try:
        revocation = DeviceRevocation.parse(request.revocation)
        revocation.verify(IdentityPublicKey.parse(user.identity_key))
    except ProtocolError as error:
        raise Refused(
            ErrorCode.INVALID_CERTIFICATE, f"revocation refused ({error.code})", rid
        ) from None
    if revocation.user_id != caller.user_id:
        raise Refused(ErrorCode.FORBIDDEN, "a revocation may name only your own devices", rid)
    if abs(revocation.revoked_at - now_ms) > REVOCATION_FRESHNESS_MS:
        raise Refused(ErrorCode.BAD_REQUEST, "the revocation is not fresh: sign it again", rid)
    device = stores.directory.get_device(revocation.device_id)
    if device is None or device.user_id != caller.user_id:
        raise Refused(ErrorCode.NOT_FOUND, "no such device of yours", rid)
    stores.directory.revoke_device(device, now_ms)
    stores.record(
        AuditEvent(
            caller.network_id,
            "device.revoked",
            Actor("device", caller.device_id, caller.user_id),
            {"device_id": device.device_id, "user_id": device.user_id},
            detail={"by": "own identity", "self": device.device_id == caller.device_id},
        )
    )
    answer: DeviceRevokedAnswer = {
        "action": "device_revoked",
        "id": rid,
        "device_id": device.device_id,
    }
    outcome = Outcome(replies=[answer])
    if stores.close_sockets is not None:
        close = stores.close_sockets

        def close_sockets() -> None:
            close(device.device_id)

        # After the answer, so a device revoking itself still hears that it worked.
        outcome.afterwards.append(close_sockets)
    return outcome
