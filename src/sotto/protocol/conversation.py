"""One device's state in one conversation: a sans-I/O engine (docs/protocol.md §14).

Like h11 or websockets' protocol objects, a ``Conversation`` does no I/O and
reads no clock and no global randomness: the caller feeds it bytes and the
time, it returns bytes to send or decrypted messages, or raises a named
``ProtocolError``. Randomness is injected once (``rng``). One instance is
one device (``LocalDevice``) in one conversation; the same ``LocalDevice``
(device secrets, own identity, identity tracker) is shared by all of that
device's conversations and persisted separately by the client.

Events and results::

    create / set_members(members)        -> MembershipChange   (rotation pending if changed)
    prekeys_needed(now)                  -> devices to fetch a prekey for before sending
    prepare_send(content, prekeys=...)   -> Outgoing(distributions first, then envelope)
    receive_distribution(bytes)          -> InstalledChain      (one-time prekey consumed)
    receive_envelope(bytes)              -> Received            (or a named error)
    serialize() / Conversation.parse(bytes, local)

The per-message path (``prepare_send`` without rotation, ``receive_envelope``)
never touches the member list: its cost and the envelope's size do not
depend on the room's size. Rotation sends one key distribution per member
device and happens on a membership or device change, after N messages or T
time (``SenderChain.rotation_reason``), or on ``request_rotation``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .certificates import DeviceCertificate, PrekeyCertificate, Revocations
from .content import Content, Control
from .device import DeviceSecrets
from .distribution import (
    KeyDistribution,
    open_key_distribution,
    seal_key_distribution,
    seal_session_distribution,
)
from .envelope import Envelope, EnvelopeHeader, ExpiryPolicy, open_envelope, seal_envelope
from .errors import (
    BadCertificate,
    CertificateError,
    IdentityChanged,
    LimitExceeded,
    MalformedMessage,
    MessageExpired,
    NotAMember,
    NotPermitted,
    PrekeysRequired,
    ProtocolError,
    RatchetError,
    ReplayedMessage,
    UnknownSender,
    WrongConversation,
    WrongRecipient,
)
from .keys import ECDSA_PUBLIC_LENGTH, MLDSA_PUBLIC_LENGTH, IdentityPublicKey, Random, system_random
from .membership import MembershipState, verify_log
from .ratchet import (
    MAX_CHAIN_AGE_MS,
    MAX_MESSAGES_PER_CHAIN,
    ReceiverChain,
    SenderChain,
    membership_digest,
)
from .replay import ReplayGuard
from .retention import RetentionIdentity
from .safety import IdentityTracker
from .sessions import NO_SESSION, PairwiseSessions, SendSession
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
    "CONVERSATION_REPLAY_CAPACITY",
    "MAX_CHAINS_PER_SENDER",
    "MAX_MEMBER_DEVICES",
    "MAX_RETIRED_CHAINS",
    "Address",
    "Conversation",
    "ConversationSettings",
    "Distribution",
    "InstalledChain",
    "LocalDevice",
    "Member",
    "MembershipChange",
    "MessageTimers",
    "Outgoing",
    "Received",
    "RefusedDevice",
    "deletion_deadline",
    "must_delete",
]

Address = tuple[str, str]  # (user_id, device_id)

MAX_CHAINS_PER_SENDER = 8  # rotated-out chains stay readable for late messages
MAX_RETIRED_CHAINS = 256  # chain ids remembered after eviction, so they are never reinstalled
CONVERSATION_REPLAY_CAPACITY = 4096
MAX_MEMBER_DEVICES = 10_000
IDENTITY_PUBLIC_LENGTH = ECDSA_PUBLIC_LENGTH + MLDSA_PUBLIC_LENGTH


# --- expiry and burn-on-read ------------------------------------------------------------


def deletion_deadline(header: EnvelopeHeader, *, first_read_at: int | None) -> int | None:
    """When plaintext must be gone (ms), or None: ``min(expires_at, first_read + burn)``.

    Burn-on-read counts from the first local read and never outlives expiry.
    The message key is already deleted when a message is opened; a message
    that arrives expired has its key deleted unread (``receive_envelope``).
    """
    return header.delete_at(first_read_at)


def must_delete(header: EnvelopeHeader, *, now: int, first_read_at: int | None) -> bool:
    deadline = deletion_deadline(header, first_read_at=first_read_at)
    return deadline is not None and now >= deadline


# --- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalDevice:
    """This device: shared by all its conversations, persisted by the client (not here).

    ``receive_distribution`` deletes one-time prekeys from ``secrets``,
    ``set_members`` records first-seen identities in ``tracker``, and sends
    and distributions advance ``sessions``: persist them after those calls.
    """

    secrets: DeviceSecrets
    identity: IdentityPublicKey
    tracker: IdentityTracker
    revocations: Revocations | None = None
    sessions: PairwiseSessions | None = None  # None: every rotation seals to a prekey (v1)

    def __post_init__(self) -> None:
        if self.secrets.certificate.identity_fingerprint != self.identity.fingerprint:
            raise MalformedMessage("device certificate is not issued by this identity")

    @property
    def address(self) -> Address:
        return (self.secrets.user_id, self.secrets.device_id)

    def as_member(self) -> Member:
        return Member(self.secrets.certificate, self.identity)


@dataclass(frozen=True)
class Member:
    """A member device: its certificate and its user's identity key (from the tracker's view)."""

    certificate: DeviceCertificate
    identity: IdentityPublicKey

    @property
    def user_id(self) -> str:
        return self.certificate.user_id

    @property
    def device_id(self) -> str:
        return self.certificate.device_id

    @property
    def address(self) -> Address:
        return (self.certificate.user_id, self.certificate.device_id)


@dataclass(frozen=True)
class MessageTimers:
    """Expiry (ms from send, 0 = never) and burn-on-read (s from first read, 0 = off)."""

    expires_in_ms: int = 0
    burn_after_read_s: int = 0

    def check(self, policy: ExpiryPolicy) -> None:
        if not 0 <= self.expires_in_ms <= policy.max_expiry_ms:
            raise LimitExceeded("expiry (ms)", self.expires_in_ms, policy.max_expiry_ms)
        if not 0 <= self.burn_after_read_s <= policy.max_burn_after_read_s:
            raise LimitExceeded(
                "burn-after-read (s)", self.burn_after_read_s, policy.max_burn_after_read_s
            )


@dataclass(frozen=True)
class ConversationSettings:
    """The network policy's caps, the conversation's default timers, the rotation limits."""

    policy: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    timers: MessageTimers = field(default_factory=MessageTimers)
    max_messages: int = MAX_MESSAGES_PER_CHAIN
    max_age_ms: int = MAX_CHAIN_AGE_MS

    def __post_init__(self) -> None:
        if not 0 < self.policy.max_expiry_ms < 2**64:
            raise MalformedMessage("policy maximum expiry is a positive u64")
        if not 0 < self.policy.max_burn_after_read_s < 2**32:
            raise MalformedMessage("policy maximum burn-after-read is a positive u32")
        self.timers.check(self.policy)
        if not 0 < self.max_messages <= MAX_MESSAGES_PER_CHAIN:
            raise MalformedMessage("rotation limits may only be tightened")
        if not 0 < self.max_age_ms <= MAX_CHAIN_AGE_MS:
            raise MalformedMessage("rotation limits may only be tightened")


# --- outputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """A key distribution for one device's mailbox; send before the envelope that needs it."""

    recipient_user_id: str
    recipient_device_id: str
    data: bytes

    @property
    def address(self) -> Address:
        return (self.recipient_user_id, self.recipient_device_id)


@dataclass(frozen=True)
class Outgoing:
    """What ``prepare_send`` produced: distributions (possibly none), then the envelope."""

    envelope: bytes
    header: EnvelopeHeader
    distributions: tuple[Distribution, ...]
    rotation_reason: str | None

    @property
    def message_id(self) -> bytes:
        return self.header.message_id

    @property
    def delete_at(self) -> int | None:
        """The sender's copy follows expiry only (burn counts from the reader's first read)."""
        return deletion_deadline(self.header, first_read_at=None)


@dataclass(frozen=True)
class Received:
    sender: Address
    header: EnvelopeHeader
    content: Content

    @property
    def message_id(self) -> bytes:
        return self.header.message_id

    def delete_at(self, first_read_at: int | None) -> int | None:
        return deletion_deadline(self.header, first_read_at=first_read_at)

    def must_delete(self, *, now: int, first_read_at: int | None) -> bool:
        return must_delete(self.header, now=now, first_read_at=first_read_at)


@dataclass(frozen=True)
class InstalledChain:
    sender: Address
    chain_id: bytes
    iteration: int


@dataclass(frozen=True)
class RefusedDevice:
    """A device the server listed that the verified membership does not justify, and why."""

    address: Address
    error: ProtocolError

    @property
    def code(self) -> str:
        return self.error.code


@dataclass(frozen=True)
class MembershipChange:
    """What changed; show ``joined``, ``left`` and ``new_devices`` to the person."""

    added: tuple[Address, ...]
    removed: tuple[Address, ...]
    replaced: tuple[Address, ...]  # same (user, device), new certificate
    joined: tuple[str, ...] = ()  # users, from the verified log
    left: tuple[str, ...] = ()
    refused: tuple[RefusedDevice, ...] = ()  # listed by the server, no chain key for them

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.replaced or self.joined or self.left)

    @property
    def new_devices(self) -> tuple[Address, ...]:
        """Devices added for users who were already members (a user's new phone, say)."""
        return tuple(a for a in self.added if a[0] not in self.joined)


# --- the engine ------------------------------------------------------------------------


class Conversation:
    """The client-side state machine of one device in one conversation."""

    def __init__(
        self,
        conversation_id: str,
        local: LocalDevice,
        *,
        settings: ConversationSettings = ConversationSettings(),
        rng: Random = system_random,
    ) -> None:
        """An empty conversation (only this device); use ``create`` or ``parse``."""
        self._id = check_identifier(conversation_id, "conversation id")
        self._local = local
        self._settings = settings
        self._rng = rng
        own = local.as_member()
        self._members: dict[Address, Member] = {own.address: own}
        self._digest = membership_digest(self._members)
        self._membership: MembershipState | None = None  # None: an unverified roster (v1)
        self._chain: SenderChain | None = None
        self._rotate_pending = False
        self._chains: dict[bytes, ReceiverChain] = {}
        self._by_sender: dict[Address, list[bytes]] = {}
        self._retired: OrderedDict[bytes, None] = OrderedDict()
        self._watermarks: dict[Address, int] = {}  # newest created_at retired, per sender
        self._replay = ReplayGuard(CONVERSATION_REPLAY_CAPACITY)
        self._redistribution_requests: set[Address] = set()
        # The network's retention device (§17); set by the client from what it
        # verified and pinned, never persisted here.
        self._retention: RetentionIdentity | None = None

    @classmethod
    def create(
        cls,
        conversation_id: str,
        local: LocalDevice,
        members: Iterable[Member],
        *,
        now: int,
        settings: ConversationSettings = ConversationSettings(),
        rng: Random = system_random,
    ) -> Conversation:
        conversation = cls(conversation_id, local, settings=settings, rng=rng)
        conversation.set_members(members, now=now)
        return conversation

    # -- views ---------------------------------------------------------------------------

    @property
    def conversation_id(self) -> str:
        return self._id

    @property
    def local(self) -> LocalDevice:
        return self._local

    @property
    def settings(self) -> ConversationSettings:
        return self._settings

    @property
    def members(self) -> Mapping[Address, Member]:
        return MappingProxyType(self._members)

    @property
    def membership_digest(self) -> bytes:
        return self._digest

    @property
    def membership(self) -> MembershipState | None:
        """The verified membership log's state, or None while the roster is unverified."""
        return self._membership

    @property
    def is_member(self) -> bool:
        """False once the verified log no longer binds this device's user to its identity."""
        if self._membership is None:
            return True
        return (
            self._membership.fingerprint(self._local.address[0]) == self._local.identity.fingerprint
        )

    @property
    def sender_chain_id(self) -> bytes | None:
        return self._chain.chain_id if self._chain is not None else None

    def receiver_chain_ids(self, sender: Address) -> tuple[bytes, ...]:
        """The chains installed for ``sender``, oldest first."""
        return tuple(self._by_sender.get(sender, ()))

    @property
    def retention(self) -> RetentionIdentity | None:
        return self._retention

    def set_retention(self, retention: RetentionIdentity | None) -> None:
        """Seal every new chain also to the network's retention key (§17), or stop.

        The caller verified ``retention`` and pinned its officer. It does not
        force a rotation by itself: the server refuses an envelope whose chain
        did not reach the retention device, and the client's repair rotates.
        """
        self._retention = retention

    def _recipients(self) -> list[Address]:
        return sorted(a for a in self._members if a != self._local.address)

    # -- membership ----------------------------------------------------------------------

    def set_members(self, members: Iterable[Member], *, now: int) -> MembershipChange:
        """Replace the member devices from an unverified roster (v1); atomic on error.

        Kept for clients that do not yet verify the membership log; once a
        conversation has a verified membership (``update_membership``) it is
        refused, so a roster can never override the log.

        New or changed certificates are verified against the member's identity
        (``bad_certificate``, ``certificate_expired``, ``device_revoked``), and
        each identity against the tracker: a changed identity key raises
        ``identity_changed`` and nothing changes until the person accepts it
        (``IdentityTracker.accept_change``). Any change makes the next send
        rotate; removed or replaced devices' receiver chains are deleted.
        """
        if self._membership is not None:
            raise NotPermitted("this conversation's members come from its verified log")
        return self._apply_members(members, now=now, verified=())

    def update_membership(
        self,
        operations: Sequence[bytes],
        devices: Iterable[Member],
        *,
        now: int,
        identities: Iterable[IdentityPublicKey] = (),
        served_seq: int | None = None,
    ) -> MembershipChange:
        """Verify new membership operations, then keep only the devices the log justifies.

        The first call verifies the log from its creation operation; later
        ones continue from the verified head (``served_seq``: the head the
        server reports, to detect a truncated log). ``devices`` is the
        server's list of member devices; each is kept only if its user is a
        member of the log, its identity is the one the log binds that user to,
        and its certificate verifies under it. Every other one is reported in
        ``refused`` and gets no chain key. Signers' identity keys are looked
        up by fingerprint among ``identities`` and the devices' identities.
        A log fingerprint that differs from the tracker's raises
        ``identity_changed``. Atomic: on any error nothing changes.
        """
        devices = list(devices)
        pool = [*identities, *(m.identity for m in devices), self._local.identity]
        revocations = self._local.revocations
        if self._membership is None:
            state = verify_log(
                operations, pool, conversation_id=self._id, now=now, revocations=revocations
            )
        else:
            state = self._membership.extend(
                operations, pool, now=now, revocations=revocations, served_seq=served_seq
            )
        for user_id, entry in state.members.items():
            known = self._local.tracker.get(user_id)
            if known is not None and known.fingerprint != entry.fingerprint:
                raise IdentityChanged(user_id, known.fingerprint, entry.fingerprint)
        accepted, refused = self._justified(state, devices, now)
        previous = (
            set(self._membership.members)
            if self._membership is not None
            else {a[0] for a in self._members}
        )
        change = self._apply_members(accepted, now=now, verified=accepted)
        self._membership = state
        by_fingerprint = {identity.fingerprint: identity for identity in pool}
        for user_id, entry in state.members.items():
            identity = by_fingerprint.get(entry.fingerprint)
            if identity is not None:
                self._local.tracker.check(user_id, identity)  # first sight: recorded unverified
        return MembershipChange(
            change.added,
            change.removed,
            change.replaced,
            joined=tuple(sorted(set(state.members) - previous)),
            left=tuple(sorted(previous - set(state.members))),
            refused=tuple(refused),
        )

    def _justified(
        self, state: MembershipState, devices: list[Member], now: int
    ) -> tuple[list[Member], list[RefusedDevice]]:
        """Split the server's device list into what the log and certificates justify, and not."""
        accepted: list[Member] = []
        refused: list[RefusedDevice] = []
        for member in devices:
            if not isinstance(member, Member):
                raise MalformedMessage("devices must be Member values")
            if member.address == self._local.address:
                continue
            bound = state.fingerprint(member.user_id)
            error: ProtocolError | None = None
            if bound is None:
                error = NotAMember(f"{member.user_id!r} is not a member of the verified log")
            elif member.identity.fingerprint != bound:
                error = BadCertificate(
                    f"device {member.device_id!r} is certified by an identity the log does not "
                    f"bind to {member.user_id!r}"
                )
            elif self._members.get(member.address) != member:
                try:
                    member.certificate.verify(
                        member.identity, now=now, revocations=self._local.revocations
                    )
                except CertificateError as exc:
                    error = exc
            if error is None:
                accepted.append(member)
            else:
                refused.append(RefusedDevice(member.address, error))
        return accepted, refused

    def _apply_members(
        self, members: Iterable[Member], *, now: int, verified: Iterable[Member]
    ) -> MembershipChange:
        """``set_members``'s work; certificates of ``verified`` members are not checked again."""
        own = self._local.as_member()
        new: dict[Address, Member] = {}
        for member in members:
            if not isinstance(member, Member):
                raise MalformedMessage("members must be Member values")
            if member.address in new and new[member.address] != member:
                raise MalformedMessage(f"device {member.address} listed twice, differently")
            new[member.address] = member
        if own.address in new and new[own.address] != own:
            raise MalformedMessage("this device is listed with another certificate or identity")
        new[own.address] = own
        if len(new) > MAX_MEMBER_DEVICES:
            raise LimitExceeded("member devices", len(new), MAX_MEMBER_DEVICES)
        identities: dict[str, IdentityPublicKey] = {}
        for member in new.values():
            if identities.setdefault(member.user_id, member.identity) != member.identity:
                raise MalformedMessage(f"two identity keys given for {member.user_id!r}")
        for user_id, identity in identities.items():
            known = self._local.tracker.get(user_id)
            if known is not None and known.fingerprint != identity.fingerprint:
                raise IdentityChanged(user_id, known.fingerprint, identity.fingerprint)
        checked = {m.address for m in verified}
        for address, member in new.items():
            if self._members.get(address) != member and address not in checked:
                member.certificate.verify(
                    member.identity, now=now, revocations=self._local.revocations
                )
        for user_id, identity in identities.items():
            self._local.tracker.check(user_id, identity)

        added = tuple(sorted(a for a in new if a not in self._members))
        removed = tuple(sorted(a for a in self._members if a not in new))
        replaced = tuple(
            sorted(a for a in new if a in self._members and self._members[a] != new[a])
        )
        for address in removed + replaced:
            self._drop_sender(address)
        if replaced:
            self._rotate_pending = True
        self._members = new
        self._digest = membership_digest(new)
        return MembershipChange(added, removed, replaced)

    def request_rotation(self) -> None:
        """Start a new sender chain on the next send (e.g. after a suspected compromise)."""
        self._rotate_pending = True

    def restored(self) -> None:
        """This state came from a keystore older than the last save: never continue its chain.

        The client calls it when it detects a rollback (docs/protocol.md
        §14.6). The sender chain is dropped at once (so ``redistribute`` cannot
        hand out a rolled-back position either) and the next send starts and
        distributes a new one. Even before that, no key and nonce repeat: the
        per-message salt differs (§6).
        """
        self._chain = None
        self._rotate_pending = True

    @property
    def sender_position(self) -> tuple[bytes, int] | None:
        """``(chain id, next iteration)`` of this device's chain, or None.

        What a client compares with the last envelope the server stored from
        this device: a chain the state does not hold, or an iteration at or
        beyond this one, means the state was rolled back (§14.6).
        """
        return None if self._chain is None else (self._chain.chain_id, self._chain.iteration)

    # -- sending -------------------------------------------------------------------------

    def rotation_reason(self, *, now: int) -> str | None:
        """Why the next send must start a new chain, or None (cost independent of room size)."""
        if self._chain is None:
            return "no sender chain yet"
        if self._rotate_pending:
            return "rotation requested or a member device was replaced"
        return self._chain.rotation_reason(self._digest, now=now)

    def prekeys_needed(self, *, now: int) -> list[Address]:
        """The devices whose prekey the next ``prepare_send`` needs (empty if no rotation).

        With pairwise sessions, only the devices this device has no usable
        session with; the others get a session distribution (§16).
        """
        if self.rotation_reason(now=now) is None:
            return []
        return [a for a in self._recipients() if self._send_session(a, now) is None]

    def _send_session(self, address: Address, now: int) -> SendSession | None:
        sessions = self._local.sessions
        if sessions is None:
            return None
        member = self._members[address]
        return sessions.send_session(
            address,
            member.certificate.device_key.serialize(),
            member.identity.fingerprint,
            now=now,
        )

    def prepare_send(
        self,
        content: Content,
        *,
        now: int,
        timers: MessageTimers | None = None,
        prekeys: Mapping[Address, PrekeyCertificate] | None = None,
    ) -> Outgoing:
        """Encrypt ``content``; rotate first if needed. Atomic: on any error nothing changed.

        When a rotation is due, ``prekeys`` must hold a prekey certificate for
        every device ``prekeys_needed`` names (a one-time prekey if the server
        had one, else the signed prekey), or ``prekeys_required`` names the
        missing ones; devices with a pairwise session need none. The returned
        distributions must be delivered before the envelope, and the state
        (this conversation and ``LocalDevice.sessions``) persisted before either.
        """
        if not self.is_member:
            raise NotAMember("this device's user is not a member of the verified log")
        timers = timers if timers is not None else self._settings.timers
        timers.check(self._settings.policy)
        reason = self.rotation_reason(now=now)
        chain = self._chain
        distributions: tuple[Distribution, ...] = ()
        sessions: list[SendSession] = []
        if reason is not None or chain is None:
            prekeys = prekeys or {}
            missing = [a for a in self.prekeys_needed(now=now) if a not in prekeys]
            if missing:
                raise PrekeysRequired(missing)
            chain = SenderChain.create(
                self._digest,
                now=now,
                rng=self._rng,
                max_messages=self._settings.max_messages,
                max_age_ms=self._settings.max_age_ms,
            )
            sealed = [
                self._seal_distribution(chain, address, prekeys.get(address), now)
                for address in self._recipients()
            ]
            distributions = tuple(d for d, _ in sealed)
            sessions = [session for _, session in sealed if session is not None]
            if self._retention is not None:
                distributions += (self._seal_retention(chain, self._retention, now),)
        envelope = seal_envelope(
            self._local.secrets,
            chain,
            self._digest,
            content,
            conversation_id=self._id,
            now=now,
            expires_in_ms=timers.expires_in_ms,
            burn_after_read_s=timers.burn_after_read_s,
            policy=self._settings.policy,
            rng=self._rng,
        )
        self._chain = chain
        self._rotate_pending = False
        self._store_sessions(sessions)
        self._redistribution_requests.difference_update(d.address for d in distributions)
        header = Envelope.parse(envelope).header
        return Outgoing(envelope, header, distributions, reason)

    def _seal_retention(
        self, chain: SenderChain, retention: RetentionIdentity, now: int
    ) -> Distribution:
        """Always to the retention key itself, never over a session: the archive is
        opened long after, in any order, by a tool that keeps no session state."""
        retention.verify(now=now)
        data = seal_key_distribution(
            self._local.secrets,
            chain,
            conversation_id=self._id,
            recipient_certificate=retention.certificate,
            recipient_identity=retention.officer,
            recipient_prekey=retention.prekey,
            now=now,
            rng=self._rng,
        )
        return Distribution(retention.user_id, retention.device_id, data)

    def _store_sessions(self, sessions: list[SendSession]) -> None:
        if self._local.sessions is not None:
            for session in sessions:
                self._local.sessions.store_send(session)

    def redistribute(
        self, address: Address, prekey: PrekeyCertificate | None = None, *, now: int
    ) -> Distribution:
        """Repair: the current chain, at its current iteration, for one member device.

        For a device whose distribution was lost, or that asked for one
        (``redistribution_requests``). It can read the messages sent from now
        on, not the earlier ones on this chain (their keys are gone). Goes over
        the pairwise session if there is one, else needs ``prekey``
        (``prekeys_required``).
        """
        if not self.is_member:
            raise NotAMember("this device's user is not a member of the verified log")
        if self._chain is None:
            raise RatchetError("no sender chain to redistribute")
        if address not in self._members or address == self._local.address:
            raise UnknownSender(f"{address} is not another member device")
        distribution, session = self._seal_distribution(self._chain, address, prekey, now)
        self._store_sessions([session] if session is not None else [])
        self._redistribution_requests.discard(address)
        return distribution

    def _seal_distribution(
        self,
        chain: SenderChain,
        address: Address,
        prekey: PrekeyCertificate | None,
        now: int,
    ) -> tuple[Distribution, SendSession | None]:
        """Over the session if there is one, else to ``prekey`` (offering a new session)."""
        session = self._send_session(address, now)
        if session is not None:
            member = self._members[address]  # as sealing to a prekey does: current, unrevoked
            member.certificate.verify(member.identity, now=now, revocations=self._local.revocations)
            data, advanced = seal_session_distribution(
                self._local.secrets,
                chain,
                session,
                conversation_id=self._id,
                now=now,
                rng=self._rng,
            )
            return Distribution(address[0], address[1], data), advanced
        if prekey is None:
            raise PrekeysRequired([address])
        member = self._members[address]
        offered = None
        if self._local.sessions is not None:
            offered = PairwiseSessions.new_send_session(
                address,
                member.certificate.device_key.serialize(),
                member.identity.fingerprint,
                now=now,
                rng=self._rng,
            )
        data = seal_key_distribution(
            self._local.secrets,
            chain,
            conversation_id=self._id,
            recipient_certificate=member.certificate,
            recipient_identity=member.identity,
            recipient_prekey=prekey,
            now=now,
            revocations=self._local.revocations,
            rng=self._rng,
            session=offered,
        )
        return Distribution(address[0], address[1], data), offered

    # -- receiving -----------------------------------------------------------------------

    def receive_distribution(self, data: bytes, *, now: int) -> InstalledChain:
        """Verify, open and install a sender's chain; a one-time prekey is consumed.

        Errors, in order: ``malformed`` (and version/suite), ``wrong_recipient``,
        ``wrong_conversation``, ``unknown_sender``, then those of
        ``open_key_distribution``; a chain already installed (or retired) is
        ``replayed_message``; a session distribution over a session this
        device does not hold is ``unknown_session`` (ask for a new one:
        ``redistribution_request``). State changes only on success, except
        that a one-time prekey or a session step is spent as soon as it opened
        the distribution; a prekey distribution offering a session installs it.
        """
        kd = KeyDistribution.parse(data)
        if (kd.recipient_user_id, kd.recipient_device_id) != self._local.address:
            raise WrongRecipient(f"addressed to {kd.recipient_user_id}/{kd.recipient_device_id}")
        if kd.conversation_id != self._id:
            raise WrongConversation(f"key distribution is for {kd.conversation_id!r}")
        sender = (kd.sender_user_id, kd.sender_device_id)
        member = self._members.get(sender)
        if member is None or sender == self._local.address:
            raise UnknownSender(f"{sender[0]}/{sender[1]} is not a member device")
        replay = _DeferredReplay(self._replay)
        opened = open_key_distribution(
            data,
            self._local.secrets,
            self._local.identity,
            sender_certificate=member.certificate,
            sender_identity=member.identity,
            now=now,
            replay=replay,
            conversation_id=self._id,
            revocations=self._local.revocations,
            sessions=self._local.sessions,
        )
        if opened.session_key is not None and self._local.sessions is not None:
            self._local.sessions.install_receive(
                sender,
                member.certificate.device_key.serialize(),
                member.identity.fingerprint,
                opened.session_id,
                opened.session_key,
                now=now,
            )
        chain = opened.chain
        if chain.chain_id in self._chains or chain.chain_id in self._retired:
            raise ReplayedMessage(f"chain {chain.chain_id.hex()} was already installed")
        if chain.created_at < self._watermarks.get(sender, -1):
            raise ReplayedMessage("chain is older than one this sender already replaced")
        for message_id in replay.recorded:
            self._replay.record(message_id)
        self._chains[chain.chain_id] = chain
        installed = self._by_sender.setdefault(sender, [])
        installed.append(chain.chain_id)
        while len(installed) > MAX_CHAINS_PER_SENDER:
            self._retire(installed.pop(0))
        return InstalledChain(sender, chain.chain_id, chain.next_iteration)

    def receive_envelope(self, data: bytes, *, now: int) -> Received:
        """Verify and decrypt one envelope; state changes only on success.

        Errors, in order: ``malformed`` (and version/suite),
        ``wrong_conversation``, ``replayed_message`` for this device's own
        messages (their keys are gone: keep the plaintext at send time),
        ``unknown_sender``, then those of ``open_envelope`` — notably
        ``unknown_chain`` when the sender's distribution has not arrived (keep
        the envelope and retry after the next ``receive_distribution``) and
        ``message_expired``, in which case the (authentic) message's key is
        deleted unread.
        """
        header = Envelope.parse(data).header
        if header.conversation_id != self._id:
            raise WrongConversation(f"envelope is for conversation {header.conversation_id!r}")
        sender = (header.sender_user_id, header.sender_device_id)
        if sender == self._local.address:
            raise ReplayedMessage("sent by this device")
        member = self._members.get(sender)
        if member is None:
            raise UnknownSender(f"{sender[0]}/{sender[1]} is not a member device")
        try:
            opened = open_envelope(
                data,
                conversation_id=self._id,
                sender_certificate=member.certificate,
                sender_identity=member.identity,
                chains=self._chains,
                replay=self._replay,
                now=now,
                revocations=self._local.revocations,
                policy=self._settings.policy,
            )
        except MessageExpired:
            self._burn(sender, header)  # the signature was verified before the time check
            raise
        if isinstance(opened.content, Control) and opened.content.kind == Control.REDISTRIBUTE:
            self._redistribution_asked(sender, opened.content.payload)
        return Received(sender, opened.header, opened.content)

    # -- redistribution requests (§16) ---------------------------------------------------

    def redistribution_request(self, sender: Address, session_id: bytes = NO_SESSION) -> Control:
        """Content asking ``sender`` for its current chain again; send it like any message.

        For ``unknown_session`` (pass the error's ``session_id``), or a chain
        lost with this device's state (``unknown_chain`` that never resolves).
        """
        if sender not in self._members or sender == self._local.address:
            raise UnknownSender(f"{sender} is not another member device")
        payload = (
            Writer()
            .text8(sender[0])
            .text8(sender[1])
            .raw(check_random_id(session_id, "session id"))
        )
        return Control(Control.REDISTRIBUTE, bytes(payload))

    @property
    def redistribution_requests(self) -> tuple[Address, ...]:
        """Devices that asked this one for its chain: ``redistribute`` to each (sorted)."""
        return tuple(sorted(self._redistribution_requests))

    def _redistribution_asked(self, requester: Address, payload: bytes) -> None:
        try:
            r = Reader(payload, "redistribution request")
            target = (r.text8(), r.text8())
            r.take(ID_LENGTH)
            r.done()
        except MalformedMessage:
            return  # an authentic message with a payload we cannot act on: shown, not obeyed
        if target != self._local.address:
            return
        # Whatever it names, the requester's side of our session may be gone: next time, HPKE.
        if self._local.sessions is not None:
            self._local.sessions.drop_send(requester)
        self._redistribution_requests.add(requester)

    def _burn(self, sender: Address, header: EnvelopeHeader) -> None:
        chain = self._chains.get(header.chain_id)
        if chain is None or (chain.sender_user_id, chain.sender_device_id) != sender:
            return
        try:
            chain.commit(header.iteration)
        except RatchetError:
            return
        self._replay.record(header.message_id)

    def _retire(self, chain_id: bytes) -> None:
        chain = self._chains.pop(chain_id, None)
        if chain is not None:
            sender = (chain.sender_user_id, chain.sender_device_id)
            self._watermarks[sender] = max(self._watermarks.get(sender, 0), chain.created_at)
        self._retired[chain_id] = None
        while len(self._retired) > MAX_RETIRED_CHAINS:
            self._retired.popitem(last=False)

    def _drop_sender(self, address: Address) -> None:
        for chain_id in self._by_sender.pop(address, []):
            self._retire(chain_id)
        self._watermarks.pop(address, None)
        self._redistribution_requests.discard(address)

    # -- persistence ---------------------------------------------------------------------

    def serialize(self) -> bytes:
        """All state but ``LocalDevice`` (docs/protocol.md §14). Holds chain keys: seal it."""
        s = self._settings
        w = Writer().prefix(MessageType.CONVERSATION_STATE).text8(self._id)
        w.text8(self._local.secrets.user_id).text8(self._local.secrets.device_id)
        w.u64(s.policy.max_expiry_ms).u32(s.policy.max_burn_after_read_s)
        w.u64(s.timers.expires_in_ms).u32(s.timers.burn_after_read_s)
        w.u32(s.max_messages).u64(s.max_age_ms)
        if self._membership is None:
            w.u8(0)
        else:
            w.u8(1).var32(self._membership.serialize())
        identities = {m.user_id: m.identity for m in self._members.values()}
        w.u16(len(identities))
        for user_id in sorted(identities):
            w.text8(user_id).raw(identities[user_id].serialize())
        w.u16(len(self._members))
        for address in sorted(self._members):
            w.var16(self._members[address].certificate.serialize())
        w.u8(int(self._rotate_pending))
        if self._chain is None:
            w.u8(0)
        else:
            w.u8(1).var16(self._chain.serialize())
        w.u16(len(self._chains))
        for sender in sorted(self._by_sender):
            for chain_id in self._by_sender[sender]:
                w.var16(self._chains[chain_id].serialize())
        w.u16(len(self._retired))
        for chain_id in self._retired:
            w.raw(chain_id)
        w.u16(len(self._watermarks))
        for sender in sorted(self._watermarks):
            w.text8(sender[0]).text8(sender[1]).u64(self._watermarks[sender])
        w.u32(self._replay.capacity).u32(len(self._replay))
        for message_id in self._replay:
            w.raw(message_id)
        w.u16(len(self._redistribution_requests))
        for address in sorted(self._redistribution_requests):
            w.text8(address[0]).text8(address[1])
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes, local: LocalDevice, *, rng: Random = system_random) -> Conversation:
        """Rebuild a conversation for ``local``; every field and invariant is checked.

        Certificates are checked structurally (their signatures were verified
        by ``set_members`` and are verified again on every message). An
        identity that differs from the tracker's raises ``identity_changed``.
        """
        r = Reader(data, "conversation state")
        parse_prefix(r, MessageType.CONVERSATION_STATE)
        conversation_id = check_identifier(r.text8(), "conversation id")
        if (r.text8(), r.text8()) != local.address:
            raise MalformedMessage("conversation state belongs to another device")
        policy = ExpiryPolicy(max_expiry_ms=r.u64(), max_burn_after_read_s=r.u32())
        timers = MessageTimers(expires_in_ms=r.u64(), burn_after_read_s=r.u32())
        try:
            settings = ConversationSettings(policy, timers, r.u32(), r.u64())
        except LimitExceeded as exc:
            raise MalformedMessage(f"default timers exceed the policy: {exc.detail}") from None
        conversation = cls(conversation_id, local, settings=settings, rng=rng)
        membership = None
        if _flag(r.u8(), "membership flag"):
            membership = MembershipState.parse(r.var32())
            if membership.conversation_id != conversation_id:
                raise MalformedMessage("membership state of another conversation")

        identities: dict[str, IdentityPublicKey] = {}
        for _ in range(r.u16()):
            user_id = check_identifier(r.text8(), "user id")
            if identities and user_id <= max(identities):
                raise MalformedMessage("member users are not sorted and unique")
            identity = IdentityPublicKey.parse(r.take(IDENTITY_PUBLIC_LENGTH))
            known = local.tracker.get(user_id)
            if known is not None and known.fingerprint != identity.fingerprint:
                raise IdentityChanged(user_id, known.fingerprint, identity.fingerprint)
            identities[user_id] = identity
        members: dict[Address, Member] = {}
        previous: Address | None = None
        for _ in range(r.u16()):
            cert = DeviceCertificate.parse(r.var16())
            address = (cert.user_id, cert.device_id)
            if previous is not None and address <= previous:
                raise MalformedMessage("member devices are not sorted and unique")
            owner = identities.get(cert.user_id)
            if owner is None or owner.fingerprint != cert.identity_fingerprint:
                raise MalformedMessage(f"device {address} does not match its user's identity")
            members[address] = Member(cert, owner)
            previous = address
        if {a[0] for a in members} != set(identities):
            raise MalformedMessage("a member user has no device")
        if members.get(local.address) != local.as_member():
            raise MalformedMessage("this device is not a member with its own certificate")
        if len(members) > MAX_MEMBER_DEVICES:
            raise MalformedMessage(f"more than {MAX_MEMBER_DEVICES} member devices")
        if membership is not None and any(
            membership.fingerprint(a[0]) != m.identity.fingerprint
            for a, m in members.items()
            if a != local.address
        ):
            raise MalformedMessage("a member device the membership state does not justify")
        conversation._membership = membership
        conversation._members = members
        conversation._digest = membership_digest(members)

        conversation._rotate_pending = _flag(r.u8(), "rotation flag")
        if _flag(r.u8(), "sender chain flag"):
            conversation._chain = SenderChain.parse(r.var16())
        last_sender: Address | None = None
        for _ in range(r.u16()):
            receiver = ReceiverChain.parse(r.var16())
            sender = (receiver.sender_user_id, receiver.sender_device_id)
            if sender not in members or sender == local.address:
                raise MalformedMessage("receiver chain for a device that is not another member")
            if last_sender is not None and sender < last_sender:
                raise MalformedMessage("receiver chains are not grouped by sorted sender")
            if receiver.chain_id in conversation._chains:
                raise MalformedMessage("receiver chain ids are not unique")
            installed = conversation._by_sender.setdefault(sender, [])
            if len(installed) >= MAX_CHAINS_PER_SENDER:
                raise MalformedMessage(f"more than {MAX_CHAINS_PER_SENDER} chains for one sender")
            installed.append(receiver.chain_id)
            conversation._chains[receiver.chain_id] = receiver
            last_sender = sender
        count = r.u16()
        if count > MAX_RETIRED_CHAINS:
            raise MalformedMessage(f"more than {MAX_RETIRED_CHAINS} retired chain ids")
        for _ in range(count):
            chain_id = r.take(ID_LENGTH)
            if chain_id in conversation._retired or chain_id in conversation._chains:
                raise MalformedMessage("retired chain ids are not unique")
            conversation._retired[chain_id] = None
        last_sender = None
        for _ in range(r.u16()):
            sender = (r.text8(), r.text8())
            if sender not in members or sender == local.address:
                raise MalformedMessage("watermark for a device that is not another member")
            if last_sender is not None and sender <= last_sender:
                raise MalformedMessage("watermarks are not sorted and unique")
            conversation._watermarks[sender] = r.u64()
            last_sender = sender
        capacity, count = r.u32(), r.u32()
        if not 0 < capacity <= CONVERSATION_REPLAY_CAPACITY or count > capacity:
            raise MalformedMessage("replay set size out of range")
        replay = ReplayGuard(capacity)
        for _ in range(count):
            message_id = r.take(ID_LENGTH)
            if message_id in replay:
                raise MalformedMessage("replay set ids are not unique")
            replay.record(message_id)
        conversation._replay = replay
        last_sender = None
        for _ in range(r.u16()):
            sender = (r.text8(), r.text8())
            if sender not in members or sender == local.address:
                raise MalformedMessage("redistribution request from a device that is not a member")
            if last_sender is not None and sender <= last_sender:
                raise MalformedMessage("redistribution requests are not sorted and unique")
            conversation._redistribution_requests.add(sender)
            last_sender = sender
        r.done()
        return conversation

    def __repr__(self) -> str:
        return (
            f"Conversation({self._id!r}, device={self._local.address}, "
            f"members={len(self._members)}, <secret>)"
        )


class _DeferredReplay(ReplayGuard):
    """Checks against the conversation's guard; records only once the caller accepts."""

    def __init__(self, inner: ReplayGuard) -> None:
        super().__init__(1)
        self._inner = inner
        self.recorded: list[bytes] = []

    def check(self, message_id: bytes) -> None:
        self._inner.check(message_id)

    def record(self, message_id: bytes) -> None:
        self.recorded.append(message_id)


def _flag(value: int, what: str) -> bool:
    if value not in (0, 1):
        raise MalformedMessage(f"{what} must be 0 or 1")
    return bool(value)
