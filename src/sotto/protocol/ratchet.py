"""Sender chains ("sender keys"): one symmetric ratchet per sending device per conversation.

Step (docs/protocol.md §6)::

    seed_i       = HMAC-SHA384(CK_i, 0x01)[0:32]     one per message, used once
    CK_{i+1}     = HMAC-SHA384(CK_i, 0x02)[0:32]

    prk          = HMAC-SHA384(salt, seed_i)          HKDF-Extract, salt = 16 random bytes
    key || nonce = HMAC-SHA384(prk, domain("message-key") || 0x01)[0:44]
    commitment   = HMAC-SHA384(prk, domain("key-commitment") || 0x01)[0:32]

The salt is drawn fresh for every message and travels in the signed header,
so a sender whose chain state was rolled back (a restored backup) never
reuses a key and nonce; the commitment, also signed, pins the message to one
key, so a sender cannot make one envelope open differently for members given
different chain keys under one chain id (AES-GCM is not key-committing).

A chain key is replaced by its successor as soon as it is used, and seeds are
dropped after one use, so a device compromised later cannot decrypt earlier
messages (forward secrecy within the chain; Python cannot zeroize memory, so
"deleted" means every reference is dropped). A receiver may skip at most
``MAX_SKIP`` messages per step and keeps at most ``MAX_SKIPPED_KEYS``
skipped seeds (oldest evicted). A sender must start a new chain when the
membership changes, after ``MAX_MESSAGES_PER_CHAIN`` messages or after
``MAX_CHAIN_AGE_MS``: ``next_key`` refuses otherwise.

Both chains persist (``serialize``/``parse``, docs/protocol.md §6.1). A
serialized chain holds only the current chain key (which derives seeds for
messages not yet sent or received) and the skipped seeds (messages not yet
received), never a seed for a message already used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import MalformedMessage, MessageKeyUnavailable, RotationRequired, TooManySkipped
from .keys import Random, system_random
from .wire import (
    ID_LENGTH,
    MessageType,
    Reader,
    Writer,
    check_identifier,
    check_random_id,
    domain,
    parse_prefix,
)

__all__ = [
    "CHAIN_KEY_LENGTH",
    "CHAIN_PAYLOAD_LENGTH",
    "MAX_CHAIN_AGE_MS",
    "MAX_MESSAGES_PER_CHAIN",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "MESSAGE_SALT_LENGTH",
    "ChainKeyPayload",
    "Members",
    "MessageKey",
    "ReceiverChain",
    "SealingKeys",
    "SenderChain",
    "advance_to",
    "chain_step",
    "membership_digest",
    "seed_at",
]

CHAIN_KEY_LENGTH = 32
MAX_MESSAGES_PER_CHAIN = 1000
MAX_CHAIN_AGE_MS = 24 * 3600 * 1000
MAX_SKIP = 256
MAX_SKIPPED_KEYS = 512
CHAIN_PAYLOAD_LENGTH = ID_LENGTH + 4 + CHAIN_KEY_LENGTH + 8
SEED_LENGTH = 32
MESSAGE_SALT_LENGTH = 16
COMMITMENT_LENGTH = 32
DIGEST_LENGTH = 32
_MESSAGE_KEY_INFO = domain("message-key") + b"\x01"
_COMMITMENT_INFO = domain("key-commitment") + b"\x01"


@dataclass(frozen=True, repr=False)
class SealingKeys:
    """What one message is sealed with: AES-256-GCM key and nonce, and the key commitment."""

    key: bytes
    nonce: bytes
    commitment: bytes

    def __repr__(self) -> str:
        return "SealingKeys(<secret>)"


@dataclass(frozen=True, repr=False)
class MessageKey:
    """One chain step: the seed of message ``iteration``, from which its keys are derived."""

    chain_id: bytes
    iteration: int
    seed: bytes

    def keys(self, salt: bytes) -> SealingKeys:
        """HKDF-SHA384 (RFC 5869; one Expand block each) of the seed under the message salt."""
        if len(salt) != MESSAGE_SALT_LENGTH:
            raise MalformedMessage(f"message salt must be {MESSAGE_SALT_LENGTH} bytes")
        prk = hmac.digest(salt, self.seed, hashlib.sha384)
        material = hmac.digest(prk, _MESSAGE_KEY_INFO, hashlib.sha384)
        commitment = hmac.digest(prk, _COMMITMENT_INFO, hashlib.sha384)[:COMMITMENT_LENGTH]
        return SealingKeys(material[:32], material[32:44], commitment)

    def __repr__(self) -> str:
        return f"MessageKey(iteration={self.iteration}, <secret>)"


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """``(seed_i, CK_{i+1})`` from ``CK_i`` (§6); also the pairwise sessions' step (§16)."""
    seed = hmac.digest(chain_key, b"\x01", hashlib.sha384)[:SEED_LENGTH]
    next_key = hmac.digest(chain_key, b"\x02", hashlib.sha384)[:CHAIN_KEY_LENGTH]
    return seed, next_key


def _forward(
    chain_key: bytes, next_index: int, index: int, limit: int, max_skip: int
) -> tuple[bytes, bytes, list[tuple[int, bytes]]]:
    """Seed of ``index``, chain key after it, and the seeds passed on the way."""
    if index >= limit:
        raise MessageKeyUnavailable(f"step {index} is beyond the chain's limit {limit}")
    if index - next_index > max_skip:
        raise TooManySkipped(f"jump from {next_index} to {index} exceeds {max_skip}")
    passed = []
    for i in range(next_index, index):
        seed, chain_key = chain_step(chain_key)
        passed.append((i, seed))
    seed, chain_key = chain_step(chain_key)
    return seed, chain_key, passed


def seed_at(
    chain_key: bytes,
    next_index: int,
    skipped: Mapping[int, bytes],
    index: int,
    *,
    limit: int,
    max_skip: int,
) -> bytes:
    """The seed of step ``index`` of a receiving ratchet whose next step is ``next_index``.

    Shared by receiver chains (§6) and pairwise sessions (§16); changes nothing.
    """
    if index < next_index:
        if index not in skipped:
            raise MessageKeyUnavailable(f"step {index} already used or evicted")
        return skipped[index]
    return _forward(chain_key, next_index, index, limit, max_skip)[0]


def advance_to(
    chain_key: bytes,
    next_index: int,
    skipped: OrderedDict[int, bytes],
    index: int,
    *,
    limit: int,
    max_skip: int,
    max_skipped: int,
) -> bytes:
    """Mark step ``index`` used: drop its seed, keep the skipped ones (``skipped`` is
    updated, oldest evicted beyond ``max_skipped``); returns the chain key to keep."""
    if index < next_index:
        if skipped.pop(index, None) is None:
            raise MessageKeyUnavailable(f"step {index} already used or evicted")
        return chain_key
    _, chain_key, passed = _forward(chain_key, next_index, index, limit, max_skip)
    skipped.update(passed)
    while len(skipped) > max_skipped:
        skipped.popitem(last=False)
    return chain_key


Members = Iterable[tuple[str, str]] | bytes


def membership_digest(members: Members) -> bytes:
    """Order-independent digest of the ``(user_id, device_id)`` set a chain was made for.

    Callers may pass this digest instead of the set itself (computed once per
    membership change) so the per-message cost does not grow with the room.
    """
    if isinstance(members, bytes):
        if len(members) != 32:
            raise MalformedMessage("a membership digest is 32 bytes")
        return members
    w = Writer().raw(domain("membership"))
    for user_id, device_id in sorted(set(members)):
        w.text8(user_id).text8(device_id)
    return hashlib.sha384(bytes(w)).digest()[:32]


@dataclass(frozen=True, repr=False)
class ChainKeyPayload:
    """What a key distribution carries inside HPKE: a chain at a given iteration."""

    chain_id: bytes
    iteration: int
    chain_key: bytes
    created_at: int

    def __post_init__(self) -> None:
        check_random_id(self.chain_id, "chain id")
        if len(self.chain_key) != CHAIN_KEY_LENGTH:
            raise MalformedMessage("chain key must be 32 bytes")
        if not 0 <= self.iteration < MAX_MESSAGES_PER_CHAIN:
            raise MalformedMessage("chain iteration out of range")
        if not 0 <= self.created_at < 2**64:
            raise MalformedMessage("created_at is u64 milliseconds")

    def serialize(self) -> bytes:
        w = Writer().raw(self.chain_id).u32(self.iteration).raw(self.chain_key)
        return bytes(w.u64(self.created_at))

    @classmethod
    def parse(cls, data: bytes) -> ChainKeyPayload:
        r = Reader(data, "chain key payload")
        payload = cls(r.take(ID_LENGTH), r.u32(), r.take(CHAIN_KEY_LENGTH), r.u64())
        r.done()
        return payload

    def __repr__(self) -> str:
        return f"ChainKeyPayload(iteration={self.iteration}, <secret>)"


@dataclass(repr=False)
class SenderChain:
    """The sending side; mutable, owned by one device for one conversation."""

    chain_id: bytes
    chain_key: bytes
    iteration: int
    created_at: int
    members: bytes  # membership_digest at creation
    max_messages: int = MAX_MESSAGES_PER_CHAIN
    max_age_ms: int = MAX_CHAIN_AGE_MS

    @classmethod
    def create(
        cls,
        members: Members,
        *,
        now: int,
        rng: Random = system_random,
        max_messages: int = MAX_MESSAGES_PER_CHAIN,
        max_age_ms: int = MAX_CHAIN_AGE_MS,
    ) -> SenderChain:
        if not 0 < max_messages <= MAX_MESSAGES_PER_CHAIN or not 0 < max_age_ms <= MAX_CHAIN_AGE_MS:
            raise MalformedMessage("rotation limits may only be tightened")
        return cls(
            chain_id=rng(ID_LENGTH),
            chain_key=rng(CHAIN_KEY_LENGTH),
            iteration=0,
            created_at=now,
            members=membership_digest(members),
            max_messages=max_messages,
            max_age_ms=max_age_ms,
        )

    def payload(self) -> ChainKeyPayload:
        """The current state, for distributing to a member device."""
        return ChainKeyPayload(self.chain_id, self.iteration, self.chain_key, self.created_at)

    def rotation_reason(self, members: Members, *, now: int) -> str | None:
        if membership_digest(members) != self.members:
            return "membership or devices changed"
        if self.iteration >= self.max_messages:
            return f"{self.max_messages} messages sent on this chain"
        if now - self.created_at >= self.max_age_ms:
            return "chain is older than its maximum age"
        return None

    def next_key(self, members: Members, *, now: int) -> MessageKey:
        """The key for the next message; the chain key it came from is gone afterwards."""
        reason = self.rotation_reason(members, now=now)
        if reason is not None:
            raise RotationRequired(reason)
        seed, self.chain_key = chain_step(self.chain_key)
        message_key = MessageKey(self.chain_id, self.iteration, seed)
        self.iteration += 1
        return message_key

    def serialize(self) -> bytes:
        """``prefix(0x32) || chain_id || chain_key || u32 iteration || u64 created_at
        || membership_digest(32) || u32 max_messages || u64 max_age_ms``."""
        w = Writer().prefix(MessageType.SENDER_CHAIN_STATE).raw(self.chain_id)
        w.raw(self.chain_key).u32(self.iteration).u64(self.created_at).raw(self.members)
        return bytes(w.u32(self.max_messages).u64(self.max_age_ms))

    @classmethod
    def parse(cls, data: bytes) -> SenderChain:
        r = Reader(data, "sender chain state")
        parse_prefix(r, MessageType.SENDER_CHAIN_STATE)
        chain_id, chain_key = r.take(ID_LENGTH), r.take(CHAIN_KEY_LENGTH)
        iteration, created_at, members = r.u32(), r.u64(), r.take(DIGEST_LENGTH)
        max_messages, max_age_ms = r.u32(), r.u64()
        r.done()
        if not 0 < max_messages <= MAX_MESSAGES_PER_CHAIN or not 0 < max_age_ms <= MAX_CHAIN_AGE_MS:
            raise MalformedMessage("sender chain rotation limits out of range")
        if iteration > max_messages:
            raise MalformedMessage("sender chain iteration beyond its limit")
        return cls(chain_id, chain_key, iteration, created_at, members, max_messages, max_age_ms)

    def __repr__(self) -> str:
        return f"SenderChain(iteration={self.iteration}, <secret>)"


@dataclass(repr=False)
class ReceiverChain:
    """The receiving side of one sender device's chain, with a bounded skipped-key store."""

    sender_user_id: str
    sender_device_id: str
    chain_id: bytes
    chain_key: bytes
    next_iteration: int
    created_at: int
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)  # iteration -> seed

    @classmethod
    def from_payload(
        cls, payload: ChainKeyPayload, sender_user_id: str, sender_device_id: str
    ) -> ReceiverChain:
        return cls(
            sender_user_id,
            sender_device_id,
            payload.chain_id,
            payload.chain_key,
            payload.iteration,
            payload.created_at,
        )

    def peek(self, iteration: int) -> MessageKey:
        """The seed for ``iteration`` without changing any state (nothing is deleted)."""
        seed = seed_at(
            self.chain_key, self.next_iteration, self.skipped, iteration,
            limit=MAX_MESSAGES_PER_CHAIN, max_skip=MAX_SKIP,
        )  # fmt: skip
        return MessageKey(self.chain_id, iteration, seed)

    def commit(self, iteration: int) -> None:
        """Mark ``iteration`` used: delete its seed; remember the ones skipped over."""
        self.chain_key = advance_to(
            self.chain_key, self.next_iteration, self.skipped, iteration,
            limit=MAX_MESSAGES_PER_CHAIN, max_skip=MAX_SKIP, max_skipped=MAX_SKIPPED_KEYS,
        )  # fmt: skip
        self.next_iteration = max(self.next_iteration, iteration + 1)

    def serialize(self) -> bytes:
        """``prefix(0x33) || text8 sender_user_id || text8 sender_device_id || chain_id
        || chain_key || u32 next_iteration || u64 created_at
        || u16 n || (u32 iteration || seed(32))*n``, skipped seeds ascending."""
        w = Writer().prefix(MessageType.RECEIVER_CHAIN_STATE)
        w.text8(self.sender_user_id).text8(self.sender_device_id).raw(self.chain_id)
        w.raw(self.chain_key).u32(self.next_iteration).u64(self.created_at)
        w.u16(len(self.skipped))
        for iteration in sorted(self.skipped):
            w.u32(iteration).raw(self.skipped[iteration])
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> ReceiverChain:
        r = Reader(data, "receiver chain state")
        parse_prefix(r, MessageType.RECEIVER_CHAIN_STATE)
        user_id = check_identifier(r.text8(), "sender user id")
        device_id = check_identifier(r.text8(), "sender device id")
        chain_id, chain_key = r.take(ID_LENGTH), r.take(CHAIN_KEY_LENGTH)
        next_iteration, created_at, count = r.u32(), r.u64(), r.u16()
        if next_iteration > MAX_MESSAGES_PER_CHAIN:
            raise MalformedMessage("receiver chain iteration beyond any chain's limit")
        if count > MAX_SKIPPED_KEYS:
            raise MalformedMessage(f"more than {MAX_SKIPPED_KEYS} skipped keys")
        skipped: OrderedDict[int, bytes] = OrderedDict()
        previous = -1
        for _ in range(count):
            iteration = r.u32()
            if not previous < iteration < next_iteration:
                raise MalformedMessage("skipped keys must be ascending and before next_iteration")
            skipped[iteration] = r.take(SEED_LENGTH)
            previous = iteration
        r.done()
        return cls(user_id, device_id, chain_id, chain_key, next_iteration, created_at, skipped)

    def __repr__(self) -> str:
        return f"ReceiverChain(next_iteration={self.next_iteration}, <secret>)"
