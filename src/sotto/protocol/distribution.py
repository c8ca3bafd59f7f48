"""Key distribution: a sender device hands its chain key to one member device.

Wire (docs/protocol.md §5)::

    body = prefix(0x10) || conversation_id || sender_user_id || sender_device_id
           || recipient_user_id || recipient_device_id || prekey_kind(u8) || prekey_id(u32)
           || message_id(16) || timestamp(u64 ms) || var16(hpke_ciphertext)
    message = body || var8(ECDSA-P384(sender device key, "sotto-v1 key-distribution\\0" || body))

    hpke_ciphertext = HPKE.Seal(recipient prekey, info = PairwiseContext(...).info(),
                                ChainKeyPayload)    # 60-byte payload, 1741 bytes sealed

One of these per member device when a chain is created; none per message.
The recipient rebuilds the ``info`` from its own trusted view of both
identities, so the binding is checked, not just carried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .certificates import DeviceCertificate, PrekeyCertificate, PrekeyKind, Revocations
from .device import DeviceSecrets
from .errors import (
    BadSignature,
    MalformedMessage,
    SenderMismatch,
    WrongConversation,
    WrongRecipient,
)
from .keys import ECDSA_SIGNATURE_LENGTH, IdentityPublicKey, Random, system_random
from .pairwise import HPKE_OVERHEAD, PairwiseContext, open_sealed, seal
from .ratchet import CHAIN_PAYLOAD_LENGTH, ChainKeyPayload, ReceiverChain, SenderChain
from .replay import ReplayGuard
from .wire import (
    ID_LENGTH,
    MessageType,
    Reader,
    Writer,
    check_identifiers,
    check_random_id,
    parse_prefix,
)

__all__ = [
    "KEY_DISTRIBUTION_PURPOSE",
    "KeyDistribution",
    "open_key_distribution",
    "seal_key_distribution",
]

LABEL = "key-distribution"
KEY_DISTRIBUTION_PURPOSE = "key-distribution"
SEALED_LENGTH = HPKE_OVERHEAD + CHAIN_PAYLOAD_LENGTH


@dataclass(frozen=True)
class KeyDistribution:
    conversation_id: str
    sender_user_id: str
    sender_device_id: str
    recipient_user_id: str
    recipient_device_id: str
    prekey_kind: int
    prekey_id: int
    message_id: bytes
    timestamp: int
    sealed: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_identifiers(
            (self.conversation_id, "conversation id"),
            (self.sender_user_id, "sender user id"),
            (self.sender_device_id, "sender device id"),
            (self.recipient_user_id, "recipient user id"),
            (self.recipient_device_id, "recipient device id"),
        )
        if self.prekey_kind not in (PrekeyKind.SIGNED, PrekeyKind.ONE_TIME):
            raise MalformedMessage("unknown prekey kind")
        if not 0 <= self.prekey_id < 2**32 or not 0 <= self.timestamp < 2**64:
            raise MalformedMessage("prekey id is u32 and timestamp u64")
        check_random_id(self.message_id, "message id")
        if len(self.sealed) != SEALED_LENGTH:
            raise MalformedMessage(f"sealed chain key must be {SEALED_LENGTH} bytes")
        if len(self.signature) != ECDSA_SIGNATURE_LENGTH:
            raise MalformedMessage("signature length out of range")

    def body(self) -> bytes:
        w = Writer().prefix(MessageType.KEY_DISTRIBUTION).text8(self.conversation_id)
        w.text8(self.sender_user_id).text8(self.sender_device_id)
        w.text8(self.recipient_user_id).text8(self.recipient_device_id)
        w.u8(self.prekey_kind).u32(self.prekey_id).raw(self.message_id).u64(self.timestamp)
        return bytes(w.var16(self.sealed))

    def serialize(self) -> bytes:
        return bytes(Writer().raw(self.body()).var8(self.signature))

    @classmethod
    def parse(cls, data: bytes) -> KeyDistribution:
        r = Reader(data, "key distribution")
        parse_prefix(r, MessageType.KEY_DISTRIBUTION)
        fields = (r.text8(), r.text8(), r.text8(), r.text8(), r.text8())
        kind, prekey_id, message_id, timestamp = r.u8(), r.u32(), r.take(ID_LENGTH), r.u64()
        sealed, signature = r.var16(), r.var8()
        r.done()
        return cls(*fields, kind, prekey_id, message_id, timestamp, sealed, signature)


def _context(kd: KeyDistribution, sender_fp: bytes, recipient_fp: bytes) -> PairwiseContext:
    return PairwiseContext(
        purpose=KEY_DISTRIBUTION_PURPOSE,
        conversation_id=kd.conversation_id,
        sender_user_id=kd.sender_user_id,
        sender_identity=sender_fp,
        sender_device_id=kd.sender_device_id,
        recipient_user_id=kd.recipient_user_id,
        recipient_identity=recipient_fp,
        recipient_device_id=kd.recipient_device_id,
        prekey_kind=kd.prekey_kind,
        prekey_id=kd.prekey_id,
        message_id=kd.message_id,
    )


def seal_key_distribution(
    sender: DeviceSecrets,
    chain: SenderChain,
    *,
    conversation_id: str,
    recipient_certificate: DeviceCertificate,
    recipient_identity: IdentityPublicKey,
    recipient_prekey: PrekeyCertificate,
    now: int,
    revocations: Revocations | None = None,
    rng: Random = system_random,
) -> bytes:
    """Seal ``chain``'s current key for one recipient device after checking its certificates."""
    recipient_certificate.verify(recipient_identity, now=now, revocations=revocations)
    recipient_prekey.verify(recipient_certificate, now=now)
    draft = KeyDistribution(
        conversation_id,
        sender.user_id,
        sender.device_id,
        recipient_certificate.user_id,
        recipient_certificate.device_id,
        recipient_prekey.kind,
        recipient_prekey.prekey_id,
        rng(ID_LENGTH),
        now,
        sealed=bytes(SEALED_LENGTH),
        signature=bytes(ECDSA_SIGNATURE_LENGTH),
    )
    context = _context(
        draft, sender.certificate.identity_fingerprint, recipient_identity.fingerprint
    )
    sealed = replace(
        draft, sealed=seal(context, chain.payload().serialize(), recipient_prekey.public_key)
    )
    signature = sender.signing_key.sign(LABEL, sealed.body())
    return replace(sealed, signature=signature).serialize()


def open_key_distribution(
    data: bytes,
    recipient: DeviceSecrets,
    recipient_identity: IdentityPublicKey,
    *,
    sender_certificate: DeviceCertificate,
    sender_identity: IdentityPublicKey,
    now: int,
    replay: ReplayGuard,
    conversation_id: str | None = None,
    revocations: Revocations | None = None,
) -> ReceiverChain:
    """Verify, open and return the sender's chain; a one-time prekey is deleted on success.

    Order: parse; recipient (wrong_recipient); conversation; sender certificate
    (sender_mismatch, bad_certificate, certificate_expired, device_revoked);
    signature (bad_signature); replay; prekey (prekey_unavailable); HPKE
    (decryption_failed).
    """
    kd = KeyDistribution.parse(data)
    if (kd.recipient_user_id, kd.recipient_device_id) != (recipient.user_id, recipient.device_id):
        raise WrongRecipient(f"addressed to {kd.recipient_user_id}/{kd.recipient_device_id}")
    if conversation_id is not None and kd.conversation_id != conversation_id:
        raise WrongConversation(f"key distribution is for {kd.conversation_id!r}")
    if (sender_certificate.user_id, sender_certificate.device_id) != (
        kd.sender_user_id,
        kd.sender_device_id,
    ):
        raise SenderMismatch("key distribution sender is not the certified device")
    sender_certificate.verify(sender_identity, now=now, revocations=revocations)
    if not sender_certificate.device_key.verify(LABEL, kd.body(), kd.signature):
        raise BadSignature("key distribution signature does not verify")
    replay.check(kd.message_id)
    prekey = recipient.prekey(kd.prekey_kind, kd.prekey_id)
    context = _context(kd, sender_identity.fingerprint, recipient_identity.fingerprint)
    payload = ChainKeyPayload.parse(open_sealed(context, kd.sealed, prekey))
    if kd.prekey_kind == PrekeyKind.ONE_TIME:
        recipient.consume_one_time_prekey(kd.prekey_id)
    replay.record(kd.message_id)
    return ReceiverChain.from_payload(payload, kd.sender_user_id, kd.sender_device_id)
