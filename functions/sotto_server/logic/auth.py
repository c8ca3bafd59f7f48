"""Who may open a socket: the decision behind the $connect authorizer.

Pure apart from the lookups it is given. Refusals carry the HTTP status API
Gateway answers on the upgrade: 401 when no usable token was presented, 403
when a token was presented but is not good enough. Checks run cheapest and
least revealing first; the nonce is spent only once the signature verified,
so nobody can burn another device's nonces.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sotto.protocol import connect_token
from sotto.protocol.errors import TokenError

from ..dal.directory import DeviceRecord, UserRecord
from .principal import Principal

__all__ = ["NONCE_RETENTION_SECONDS", "Principal", "Refusal", "authorize"]

_SCHEME = "Sotto-Device "
# A nonce must be remembered for as long as its token could still be fresh.
NONCE_RETENTION_SECONDS = 2 * connect_token.MAX_SKEW_SECONDS + 60


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def authorize(
    authorization: str | None,
    lookup_device: Callable[[str], DeviceRecord | None],
    lookup_user: Callable[[str], UserRecord | None],
    use_nonce: Callable[[str, str, int], bool],
    *,
    audience: str,
    now: int,
) -> Principal:
    """Return the device's principal, or raise Refusal with status and reason."""
    if not authorization or not authorization.startswith(_SCHEME):
        raise Refusal(401, "missing_token")
    token = authorization[len(_SCHEME) :].strip()
    try:
        device_id = connect_token.peek_device_id(token)
    except TokenError as exc:
        raise Refusal(401, exc.code) from None
    device = lookup_device(device_id)
    if device is None:
        raise Refusal(403, "unknown_device")
    if device.status != "active":
        raise Refusal(403, "revoked_device")
    public_key = load_der_public_key(device.signing_key)
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise Refusal(403, "bad_device_key")
    try:
        claims = connect_token.verify(token, public_key, audience=audience, now=now)
    except TokenError as exc:
        raise Refusal(403, exc.code) from None
    user = lookup_user(device.user_id)
    if user is None or user.status != "active":
        raise Refusal(403, "suspended_user")
    if not use_nonce(device.device_id, claims.nonce, claims.timestamp + NONCE_RETENTION_SECONDS):
        raise Refusal(403, "replayed_token")
    return Principal(device.device_id, device.user_id, device.network_id)
