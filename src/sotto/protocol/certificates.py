"""Device certificates, prekey certificates and device revocations.

* ``DeviceCertificate``: the identity key vouches for a device signing key,
  with BOTH ECDSA P-384 and ML-DSA-87; a verifier checks both.
* ``PrekeyCertificate``: the device key vouches for an HPKE prekey (the
  rotated signed prekey, or a single-use one-time prekey).
* ``DeviceRevocation``: the identity key withdraws a device; ``Revocations``
  is the set a verifier consults.

What each signature covers is exactly the ``tbs()`` bytes (docs/protocol.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadCertificate, CertificateExpired, DeviceRevoked, MalformedMessage
from .keys import (
    ECDSA_PUBLIC_LENGTH,
    ECDSA_SIGNATURE_LENGTH,
    FINGERPRINT_LENGTH,
    KEM_PUBLIC_LENGTH,
    MLDSA_SIGNATURE_LENGTH,
    IdentityKeyPair,
    IdentityPublicKey,
    KemPublicKey,
    SigningKey,
    VerifyingKey,
)
from .wire import MessageType, Reader, Writer, check_identifier, parse_prefix

__all__ = [
    "MAX_DEVICE_CERT_VALIDITY_MS",
    "MAX_PREKEY_VALIDITY_MS",
    "DeviceCertificate",
    "DeviceRevocation",
    "PrekeyCertificate",
    "PrekeyKind",
    "Revocations",
]

MAX_DEVICE_CERT_VALIDITY_MS = 366 * 24 * 3600 * 1000
MAX_PREKEY_VALIDITY_MS = 90 * 24 * 3600 * 1000


def _check_window(issued_at: int, expires_at: int, limit: int) -> None:
    for value in (issued_at, expires_at):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise MalformedMessage("timestamps are unsigned 64-bit milliseconds")
    if not issued_at < expires_at <= issued_at + limit:
        raise MalformedMessage(f"validity must be positive and at most {limit} ms")


# Signature-sized zeros: lets ``issue`` build (and so check) a value before signing it.
_UNSIGNED = (bytes(ECDSA_SIGNATURE_LENGTH), bytes(MLDSA_SIGNATURE_LENGTH))


def _dual_signed(tbs: bytes, ecdsa_signature: bytes, mldsa_signature: bytes) -> bytes:
    """What the identity key signs, then both of its signatures."""
    return bytes(Writer().raw(tbs).var8(ecdsa_signature).var16(mldsa_signature))


def _check_sig_lengths(ecdsa_sig: bytes, mldsa_sig: bytes | None) -> None:
    if len(ecdsa_sig) != ECDSA_SIGNATURE_LENGTH:
        raise MalformedMessage("ECDSA signature length out of range")
    if mldsa_sig is not None and len(mldsa_sig) != MLDSA_SIGNATURE_LENGTH:
        raise MalformedMessage("ML-DSA-87 signature has the wrong length")


@dataclass(frozen=True)
class DeviceCertificate:
    user_id: str
    device_id: str
    identity_fingerprint: bytes
    device_key: VerifyingKey
    issued_at: int
    expires_at: int
    ecdsa_signature: bytes
    mldsa_signature: bytes
    # The identity key both signatures were verified under (this value is immutable, so
    # the answer cannot change): every envelope re-checks its sender's certificate.
    _verified_by: bytes | None = field(default=None, init=False, repr=False, compare=False)

    LABEL = "device-certificate"

    def __post_init__(self) -> None:
        check_identifier(self.user_id, "user id")
        check_identifier(self.device_id, "device id")
        if len(self.identity_fingerprint) != FINGERPRINT_LENGTH:
            raise MalformedMessage("identity fingerprint must be 32 bytes")
        _check_window(self.issued_at, self.expires_at, MAX_DEVICE_CERT_VALIDITY_MS)
        _check_sig_lengths(self.ecdsa_signature, self.mldsa_signature)

    def tbs(self) -> bytes:
        w = Writer().prefix(MessageType.DEVICE_CERTIFICATE).text8(self.user_id)
        w.text8(self.device_id).raw(self.identity_fingerprint).raw(self.device_key.serialize())
        return bytes(w.u64(self.issued_at).u64(self.expires_at))

    @classmethod
    def issue(
        cls,
        identity: IdentityKeyPair,
        user_id: str,
        device_id: str,
        device_key: VerifyingKey,
        *,
        issued_at: int,
        expires_at: int,
    ) -> DeviceCertificate:
        fp = identity.public.fingerprint
        # Construction checks every field; the placeholder signatures are replaced below.
        unsigned = cls(user_id, device_id, fp, device_key, issued_at, expires_at, *_UNSIGNED)
        ecdsa_sig, mldsa_sig = identity.sign(cls.LABEL, unsigned.tbs())
        return cls(user_id, device_id, fp, device_key, issued_at, expires_at, ecdsa_sig, mldsa_sig)

    def serialize(self) -> bytes:
        return _dual_signed(self.tbs(), self.ecdsa_signature, self.mldsa_signature)

    @classmethod
    def parse(cls, data: bytes) -> DeviceCertificate:
        r = Reader(data, "device certificate")
        parse_prefix(r, MessageType.DEVICE_CERTIFICATE)
        user_id, device_id = r.text8(), r.text8()
        fp, key = r.take(FINGERPRINT_LENGTH), VerifyingKey.parse(r.take(ECDSA_PUBLIC_LENGTH))
        issued, expires = r.u64(), r.u64()
        ecdsa_sig, mldsa_sig = r.var8(), r.var16()
        r.done()
        return cls(user_id, device_id, fp, key, issued, expires, ecdsa_sig, mldsa_sig)

    def verify(
        self,
        identity: IdentityPublicKey,
        *,
        now: int,
        revocations: Revocations | None = None,
    ) -> None:
        """Raise unless ``identity`` signed this (both signatures), it is current and unrevoked.

        ``identity`` must come from the caller's trust store (IdentityTracker),
        never from the peer that presented the certificate.
        """
        if identity.fingerprint != self.identity_fingerprint:
            raise BadCertificate("certificate names a different identity key")
        key = identity.serialize()
        if self._verified_by != key:
            if not identity.verify(
                self.LABEL, self.tbs(), self.ecdsa_signature, self.mldsa_signature
            ):
                raise BadCertificate("identity signature on device certificate does not verify")
            object.__setattr__(self, "_verified_by", key)
        if not self.issued_at <= now < self.expires_at:
            raise CertificateExpired(
                f"device certificate valid {self.issued_at}..{self.expires_at}, now {now}"
            )
        if revocations is not None and revocations.is_revoked(self.user_id, self.device_id):
            raise DeviceRevoked(f"device {self.device_id!r} of {self.user_id!r} is revoked")


class PrekeyKind:
    SIGNED = 1
    ONE_TIME = 2


@dataclass(frozen=True)
class PrekeyCertificate:
    user_id: str
    device_id: str
    kind: int
    prekey_id: int
    public_key: KemPublicKey
    created_at: int
    expires_at: int
    signature: bytes

    LABEL = "prekey"

    def __post_init__(self) -> None:
        check_identifier(self.user_id, "user id")
        check_identifier(self.device_id, "device id")
        if self.kind not in (PrekeyKind.SIGNED, PrekeyKind.ONE_TIME):
            raise MalformedMessage(f"unknown prekey kind {self.kind}")
        if not 0 <= self.prekey_id < 2**32:
            raise MalformedMessage("prekey id is a u32")
        _check_window(self.created_at, self.expires_at, MAX_PREKEY_VALIDITY_MS)
        _check_sig_lengths(self.signature, None)

    def tbs(self) -> bytes:
        w = Writer().prefix(MessageType.PREKEY_CERTIFICATE).text8(self.user_id)
        w.text8(self.device_id).u8(self.kind).u32(self.prekey_id)
        return bytes(w.raw(self.public_key.serialize()).u64(self.created_at).u64(self.expires_at))

    @classmethod
    def issue(
        cls,
        device_key: SigningKey,
        user_id: str,
        device_id: str,
        kind: int,
        prekey_id: int,
        public_key: KemPublicKey,
        *,
        created_at: int,
        expires_at: int,
    ) -> PrekeyCertificate:
        unsigned = cls(
            user_id,
            device_id,
            kind,
            prekey_id,
            public_key,
            created_at,
            expires_at,
            bytes(ECDSA_SIGNATURE_LENGTH),
        )
        return cls(
            user_id,
            device_id,
            kind,
            prekey_id,
            public_key,
            created_at,
            expires_at,
            device_key.sign(cls.LABEL, unsigned.tbs()),
        )

    def serialize(self) -> bytes:
        return bytes(Writer().raw(self.tbs()).var8(self.signature))

    @classmethod
    def parse(cls, data: bytes) -> PrekeyCertificate:
        r = Reader(data, "prekey certificate")
        parse_prefix(r, MessageType.PREKEY_CERTIFICATE)
        user_id, device_id, kind, prekey_id = r.text8(), r.text8(), r.u8(), r.u32()
        public_key = KemPublicKey.parse(r.take(KEM_PUBLIC_LENGTH))
        created, expires, sig = r.u64(), r.u64(), r.var8()
        r.done()
        return cls(user_id, device_id, kind, prekey_id, public_key, created, expires, sig)

    def verify(self, device: DeviceCertificate, *, now: int) -> None:
        """Raise unless ``device`` (already verified) signed this prekey and it is current."""
        if (self.user_id, self.device_id) != (device.user_id, device.device_id):
            raise BadCertificate("prekey belongs to another device")
        if not device.device_key.verify(self.LABEL, self.tbs(), self.signature):
            raise BadCertificate("device signature on prekey does not verify")
        if not self.created_at <= now < self.expires_at:
            raise CertificateExpired(f"prekey {self.prekey_id} is outside its validity window")


@dataclass(frozen=True)
class DeviceRevocation:
    """An identity-signed statement that a device is no longer trusted from ``revoked_at``."""

    user_id: str
    device_id: str
    identity_fingerprint: bytes
    revoked_at: int
    ecdsa_signature: bytes
    mldsa_signature: bytes

    LABEL = "device-revocation"

    def __post_init__(self) -> None:
        check_identifier(self.user_id, "user id")
        check_identifier(self.device_id, "device id")
        if len(self.identity_fingerprint) != FINGERPRINT_LENGTH:
            raise MalformedMessage("identity fingerprint must be 32 bytes")
        if not 0 <= self.revoked_at < 2**64:
            raise MalformedMessage("revoked_at is u64 milliseconds")
        _check_sig_lengths(self.ecdsa_signature, self.mldsa_signature)

    def tbs(self) -> bytes:
        w = Writer().prefix(MessageType.DEVICE_REVOCATION).text8(self.user_id)
        return bytes(w.text8(self.device_id).raw(self.identity_fingerprint).u64(self.revoked_at))

    @classmethod
    def issue(
        cls, identity: IdentityKeyPair, user_id: str, device_id: str, *, revoked_at: int
    ) -> DeviceRevocation:
        fp = identity.public.fingerprint
        unsigned = cls(user_id, device_id, fp, revoked_at, *_UNSIGNED)
        ecdsa_sig, mldsa_sig = identity.sign(cls.LABEL, unsigned.tbs())
        return cls(user_id, device_id, fp, revoked_at, ecdsa_sig, mldsa_sig)

    def serialize(self) -> bytes:
        return _dual_signed(self.tbs(), self.ecdsa_signature, self.mldsa_signature)

    @classmethod
    def parse(cls, data: bytes) -> DeviceRevocation:
        r = Reader(data, "device revocation")
        parse_prefix(r, MessageType.DEVICE_REVOCATION)
        user_id, device_id, fp, at = r.text8(), r.text8(), r.take(FINGERPRINT_LENGTH), r.u64()
        ecdsa_sig, mldsa_sig = r.var8(), r.var16()
        r.done()
        return cls(user_id, device_id, fp, at, ecdsa_sig, mldsa_sig)

    def verify(self, identity: IdentityPublicKey) -> None:
        if identity.fingerprint != self.identity_fingerprint or not identity.verify(
            self.LABEL, self.tbs(), self.ecdsa_signature, self.mldsa_signature
        ):
            raise BadCertificate("revocation is not signed by the user's identity key")


@dataclass
class Revocations:
    """The revoked devices a verifier knows of, each with the time it was revoked (ms).

    ``add`` accepts only identity-signed revocations; ``revoke`` is for a
    decision the caller authenticated some other way (e.g. an admin revocation
    from the organisation's authenticated directory), with the time it
    recorded. A device is revoked for everything from ``revoked_at`` on;
    what it signed before (membership operations, §15) still counts.
    """

    _revoked: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, revocation: DeviceRevocation, identity: IdentityPublicKey) -> None:
        revocation.verify(identity)
        self._record(revocation.user_id, revocation.device_id, revocation.revoked_at)

    def revoke(self, user_id: str, device_id: str, *, revoked_at: int = 0) -> None:
        """Revoke from ``revoked_at`` (default 0: since ever, voiding its old operations too)."""
        check_identifier(user_id, "user id")
        check_identifier(device_id, "device id")
        self._record(user_id, device_id, revoked_at)

    def _record(self, user_id: str, device_id: str, revoked_at: int) -> None:
        address = (user_id, device_id)
        self._revoked[address] = min(revoked_at, self._revoked.get(address, revoked_at))

    def is_revoked(self, user_id: str, device_id: str, *, at: int | None = None) -> bool:
        """Revoked at all (``at`` None), or by the time ``at``."""
        revoked_at = self._revoked.get((user_id, device_id))
        return revoked_at is not None and (at is None or revoked_at <= at)
