"""A network's retention identity: the archive's recipient device (docs/protocol.md §17).

A records officer holds an identity key like a user's (ECDSA P-384 and
ML-DSA-87). It certifies one *retention device* per key generation, whose
signed prekey is the KEM key every chain of the network is also sealed to
while retention is on. What the server publishes is ``RetentionIdentity``
(all public); clients verify its chain and pin the officer's identity under
``officer_user_id(network)`` in their ``IdentityTracker``, so a substituted
officer is refused like any changed identity key, never trusted silently.

The private parts (``RetentionSecrets``) are created on the admin's machine,
serialized small enough for one KMS ``Encrypt`` (at most 4 KB) and wrapped
by the archive key; nothing here talks to KMS.
"""

from __future__ import annotations

from dataclasses import dataclass

from .certificates import MAX_PREKEY_VALIDITY_MS, DeviceCertificate, PrekeyCertificate, PrekeyKind
from .device import DeviceSecrets
from .errors import BadCertificate, MalformedMessage
from .keys import IdentityKeyPair, IdentityPublicKey, KemKeyPair, Random, SigningKey, system_random
from .wire import check_identifier

__all__ = [
    "RETENTION_KEY_VALIDITY_MS",
    "RetentionIdentity",
    "RetentionSecrets",
    "officer_user_id",
    "open_device",
    "open_officer",
]

# The retention device's signed prekey lives as long as any prekey may
# (§4.2): the officer rotates at least this often (``retention rotate``).
RETENTION_KEY_VALIDITY_MS = MAX_PREKEY_VALIDITY_MS
_OFFICER_PREFIX = "records-"
_SIGNING_LENGTH = 48
_KEM_LENGTH = 112
_IDENTITY_LENGTH = 80


def officer_user_id(network_id: str) -> str:
    """The user id under which the records officer of ``network_id`` is known and pinned."""
    return check_identifier(_OFFICER_PREFIX + check_identifier(network_id, "network id"), "id")


@dataclass(frozen=True)
class RetentionIdentity:
    """The public retention identity of a network, as the server serves it."""

    network_id: str
    officer: IdentityPublicKey
    certificate: DeviceCertificate
    prekey: PrekeyCertificate

    @property
    def user_id(self) -> str:
        return self.certificate.user_id

    @property
    def device_id(self) -> str:
        return self.certificate.device_id

    @property
    def expires_at(self) -> int:
        """When this generation stops verifying: the officer must rotate before then."""
        return min(self.certificate.expires_at, self.prekey.expires_at)

    def verify(self, *, now: int) -> None:
        """Raise unless the officer certified the device and the device its current prekey."""
        if self.certificate.user_id != officer_user_id(self.network_id):
            raise BadCertificate("retention device is not the records officer's of this network")
        self.certificate.verify(self.officer, now=now)
        if self.prekey.kind != PrekeyKind.SIGNED:
            raise BadCertificate("a retention key is a signed prekey")
        self.prekey.verify(self.certificate, now=now)


@dataclass(frozen=True)
class RetentionSecrets:
    """The private halves: the officer's identity and one generation's device and KEM key."""

    officer: IdentityKeyPair
    device: DeviceSecrets

    @classmethod
    def create(
        cls,
        network_id: str,
        device_id: str,
        *,
        now: int,
        officer: IdentityKeyPair | None = None,
        rng: Random = system_random,
    ) -> RetentionSecrets:
        """A new generation; a new officer identity unless ``officer`` (a rotation) is given."""
        officer = officer if officer is not None else IdentityKeyPair.generate(rng)
        user_id = officer_user_id(network_id)
        signing = SigningKey.generate(rng)
        expires_at = now + RETENTION_KEY_VALIDITY_MS
        certificate = DeviceCertificate.issue(
            officer, user_id, device_id, signing.public, issued_at=now, expires_at=expires_at
        )
        pair = KemKeyPair.generate(rng)
        prekey = PrekeyCertificate.issue(
            signing,
            user_id,
            device_id,
            PrekeyKind.SIGNED,
            1,
            pair.public,
            created_at=now,
            expires_at=expires_at,
        )
        device = DeviceSecrets(user_id, device_id, signing, certificate, next_prekey_id=2)
        device.signed_prekeys[1] = (pair, prekey)
        return cls(officer, device)

    def identity(self, network_id: str) -> RetentionIdentity:
        return RetentionIdentity(
            network_id,
            self.officer.public,
            self.device.certificate,
            self.device.current_signed_prekey(),
        )

    def device_key_bytes(self) -> bytes:
        """What KMS wraps for this generation: the device's signing key and KEM private key."""
        prekey = self.device.current_signed_prekey()
        pair, _cert = self.device.signed_prekeys[prekey.prekey_id]
        return self.device.signing_key.private_bytes() + pair.private_bytes()

    def officer_key_bytes(self) -> bytes:
        """What KMS wraps for the officer: the identity's private key."""
        return self.officer.private_bytes()


def open_device(identity: RetentionIdentity, wrapped_plaintext: bytes) -> DeviceSecrets:
    """Rebuild the retention device from its public certificates and the unwrapped key bytes."""
    if len(wrapped_plaintext) != _SIGNING_LENGTH + _KEM_LENGTH:
        raise MalformedMessage("retention device key has the wrong length")
    signing = SigningKey.from_private_bytes(wrapped_plaintext[:_SIGNING_LENGTH])
    pair = KemKeyPair.from_private_bytes(wrapped_plaintext[_SIGNING_LENGTH:])
    if (
        signing.public != identity.certificate.device_key
        or pair.public != identity.prekey.public_key
    ):
        raise MalformedMessage("retention device key does not match its certificates")
    device = DeviceSecrets(
        identity.user_id,
        identity.device_id,
        signing,
        identity.certificate,
        next_prekey_id=identity.prekey.prekey_id + 1,
    )
    device.signed_prekeys[identity.prekey.prekey_id] = (pair, identity.prekey)
    return device


def open_officer(identity: RetentionIdentity, wrapped_plaintext: bytes) -> IdentityKeyPair:
    if len(wrapped_plaintext) != _IDENTITY_LENGTH:
        raise MalformedMessage("records officer key has the wrong length")
    officer = IdentityKeyPair.from_private_bytes(wrapped_plaintext)
    if officer.public != identity.officer:
        raise MalformedMessage("records officer key does not match the published identity")
    return officer
