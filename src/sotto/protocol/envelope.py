"""Conversation envelopes: one signed, padded AES-256-GCM message, any room size.

Wire (docs/protocol.md §7)::

    core      = prefix(0x11) || conversation_id || sender_user_id || sender_device_id
                || message_id(16) || timestamp(u64 ms) || expires_at(u64 ms, 0 = never)
                || burn_after_read(u32 s, 0 = off) || size_class(u8)
                || chain_id(16) || iteration(u32) || salt(16) || key_commitment(32)
    header    = core || SHA-384(ciphertext)
    envelope  = header || var32(ciphertext) || var8(ECDSA signature)

    key, nonce, key_commitment = MessageKey.keys(salt)       (ratchet.py)
    ciphertext = AES-256-GCM(key, nonce, pad(content), aad = core)
    signature  = ECDSA-P384(device key, "sotto-v2 envelope\\0" || header)

The signature covers every header field the server reads plus a digest of
the ciphertext, so the server can verify an envelope without keys, and no
other room member (who shares the chain key) can forge one. The signed key
commitment is checked before the AEAD runs, so one envelope opens under one
key only. The receiver checks in a fixed order so every failure names its
rule; the order is the numbered list in ``open_envelope``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .certificates import DeviceCertificate, Revocations
from .content import SIZE_BUCKETS, Content, pad, parse_content, unpad
from .device import DeviceSecrets
from .errors import (
    BadSignature,
    CiphertextTampered,
    DecryptionFailed,
    KeyCommitmentMismatch,
    LimitExceeded,
    MalformedMessage,
    MessageExpired,
    SenderMismatch,
    UnknownChain,
    WrongConversation,
)
from .keys import ECDSA_SIGNATURE_LENGTH, IdentityPublicKey, Random, system_random
from .ratchet import (
    COMMITMENT_LENGTH,
    MAX_MESSAGES_PER_CHAIN,
    MESSAGE_SALT_LENGTH,
    Members,
    ReceiverChain,
    SealingKeys,
    SenderChain,
)
from .replay import ReplayGuard
from .wire import (
    ID_LENGTH,
    MessageType,
    Reader,
    Writer,
    check_identifier,
    check_random_id,
    parse_prefix,
)

__all__ = [
    "MAX_CLOCK_SKEW_MS",
    "MAX_ENVELOPE_SIZE",
    "Envelope",
    "EnvelopeHeader",
    "ExpiryPolicy",
    "OpenedMessage",
    "open_envelope",
    "seal_envelope",
    "verify_envelope",
]

LABEL = "envelope"
DIGEST_LENGTH = 48
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_ENVELOPE_SIZE = 512 + SIZE_BUCKETS[-1] + 16 + ECDSA_SIGNATURE_LENGTH


@dataclass(frozen=True)
class ExpiryPolicy:
    """The network's caps on expiring and burn-on-read messages."""

    max_expiry_ms: int = 365 * 24 * 3600 * 1000
    max_burn_after_read_s: int = 7 * 24 * 3600


@dataclass(frozen=True)
class EnvelopeHeader:
    conversation_id: str
    sender_user_id: str
    sender_device_id: str
    message_id: bytes
    timestamp: int
    expires_at: int
    burn_after_read_s: int
    size_class: int
    chain_id: bytes
    iteration: int
    salt: bytes
    key_commitment: bytes

    def __post_init__(self) -> None:
        check_identifier(self.conversation_id, "conversation id")
        check_identifier(self.sender_user_id, "sender user id")
        check_identifier(self.sender_device_id, "sender device id")
        check_random_id(self.message_id, "message id")
        check_random_id(self.chain_id, "chain id")
        if not 0 <= self.timestamp < 2**64 or not 0 <= self.expires_at < 2**64:
            raise MalformedMessage("timestamps are u64 milliseconds")
        if self.expires_at and self.expires_at <= self.timestamp:
            raise MalformedMessage("expires_at must be after timestamp")
        if not 0 <= self.burn_after_read_s < 2**32:
            raise MalformedMessage("burn_after_read is u32 seconds")
        if not 0 <= self.size_class < len(SIZE_BUCKETS):
            raise MalformedMessage(f"size class {self.size_class} unknown")
        if not 0 <= self.iteration < MAX_MESSAGES_PER_CHAIN:
            raise MalformedMessage("iteration out of range")
        if len(self.salt) != MESSAGE_SALT_LENGTH or len(self.key_commitment) != COMMITMENT_LENGTH:
            raise MalformedMessage("message salt is 16 bytes and key commitment 32")

    def core(self) -> bytes:
        w = Writer().prefix(MessageType.ENVELOPE).text8(self.conversation_id)
        w.text8(self.sender_user_id).text8(self.sender_device_id).raw(self.message_id)
        w.u64(self.timestamp).u64(self.expires_at).u32(self.burn_after_read_s)
        w.u8(self.size_class).raw(self.chain_id).u32(self.iteration)
        return bytes(w.raw(self.salt).raw(self.key_commitment))

    def delete_at(self, first_read_at: int | None) -> int | None:
        """When a client must delete the message: burn counts from first read, never past expiry."""
        deadlines = [self.expires_at] if self.expires_at else []
        if self.burn_after_read_s and first_read_at is not None:
            deadlines.append(first_read_at + self.burn_after_read_s * 1000)
        return min(deadlines) if deadlines else None


@dataclass(frozen=True)
class Envelope:
    header: EnvelopeHeader
    ciphertext_digest: bytes
    ciphertext: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.ciphertext) != SIZE_BUCKETS[self.header.size_class] + 16:
            raise MalformedMessage("ciphertext length does not match the size class")
        if len(self.ciphertext_digest) != DIGEST_LENGTH:
            raise MalformedMessage("ciphertext digest is 48 bytes")
        if len(self.signature) != ECDSA_SIGNATURE_LENGTH:
            raise MalformedMessage("signature length out of range")

    def signed_bytes(self) -> bytes:
        return self.header.core() + self.ciphertext_digest

    def serialize(self) -> bytes:
        w = Writer().raw(self.signed_bytes()).var32(self.ciphertext).var8(self.signature)
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        if len(data) > MAX_ENVELOPE_SIZE:
            raise MalformedMessage(f"envelope larger than {MAX_ENVELOPE_SIZE} bytes")
        r = Reader(data, "envelope")
        parse_prefix(r, MessageType.ENVELOPE)
        header = EnvelopeHeader(
            conversation_id=r.text8(),
            sender_user_id=r.text8(),
            sender_device_id=r.text8(),
            message_id=r.take(ID_LENGTH),
            timestamp=r.u64(),
            expires_at=r.u64(),
            burn_after_read_s=r.u32(),
            size_class=r.u8(),
            chain_id=r.take(ID_LENGTH),
            iteration=r.u32(),
            salt=r.take(MESSAGE_SALT_LENGTH),
            key_commitment=r.take(COMMITMENT_LENGTH),
        )
        envelope = cls(header, r.take(DIGEST_LENGTH), r.var32(), r.var8())
        r.done()
        return envelope


@dataclass(frozen=True)
class OpenedMessage:
    header: EnvelopeHeader
    content: Content


def seal_envelope(
    device: DeviceSecrets,
    chain: SenderChain,
    members: Members,
    content: Content,
    *,
    conversation_id: str,
    now: int,
    expires_in_ms: int = 0,
    burn_after_read_s: int = 0,
    policy: ExpiryPolicy = ExpiryPolicy(),
    rng: Random = system_random,
) -> bytes:
    """Encrypt ``content`` with the chain's next key and sign; cost is independent of room size.

    ``members`` is the current ``(user_id, device_id)`` set or its
    ``membership_digest`` (precompute it: then the cost is flat): if it differs from
    the chain's, ``RotationRequired`` is raised and the caller distributes a new chain.
    """
    if not 0 <= expires_in_ms <= policy.max_expiry_ms:
        raise LimitExceeded("expiry (ms)", expires_in_ms, policy.max_expiry_ms)
    if not 0 <= burn_after_read_s <= policy.max_burn_after_read_s:
        raise LimitExceeded("burn-after-read (s)", burn_after_read_s, policy.max_burn_after_read_s)
    size_class, padded = pad(content.serialize())
    message_id, salt = rng(ID_LENGTH), rng(MESSAGE_SALT_LENGTH)
    step = chain.next_key(members, now=now)
    keys = step.keys(salt)
    header = EnvelopeHeader(
        conversation_id=conversation_id,
        sender_user_id=device.user_id,
        sender_device_id=device.device_id,
        message_id=message_id,
        timestamp=now,
        expires_at=now + expires_in_ms if expires_in_ms else 0,
        burn_after_read_s=burn_after_read_s,
        size_class=size_class,
        chain_id=step.chain_id,
        iteration=step.iteration,
        salt=salt,
        key_commitment=keys.commitment,
    )
    ciphertext = AESGCM(keys.key).encrypt(keys.nonce, padded, header.core())
    digest = hashlib.sha384(ciphertext).digest()
    signature = device.signing_key.sign(LABEL, header.core() + digest)
    return Envelope(header, digest, ciphertext, signature).serialize()


def _check_sender(
    envelope: Envelope,
    certificate: DeviceCertificate,
    identity: IdentityPublicKey,
    now: int,
    revocations: Revocations | None,
) -> None:
    header = envelope.header
    if (certificate.user_id, certificate.device_id) != (
        header.sender_user_id,
        header.sender_device_id,
    ):
        raise SenderMismatch("envelope sender is not the certified device")
    certificate.verify(identity, now=now, revocations=revocations)


def _check_time(header: EnvelopeHeader, now: int, policy: ExpiryPolicy) -> None:
    if header.timestamp > now + MAX_CLOCK_SKEW_MS:
        raise MalformedMessage("envelope timestamp is in the future")
    if header.expires_at:
        if header.expires_at - header.timestamp > policy.max_expiry_ms:
            raise MalformedMessage("expiry exceeds the network policy")
        if now >= header.expires_at:
            raise MessageExpired(f"message expired at {header.expires_at}")
    if header.burn_after_read_s > policy.max_burn_after_read_s:
        raise MalformedMessage("burn-after-read exceeds the network policy")


def _check_signed(envelope: Envelope, certificate: DeviceCertificate) -> None:
    """The signature over the header, then the ciphertext against the header's digest."""
    if not certificate.device_key.verify(LABEL, envelope.signed_bytes(), envelope.signature):
        raise BadSignature("envelope signature does not verify")
    if not hmac.compare_digest(
        hashlib.sha384(envelope.ciphertext).digest(), envelope.ciphertext_digest
    ):
        raise CiphertextTampered("ciphertext does not match the signed digest")


def verify_envelope(
    data: bytes,
    *,
    sender_certificate: DeviceCertificate,
    sender_identity: IdentityPublicKey,
    now: int,
    revocations: Revocations | None = None,
    policy: ExpiryPolicy = ExpiryPolicy(),
) -> Envelope:
    """What anyone can check without keys: sender, certificate, signature, digest, time.

    This is also the verification layer of ``open_envelope``: a changed header
    field or signature is ``bad_signature``, a changed ciphertext under a valid
    signature ``ciphertext_tampered``.
    """
    envelope = Envelope.parse(data)
    _check_sender(envelope, sender_certificate, sender_identity, now, revocations)
    _check_signed(envelope, sender_certificate)
    _check_time(envelope.header, now, policy)
    return envelope


def _committed_keys(chain: ReceiverChain, header: EnvelopeHeader) -> SealingKeys:
    """The message's keys, if they match the signed commitment (checked before any AEAD)."""
    keys = chain.peek(header.iteration).keys(header.salt)
    if not hmac.compare_digest(keys.commitment, header.key_commitment):
        raise KeyCommitmentMismatch("the chain key does not derive this message's committed key")
    return keys


def open_envelope(
    data: bytes,
    *,
    conversation_id: str,
    sender_certificate: DeviceCertificate,
    sender_identity: IdentityPublicKey,
    chains: Mapping[bytes, ReceiverChain],
    replay: ReplayGuard,
    now: int,
    revocations: Revocations | None = None,
    policy: ExpiryPolicy = ExpiryPolicy(),
) -> OpenedMessage:
    """Verify, then decrypt; state (chain, replay guard) changes only on success.

    Order: 1 parse (malformed / unsupported_version / suite_downgrade);
    2 conversation; 3 sender certificate (sender_mismatch, bad_certificate,
    certificate_expired, device_revoked); 4 signature and digest
    (bad_signature, ciphertext_tampered); 5 time
    (message_expired); 6 replay; 7 chain (unknown_chain, sender_mismatch,
    too_many_skipped, message_key_unavailable, key_commitment_mismatch);
    8 AEAD (decryption_failed); 9 padding and content (malformed).
    """
    envelope = Envelope.parse(data)
    header = envelope.header
    if header.conversation_id != conversation_id:
        raise WrongConversation(f"envelope is for conversation {header.conversation_id!r}")
    _check_sender(envelope, sender_certificate, sender_identity, now, revocations)
    # Nothing keyed touches an envelope whose signature failed: no AEAD, no
    # commitment check, so its bytes can never serve as a validity oracle.
    _check_signed(envelope, sender_certificate)
    _check_time(header, now, policy)
    replay.check(header.message_id)
    chain = chains.get(header.chain_id)
    if chain is None:
        raise UnknownChain(f"no chain {header.chain_id.hex()} for this sender")
    if (chain.sender_user_id, chain.sender_device_id) != (
        header.sender_user_id,
        header.sender_device_id,
    ):
        raise SenderMismatch("chain belongs to another sender device")
    keys = _committed_keys(chain, header)
    try:
        padded = AESGCM(keys.key).decrypt(keys.nonce, envelope.ciphertext, header.core())
    except InvalidTag:
        raise DecryptionFailed() from None
    content = parse_content(unpad(padded))
    chain.commit(header.iteration)
    replay.record(header.message_id)
    return OpenedMessage(header, content)
