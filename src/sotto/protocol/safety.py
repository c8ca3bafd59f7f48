"""Safety numbers and identity-change detection.

A safety number is 60 decimal digits (12 groups of 5) that two people read
to each other or compare in person. Each half is derived from one user's id
and identity-key fingerprint by ``ITERATIONS`` rounds of SHA-384 (as in
Signal's design, the iteration multiplies the cost of searching for a
colliding key); the halves are sorted, so both people see the same number.

``IdentityTracker`` remembers the identity key seen for each user. A first
key is recorded as unverified (trust on first use; the UI shows "not
verified" until the safety number is compared). A different key for a known
user raises ``IdentityChanged`` and is not recorded: only an explicit
``accept_change`` replaces it, and the replacement starts unverified.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .errors import IdentityChanged, MalformedMessage
from .keys import FINGERPRINT_LENGTH, IdentityPublicKey
from .wire import Reader, Writer, check_identifier, domain

__all__ = [
    "ITERATIONS",
    "IdentityTracker",
    "KnownIdentity",
    "safety_number",
    "safety_numbers_match",
]

ITERATIONS = 5200
SAFETY_NUMBER_VERSION = 1


def _half(user_id: str, fingerprint: bytes) -> str:
    seed = Writer().raw(domain("safety-number")).u16(SAFETY_NUMBER_VERSION)
    digest = hashlib.sha384(bytes(seed.text8(user_id).raw(fingerprint))).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha384(digest + fingerprint).digest()
    # Six 5-byte slices, each reduced to 5 digits (bias < 2^-20 per group).
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def safety_number(
    user_a: str, identity_a: IdentityPublicKey, user_b: str, identity_b: IdentityPublicKey
) -> str:
    """``"12345 67890 ..."``: the same string whichever side computes it."""
    check_identifier(user_a, "user id")
    check_identifier(user_b, "user id")
    halves = sorted((_half(user_a, identity_a.fingerprint), _half(user_b, identity_b.fingerprint)))
    digits = "".join(halves)
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


def safety_numbers_match(shown: str, typed: str) -> bool:
    """Compare ignoring spaces, in constant time."""
    a = "".join(shown.split()).encode()
    b = "".join(typed.split()).encode()
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class KnownIdentity:
    user_id: str
    fingerprint: bytes
    verified: bool


class IdentityTracker:
    """The identity keys this device has seen; the only place a peer's identity is trusted from."""

    def __init__(self) -> None:
        self._known: dict[str, KnownIdentity] = {}

    def check(self, user_id: str, identity: IdentityPublicKey) -> KnownIdentity:
        """Record a first key, return a known one, raise ``IdentityChanged`` on a new one."""
        check_identifier(user_id, "user id")
        known = self._known.get(user_id)
        if known is None:
            known = KnownIdentity(user_id, identity.fingerprint, verified=False)
            self._known[user_id] = known
            return known
        if not hmac.compare_digest(known.fingerprint, identity.fingerprint):
            raise IdentityChanged(user_id, known.fingerprint, identity.fingerprint)
        return known

    def accept_change(self, user_id: str, identity: IdentityPublicKey) -> KnownIdentity:
        """The person saw the change warning and accepted it; the new key starts unverified."""
        known = KnownIdentity(check_identifier(user_id, "user id"), identity.fingerprint, False)
        self._known[user_id] = known
        return known

    def mark_verified(self, user_id: str, identity: IdentityPublicKey) -> KnownIdentity:
        """Call after the safety number was compared out of band and matched."""
        known = self.check(user_id, identity)
        verified = KnownIdentity(user_id, known.fingerprint, verified=True)
        self._known[user_id] = verified
        return verified

    def get(self, user_id: str) -> KnownIdentity | None:
        return self._known.get(user_id)

    def serialize(self) -> bytes:
        w = Writer().u32(len(self._known))
        for user_id in sorted(self._known):
            known = self._known[user_id]
            w.text8(user_id).raw(known.fingerprint).u8(int(known.verified))
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> IdentityTracker:
        r = Reader(data, "identity tracker")
        tracker = cls()
        for _ in range(r.u32()):
            user_id = check_identifier(r.text8(), "user id")
            fingerprint, verified = r.take(FINGERPRINT_LENGTH), r.u8()
            if verified not in (0, 1):
                raise MalformedMessage("verified flag must be 0 or 1")
            tracker._known[user_id] = KnownIdentity(user_id, fingerprint, bool(verified))
        r.done()
        return tracker
