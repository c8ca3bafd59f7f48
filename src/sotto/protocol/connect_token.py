"""Connect tokens: how a device proves itself on the WebSocket ``$connect``.

A token is ``base64url(claims) "." base64url(signature)`` where ``claims`` is
canonical JSON (sorted keys, no spaces) of::

    {"v": 1, "dev": DEVICE_ID, "ts": UNIX_SECONDS, "nonce": HEX32, "aud": API_ID "/" STAGE}

and ``signature`` is ECDSA P-384 / SHA-384 (DER) by the device's signing key
over ``b"sotto-connect-v1\\0" + claims``. The domain prefix keeps a token
signature from ever being valid as any other Sotto signature.

Nothing here does I/O: the caller supplies the clock, the nonce and the
device's public key (looked up by ``peek_device_id``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import TokenError

__all__ = [
    "MAX_SKEW_SECONDS",
    "MAX_TOKEN_LENGTH",
    "ConnectClaims",
    "issue",
    "peek_device_id",
    "verify",
]

VERSION = 1
DOMAIN = b"sotto-connect-v1\x00"
MAX_SKEW_SECONDS = 300
MAX_TOKEN_LENGTH = 1024
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_AUDIENCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}/[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ConnectClaims:
    device_id: str
    timestamp: int
    nonce: str
    audience: str

    def __post_init__(self) -> None:
        if not _DEVICE_ID.match(self.device_id):
            raise TokenError("bad_token", "device id must be 1-64 URL-safe characters")
        if not _NONCE.match(self.nonce):
            raise TokenError("bad_token", "nonce must be 16 bytes in lowercase hex")
        if not _AUDIENCE.match(self.audience):
            raise TokenError("bad_token", "audience must be API_ID/STAGE")
        if isinstance(self.timestamp, bool) or not isinstance(self.timestamp, int):
            raise TokenError("bad_token", "timestamp must be an integer")

    def serialize(self) -> bytes:
        body = {
            "v": VERSION,
            "dev": self.device_id,
            "ts": self.timestamp,
            "nonce": self.nonce,
            "aud": self.audience,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> ConnectClaims:
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TokenError("bad_token", "claims are not JSON") from None
        if not isinstance(body, dict) or set(body) != {"v", "dev", "ts", "nonce", "aud"}:
            raise TokenError("bad_token", "claims must have exactly v, dev, ts, nonce, aud")
        if body["v"] != VERSION:
            raise TokenError("unsupported_version", f"token version {body['v']!r}")
        if not all(isinstance(body[k], str) for k in ("dev", "nonce", "aud")):
            raise TokenError("bad_token", "dev, nonce and aud must be strings")
        claims = cls(body["dev"], body["ts"], body["nonce"], body["aud"])
        # Only the canonical encoding is accepted, so one token has one form.
        if claims.serialize() != data:
            raise TokenError("bad_token", "claims are not in canonical form")
        return claims


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise TokenError("bad_token", "token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("bad_token", "token is not base64url") from None


def _split(token: str) -> tuple[bytes, bytes]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("bad_token", f"token must be a string of at most {MAX_TOKEN_LENGTH}")
    parts = token.split(".")
    if len(parts) != 2:
        raise TokenError("bad_token", "token must be CLAIMS.SIGNATURE")
    return _b64d(parts[0]), _b64d(parts[1])


def issue(
    device_id: str,
    signing_key: ec.EllipticCurvePrivateKey,
    audience: str,
    *,
    now: int,
    nonce: bytes,
) -> str:
    """Make a token for ``device_id`` addressed to ``audience`` (``API_ID/STAGE``)."""
    if len(nonce) != 16:
        raise TokenError("bad_token", "nonce must be 16 bytes")
    if not isinstance(signing_key.curve, ec.SECP384R1):
        raise TokenError("bad_token", "device signing keys are P-384")
    claims = ConnectClaims(device_id, now, nonce.hex(), audience).serialize()
    # Deterministic (RFC 6979): no per-token RNG dependence, and vectors are exact.
    signature = signing_key.sign(
        DOMAIN + claims, ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    )
    return f"{_b64e(claims)}.{_b64e(signature)}"


def peek_device_id(token: str) -> str:
    """The device a token claims to be from, unverified: only for finding its key."""
    claims, _ = _split(token)
    return ConnectClaims.parse(claims).device_id


def verify(
    token: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    audience: str,
    now: int,
    max_skew: int = MAX_SKEW_SECONDS,
) -> ConnectClaims:
    """Check signature, audience and freshness; return the claims or raise TokenError.

    Replay protection (each nonce once) needs storage, so the caller does it
    with the returned nonce.
    """
    raw_claims, signature = _split(token)
    claims = ConnectClaims.parse(raw_claims)
    if not isinstance(public_key.curve, ec.SECP384R1):
        raise TokenError("bad_signature", "device signing keys are P-384")
    try:
        public_key.verify(signature, DOMAIN + raw_claims, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise TokenError("bad_signature", "token signature does not verify") from None
    if claims.audience != audience:
        raise TokenError("wrong_audience", "token is addressed to another API or stage")
    if abs(now - claims.timestamp) > max_skew:
        raise TokenError("stale_token", f"token time is more than {max_skew}s from server time")
    return claims
