"""End-to-end authenticated membership: a signed, hash-chained log per conversation.

Who is in a conversation is decided by its members' devices, not by the
server (docs/protocol.md §15). Every change is an operation signed by a
device of a moderator (a leave or an identity rebind: by the member's own
device), and each operation names the hash of the one before it, so the log
from the creation operation on is one chain: the server stores and serves
it, and can withhold its newest operations, but cannot invent, alter,
reorder or fork it without the clients noticing.

Wire (type 0x12)::

    body = prefix(0x12) || text8 conversation_id || u32 seq || prev(48) || u64 timestamp
           || var16 signer_certificate || u8 kind || change
    op   = body || var8(ECDSA-P384(signer device key, domain("membership") || body))
    hash = SHA-384(domain("membership-op") || body)       prev of seq 0: 48 zero bytes

    create   (1)  u8 conversation_kind (1 direct, 2 room, 3 self) || u16 n || entry*n
    add      (2)  u16 n || entry*n            entry = text8 user || fingerprint(32) || u8 role
    remove   (3)  u16 n || text8 user*n       role: 1 member, 2 moderator
    set_role (4)  text8 user || u8 role
    leave    (5)  (nothing)
    rebind   (6)  fingerprint(32)             the signing user's new identity

Each member user is bound to the identity fingerprint the log names: one of
its devices counts only if that identity certified it, and the caller
compares the log's fingerprints with those it trusts (``IdentityTracker``).
A *self* conversation (§15.1) is one user's own devices: its one member is
that user, its id is derived from the user id (``self_conversation_id``,
checked by ``verify_log``), and like a direct conversation its members never
change. The user's devices keep their contacts and room labels in step
through it (``protocol.device_sync``).

``verify_log`` checks a log from its creation; ``MembershipState.extend``
appends operations to a state already verified, without re-verifying the old
ones (a client between syncs; the server on every append). The rules are the
table in ``_authorize``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import ClassVar

from .certificates import DeviceCertificate, Revocations
from .device import DeviceSecrets
from .errors import (
    BadCertificate,
    DeviceRevoked,
    ForgedOperation,
    IdentityUnavailable,
    LogForked,
    LogTruncated,
    MalformedMessage,
    NotModerator,
    NotPermitted,
    OperationOutOfOrder,
    OperationReplayed,
    SelfPromotion,
    WrongConversation,
)
from .keys import ECDSA_SIGNATURE_LENGTH, FINGERPRINT_LENGTH, IdentityPublicKey
from .wire import MessageType, Reader, Writer, check_identifier, domain, parse_prefix

__all__ = [
    "GENESIS",
    "HASH_LENGTH",
    "MAX_MEMBERS",
    "Add",
    "Change",
    "ConversationKind",
    "Create",
    "Leave",
    "MemberEntry",
    "MembershipOperation",
    "MembershipState",
    "Rebind",
    "Remove",
    "Role",
    "SetRole",
    "direct_conversation_id",
    "self_conversation_id",
    "sign_operation",
    "verify_log",
]

LABEL = "membership"
HASH_LENGTH = 48
GENESIS = bytes(HASH_LENGTH)
MAX_MEMBERS = 1024  # users: a room of 1000 people plus a retention identity fits
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


def direct_conversation_id(first_user: str, second_user: str) -> str:
    """The one direct conversation of two users, whoever creates it (§15.1).

    ``"dm-" || hex(SHA-256("sotto-direct-v1" 0x00 || lower || 0x00 || higher))[:32]``
    with the two user ids sorted bytewise: both clients name the same id in
    the creation operation they sign, and the server refuses any other.
    """
    check_identifier(first_user, "user id")
    check_identifier(second_user, "user id")
    if first_user == second_user:
        raise MalformedMessage("a direct conversation needs two users")
    pair = "\x00".join(sorted((first_user, second_user)))
    return "dm-" + hashlib.sha256(b"sotto-direct-v1\x00" + pair.encode()).hexdigest()[:32]


def self_conversation_id(user_id: str) -> str:
    """The one conversation of a user's own devices, whichever creates it (§15.1).

    ``"self-" || hex(SHA-256("sotto-self-v1" 0x00 || user_id))[:32]``: every
    device of the user names the same id, the server refuses any other, and a
    client accepts a self conversation's log only under this id.
    """
    check_identifier(user_id, "user id")
    return "self-" + hashlib.sha256(b"sotto-self-v1\x00" + user_id.encode()).hexdigest()[:32]


class ConversationKind:
    DIRECT = 1
    ROOM = 2
    SELF = 3  # one user's own devices (contacts and room labels, protocol.device_sync)


_KINDS = (ConversationKind.DIRECT, ConversationKind.ROOM, ConversationKind.SELF)
# Conversations whose members never change (an identity rebind aside).
_FIXED = (ConversationKind.DIRECT, ConversationKind.SELF)


class Role:
    MEMBER = 1
    MODERATOR = 2


@dataclass(frozen=True)
class MemberEntry:
    """A member user: the identity fingerprint the log binds it to, and its role."""

    user_id: str
    fingerprint: bytes
    role: int = Role.MEMBER

    def __post_init__(self) -> None:
        check_identifier(self.user_id, "member user id")
        if len(self.fingerprint) != FINGERPRINT_LENGTH:
            raise MalformedMessage("identity fingerprints are 32 bytes")
        if self.role not in (Role.MEMBER, Role.MODERATOR):
            raise MalformedMessage(f"unknown role {self.role}")

    @classmethod
    def of(cls, user_id: str, identity: IdentityPublicKey, role: int = Role.MEMBER) -> MemberEntry:
        return cls(user_id, identity.fingerprint, role)

    def write(self, w: Writer) -> None:
        w.text8(self.user_id).raw(self.fingerprint).u8(self.role)

    @classmethod
    def read(cls, r: Reader) -> MemberEntry:
        return cls(r.text8(), r.take(FINGERPRINT_LENGTH), r.u8())


def _check_fixed(kind: int, members: Sequence[MemberEntry]) -> None:
    """A direct conversation is exactly two members, a self one exactly one; no moderator."""
    moderated = any(m.role != Role.MEMBER for m in members)
    if kind == ConversationKind.DIRECT and (len(members) != 2 or moderated):
        raise MalformedMessage("a direct conversation is exactly two members, no moderator")
    if kind == ConversationKind.SELF and (len(members) != 1 or moderated):
        raise MalformedMessage("a self conversation is exactly one member, no moderator")


def _check_users(users: Sequence[str], what: str) -> None:
    if not 0 < len(users) <= MAX_MEMBERS:
        raise MalformedMessage(f"{what}: 1-{MAX_MEMBERS} users")
    if list(users) != sorted(set(users)):
        raise MalformedMessage(f"{what} must be sorted by user id and unique")


# --- changes: one small frozen type per operation kind ----------------------------------


class Change(ABC):
    KIND: ClassVar[int]
    NAME: ClassVar[str]

    @abstractmethod
    def write(self, w: Writer) -> None: ...


@dataclass(frozen=True)
class Create(Change):
    KIND: ClassVar[int] = 1
    NAME: ClassVar[str] = "create"
    conversation_kind: int
    members: tuple[MemberEntry, ...]

    def __post_init__(self) -> None:
        if self.conversation_kind not in _KINDS:
            raise MalformedMessage(f"unknown conversation kind {self.conversation_kind}")
        _check_users([m.user_id for m in self.members], "the creation's members")
        _check_fixed(self.conversation_kind, self.members)

    def write(self, w: Writer) -> None:
        w.u8(self.conversation_kind).u16(len(self.members))
        for member in self.members:
            member.write(w)

    @classmethod
    def read(cls, r: Reader) -> Create:
        kind = r.u8()
        return cls(kind, tuple(MemberEntry.read(r) for _ in range(r.u16())))


@dataclass(frozen=True)
class Add(Change):
    KIND: ClassVar[int] = 2
    NAME: ClassVar[str] = "add"
    members: tuple[MemberEntry, ...]

    def __post_init__(self) -> None:
        _check_users([m.user_id for m in self.members], "added members")

    def write(self, w: Writer) -> None:
        w.u16(len(self.members))
        for member in self.members:
            member.write(w)

    @classmethod
    def read(cls, r: Reader) -> Add:
        return cls(tuple(MemberEntry.read(r) for _ in range(r.u16())))


@dataclass(frozen=True)
class Remove(Change):
    KIND: ClassVar[int] = 3
    NAME: ClassVar[str] = "remove"
    users: tuple[str, ...]

    def __post_init__(self) -> None:
        for user in self.users:
            check_identifier(user, "removed user id")
        _check_users(self.users, "removed users")

    def write(self, w: Writer) -> None:
        w.u16(len(self.users))
        for user in self.users:
            w.text8(user)

    @classmethod
    def read(cls, r: Reader) -> Remove:
        return cls(tuple(r.text8() for _ in range(r.u16())))


@dataclass(frozen=True)
class SetRole(Change):
    KIND: ClassVar[int] = 4
    NAME: ClassVar[str] = "set_role"
    user_id: str
    role: int

    def __post_init__(self) -> None:
        check_identifier(self.user_id, "user id")
        if self.role not in (Role.MEMBER, Role.MODERATOR):
            raise MalformedMessage(f"unknown role {self.role}")

    def write(self, w: Writer) -> None:
        w.text8(self.user_id).u8(self.role)

    @classmethod
    def read(cls, r: Reader) -> SetRole:
        return cls(r.text8(), r.u8())


@dataclass(frozen=True)
class Leave(Change):
    KIND: ClassVar[int] = 5
    NAME: ClassVar[str] = "leave"

    def write(self, w: Writer) -> None:
        return None

    @classmethod
    def read(cls, r: Reader) -> Leave:
        return cls()


@dataclass(frozen=True)
class Rebind(Change):
    """The signing user now has the identity ``fingerprint`` (it reinstalled, say)."""

    KIND: ClassVar[int] = 6
    NAME: ClassVar[str] = "rebind"
    fingerprint: bytes

    def __post_init__(self) -> None:
        if len(self.fingerprint) != FINGERPRINT_LENGTH:
            raise MalformedMessage("identity fingerprints are 32 bytes")

    def write(self, w: Writer) -> None:
        w.raw(self.fingerprint)

    @classmethod
    def read(cls, r: Reader) -> Rebind:
        return cls(r.take(FINGERPRINT_LENGTH))


_CHANGES: dict[int, type[Create | Add | Remove | SetRole | Leave | Rebind]] = {
    cls.KIND: cls for cls in (Create, Add, Remove, SetRole, Leave, Rebind)
}


# --- the operation ----------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipOperation:
    conversation_id: str
    seq: int
    prev: bytes
    timestamp: int
    signer: DeviceCertificate
    change: Change
    signature: bytes

    def __post_init__(self) -> None:
        check_identifier(self.conversation_id, "conversation id")
        if not 0 <= self.seq < 2**32 or not 0 <= self.timestamp < 2**64:
            raise MalformedMessage("seq is u32 and timestamp u64")
        if len(self.prev) != HASH_LENGTH:
            raise MalformedMessage("prev is a 48-byte hash")
        if (self.seq == 0) != isinstance(self.change, Create):
            raise MalformedMessage("the first operation, and only it, creates the conversation")
        if self.seq == 0 and self.prev != GENESIS:
            raise MalformedMessage("the creation operation's prev is 48 zero bytes")
        if len(self.signature) != ECDSA_SIGNATURE_LENGTH:
            raise MalformedMessage("signature length out of range")

    def body(self) -> bytes:
        w = Writer().prefix(MessageType.MEMBERSHIP_OPERATION).text8(self.conversation_id)
        w.u32(self.seq).raw(self.prev).u64(self.timestamp).var16(self.signer.serialize())
        self.change.write(w.u8(self.change.KIND))
        return bytes(w)

    @property
    def hash(self) -> bytes:
        """What the next ``prev`` names: over the body, not the (malleable) signature."""
        return hashlib.sha384(domain("membership-op") + self.body()).digest()

    def serialize(self) -> bytes:
        return bytes(Writer().raw(self.body()).var8(self.signature))

    @classmethod
    def parse(cls, data: bytes) -> MembershipOperation:
        r = Reader(data, "membership operation")
        parse_prefix(r, MessageType.MEMBERSHIP_OPERATION)
        conversation_id, seq, prev, timestamp = r.text8(), r.u32(), r.take(HASH_LENGTH), r.u64()
        signer = DeviceCertificate.parse(r.var16())
        kind = r.u8()
        change_type = _CHANGES.get(kind)
        if change_type is None:
            raise MalformedMessage(f"unknown membership operation kind {kind}")
        change = change_type.read(r)
        signature = r.var8()
        r.done()
        return cls(conversation_id, seq, prev, timestamp, signer, change, signature)

    def __str__(self) -> str:
        return f"{self.change.NAME} #{self.seq} by {self.signer.user_id}/{self.signer.device_id}"


# --- verified state ---------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipState:
    """What a verified log says: member users (identity, role) and the head it ends at.

    Immutable: ``extend`` returns a new state, so a failed verification
    leaves the caller's state as it was.
    """

    conversation_id: str
    kind: int
    members: Mapping[str, MemberEntry]
    seq: int
    head: bytes
    timestamp: int

    def __post_init__(self) -> None:
        check_identifier(self.conversation_id, "conversation id")
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))

    def role(self, user_id: str) -> int | None:
        entry = self.members.get(user_id)
        return entry.role if entry is not None else None

    def fingerprint(self, user_id: str) -> bytes | None:
        entry = self.members.get(user_id)
        return entry.fingerprint if entry is not None else None

    @property
    def moderators(self) -> tuple[str, ...]:
        return tuple(sorted(u for u, e in self.members.items() if e.role == Role.MODERATOR))

    def extend(
        self,
        operations: Iterable[bytes],
        identities: Iterable[IdentityPublicKey],
        *,
        now: int,
        revocations: Revocations | None = None,
        served_seq: int | None = None,
    ) -> MembershipState:
        """Verify ``operations`` as the continuation of this state and apply them.

        ``operations`` must start right after ``seq``; ``served_seq`` is the
        head the server says it has (a head before ours is ``log_truncated``).
        ``identities`` are the identity keys to check signers' certificates
        with, looked up by fingerprint (the log says whose they must be).
        """
        if served_seq is not None and served_seq < self.seq:
            raise LogTruncated(f"server's log ends at {served_seq}, {self.seq} was verified")
        return self._apply_all(operations, _index(identities), now, revocations)

    def _apply_all(
        self,
        operations: Iterable[bytes],
        keys: Mapping[bytes, IdentityPublicKey],
        now: int,
        revocations: Revocations | None,
    ) -> MembershipState:
        state = self
        for data in operations:
            state = state._apply(MembershipOperation.parse(data), keys, now, revocations)
        return state

    def _apply(
        self,
        op: MembershipOperation,
        keys: Mapping[bytes, IdentityPublicKey],
        now: int,
        revocations: Revocations | None,
    ) -> MembershipState:
        if op.conversation_id != self.conversation_id:
            raise WrongConversation(f"operation is for conversation {op.conversation_id!r}")
        if op.seq <= self.seq:
            raise OperationReplayed(
                f"operation {op.seq} is at or before the verified head {self.seq}"
            )
        if op.seq > self.seq + 1:
            raise OperationOutOfOrder(f"operation {op.seq} where {self.seq + 1} was expected")
        if op.prev != self.head:
            raise LogForked(f"operation {op.seq} does not follow the verified head")
        if op.timestamp < self.timestamp:
            raise OperationOutOfOrder(f"operation {op.seq} is dated before the one it follows")
        _verify_signer(op, self._bound_fingerprint(op), keys, now, revocations)
        members = _authorize(self, op)
        return MembershipState(
            self.conversation_id, self.kind, members, op.seq, op.hash, op.timestamp
        )

    def _bound_fingerprint(self, op: MembershipOperation) -> bytes:
        """The identity the signer's certificate must be issued by, as this log has it."""
        signer = op.signer.user_id
        if isinstance(op.change, Rebind):
            if signer not in self.members:
                raise NotPermitted(f"{signer!r} is not a member")
            return op.change.fingerprint
        bound = self.fingerprint(signer)
        if bound is None:
            raise NotPermitted(f"{signer!r} is not a member of {self.conversation_id!r}")
        return bound

    def serialize(self) -> bytes:
        """``prefix(0x35) || text8 conversation_id || u8 kind || u32 seq || head(48)
        || u64 timestamp || u16 n || entry*n`` (entries sorted by user id)."""
        w = Writer().prefix(MessageType.MEMBERSHIP_STATE).text8(self.conversation_id)
        w.u8(self.kind).u32(self.seq).raw(self.head).u64(self.timestamp).u16(len(self.members))
        for user_id in sorted(self.members):
            self.members[user_id].write(w)
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> MembershipState:
        r = Reader(data, "membership state")
        parse_prefix(r, MessageType.MEMBERSHIP_STATE)
        conversation_id, kind, seq = r.text8(), r.u8(), r.u32()
        head, timestamp = r.take(HASH_LENGTH), r.u64()
        entries = [MemberEntry.read(r) for _ in range(r.u16())]
        r.done()
        if [e.user_id for e in entries] != sorted({e.user_id for e in entries}):
            raise MalformedMessage("membership entries are not sorted and unique")
        if kind not in _KINDS or len(entries) > MAX_MEMBERS:
            raise MalformedMessage("unknown conversation kind or too many members")
        _check_fixed(kind, entries)
        return cls(conversation_id, kind, {e.user_id: e for e in entries}, seq, head, timestamp)


def _index(identities: Iterable[IdentityPublicKey]) -> dict[bytes, IdentityPublicKey]:
    return {identity.fingerprint: identity for identity in identities}


def _verify_signer(
    op: MembershipOperation,
    bound: bytes,
    keys: Mapping[bytes, IdentityPublicKey],
    now: int,
    revocations: Revocations | None,
) -> None:
    """The signer's device, certified by the identity the log binds its user to, signed ``op``."""
    if op.timestamp > now + MAX_CLOCK_SKEW_MS:
        raise MalformedMessage(f"operation {op.seq} is dated in the future")
    cert = op.signer
    if cert.identity_fingerprint != bound:
        raise ForgedOperation(
            f"operation {op.seq} is signed under an identity the log does not bind to "
            f"{cert.user_id!r}"
        )
    identity = keys.get(bound)
    if identity is None:
        raise IdentityUnavailable(f"no identity key with fingerprint {bound.hex()[:16]}")
    try:
        # Valid when it signed, not necessarily now: the log outlives certificates.
        cert.verify(identity, now=op.timestamp)
    except BadCertificate as exc:
        raise ForgedOperation(f"operation {op.seq}: {exc.detail}") from None
    if revocations is not None and revocations.is_revoked(
        cert.user_id, cert.device_id, at=op.timestamp
    ):
        raise DeviceRevoked(f"operation {op.seq} is signed by a device revoked before it")
    if not cert.device_key.verify(LABEL, op.body(), op.signature):
        raise ForgedOperation(f"operation {op.seq}: signature does not verify")


def _authorize(state: MembershipState, op: MembershipOperation) -> dict[str, MemberEntry]:
    """The rule table: who may make which change; returns the members after it."""
    signer, change = op.signer.user_id, op.change
    members = dict(state.members)
    is_moderator = state.role(signer) == Role.MODERATOR
    if state.kind in _FIXED and not isinstance(change, Rebind):
        kind = "direct" if state.kind == ConversationKind.DIRECT else "self"
        raise NotPermitted(f"a {kind} conversation's members never change")
    if isinstance(change, Add):
        if not is_moderator:
            raise NotModerator(f"{signer!r} may not add members")
        present = [m.user_id for m in change.members if m.user_id in members]
        if present:
            raise NotPermitted(f"already members: {', '.join(present)}")
        if len(members) + len(change.members) > MAX_MEMBERS:
            raise NotPermitted(f"a conversation has at most {MAX_MEMBERS} members")
        members.update((m.user_id, m) for m in change.members)
    elif isinstance(change, Remove):
        if not is_moderator:
            raise NotModerator(f"{signer!r} may not remove members")
        if signer in change.users:
            raise NotPermitted("a member removes itself with a leave operation")
        absent = [u for u in change.users if u not in members]
        if absent:
            raise NotPermitted(f"not members: {', '.join(absent)}")
        for user in change.users:
            del members[user]
    elif isinstance(change, SetRole):
        if not is_moderator:
            if change.user_id == signer:
                raise SelfPromotion(f"{signer!r} may not change its own role")
            raise NotModerator(f"{signer!r} may not change roles")
        current = members.get(change.user_id)
        if current is None:
            raise NotPermitted(f"{change.user_id!r} is not a member")
        if current.role == change.role:
            raise NotPermitted(f"{change.user_id!r} already has that role")
        members[change.user_id] = replace(current, role=change.role)
    elif isinstance(change, Leave):
        del members[signer]
    elif isinstance(change, Rebind):
        current = members[signer]
        if current.fingerprint == change.fingerprint:
            raise NotPermitted(f"{signer!r} is already bound to that identity")
        members[signer] = replace(current, fingerprint=change.fingerprint)
    else:  # Create after the first operation is refused by MembershipOperation itself
        raise NotPermitted(f"{change.NAME} is not allowed here")
    return members


def verify_log(
    operations: Sequence[bytes],
    identities: Iterable[IdentityPublicKey],
    *,
    conversation_id: str,
    now: int,
    revocations: Revocations | None = None,
) -> MembershipState:
    """Verify a whole log from its creation operation; the state it ends in."""
    if not operations:
        raise LogTruncated("the log is empty: no creation operation")
    keys = _index(identities)
    first = MembershipOperation.parse(operations[0])
    if first.conversation_id != conversation_id:
        raise WrongConversation(f"operation is for conversation {first.conversation_id!r}")
    if not isinstance(first.change, Create):
        raise LogTruncated("the log does not start with its creation operation")
    change = first.change
    creator = next((m for m in change.members if m.user_id == first.signer.user_id), None)
    if creator is None:
        raise NotPermitted("the creator is not among the conversation's members")
    if change.conversation_kind == ConversationKind.ROOM and creator.role != Role.MODERATOR:
        raise NotPermitted("the creator of a room must be one of its moderators")
    if change.conversation_kind == ConversationKind.SELF and conversation_id != (
        self_conversation_id(creator.user_id)
    ):
        raise WrongConversation("a self conversation's id is derived from its user's id")
    _verify_signer(first, creator.fingerprint, keys, now, revocations)
    state = MembershipState(
        conversation_id,
        change.conversation_kind,
        {m.user_id: m for m in change.members},
        0,
        first.hash,
        first.timestamp,
    )
    return state._apply_all(operations[1:], keys, now, revocations)


def sign_operation(
    device: DeviceSecrets,
    identity: IdentityPublicKey,
    state: MembershipState | None,
    change: Change,
    *,
    now: int,
    conversation_id: str | None = None,
) -> bytes:
    """Sign ``change`` as the operation after ``state`` (``None``: the creation of
    ``conversation_id``). Refuses what the log's verifiers would refuse, so a
    client never publishes an operation its peers reject."""
    if state is None:
        if conversation_id is None or not isinstance(change, Create):
            raise MalformedMessage("a new log starts with a create operation and its id")
        position: tuple[str, int, bytes, int] = (conversation_id, 0, GENESIS, now)
    else:
        position = (state.conversation_id, state.seq + 1, state.head, max(now, state.timestamp))
    draft = MembershipOperation(
        *position, device.certificate, change, bytes(ECDSA_SIGNATURE_LENGTH)
    )
    data = replace(draft, signature=device.signing_key.sign(LABEL, draft.body())).serialize()
    if state is None:
        verify_log([data], [identity], conversation_id=position[0], now=position[3])
    else:
        state.extend([data], [identity], now=position[3])
    return data
