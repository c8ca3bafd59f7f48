"""Pairwise sealing with HPKE (RFC 9180), base mode, single shot.

Suite: KEM ML-KEM-1024 + P-384 hybrid (the ``MLKEM1024_P384`` KEM of
pyca/cryptography: secure if EITHER component is), KDF HKDF-SHA384, AEAD
AES-256-GCM. Base mode authenticates nobody; sender authentication comes
from the device signature over the whole message that carries the HPKE
ciphertext. The ``info`` binds who sealed for whom and for which message, so
a ciphertext lifted into another message, re-signed by another member, or
sent to another device does not open.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from .errors import DecryptionFailed, MalformedMessage
from .keys import FINGERPRINT_LENGTH, KemKeyPair, KemPublicKey
from .wire import SUITE_ID, Writer, check_identifiers, check_random_id, domain

__all__ = ["ENC_LENGTH", "HPKE_OVERHEAD", "HPKE_SUITE", "PairwiseContext", "open_sealed", "seal"]

HPKE_SUITE = hpke.Suite(hpke.KEM.MLKEM1024_P384, hpke.KDF.HKDF_SHA384, hpke.AEAD.AES_256_GCM)
ENC_LENGTH = hpke.KEM.MLKEM1024_P384.enc_length()  # 1568 + 97
HPKE_OVERHEAD = ENC_LENGTH + 16


@dataclass(frozen=True)
class PairwiseContext:
    """Everything the HPKE ``info`` binds; the recipient rebuilds it from its own view."""

    purpose: str
    conversation_id: str
    sender_user_id: str
    sender_identity: bytes  # fingerprint of the sender's identity key
    sender_device_id: str
    recipient_user_id: str
    recipient_identity: bytes
    recipient_device_id: str
    prekey_kind: int
    prekey_id: int
    message_id: bytes
    session_id: bytes = bytes(16)  # the pairwise session it establishes (zeros: none)

    def __post_init__(self) -> None:
        check_identifiers(
            (self.conversation_id, "conversation id"),
            (self.sender_user_id, "sender user id"),
            (self.sender_device_id, "sender device id"),
            (self.recipient_user_id, "recipient user id"),
            (self.recipient_device_id, "recipient device id"),
        )
        if (
            len(self.sender_identity) != FINGERPRINT_LENGTH
            or len(self.recipient_identity) != FINGERPRINT_LENGTH
        ):
            raise MalformedMessage("identity fingerprints are 32 bytes")
        check_random_id(self.message_id, "message id")
        check_random_id(self.session_id, "session id")

    def info(self) -> bytes:
        w = Writer().raw(domain("hpke " + self.purpose)).u16(SUITE_ID)
        w.text8(self.conversation_id)
        w.text8(self.sender_user_id).raw(self.sender_identity).text8(self.sender_device_id)
        w.text8(self.recipient_user_id).raw(self.recipient_identity)
        w.text8(self.recipient_device_id).u8(self.prekey_kind).u32(self.prekey_id)
        return bytes(w.raw(self.message_id).raw(self.session_id))


def seal(context: PairwiseContext, plaintext: bytes, recipient: KemPublicKey) -> bytes:
    """``enc || ciphertext`` for ``recipient`` (randomized: the KEM draws fresh randomness)."""
    return HPKE_SUITE.encrypt(plaintext, recipient.hpke_key(), info=context.info())


def open_sealed(context: PairwiseContext, sealed: bytes, recipient: KemKeyPair) -> bytes:
    if len(sealed) < HPKE_OVERHEAD:
        raise DecryptionFailed()
    try:
        return HPKE_SUITE.decrypt(sealed, recipient.hpke_key(), info=context.info())
    except (InvalidTag, ValueError):
        raise DecryptionFailed() from None
