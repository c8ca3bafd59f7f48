"""Key distribution: a sender device hands its chain key to one member device.

Two modes (docs/protocol.md §5, §16). **Prekey** (1): HPKE to one of the
recipient's prekeys, signed by the sender's device key; it may also establish
a pairwise session. **Session** (2): one AES-256-GCM encryption under the next
step of a session an earlier prekey distribution established; the session key
is known only to the two devices, so the AEAD authenticates the sender and no
signature is needed.

    header = prefix(0x10) || conversation_id || sender_user_id || sender_device_id
             || recipient_user_id || recipient_device_id || message_id(16) || timestamp(u64 ms)
             || u8 mode || session_id(16)
             || mode 1: u8 prekey_kind || u32 prekey_id
             || mode 2: u32 step || salt(16)
    body   = header || var16(sealed)
    mode 1 = body || var8(ECDSA-P384(sender device key, domain("key-distribution") || body))
    mode 2 = body

    mode 1: sealed = HPKE.Seal(prekey, info, chain payload(60) || session key(32))   1773 bytes
    mode 2: sealed = AES-256-GCM(step key, step nonce, chain payload(60), aad = header)  76 bytes

The recipient rebuilds the HPKE ``info`` from its own trusted view of both
identities, so the binding is checked, not just carried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .certificates import DeviceCertificate, PrekeyCertificate, PrekeyKind, Revocations
from .device import DeviceSecrets
from .errors import (
    BadSignature,
    DecryptionFailed,
    MalformedMessage,
    SenderMismatch,
    UnknownSession,
    WrongConversation,
    WrongRecipient,
)
from .keys import ECDSA_SIGNATURE_LENGTH, IdentityPublicKey, Random, system_random
from .pairwise import HPKE_OVERHEAD, PairwiseContext, open_sealed, seal
from .ratchet import (
    CHAIN_KEY_LENGTH,
    CHAIN_PAYLOAD_LENGTH,
    ChainKeyPayload,
    ReceiverChain,
    SenderChain,
)
from .replay import ReplayGuard
from .sessions import NO_SESSION, SALT_LENGTH, PairwiseSessions, SendSession, step_keys
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
    "DistributionMode",
    "KeyDistribution",
    "OpenedDistribution",
    "open_key_distribution",
    "seal_key_distribution",
    "seal_session_distribution",
]

LABEL = "key-distribution"
KEY_DISTRIBUTION_PURPOSE = "key-distribution"
PREKEY_SEALED_LENGTH = HPKE_OVERHEAD + CHAIN_PAYLOAD_LENGTH + CHAIN_KEY_LENGTH
SESSION_SEALED_LENGTH = CHAIN_PAYLOAD_LENGTH + 16


class DistributionMode:
    PREKEY = 1
    SESSION = 2


@dataclass(frozen=True)
class KeyDistribution:
    conversation_id: str
    sender_user_id: str
    sender_device_id: str
    recipient_user_id: str
    recipient_device_id: str
    message_id: bytes
    timestamp: int
    mode: int
    session_id: bytes  # mode 1: the session it establishes, or 16 zero bytes
    sealed: bytes
    prekey_kind: int = 0  # mode 1
    prekey_id: int = 0  # mode 1
    step: int = 0  # mode 2
    salt: bytes = b""  # mode 2
    signature: bytes = b""  # mode 1

    def __post_init__(self) -> None:
        check_identifiers(
            (self.conversation_id, "conversation id"),
            (self.sender_user_id, "sender user id"),
            (self.sender_device_id, "sender device id"),
            (self.recipient_user_id, "recipient user id"),
            (self.recipient_device_id, "recipient device id"),
        )
        check_random_id(self.message_id, "message id")
        check_random_id(self.session_id, "session id")
        if not 0 <= self.timestamp < 2**64:
            raise MalformedMessage("timestamp is u64 milliseconds")
        if self.mode == DistributionMode.PREKEY:
            if self.prekey_kind not in (PrekeyKind.SIGNED, PrekeyKind.ONE_TIME):
                raise MalformedMessage("unknown prekey kind")
            if not 0 <= self.prekey_id < 2**32:
                raise MalformedMessage("prekey id is u32")
            if len(self.sealed) != PREKEY_SEALED_LENGTH:
                raise MalformedMessage(f"sealed chain key must be {PREKEY_SEALED_LENGTH} bytes")
            if len(self.signature) != ECDSA_SIGNATURE_LENGTH or self.step or self.salt:
                raise MalformedMessage("a prekey distribution is signed and has no step")
        elif self.mode == DistributionMode.SESSION:
            if self.session_id == NO_SESSION or not 0 <= self.step < 2**32:
                raise MalformedMessage("a session distribution names its session and a u32 step")
            if len(self.salt) != SALT_LENGTH or len(self.sealed) != SESSION_SEALED_LENGTH:
                raise MalformedMessage("session salt is 16 bytes and the ciphertext 76")
            if self.signature or self.prekey_kind or self.prekey_id:
                raise MalformedMessage("a session distribution has no signature and no prekey")
        else:
            raise MalformedMessage(f"unknown distribution mode {self.mode}")

    @property
    def signed(self) -> bool:
        """Prekey distributions are signed; session ones are authenticated by the session."""
        return self.mode == DistributionMode.PREKEY

    def header(self) -> bytes:
        w = Writer().prefix(MessageType.KEY_DISTRIBUTION).text8(self.conversation_id)
        w.text8(self.sender_user_id).text8(self.sender_device_id)
        w.text8(self.recipient_user_id).text8(self.recipient_device_id)
        w.raw(self.message_id).u64(self.timestamp).u8(self.mode).raw(self.session_id)
        if self.mode == DistributionMode.PREKEY:
            w.u8(self.prekey_kind).u32(self.prekey_id)
        else:
            w.u32(self.step).raw(self.salt)
        return bytes(w)

    def body(self) -> bytes:
        """What a prekey distribution's signature covers."""
        return self.header() + bytes(Writer().var16(self.sealed))

    def serialize(self) -> bytes:
        body = self.body()
        return body + bytes(Writer().var8(self.signature)) if self.signed else body

    @classmethod
    def parse(cls, data: bytes) -> KeyDistribution:
        r = Reader(data, "key distribution")
        parse_prefix(r, MessageType.KEY_DISTRIBUTION)
        ids = (r.text8(), r.text8(), r.text8(), r.text8(), r.text8())
        message_id, timestamp, mode, session_id = (
            r.take(ID_LENGTH),
            r.u64(),
            r.u8(),
            r.take(ID_LENGTH),
        )
        fields: dict[str, object] = {}
        if mode == DistributionMode.PREKEY:
            fields.update(prekey_kind=r.u8(), prekey_id=r.u32())
        elif mode == DistributionMode.SESSION:
            fields.update(step=r.u32(), salt=r.take(SALT_LENGTH))
        else:
            raise MalformedMessage(f"unknown distribution mode {mode}")
        sealed = r.var16()
        if mode == DistributionMode.PREKEY:
            fields["signature"] = r.var8()
        r.done()
        return cls(*ids, message_id, timestamp, mode, session_id, sealed, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True, repr=False)
class OpenedDistribution:
    """The sender's chain, and for a prekey distribution the session it established."""

    chain: ReceiverChain
    session_id: bytes
    session_key: bytes | None  # prekey distributions offering a session; None otherwise

    def __repr__(self) -> str:
        return f"OpenedDistribution(chain={self.chain!r}, <secret>)"


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
        session_id=kd.session_id,
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
    session: SendSession | None = None,
) -> bytes:
    """A prekey distribution of ``chain``'s current key, after checking the recipient's
    certificates; with ``session`` (a new ``SendSession``) it also establishes that session."""
    recipient_certificate.verify(recipient_identity, now=now, revocations=revocations)
    recipient_prekey.verify(recipient_certificate, now=now)
    session_id, session_key = (
        (session.session_id, session.chain_key) if session is not None else (NO_SESSION, bytes(32))
    )
    draft = KeyDistribution(
        conversation_id,
        sender.user_id,
        sender.device_id,
        recipient_certificate.user_id,
        recipient_certificate.device_id,
        rng(ID_LENGTH),
        now,
        DistributionMode.PREKEY,
        session_id,
        sealed=bytes(PREKEY_SEALED_LENGTH),
        prekey_kind=recipient_prekey.kind,
        prekey_id=recipient_prekey.prekey_id,
        signature=bytes(ECDSA_SIGNATURE_LENGTH),
    )
    context = _context(
        draft, sender.certificate.identity_fingerprint, recipient_identity.fingerprint
    )
    plaintext = chain.payload().serialize() + session_key
    sealed = replace(draft, sealed=seal(context, plaintext, recipient_prekey.public_key))
    signature = sender.signing_key.sign(LABEL, sealed.body())
    return replace(sealed, signature=signature).serialize()


def seal_session_distribution(
    sender: DeviceSecrets,
    chain: SenderChain,
    session: SendSession,
    *,
    conversation_id: str,
    now: int,
    rng: Random = system_random,
) -> tuple[bytes, SendSession]:
    """A session distribution of ``chain``'s current key, and the session one step on.

    ``session`` is not changed: the caller stores the returned one once the
    distribution is committed (so a failed send consumes no step).
    """
    advanced, step, seed = session.advanced()
    kd = KeyDistribution(
        conversation_id,
        sender.user_id,
        sender.device_id,
        session.peer.user_id,
        session.peer.device_id,
        rng(ID_LENGTH),
        now,
        DistributionMode.SESSION,
        session.session_id,
        sealed=bytes(SESSION_SEALED_LENGTH),
        step=step,
        salt=rng(SALT_LENGTH),
    )
    header = kd.header()
    key, nonce = step_keys(seed, kd.salt)
    sealed = AESGCM(key).encrypt(nonce, chain.payload().serialize(), header)
    return header + bytes(Writer().var16(sealed)), advanced  # = replace(kd, sealed=...).serialize()


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
    sessions: PairwiseSessions | None = None,
) -> OpenedDistribution:
    """Verify, open and return the sender's chain; state changes only on success.

    Order: parse; recipient (wrong_recipient); conversation; sender certificate
    (sender_mismatch, bad_certificate, certificate_expired, device_revoked);
    replay; then a prekey distribution: signature (bad_signature), prekey
    (prekey_unavailable), HPKE (decryption_failed), after which a one-time
    prekey is deleted; a session distribution: session (unknown_session),
    step (too_many_skipped, message_key_unavailable), AEAD (decryption_failed),
    after which the step's seed is deleted. The caller installs an offered
    session (``OpenedDistribution.session_key``).
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
    if kd.mode == DistributionMode.PREKEY and not sender_certificate.device_key.verify(
        LABEL, kd.body(), kd.signature
    ):
        raise BadSignature("key distribution signature does not verify")
    replay.check(kd.message_id)
    sender = (kd.sender_user_id, kd.sender_device_id)
    if kd.mode == DistributionMode.PREKEY:
        prekey = recipient.prekey(kd.prekey_kind, kd.prekey_id)
        context = _context(kd, sender_identity.fingerprint, recipient_identity.fingerprint)
        plaintext = open_sealed(context, kd.sealed, prekey)
        payload = ChainKeyPayload.parse(plaintext[:CHAIN_PAYLOAD_LENGTH])
        offered = kd.session_id != NO_SESSION
        if kd.prekey_kind == PrekeyKind.ONE_TIME:
            recipient.consume_one_time_prekey(kd.prekey_id)
        replay.record(kd.message_id)
        chain = ReceiverChain.from_payload(payload, *sender)
        return OpenedDistribution(
            chain, kd.session_id, plaintext[CHAIN_PAYLOAD_LENGTH:] if offered else None
        )
    if sessions is None:
        raise UnknownSession(sender, kd.session_id)
    session = sessions.receive_session(
        sender,
        kd.session_id,
        sender_certificate.device_key.serialize(),
        sender_identity.fingerprint,
    )
    key, nonce = step_keys(session.peek(kd.step), kd.salt)
    try:
        plaintext = AESGCM(key).decrypt(nonce, kd.sealed, kd.header())
    except InvalidTag:
        raise DecryptionFailed() from None
    payload = ChainKeyPayload.parse(plaintext)
    session.commit(kd.step)
    replay.record(kd.message_id)
    return OpenedDistribution(ReceiverChain.from_payload(payload, *sender), kd.session_id, None)
