"""Key pairs and their public encodings.

Hierarchy (docs/protocol.md §2)::

    identity key (per user)      ECDSA P-384 + ML-DSA-87, signs device certificates
    └── device signing key       ECDSA P-384, signs prekeys, envelopes, key distributions
        ├── signed prekey        HPKE KEM key (ML-KEM-1024 + P-384), rotated
        └── one-time prekeys     HPKE KEM keys, each used for one key distribution

Randomness is injected (``rng(n) -> n bytes``) and keys are derived from it
with the standard methods (FIPS 186-5 A.2.1 for the P-384 scalar, FIPS 203/204
seeds for ML-KEM/ML-DSA), so test vectors are reproducible. All signatures
carry a domain label, so a signature made for one purpose never verifies for
another. ECDSA signing is deterministic (RFC 6979), which removes the
per-signature dependence on a good RNG.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import MalformedMessage
from .wire import domain

__all__ = [
    "ECDSA_PUBLIC_LENGTH",
    "ECDSA_SIGNATURE_LENGTH",
    "FINGERPRINT_LENGTH",
    "KEM_PUBLIC_LENGTH",
    "MLDSA_PUBLIC_LENGTH",
    "MLDSA_SIGNATURE_LENGTH",
    "IdentityKeyPair",
    "IdentityPublicKey",
    "KemKeyPair",
    "KemPublicKey",
    "Random",
    "SigningKey",
    "VerifyingKey",
    "system_random",
]

Random = Callable[[int], bytes]
ECDSA_PUBLIC_LENGTH = 97  # SEC1 uncompressed P-384 point
ECDSA_SIGNATURE_LENGTH = 96  # r || s, 48 bytes each (IEEE P1363): fixed, so sizes never vary
MLDSA_PUBLIC_LENGTH = 2592
MLDSA_SIGNATURE_LENGTH = 4627
MLKEM_PUBLIC_LENGTH = 1568
KEM_PUBLIC_LENGTH = MLKEM_PUBLIC_LENGTH + ECDSA_PUBLIC_LENGTH
FINGERPRINT_LENGTH = 32
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_ECDSA = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
_ECDSA_VERIFY = ec.ECDSA(hashes.SHA384())


def _ecdsa_sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, _ECDSA))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def _ecdsa_verify(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> None:
    """Raises InvalidSignature; the fixed-length form is checked before DER is rebuilt."""
    if len(signature) != ECDSA_SIGNATURE_LENGTH:
        raise InvalidSignature
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    key.verify(encode_dss_signature(r, s), message, _ECDSA_VERIFY)


def system_random(n: int) -> bytes:
    return os.urandom(n)


def _p384_from_random(rng: Random) -> ec.EllipticCurvePrivateKey:
    # FIPS 186-5 A.2.1: 64 extra bits make the modular bias negligible.
    c = int.from_bytes(rng(56), "big")
    return ec.derive_private_key(c % (_P384_ORDER - 1) + 1, ec.SECP384R1())


def _p384_private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(48, "big")


def _p384_from_private_bytes(data: bytes) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(data, "big")
    if len(data) != 48 or not 0 < scalar < _P384_ORDER:
        raise MalformedMessage("P-384 private key must be a 48-byte scalar in [1, n-1]")
    return ec.derive_private_key(scalar, ec.SECP384R1())


def _p384_public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _p384_public_from_bytes(data: bytes) -> ec.EllipticCurvePublicKey:
    if len(data) != ECDSA_PUBLIC_LENGTH or data[0] != 0x04:
        raise MalformedMessage("P-384 public key must be a 97-byte uncompressed point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), data)
    except ValueError:
        raise MalformedMessage("P-384 public key is not a point on the curve") from None


@dataclass(frozen=True, eq=False)
class VerifyingKey:
    """An ECDSA P-384 public key (device signing key)."""

    key: ec.EllipticCurvePublicKey

    @classmethod
    def parse(cls, data: bytes) -> VerifyingKey:
        return cls(_p384_public_from_bytes(data))

    @cached_property
    def _encoded(self) -> bytes:  # keys are compared and encoded on every message: once
        return _p384_public_bytes(self.key)

    def serialize(self) -> bytes:
        return self._encoded

    def verify(self, label: str, data: bytes, signature: bytes) -> bool:
        try:
            _ecdsa_verify(self.key, signature, domain(label) + data)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(self.serialize())


@dataclass(frozen=True, eq=False, repr=False)
class SigningKey:
    """An ECDSA P-384 private key; signs ``domain(label) || data``."""

    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, rng: Random = system_random) -> SigningKey:
        return cls(_p384_from_random(rng))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKey:
        return cls(_p384_from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return _p384_private_bytes(self.key)

    @property
    def public(self) -> VerifyingKey:
        return VerifyingKey(self.key.public_key())

    def sign(self, label: str, data: bytes) -> bytes:
        return _ecdsa_sign(self.key, domain(label) + data)

    def __repr__(self) -> str:
        return "SigningKey(<secret>)"


@dataclass(frozen=True, eq=False)
class IdentityPublicKey:
    """A user's root public key: ECDSA P-384 and ML-DSA-87, both always verified."""

    ecdsa: ec.EllipticCurvePublicKey
    mldsa: mldsa.MLDSA87PublicKey

    @classmethod
    def parse(cls, data: bytes) -> IdentityPublicKey:
        if len(data) != ECDSA_PUBLIC_LENGTH + MLDSA_PUBLIC_LENGTH:
            raise MalformedMessage("identity public key has the wrong length")
        ecdsa_key = _p384_public_from_bytes(data[:ECDSA_PUBLIC_LENGTH])
        try:
            mldsa_key = mldsa.MLDSA87PublicKey.from_public_bytes(data[ECDSA_PUBLIC_LENGTH:])
        except ValueError:
            raise MalformedMessage("ML-DSA-87 public key is invalid") from None
        return cls(ecdsa_key, mldsa_key)

    @cached_property
    def _encoded(self) -> bytes:
        return _p384_public_bytes(self.ecdsa) + self.mldsa.public_bytes_raw()

    def serialize(self) -> bytes:
        return self._encoded

    @cached_property
    def fingerprint(self) -> bytes:
        """32 bytes naming this identity key in HPKE ``info`` and safety numbers."""
        digest = hashlib.sha384(domain("identity-fingerprint") + self.serialize()).digest()
        return digest[:FINGERPRINT_LENGTH]

    def verify(self, label: str, data: bytes, ecdsa_sig: bytes, mldsa_sig: bytes) -> bool:
        """True only if BOTH signatures verify (a hybrid is as strong as its stronger half)."""
        message = domain(label) + data
        try:
            _ecdsa_verify(self.ecdsa, ecdsa_sig, message)
            self.mldsa.verify(mldsa_sig, message, label.encode("ascii"))
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityPublicKey) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(self.serialize())


@dataclass(frozen=True, eq=False, repr=False)
class IdentityKeyPair:
    ecdsa: ec.EllipticCurvePrivateKey
    mldsa: mldsa.MLDSA87PrivateKey

    @classmethod
    def generate(cls, rng: Random = system_random) -> IdentityKeyPair:
        ecdsa_key = _p384_from_random(rng)
        return cls(ecdsa_key, mldsa.MLDSA87PrivateKey.from_seed_bytes(rng(32)))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> IdentityKeyPair:
        if len(data) != 48 + 32:
            raise MalformedMessage("identity private key must be 80 bytes")
        return cls(
            _p384_from_private_bytes(data[:48]),
            mldsa.MLDSA87PrivateKey.from_seed_bytes(data[48:]),
        )

    def private_bytes(self) -> bytes:
        return _p384_private_bytes(self.ecdsa) + self.mldsa.private_bytes_raw()

    @property
    def public(self) -> IdentityPublicKey:
        return IdentityPublicKey(self.ecdsa.public_key(), self.mldsa.public_key())

    def sign(self, label: str, data: bytes) -> tuple[bytes, bytes]:
        """(ECDSA, ML-DSA) signatures over ``domain(label) || data``; ML-DSA context = label."""
        message = domain(label) + data
        return _ecdsa_sign(self.ecdsa, message), self.mldsa.sign(message, label.encode("ascii"))

    def __repr__(self) -> str:
        return "IdentityKeyPair(<secret>)"


@dataclass(frozen=True, eq=False)
class KemPublicKey:
    """HPKE recipient key: ``ML-KEM-1024 encapsulation key (1568) || P-384 point (97)``."""

    mlkem: mlkem.MLKEM1024PublicKey
    p384: ec.EllipticCurvePublicKey

    @classmethod
    def parse(cls, data: bytes) -> KemPublicKey:
        if len(data) != KEM_PUBLIC_LENGTH:
            raise MalformedMessage("KEM public key has the wrong length")
        try:
            kem = mlkem.MLKEM1024PublicKey.from_public_bytes(data[:MLKEM_PUBLIC_LENGTH])
        except ValueError:
            raise MalformedMessage("ML-KEM-1024 public key is invalid") from None
        return cls(kem, _p384_public_from_bytes(data[MLKEM_PUBLIC_LENGTH:]))

    def serialize(self) -> bytes:
        return self.mlkem.public_bytes_raw() + _p384_public_bytes(self.p384)

    def hpke_key(self) -> hpke.MLKEM1024P384PublicKey:
        return hpke.MLKEM1024P384PublicKey(self.mlkem, self.p384)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KemPublicKey) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(self.serialize())


@dataclass(frozen=True, eq=False, repr=False)
class KemKeyPair:
    mlkem: mlkem.MLKEM1024PrivateKey
    p384: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, rng: Random = system_random) -> KemKeyPair:
        kem = mlkem.MLKEM1024PrivateKey.from_seed_bytes(rng(64))
        return cls(kem, _p384_from_random(rng))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KemKeyPair:
        if len(data) != 64 + 48:
            raise MalformedMessage("KEM private key must be 112 bytes")
        kem = mlkem.MLKEM1024PrivateKey.from_seed_bytes(data[:64])
        return cls(kem, _p384_from_private_bytes(data[64:]))

    def private_bytes(self) -> bytes:
        return self.mlkem.private_bytes_raw() + _p384_private_bytes(self.p384)

    @property
    def public(self) -> KemPublicKey:
        return KemPublicKey(self.mlkem.public_key(), self.p384.public_key())

    def hpke_key(self) -> hpke.MLKEM1024P384PrivateKey:
        return hpke.MLKEM1024P384PrivateKey(self.mlkem, self.p384)

    def __repr__(self) -> str:
        return "KemKeyPair(<secret>)"
