"""The messaging SDK: one device's conversations over a WebSocket session.

``Messenger`` is the adapter between the server routes (docs/api.md,
"Messaging") and the sans-I/O engine ``sotto.protocol.conversation``; it
does no cryptography itself. Its rules:

* **State before acknowledgement.** Every engine state change (a chain
  advanced, a distribution installed, a one-time prekey consumed, an
  identity first seen) is saved to the sealed keystore before anything is
  acknowledged to the server and before a prepared envelope leaves.
* **Prepared sends are replayed, never re-encrypted.** A prepared envelope
  (and its key distributions) is saved in the outbox first; on a lost
  connection the same bytes are sent again, and the server de-duplicates on
  the message id. What a refusal means (keep it for the next command, repair
  the roster or the restored keystore and prepare again, name it in a notice)
  is decided once, ``outbox.refused``, for a live send and a flush alike.
* **The server's copy and the cursor are the truth.** Pushes are
  de-duplicated by seq and mail id; the cursor acknowledged is the highest
  seq with nothing missing below it.
* **A conversation's messages are shown in seq order.** A pushed message
  above a gap is left for the sync the gap starts, which brings it after the
  missing ones; a batch is processed in seq order per conversation, mail
  merged in by time (``receive_order``, §14.5); a message whose chain key has
  not come holds the conversation's later messages back (``PendingItem``)
  until the key comes or a complete sync ends without it; a new Messenger,
  and one whose last sync failed, syncs before it hands out any push.
* **Trust is local.** Certificates are verified against identities in this
  device's ``IdentityTracker``; a changed identity key raises ``TrustError``
  (sending) or is reported as a notice (receiving) until the person runs
  ``sotto verify USER --accept-change``.

Several processes may use a profile at once (a ``listen`` beside ``send``,
``verify``, ``contacts``...): every operation runs under the profile's lock
(``Vault.lock``, held for the operation only, never while waiting for
pushes), first reads again what another process wrote, and at its end
writes only the state files it changed. The passphrase's key derivation runs
once per process (``Profile.unlock``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from sotto.frames import answers
from sotto.frames.answers import (
    AckedAnswer,
    BundlesPart,
    DistributedAnswer,
    SentAnswer,
    ShapeError,
    SyncPart,
)
from sotto.frames.answers_conversations import (
    ConversationAnswer,
    ConversationDevicesPart,
    ConversationInfo,
    ConversationsPart,
    IdentitiesPart,
    MembershipLogPart,
    RosterDevice,
)
from sotto.frames.answers_devices import DevicesPart, RetentionAnswer, UserAnswer
from sotto.frames.answers_files import FilePolicyAnswer
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.content import (
    Content,
    Control,
    File,
    Location,
    Receipt,
    Text,
    parse_content,
)
from sotto.protocol.conversation import (
    Address,
    Conversation,
    LocalDevice,
    Member,
    MembershipChange,
    MessageTimers,
    Received,
    RefusedDevice,
)
from sotto.protocol.distribution import DistributionMode, KeyDistribution
from sotto.protocol.envelope import Envelope
from sotto.protocol.errors import (
    IdentityChanged,
    PrekeysRequired,
    ProtocolError,
    UnknownSender,
)
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    MembershipOperation,
    MembershipState,
    Remove,
    Role,
    SetRole,
    direct_conversation_id,
    self_conversation_id,
    sign_operation,
    verify_log,
)
from sotto.protocol.retention import RetentionIdentity, officer_user_id
from sotto.protocol.room import ROOM_PROFILE, RoomProfile
from sotto.protocol.safety import IdentityTracker, safety_number
from sotto.protocol.sessions import NO_SESSION

from . import delivery, files, inbox, outbox, self_sync
from .encoding import b64d, b64e
from .errors import (
    ClientError,
    ConnectionLost,
    FrameError,
    MessagingError,
    TrustError,
)
from .events import Event, MessageEvent, NoticeEvent, ReceiptEvent
from .inbox import Key, Opened
from .outbox import DISTRIBUTIONS_PER_FRAME, MAX_SEND_ATTEMPTS, Mode, SentMessage, Then
from .policy import ClientPolicy, parse_policy
from .prekeys import now_ms, plan_replenish, prekey_status, publish_prekeys
from .profile import DeviceKeys, Profile, ProfileInfo
from .retention import RetentionNotice, fetch_retention
from .session import Session, join_parts, shaped
from .store import (
    ConversationRecord,
    MessagingStore,
    OutboxItem,
    PendingItem,
    StoredMessage,
)

__all__ = [
    "DISTRIBUTIONS_PER_FRAME",
    "MAX_SEND_ATTEMPTS",
    "Messenger",
    "SafetyReport",
    "SentMessage",
    "SessionLike",
]

T = TypeVar("T")
P = ParamSpec("P")
BUNDLES_PER_REQUEST = 100  # docs/api.md: at most 100 devices per fetch_bundles
ROOM_CREATE_MEMBERS = 31  # docs/api.md: members named at creation, besides the creator
ROOM_ADD_MEMBERS = 32  # ...and per add_members / remove_members
IDENTITIES_PER_REQUEST = 100  # docs/api.md: at most 100 users per identities frame
_ACTIONS: dict[type[Change], str] = {
    Add: "add_members",
    Remove: "remove_members",
    SetRole: "set_role",
    Leave: "leave",
}
NAMES_SHOWN = 5  # a membership notice names this many users, then counts the rest
USER_ID = re.compile(r"usr-[0-9a-f]+")  # as the server makes them (enrollment)
HANDLE = re.compile(r"[a-z0-9._-]{1,32}")  # as invites give them (docs/api.md)
CONVERSATION_ID = re.compile(r"(room|dm|self)-[0-9a-f]+")  # as the server and §15 make them
_KINDS = {
    ConversationKind.DIRECT: "direct",
    ConversationKind.ROOM: "room",
    ConversationKind.SELF: "self",
}
MAX_RECONNECTS = 3  # per request: a lost connection is retried on a new one
# Envelopes to one user skip an iteration for every other member; rotate before the
# receivers' 256-step skip limit (docs/protocol.md §6) could be reached.
MAX_PRIVATE_SENDS = 128


class SessionLike(Protocol):
    """What a Messenger needs from ``Session`` (tests supply an in-memory one)."""

    def request(self, action: str, **fields: Any) -> dict[str, Any]: ...

    def request_parts(self, action: str, **fields: Any) -> list[dict[str, Any]]: ...

    def request_many(
        self,
        action: str,
        requests: Sequence[Mapping[str, Any]],
        answered: dict[int, list[dict[str, Any]]],
    ) -> None: ...

    def next_push(self, timeout: float) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SafetyReport:
    user_id: str
    safety_number: str
    fingerprint: str
    known: bool  # this device had seen an identity for the user
    verified: bool
    changed: bool  # the server's identity differs from the one this device trusts


@dataclass
class _Batch:
    """One round of receiving: what to save, then acknowledge, then report."""

    events: list[Event]
    mail_ids: list[str]
    read: list[dict[str, Any]]
    delivered: dict[tuple[str, str], list[bytes]]  # (conversation, sender user) -> ids
    # Distributions this device could not open: (conversation, sender, session id) to ask.
    asks: list[tuple[str, Address, bytes]] = field(default_factory=list)
    # A complete sync: nothing more is in the mailbox, so a key still missing is lost.
    complete: bool = False


def _operation(
    method: Callable[Concatenate[Messenger, P], T],
) -> Callable[Concatenate[Messenger, P], T]:
    """Run a Messenger method as one ``operation`` (locked, refreshed, saved)."""

    def run(self: Messenger, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.operation():
            return method(self, *args, **kwargs)

    return functools.update_wrapper(run, method)  # type: ignore[return-value]


def _until_done(
    method: Callable[Concatenate[Messenger, P], T],
) -> Callable[Concatenate[Messenger, P], T]:
    """A sync that raised is still owed: the next poll syncs before it hands out a push."""

    def run(self: Messenger, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self._needs_sync = True
            raise

    return functools.update_wrapper(run, method)  # type: ignore[return-value]


def _owing(
    method: Callable[Concatenate[Messenger, P], list[Event]],
) -> Callable[Concatenate[Messenger, P], list[Event]]:
    """Events saved by a call that then raised are still the caller's: the next call
    hands them out first (they were saved and may be acknowledged, so no sync repeats
    them)."""

    def run(self: Messenger, *args: P.args, **kwargs: P.kwargs) -> list[Event]:
        owed, self._owed = self._owed, []
        try:
            return owed + method(self, *args, **kwargs)
        except BaseException:
            self._owed[:0] = owed
            raise

    return functools.update_wrapper(run, method)  # type: ignore[return-value]


class Messenger:
    """``with Messenger.open(profile, info, keys, passphrase) as m: m.send_text(...)``."""

    def __init__(
        self,
        profile: Profile,
        info: ProfileInfo,
        keys: DeviceKeys,
        passphrase: str,
        *,
        connect: Callable[[], SessionLike] | None = None,
        clock: Callable[[], int] = now_ms,
        receipts: bool = True,
        enforce_policy: bool = True,
    ) -> None:
        identity = info.identity_public()
        if identity is None:
            raise MessagingError("this profile does not know its user's identity key")
        self.profile, self.info, self.keys = profile, info, keys
        self._passphrase = passphrase
        self._connect = connect or (
            lambda: Session.open(info.server, info.device_id, keys.device.signing_key)
        )
        self._clock = clock
        self._receipts = receipts
        # The network's policy for this user: read once a session, replaced when pushed.
        # ``enforce_policy=False`` leaves enforcement to the server (its tests).
        self._enforce_policy = enforce_policy
        self.policy = ClientPolicy()
        self._policy_read = False
        self._session: SessionLike | None = None
        self._identity = identity
        self._vault = profile.unlock(passphrase)
        self._store = MessagingStore(self._vault)
        self._depth = 0
        with self._vault.lock():
            self.state = self._store.load()
            self._keys_written = _keys_digest(keys)
        self.local = self._local_device()
        self._live: dict[str, Conversation] = {}
        self._asked = inbox.AskLimit()  # redistribution requests sent
        self._touched: set[str] = set()
        self._dirty = False
        # Membership news and refused devices, shown with the next events.
        self._notices: list[Event] = []
        # Events of batches saved by a sync or poll that then raised (see _owing).
        self._owed: list[Event] = []
        self._refused: dict[str, dict[Address, str]] = {}
        # A Messenger just opened has missed what arrived while it was closed:
        # its first poll syncs before it hands out any push.
        self._needs_sync = True
        self._flushing = False  # in flush_outbox: a send it makes does not flush again
        # The network's retention identity as verified this session (None: not asked yet).
        self._retention: tuple[RetentionIdentity | None, RetentionNotice] | None = None

    # -- lifetime --------------------------------------------------------------------

    @classmethod
    def open(
        cls, profile: Profile, info: ProfileInfo, keys: DeviceKeys, passphrase: str, **kwargs: Any
    ) -> Messenger:
        return cls(profile, info, keys, passphrase, **kwargs)

    def __enter__(self) -> Messenger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._dirty or self._touched:
                with self.operation():
                    pass
        finally:
            if self._session is not None:
                with contextlib.suppress(ClientError):
                    self._session.close()
                self._session = None

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """One operation on the profile's state: locked, refreshed first, saved at the end.

        Re-entrant: only the outermost block reads and writes the files.
        """
        with self._vault.lock():
            outermost = self._depth == 0
            self._depth += 1
            try:
                if outermost:
                    self._refresh_from_disk()
                yield
            finally:
                self._depth -= 1
                if outermost:
                    self.save()

    def _refresh_from_disk(self) -> None:
        """What another process (a ``send`` beside this ``listen``) wrote since we last looked."""
        rebuild = False
        if self._vault.changed("device"):
            self.keys = self.profile.read_keys(self._vault)
            self._keys_written = _keys_digest(self.keys)
            rebuild = True
        tracker = self.state.tracker
        changed = self._store.refresh(self.state)
        if rebuild or self.state.tracker is not tracker:  # the device part was read again
            # Engines hold the device and its tracker: parse them again on use.
            self.local = self._local_device()
            self._live.clear()
        for cid in changed:
            self._live.pop(cid, None)

    def _local_device(self) -> LocalDevice:
        return LocalDevice(
            self.keys.device, self._identity, self.state.tracker, sessions=self.state.sessions
        )

    def save(self) -> None:
        """Write what this process changed: the touched conversations, the device's state."""
        with self._vault.lock():
            self.purge()
            for cid, conversation in self._live.items():
                self.state.conversations[cid].state = conversation.serialize()
                self._touched.add(cid)
            self._store.save(self.state, only=self._touched)
            digest = _keys_digest(self.keys)
            if digest != self._keys_written:
                self.profile.write_keys(self._vault, self.keys)
                self._keys_written = digest
            self._touched.clear()
            self._dirty = False

    # -- transport -------------------------------------------------------------------

    @property
    def session(self) -> SessionLike:
        if self._session is None:
            self._session = self._connect()
        return self._session

    def disconnect(self) -> None:
        """Close the socket (the next call opens a new one); state stays as it is."""
        self._reconnect()

    def engine(self, cid: str) -> Conversation:
        """The conversation's engine (for inspection and tests; mutate only through this SDK)."""
        return self._engine(cid)

    def _reconnect(self) -> None:
        if self._session is not None:
            with contextlib.suppress(ClientError):
                self._session.close()
            # Pushes sent while no socket was open are gone: the next poll syncs.
            self._needs_sync = True
            self._policy_read = False
        self._session = None

    def read_policy(self) -> ClientPolicy:
        """This user's effective network policy, from the server (``policy`` route)."""
        self._set_policy(self._call("policy"))
        self._policy_read = True
        return self.policy

    def _set_policy(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError):  # a malformed frame leaves the policy we had
            self.policy = parse_policy(answers.parse(answers.PolicyPush, frame))

    def _ensure_policy(self) -> None:
        if not self._policy_read:
            self.read_policy()

    def _call_parts(
        self, action: str, *, retry: bool = True, **fields: Any
    ) -> list[dict[str, Any]]:
        for attempt in range(MAX_RECONNECTS + 1):
            try:
                return self.session.request_parts(action, **fields)
            except ConnectionLost:
                self._reconnect()
                if not retry or attempt == MAX_RECONNECTS:
                    raise
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    def _call(self, action: str, *, retry: bool = True, **fields: Any) -> dict[str, Any]:
        """One answer; a multi-part one joined (docs/api.md, pagination)."""
        return join_parts(self._call_parts(action, retry=retry, **fields))

    def _ask(self, shape: type[S], action: str, *, retry: bool = True, **fields: Any) -> S:
        """``_call``, its answer as ``shape`` (``sotto.frames``), or ``MalformedFrame``."""
        return _shaped(shape, action, self._call(action, retry=retry, **fields))

    def _call_many(
        self, action: str, requests: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Several requests of one action in flight at once (``Session.request_many``),
        each answer joined, in request order. After a lost connection only the
        requests still unanswered are sent again: each must be safe to repeat.
        """
        answered: dict[int, list[dict[str, Any]]] = {}
        for attempt in range(MAX_RECONNECTS + 1):
            try:
                self.session.request_many(action, requests, answered)
                return [join_parts(answered[i]) for i in range(len(requests))]
            except ConnectionLost:
                self._reconnect()
                if attempt == MAX_RECONNECTS:
                    raise
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    # -- conversations ---------------------------------------------------------------

    def resolve_user(self, text: str) -> str:
        """A contact (``sotto contacts``), a user id, or a handle of this network.

        A handle this device has not met is looked up (``lookup_user``); the
        identity key that comes with it is pinned on first contact, and a key
        that differs from the pinned one is refused (``TrustError``).
        """
        name = text.removeprefix("@")
        if name in self.state.contacts:
            return self.state.contacts[name]
        if USER_ID.fullmatch(name):
            return name
        handle = name.lower()
        for user_id, known in self.state.handles.items():
            if known == handle:
                return user_id
        return self.lookup_user(handle)

    @_operation
    def lookup_user(self, handle: str) -> str:
        """The user id of ``handle`` in this network, its identity pinned on first contact."""
        try:
            answer = self._ask(UserAnswer, "lookup_user", handle=handle)
        except FrameError as exc:
            if exc.code == "not_found":
                raise MessagingError(f"no user {handle!r} in this network") from None
            raise
        user_id = answer["user_id"]
        if answer["handle"] != handle or not USER_ID.fullmatch(user_id):
            raise MessagingError(f"the server's answer for {handle!r} does not match the question")
        identity = _identity(answer["identity_key"])
        try:
            self.state.tracker.check(user_id, identity)
        except IdentityChanged:
            raise TrustError(user_id, handle) from None
        self.state.handles[user_id] = handle
        self._dirty = True
        return user_id

    def name_of(self, user_id: str) -> str:
        if user_id == self.info.user_id:
            return "you"
        for handle, known in self.state.contacts.items():
            if known == user_id:
                return handle
        return self.state.handles.get(user_id, user_id)

    @_operation
    def add_contact(self, handle: str, user_id: str) -> None:
        """Remember ``handle`` as ``user_id``, on this user's other devices too (``self_sync``)."""
        self._sync_change(self_sync.CONTACT, handle.removeprefix("@"), user_id)

    @_operation
    def remove_contact(self, handle: str) -> None:
        handle = handle.removeprefix("@")
        if handle not in self.state.contacts:
            raise MessagingError(f"no contact named {handle!r}")
        self._sync_change(self_sync.CONTACT, handle, "")

    def _sync_change(self, kind: str, key: str, value: str) -> None:
        """A contact or label change: kept here, sent to this user's other devices now if it
        can be (else with the next sync)."""
        try:
            self_sync.change(self, kind, key, value)
        except ProtocolError as exc:
            raise MessagingError(str(exc)) from None
        self.save()
        with contextlib.suppress(ClientError):
            self_sync.publish(self)

    def resolve(self, target: str) -> str:
        """``#room`` (a local label), or a user (handle or id): the conversation id."""
        if target.startswith("#"):
            record = self.state.room(target[1:])
            if record is None:
                raise MessagingError(f"no room named {target!r} on this device")
            return record.conversation_id
        if target == self_conversation_id(self.info.user_id):
            raise MessagingError("that is your own devices' conversation: it carries no messages")
        if target in self.state.conversations or CONVERSATION_ID.fullmatch(target):
            return target  # a conversation id (one this device has not seen yet, too)
        user_id = self.resolve_user(target)
        known = next(
            (
                r.conversation_id
                for r in self.state.conversations.values()
                if r.kind == "direct" and r.peer == user_id and not r.left
            ),
            None,
        )
        if known is not None:
            return known  # no round trip: the direct conversation of two users never changes
        if target.startswith(("room-", "dm-")):
            self.conversations()  # a conversation id this device has not seen yet?
            if target in self.state.conversations:
                return target
        try:
            return self.direct(user_id)
        except FrameError as exc:
            if exc.code not in ("not_found", "bad_request"):
                raise
        except MessagingError:
            pass
        raise MessagingError(f"no user or conversation {target!r}") from None

    # -- membership (the signed log, docs/protocol.md §15) ----------------------------------

    def _sign(
        self, state: MembershipState | None, change: Change, *, conversation_id: str | None = None
    ) -> bytes:
        return sign_operation(
            self.keys.device,
            self._identity,
            state,
            change,
            now=self._clock(),
            conversation_id=conversation_id,
        )

    def _user_identities(self, user_ids: Iterable[str]) -> dict[str, IdentityPublicKey]:
        """Identity keys of users of this network, checked against those this device trusts.

        A user seen for the first time is trusted on first use (recorded,
        unverified: ``sotto verify`` compares safety numbers); a changed key
        raises ``TrustError`` and nothing is signed with it.
        """
        wanted = sorted(set(user_ids) - {self.info.user_id})
        found: dict[str, IdentityPublicKey] = {}
        for start in range(0, len(wanted), IDENTITIES_PER_REQUEST):
            answer = self._ask(
                IdentitiesPart,
                "identities",
                user_ids=wanted[start : start + IDENTITIES_PER_REQUEST],
            )
            for item in answer["identities"]:
                user_id = item["user_id"]
                identity = _identity(item["identity_key"])
                known = self.state.tracker.get(user_id)
                if known is not None and known.fingerprint != identity.fingerprint:
                    raise TrustError(user_id, self.name_of(user_id))
                found[user_id] = identity
        missing = [u for u in wanted if u not in found]
        if missing:
            raise MessagingError(f"no such user(s) in this network: {', '.join(missing)}")
        for user_id, identity in found.items():
            self.state.tracker.check(user_id, identity)  # first sight: pinned, unverified
        return found

    def _entries(
        self, identities: Mapping[str, IdentityPublicKey], role: int = Role.MEMBER
    ) -> list[MemberEntry]:
        return [MemberEntry.of(u, identities[u], role) for u in sorted(identities)]

    @_operation
    def direct(self, user_id: str) -> str:
        """The direct conversation with ``user_id``: created (signed by this device) if new."""
        if user_id == self.info.user_id:
            raise MessagingError("a direct conversation is with another user")
        cid = direct_conversation_id(self.info.user_id, user_id)
        identities = self._user_identities([user_id])
        entries = sorted(
            [MemberEntry.of(self.info.user_id, self._identity), *self._entries(identities)],
            key=lambda e: e.user_id,
        )
        op = self._sign(None, Create(ConversationKind.DIRECT, tuple(entries)), conversation_id=cid)
        answer = self._ask(
            ConversationAnswer, "create_conversation", conversation_id=cid, op=b64e(op)
        )
        conversation = self._conversation_frame(answer, cid)
        record = self._record(conversation["conversation_id"], kind="direct")
        record.peer = user_id
        return record.conversation_id

    @_operation
    def self_conversation(self) -> str:
        """This user's own devices' conversation (``self_sync``): created, signed here, if new."""
        cid = self_conversation_id(self.info.user_id)
        record = self.state.conversations.get(cid)
        if record is None or (record.state is None and cid not in self._live):
            entry = MemberEntry.of(self.info.user_id, self._identity)
            op = self._sign(None, Create(ConversationKind.SELF, (entry,)), conversation_id=cid)
            answer = self._ask(
                ConversationAnswer, "create_conversation", conversation_id=cid, op=b64e(op)
            )
            self._conversation_frame(answer, cid)
            self._record(cid, kind="self")
        return cid

    @_operation
    def create_room(self, label: str, user_ids: list[str]) -> str:
        """Create a room (this user its moderator) with any number of members.

        The creation operation names 31 members besides this user; larger
        rooms grow by signed add operations of 32 each.
        """
        label = label.removeprefix("#")
        if not label or self.state.room(label) is not None:
            raise MessagingError(f"a room named #{label} already exists on this device")
        identities = self._user_identities(user_ids)
        others = sorted(identities)
        first = {u: identities[u] for u in others[:ROOM_CREATE_MEMBERS]}
        cid = f"room-{secrets.token_hex(12)}"
        own = MemberEntry.of(self.info.user_id, self._identity, Role.MODERATOR)
        entries = sorted([own, *self._entries(first)], key=lambda e: e.user_id)
        op = self._sign(None, Create(ConversationKind.ROOM, tuple(entries)), conversation_id=cid)
        answer = self._ask(
            ConversationAnswer, "create_conversation", retry=False, conversation_id=cid, op=b64e(op)
        )
        conversation = self._conversation_frame(answer, cid)
        record = self._record(conversation["conversation_id"], kind="room")
        record.label = label
        with contextlib.suppress(ProtocolError):  # a label the wire cannot carry stays here
            self_sync.change(self, self_sync.LABEL, cid, label)
        self.save()
        state = verify_log([op], [self._identity], conversation_id=cid, now=self._clock())
        rest = others[ROOM_CREATE_MEMBERS:]
        for start in range(0, len(rest), ROOM_ADD_MEMBERS):
            batch = {u: identities[u] for u in rest[start : start + ROOM_ADD_MEMBERS]}
            op = self._sign(state, Add(tuple(self._entries(batch))))
            self._ask(ConversationAnswer, "add_members", conversation_id=cid, op=b64e(op))
            state = state.extend([op], [self._identity], now=self._clock())
        with contextlib.suppress(ClientError):
            self_sync.publish(self)  # the label, to this user's other devices
        return record.conversation_id

    def _change_membership(
        self, cid: str, changes: Callable[[MembershipState], list[Change]]
    ) -> None:
        """Sign and send ``changes`` after the verified head, reading the log again if it moved."""
        for attempt in range(3):
            conversation = self.refresh(cid)
            state = conversation.membership
            if state is None:
                raise MessagingError("this conversation has no verified membership log")
            try:
                for change in changes(state):
                    action = _ACTIONS[type(change)]
                    op = self._sign(state, change)
                    # conversation (left, for a leave): nothing of it is used but its shape
                    self._ask(answers.ANSWERS[action], action, conversation_id=cid, op=b64e(op))
                    state = state.extend([op], [self._identity], now=self._clock())
                return
            except ProtocolError as exc:
                raise MessagingError(f"that change is not allowed: {exc}") from None
            except FrameError as exc:
                if exc.code != "conflict" or "membership log moved" not in exc.message:
                    raise
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @_operation
    def add_members(self, target: str, user_ids: list[str]) -> None:
        cid = self.resolve(target)
        identities = self._user_identities(user_ids)

        def adds(state: MembershipState) -> list[Change]:
            new = sorted(u for u in identities if u not in state.members)
            return [
                Add(tuple(self._entries({u: identities[u] for u in new[i : i + ROOM_ADD_MEMBERS]})))
                for i in range(0, len(new), ROOM_ADD_MEMBERS)
            ]

        self._change_membership(cid, adds)
        self.refresh(cid)  # the next send rotates to the new roster
        record = self._record(cid)
        if record.room_name:
            # Newcomers see nothing sent before they joined: tell them the room's name.
            self.send(cid, RoomProfile(record.room_name, record.topic).to_control())

    @_operation
    def remove_members(self, target: str, user_ids: list[str]) -> None:
        """Remove members (moderators only); every sender rotates before its next message."""
        cid = self.resolve(target)

        def removes(state: MembershipState) -> list[Change]:
            gone = sorted(u for u in set(user_ids) if u in state.members)
            return [
                Remove(tuple(gone[i : i + ROOM_ADD_MEMBERS]))
                for i in range(0, len(gone), ROOM_ADD_MEMBERS)
            ]

        self._change_membership(cid, removes)
        self.refresh(cid)
        self._engine(cid).request_rotation()

    @_operation
    def leave(self, target: str) -> None:
        cid = self.resolve(target)
        self._change_membership(cid, lambda state: [Leave()])
        record = self._record(cid)
        record.left = True
        self._live.pop(cid, None)
        record.state = None  # its chain keys serve nobody now

    @_operation
    def set_role(self, target: str, user_id: str, role: str) -> None:
        cid = self.resolve(target)
        wanted = Role.MODERATOR if role == "moderator" else Role.MEMBER
        self._change_membership(cid, lambda state: [SetRole(user_id, wanted)])

    @_operation
    def members(self, target: str) -> list[dict[str, Any]]:
        """The members and roles the verified membership log names, with their devices
        this device distributes to (the server's list, less what the log refuses)."""
        cid = self.resolve(target)
        conversation = self.refresh(cid)
        state = conversation.membership
        if state is None:
            raise MessagingError("this conversation has no verified membership log")
        devices: dict[str, int] = {}
        for user_id, _device_id in conversation.members:
            devices[user_id] = devices.get(user_id, 0) + 1
        roles = {Role.MODERATOR: "moderator", Role.MEMBER: "member"}
        return [
            {
                "user_id": user_id,
                "name": self.name_of(user_id),
                "role": roles[entry.role],
                "devices": devices.get(user_id, 0),
            }
            for user_id, entry in sorted(state.members.items())
        ]

    @_operation
    def set_room_profile(self, target: str, name: str, topic: str = "") -> SentMessage:
        """Give the room a name and topic its members see (end-to-end encrypted)."""
        cid = self.resolve(target)
        record = self._record(cid)
        if record.kind != "room":
            raise MessagingError("only rooms have a shared name")
        try:
            profile = RoomProfile(name, topic)
        except ProtocolError as exc:
            raise MessagingError(str(exc)) from None
        sent = self.send(cid, profile.to_control())
        record.room_name, record.topic, record.profile_at = name, topic, self._clock()
        self._dirty = True
        self.save()
        return sent

    @_operation
    def label_room(self, conversation_id: str, label: str) -> None:
        """Name a room someone else created, on this user's other devices too (end-to-end
        encrypted through ``self_sync``: the server never sees a label)."""
        label = label.removeprefix("#")
        existing = self.state.room(label)
        if existing is not None and existing.conversation_id != conversation_id:
            raise MessagingError(f"#{label} already names another room")
        if conversation_id == self_conversation_id(self.info.user_id):
            raise MessagingError("your own devices' conversation is not a room")
        self._sync_change(self_sync.LABEL, conversation_id, label)

    @_operation
    def conversations(self) -> list[dict[str, Any]]:
        """The server's list, with this device's labels and last local message."""
        self.purge()  # a burnt or expired message is no one's last message
        listed = self._call_parts("list_conversations")
        rows: list[dict[str, Any]] = []
        for part in (_shaped(ConversationsPart, "list_conversations", p) for p in listed):
            for item in part["conversations"]:
                cid = item["conversation_id"]
                if cid == self_conversation_id(self.info.user_id):
                    continue  # this user's devices' own: contacts and labels, no chat
                record = self._record(cid, kind=item["kind"])
                last = record.history[-1] if record.history else None
                rows.append(
                    {
                        "conversation_id": cid,
                        "kind": record.kind,
                        "name": self.display_name(record),
                        "role": item["role"],
                        "members": item["member_count"],
                        "last_seq": item["last_seq"],
                        "read_through": record.cursor,
                        "last_message": None if last is None else last.text,
                    }
                )
        return rows

    def display_name(self, record: ConversationRecord) -> str:
        if record.kind == "self":
            return "your devices"
        if record.label:
            return f"#{record.label}"
        if record.room_name:
            return f"#{record.room_name}"
        if record.peer:
            return self.name_of(record.peer)
        return record.conversation_id

    @_operation
    def history(self, target: str) -> list[StoredMessage]:
        cid = target if target in self.state.conversations else self.resolve(target)
        self.purge()
        return list(self.state.conversations[cid].history)

    def _conversation_frame(self, answer: ConversationAnswer, cid: str) -> ConversationInfo:
        conversation = answer["conversation"]
        if conversation["conversation_id"] != cid:
            raise MessagingError("the server answered with another conversation than was created")
        return conversation

    def _record(self, cid: str, *, kind: str | None = None) -> ConversationRecord:
        self._touched.add(cid)  # whoever asks may change it; unchanged files are not rewritten
        record = self.state.conversations.get(cid)
        if record is None:
            record = ConversationRecord(cid, kind or "unknown")
            self.state.conversations[cid] = record
            self._dirty = True
        elif kind is not None and record.kind == "unknown":
            record.kind = kind
        return record

    def _engine(self, cid: str) -> Conversation:
        """The conversation's engine: loaded from the keystore, or built from the roster."""
        live = self._live.get(cid)
        if live is not None:
            return live
        record = self._record(cid)
        if record.state is None:
            return self.refresh(cid)
        try:
            live = Conversation.parse(record.state, self.local)
        except IdentityChanged as exc:
            raise TrustError(exc.user_id, self.name_of(exc.user_id)) from None
        self._live[cid] = live
        return live

    @_operation
    def refresh(self, cid: str) -> Conversation:
        """Verify the conversation's membership log and keep the devices it justifies.

        The new operations after the verified head (``membership_log``) and
        the server's device list (``conversation_devices``) go to the engine
        (``update_membership``): it verifies every operation and distributes
        only to devices of users the log names, certified by the identity it
        binds them to. Every other device the server lists is refused and
        reported; joins, leaves and new devices are reported too (``notices``).
        """
        parts = [
            _shaped(ConversationDevicesPart, "conversation_devices", p)
            for p in self._call_parts("conversation_devices", conversation_id=cid)
        ]
        version = max((p["roster_version"] for p in parts), default=0)
        now = self._clock()
        identities: dict[str, IdentityPublicKey] = {}
        for part in parts:
            for listed in part["members"]:
                user_id = listed["user_id"]
                identity = _identity(listed["identity_key"])
                if user_id == self.info.user_id and identity != self.local.identity:
                    raise TrustError(user_id, "your own user")
                identities[user_id] = identity
                handle = listed["handle"]
                if HANDLE.fullmatch(handle):
                    self.state.handles[user_id] = handle  # a name to show, never trusted
        devices = [
            member
            for part in parts
            for device in part["devices"]
            if (member := self._member(cid, device, identities)) is not None
            and member.address != self.local.address
        ]
        record = self._record(cid)
        conversation = self._live.get(cid)
        if conversation is None and record.state is not None:
            conversation = self._engine(cid)
        if conversation is None:
            conversation = Conversation.create(cid, self.local, [], now=now)
        state = conversation.membership
        operations, signers, head = self._log_after(cid, -1 if state is None else state.seq)
        try:
            change = conversation.update_membership(
                operations,
                devices,
                now=now,
                identities=[*identities.values(), *signers],
                served_seq=head,
            )
        except IdentityChanged as exc:
            raise TrustError(exc.user_id, self.name_of(exc.user_id)) from None
        except ProtocolError as exc:
            raise MessagingError(
                f"the server's membership log for {self.display_name(record)} does not verify: "
                f"{exc}; not trusting it"
            ) from None
        self._live[cid] = conversation
        verified = conversation.membership
        if verified is not None:
            record.kind = _KINDS[verified.kind]
            others = sorted(u for u in verified.members if u != self.info.user_id)
            if record.kind == "direct" and len(others) == 1:
                record.peer = others[0]
        known = self._refused.get(cid, {})
        self._refused[cid] = {r.address: r.code for r in change.refused}
        # On first sight the whole history verifies; only its latest step is news.
        self._report_change(
            cid,
            change,
            operations if state is not None else operations[-1:],
            [r for r in change.refused if known.get(r.address) != r.code],
        )
        record.roster_version = version
        self._dirty = True
        return conversation

    def _drain_notices(self) -> list[Event]:
        notices, self._notices = self._notices, []
        return list(notices)

    def _log_after(self, cid: str, after: int) -> tuple[list[bytes], list[IdentityPublicKey], int]:
        """The stored membership operations after ``after``, their signers' keys, the head."""
        operations: list[bytes] = []
        signers: list[IdentityPublicKey] = []
        head = after
        while True:
            answer = self._ask(
                MembershipLogPart, "membership_log", conversation_id=cid, after=after
            )
            page = sorted(answer["operations"], key=lambda o: o["seq"])
            operations += [b64d(o["op"], "membership operation") for o in page]
            signers += [_identity(i["identity_key"]) for i in answer["identities"]]
            head = answer["head_seq"]
            if not answer["more"] or not page:
                return operations, signers, head
            after = page[-1]["seq"]

    def _report_change(
        self,
        cid: str,
        change: MembershipChange,
        operations: list[bytes],
        refused: list[RefusedDevice],
    ) -> None:
        """What a person should see of a verified membership change: each operation, by
        whom; new devices of members; devices the server lists that the log refuses."""
        for data in operations:
            text = self._describe(MembershipOperation.parse(data))
            if text:
                self._notices.append(NoticeEvent(cid, "membership", text))
        for user_id, device_id in change.new_devices:
            if user_id != self.info.user_id and user_id not in change.joined:
                name = self.name_of(user_id)
                text = f"{name} has a new device ({device_id}); compare safety numbers if unsure"
                self._notices.append(NoticeEvent(cid, "new_device", text))
        for device in refused:  # reported once a process, not on every refresh
            user_id, device_id = device.address
            self._notices.append(
                NoticeEvent(
                    cid,
                    device.code,
                    f"refused device {device_id} of {self.name_of(user_id)}: the server lists it,"
                    f" the membership log does not justify it ({device.code}); it gets no keys",
                )
            )

    def _describe(self, op: MembershipOperation) -> str:
        """One verified operation in words (names as this device knows them)."""
        by = "you" if op.signer.user_id == self.info.user_id else self.name_of(op.signer.user_id)
        change = op.change

        def names(user_ids: Iterable[str]) -> str:
            listed = [self.name_of(u) for u in user_ids]
            shown = ", ".join(listed[:NAMES_SHOWN])
            rest = len(listed) - NAMES_SHOWN
            return f"{shown} and {rest} more" if rest > 0 else shown

        if isinstance(change, Create):
            if change.conversation_kind != ConversationKind.ROOM:
                return ""  # the conversation itself says who is in it
            return f"{by} created the room with {len(change.members)} members"
        if isinstance(change, Add):
            return f"{by} added {names(m.user_id for m in change.members)}"
        if isinstance(change, Remove):
            return f"{by} removed {names(change.users)}"
        if isinstance(change, Leave):
            return f"{by} left"
        if isinstance(change, SetRole):
            role = "a moderator" if change.role == Role.MODERATOR else "a member"
            return f"{by} made {self.name_of(change.user_id)} {role}"
        return f"{by} changed the membership ({change.NAME})"  # a device rebinding its key

    def _member(
        self, cid: str, device: RosterDevice, identities: dict[str, IdentityPublicKey]
    ) -> Member | None:
        """A listed device as the engine takes it (it verifies the certificate itself)."""
        user_id, device_id = device["user_id"], device["device_id"]
        identity = identities.get(user_id)
        if identity is None:
            return None  # no identity for its user: it cannot be justified, nothing to send it
        try:
            certificate = DeviceCertificate.parse(b64d(device["certificate"], "certificate"))
        except (ProtocolError, ClientError) as exc:
            self._notices.append(NoticeEvent(cid, "bad_certificate", f"device {device_id}: {exc}"))
            return None
        if (certificate.user_id, certificate.device_id) != (user_id, device_id):
            self._notices.append(
                NoticeEvent(
                    cid, "bad_certificate", f"device {device_id}: a certificate for another"
                )
            )
            return None
        return Member(certificate, identity)

    # -- retention ---------------------------------------------------------------------

    def _retention_state(self) -> tuple[RetentionIdentity | None, RetentionNotice]:
        if self._retention is None:
            known = self.local.tracker.get(officer_user_id(self.info.network_id))
            self._retention = fetch_retention(
                lambda: self._ask(RetentionAnswer, "retention"),
                self.info.network_id,
                self.local.tracker,
                now=self._clock(),
                profile_dir=self.profile.path,
            )
            if known is None and self._retention[0] is not None:
                self._dirty = True  # the officer was pinned: save the tracker
        return self._retention

    @_operation
    def retention(self) -> RetentionNotice:
        """Whether this network archives its messages (verified, officer pinned)."""
        return self._retention_state()[1]

    # -- sending ---------------------------------------------------------------------

    def file_policy(self) -> FilePolicyAnswer:
        """What this network allows: files, their size, locations (``file_policy``)."""
        return self._ask(FilePolicyAnswer, "file_policy")

    def send_file(
        self,
        target: str,
        path: Path,
        *,
        expires_s: int = 0,
        burn_s: int = 0,
        progress: files.Progress | None = None,
        on_part: Callable[[int], None] | None = None,
    ) -> SentMessage:
        """Encrypt and upload ``path`` (resuming a run that stopped), then send its File content."""
        cid = self.resolve(target)
        uploaded = files.upload_file(
            self._call, self._vault, cid, path, progress=progress, on_part=on_part
        )
        timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        sent = self.send(cid, uploaded.content, timers=timers, files=[uploaded.object_id])
        files.forget_upload(self._vault, cid, path)
        return sent

    def send_location(
        self,
        target: str,
        latitude_e7: int,
        longitude_e7: int,
        *,
        label: str = "",
        expires_s: int = 0,
        burn_s: int = 0,
    ) -> SentMessage:
        cid = self.resolve(target)
        if not self.file_policy()["location_allowed"]:
            raise MessagingError("this network does not allow sharing locations")
        timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        content = Location(latitude_e7, longitude_e7, 0, self._clock(), label)
        return self.send(cid, content, timers=timers)

    def attachment(self, message_id: str) -> tuple[str, StoredMessage]:
        """The conversation and stored message of a file message this device still holds."""
        for cid, record in self.state.conversations.items():
            for stored in record.history:
                if stored.message_id == message_id and stored.attachment is not None:
                    return cid, stored
        raise MessagingError(f"no file message {message_id} on this device")

    def download(
        self,
        message_id: str,
        directory: Path,
        *,
        name: str | None = None,
        progress: files.Progress | None = None,
    ) -> Path:
        """Fetch, verify and save a received file into ``directory`` (never over a file).

        ``name`` takes that exact name (refused if it exists); otherwise the
        sender's name, sanitised, with " (2)" and so on when taken.
        """
        cid, stored = self.attachment(message_id)
        delete_at = stored.delete_at()
        if delete_at is not None and delete_at <= self._clock():
            raise MessagingError("that message expired or burnt; its file is gone")
        assert stored.attachment is not None
        content = files.file_of(stored.attachment)
        staging = self.profile.path / "downloads"
        verified = files.download_file(
            self._call, cid, message_id, content, staging, progress=progress
        )
        chosen = name if name is not None else files.sanitise_name(content.name)
        try:
            return files.place_file(verified, directory, chosen, exact=name is not None)
        finally:
            verified.unlink(missing_ok=True)

    def send_text(
        self, target: str, text: str, *, expires_s: int = 0, burn_s: int = 0
    ) -> SentMessage:
        cid = self.resolve(target)
        if self._enforce_policy:
            self._ensure_policy()
            timers = self.policy.timers(expires_s, burn_s)
        else:
            timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        return self.send(cid, Text(text), timers=timers)

    @_operation
    def send(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None = None,
        to_user: str | None = None,
        files: list[str] | None = None,
    ) -> SentMessage:
        """Prepare, save, distribute (if the chain is new), send; on a refusal, what
        ``outbox.refused`` says (repair and prepare again, or raise).

        ``files``: the uploads the content refers to (``client/files.py``).
        """
        if self._enforce_policy:
            self._ensure_policy()
            self.policy.check_content(content)
        if self.state.outbox and not self._flushing:
            # What an earlier run prepared goes first: it was said first, and its
            # distributions may open the sessions this message's continue (§16).
            self.flush_outbox()
        for attempt in range(MAX_SEND_ATTEMPTS):
            item = self._prepare(cid, content, timers=timers, to_user=to_user)
            item.files = list(files or [])
            self.save()
            try:
                return self._deliver(item)
            except FrameError as exc:
                decision = self._refusal(item, exc, Mode.LIVE, attempt, self._clock())
                if decision.then is not Then.AGAIN:
                    self.save()
                    raise
                if decision.roster_moved:
                    self._repair(cid, exc)
        raise AssertionError("unreachable")

    def _refusal(
        self, item: OutboxItem, exc: FrameError, mode: Mode, attempt: int, now: int
    ) -> outbox.Decision:
        """What ``outbox.refused`` decides, applied as far as it is the same for a live
        send and a flush: discarded unless kept, the restored keystore's chains gone."""
        decision = outbox.refused(
            item, code=exc.code, action=exc.action, mode=mode, attempt=attempt, now=now
        )
        if decision.then is not Then.KEEP:
            self._discard(item)
        if decision.restored:
            self._restored()
        return decision

    def _repair(self, cid: str, exc: FrameError) -> None:
        """The roster moved: read it again, refuse ghosts, start a new chain."""
        self._retention = None  # enabled, disabled or rotated since: ask again
        self.refresh(cid)
        self._refuse_ghosts(cid, exc)
        self._engine(cid).request_rotation()

    def _restored(self) -> None:
        """The server holds another message of this device at a chain position this state
        is about to use again: the keystore is older than the last send (restored from
        a backup, a snapshot, a copy put back). docs/protocol.md §14.6: no conversation
        continues its sender chain (each next send distributes a new one) and no send
        session continues (the next distributions go through HPKE again).
        """
        for cid, record in self.state.conversations.items():
            if record.state is not None or cid in self._live:
                self._engine(cid).restored()
        self.state.sessions.restored()
        self._dirty = True
        self.save()

    def _prepare(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None,
        to_user: str | None,
    ) -> OutboxItem:
        conversation = self._engine(cid)
        conversation.set_retention(self._retention_state()[0])
        record = self._record(cid)
        if timers is None and self._enforce_policy and self.policy.max_expiry_s is not None:
            # Receipts and controls too: under an expiry limit every envelope expires.
            timers = self.policy.timers(0, 0)
        if record.private_sends >= MAX_PRIVATE_SENDS:
            conversation.request_rotation()
        for _ in range(2):
            now = self._clock()
            needed = conversation.prekeys_needed(now=now)
            prekeys = self._prekeys(conversation, needed, now) if needed else {}
            try:
                outgoing = conversation.prepare_send(
                    content, now=now, timers=timers, prekeys=prekeys
                )
                break
            except PrekeysRequired:
                conversation = self.refresh(cid)  # the roster moved under us
                conversation.set_retention(self._retention_state()[0])
        else:
            raise MessagingError("could not fetch a prekey for every member device")
        # A new chain reached everyone; then count envelopes only some members can see.
        if outgoing.distributions or to_user is None:
            record.private_sends = 0
        if to_user is not None:
            record.private_sends += 1
        item = OutboxItem(
            conversation_id=cid,
            message_id=outgoing.message_id.hex(),
            envelope=outgoing.envelope,
            chain_id=outgoing.header.chain_id,
            distributions=[d.data for d in outgoing.distributions],
            to_user=to_user,
            content=content.serialize(),
            expires_at=outgoing.header.expires_at,
            burn_after_read_s=outgoing.header.burn_after_read_s,
        )
        record.outbox.append(item)
        if isinstance(content, Text | File | Location):
            header = outgoing.header
            text, attachment, location = _shown(content)
            record.add_history(
                StoredMessage(
                    message_id=item.message_id,
                    sender_user_id=self.info.user_id,
                    sender_device_id=self.info.device_id,
                    text=text,
                    attachment=attachment,
                    location=location,
                    timestamp=header.timestamp,
                    server_time=None,
                    seq=None,
                    expires_at=header.expires_at,
                    burn_after_read_s=header.burn_after_read_s,
                    outgoing=True,
                )
            )
        self._dirty = True
        return item

    def _prekeys(
        self, conversation: Conversation, needed: list[Address], now: int
    ) -> dict[Address, PrekeyCertificate]:
        """One prekey per device from ``fetch_bundles`` (100 devices a request, the
        requests in flight together), each checked against the member's
        certificate; a prekey that does not verify is dropped. A request sent
        again after a lost connection spends prekeys the first one took: the
        server hands each one-time prekey out once, whoever asks.
        """
        wanted = sorted(set(needed))
        batches = [
            wanted[start : start + BUNDLES_PER_REQUEST]
            for start in range(0, len(wanted), BUNDLES_PER_REQUEST)
        ]
        joined = self._call_many(
            "fetch_bundles",
            [{"devices": [{"user_id": u, "device_id": d} for u, d in b]} for b in batches],
        )
        asked = set(wanted)
        found: dict[Address, PrekeyCertificate] = {}
        for answer in (_shaped(BundlesPart, "fetch_bundles", a) for a in joined):
            for bundle in answer["bundles"]:
                address = (bundle["user_id"], bundle["device_id"])
                member = conversation.members.get(address)
                if address not in asked or member is None:
                    continue
                try:
                    prekey = PrekeyCertificate.parse(b64d(bundle["prekey"], "prekey"))
                    prekey.verify(member.certificate, now=now)
                except (ProtocolError, ClientError):
                    continue
                found[address] = prekey
        return found

    def _deliver(self, item: OutboxItem) -> SentMessage:
        """Distributions first, then the envelope, the same bytes on every retry
        (``outbox.distribute_frames``, ``send_fields``); the answer applied to the record."""
        frames = outbox.distribute_frames(item)
        if frames:
            _shaped(DistributedAnswer, "distribute", self._call("distribute", **frames[0]))
            for distributed in self._call_many("distribute", frames[1:]) if frames[1:] else []:
                _shaped(DistributedAnswer, "distribute", distributed)
            item.distributed = True
        fields = outbox.send_fields(item)
        for attempt in itertools.count():
            try:
                answer = _shaped(SentAnswer, "send", self._call("send", **fields))
                break
            except FrameError as exc:
                delay = outbox.resend_after(exc.code, attempt)
                if delay is None:
                    raise
                time.sleep(delay)
        self._dirty = True
        return outbox.confirm(self._record(item.conversation_id), item, answer)

    def _refuse_ghosts(self, cid: str, error: FrameError) -> None:
        """Stop when the server insists on devices the verified log does not justify.

        The server accepts a message only when its chain reached the roster;
        a roster holding a device the log refuses (a ghost member, a device
        certified by another identity) can never be satisfied without handing
        it the key. Say so instead of retrying.
        """
        missing = {str(d) for d in (error.details or {}).get("missing") or []}
        ghosts = sorted(a for a in self._refused.get(cid, {}) if a[1] in missing)
        if not ghosts:
            return
        self.save()
        named = ", ".join(
            f"device {d} of {self.name_of(u)} ({self._refused[cid][(u, d)]})" for u, d in ghosts
        )
        raise MessagingError(
            f"not sent: the server requires the key for {named}, which the conversation's"
            " signed membership log does not justify; the message would reach a device"
            " nobody added. Report this to your administrator."
        )

    def _discard(self, item: OutboxItem) -> None:
        """A prepared message that will not be sent as it is: out of the outbox and history.

        If its distributions never reached the server, the sessions they opened
        never reached their devices either: forgotten, so the next distribution
        to those devices opens one again through HPKE. Continued instead, it
        would reach a device that cannot open it, and the chain it carries (and
        the messages on it) would be lost to that device (docs/protocol.md §16.4).
        """
        outbox.withdraw(self._record(item.conversation_id), item)
        if not item.distributed:
            self._unsent(item.distributions)
        self._dirty = True

    def _unsent(self, distributions: Iterable[bytes]) -> None:
        """Forget the send sessions these distributions (which never left) opened."""
        for data in distributions:
            kd = KeyDistribution.parse(data)
            if kd.mode == DistributionMode.PREKEY and kd.session_id != NO_SESSION:
                address = (kd.recipient_user_id, kd.recipient_device_id)
                self.state.sessions.drop_send(address, kd.session_id)
        self._dirty = True

    @_operation
    def flush_outbox(self) -> list[SentMessage]:
        """Send what a previous run prepared but could not confirm (same bytes).

        A message is never dropped without a word (``outbox.refused``): refused
        because the roster moved, it is prepared again for the new roster and
        sent; refused for a reason that may pass (rate limit, server error), it
        stays for the next run; refused for good or expired, a notice names it.
        """
        sent: list[SentMessage] = []
        if self._flushing:
            return sent
        self._flushing = True
        try:
            self._flush(sent)
        finally:
            self._flushing = False
        return sent

    def _flush(self, sent: list[SentMessage]) -> None:
        for item in list(self.state.outbox):
            if outbox.expired(item, self._clock()):
                self._discard(item)
                self._notices.append(outbox.unsent_notice(item, Then.EXPIRED))
                continue
            try:
                sent.append(self._deliver(item))
            except FrameError as exc:
                now = self._clock()
                decision = self._refusal(item, exc, Mode.FLUSH, 0, now)
                if decision.then is Then.KEEP:
                    raise  # the next command sends the same bytes
                if decision.then is Then.AGAIN:
                    sent.append(self._send_again(item, exc, decision, now))
                else:
                    notice = outbox.unsent_notice(item, decision.then, exc.code, str(exc))
                    self._notices.append(notice)

    def _send_again(
        self, item: OutboxItem, exc: FrameError, decision: outbox.Decision, now: int
    ) -> SentMessage:
        """A flushed message prepared anew (a new chain, the roster as it is now) and sent.
        It is off the outbox: whatever stops it now, a notice names it."""
        cid = item.conversation_id
        try:
            if decision.roster_moved:
                self._repair(cid, exc)
            timers, content = outbox.timers_left(item, now), parse_content(item.content)
            return self.send(cid, content, timers=timers, to_user=item.to_user, files=item.files)
        except (ClientError, ProtocolError) as failed:
            code = failed.code if isinstance(failed, FrameError | ProtocolError) else "not_sent"
            self._notices.append(outbox.unsent_notice(item, Then.REFUSED, code, str(failed)))
            raise

    # -- receiving -------------------------------------------------------------------

    @_owing
    @_until_done
    @_operation
    def sync(self, *, read: bool = False) -> list[Event]:
        """Everything missed, page by page: process, save, then acknowledge.

        ``read=True``: the caller displays the messages now (receipts say "read",
        burn-on-read clocks start); otherwise receipts say "delivered".
        """
        self._needs_sync = False
        self._ensure_policy()
        self.flush_outbox()
        events: list[Event] = []
        try:
            return self._sync_pages(events, read=read)
        except BaseException:
            self._owed[:0] = events  # the pages already saved
            raise

    def _sync_pages(self, events: list[Event], *, read: bool) -> list[Event]:
        # The server's continuation: the next page reads on from where this one stopped.
        resume: dict[str, Any] = {}
        while True:
            try:
                parts = [_shaped(SyncPart, "sync", p) for p in self._call_parts("sync", **resume)]
            except FrameError as exc:
                if not resume or exc.code != "bad_request":
                    raise
                # A token this server no longer takes (a new version deployed mid-sync):
                # start from the cursors, which never skips anything.
                resume = {}
                continue
            token = parts[-1].get("resume")
            resume = {} if token is None else {"resume": token}
            # _receive reads the (checked) items as plain dicts.
            mail = cast("list[dict[str, Any]]", [m for p in parts for m in p["mail"]])
            messages = cast("list[dict[str, Any]]", [m for p in parts for m in p["messages"]])
            more = any(p["more"] for p in parts)
            # The server's own extension: the last seq it scanned per conversation (its
            # sender's own messages and expired ones are skipped, so seqs have gaps).
            through: dict[str, int] = {}
            for part in parts:
                for cid, seq in part["through"].items():
                    through[cid] = max(through.get(cid, 0), seq)
            rosters = {cid: version for part in parts for cid, version in part["rosters"].items()}
            events += self._roster_moved(rosters)
            events += self._receive(mail, messages, read=read, complete=not more, through=through)
            if not more:
                return events + self_sync.settle(self)

    def _roster_moved(self, rosters: dict[str, int]) -> list[Event]:
        """Verify again the membership of known conversations whose roster moved meanwhile.

        Pushes tell an online device; a device that was away hears of a join,
        a leave or a new device here, from the verified log, before it reads
        the messages that followed.
        """
        events: list[Event] = []
        for cid, version in rosters.items():
            record = self.state.conversations.get(cid)
            if record is None or record.left or version == record.roster_version:
                continue
            if record.state is None and cid not in self._live:
                continue  # never verified here: the first message's refresh verifies it
            try:
                self.refresh(cid)
            except MessagingError as exc:
                events.append(NoticeEvent(cid, "bad_membership_log", str(exc)))
            except FrameError as exc:
                events.append(
                    NoticeEvent(cid, exc.code, f"could not read the membership log: {exc}")
                )
        return events + self._drain_notices()

    @_owing
    def poll(self, timeout: float, *, read: bool = False) -> list[Event]:
        """Wait up to ``timeout`` s for pushes (unlocked); process every one that is waiting.

        A lost connection is reopened and followed by a sync; a gap in a
        conversation's seqs is filled by a sync.
        """
        if self._needs_sync:
            return self.sync(read=read)
        try:
            first = self.session.next_push(timeout)
        except ConnectionLost:
            self._reconnect()
            return self.sync(read=read)
        if first is None:
            with self.operation():
                self.purge()
            return []
        frames = [first]
        with contextlib.suppress(ConnectionLost):
            while (frame := self.session.next_push(0)) is not None:
                frames.append(frame)
        with self.operation():
            return self._process_pushes(frames, read=read)

    def _process_pushes(self, frames: list[dict[str, Any]], *, read: bool) -> list[Event]:
        frames = self._checked_pushes(frames)
        mail = [f for f in frames if f.get("action") == "mail"]
        messages, gap = delivery.following(
            (f for f in frames if f.get("action") == "message"), self.state.conversations
        )
        for frame in frames:
            if frame.get("action") == "policy":
                self._set_policy(frame)
        if any(f.get("action") == "prekeys_low" for f in frames):
            # Replenishing reconnects if the socket just closed; if it still fails, listening
            # goes on (the server says prekeys_low again when the count drops further).
            with contextlib.suppress(ClientError):
                self.replenish_prekeys()
        events: list[Event] = []
        for frame in frames:
            if frame.get("action") == "membership":
                events += self._membership(frame)
        try:
            events += self._receive(mail, messages, read=read, complete=False) if frames else []
            if mail or messages:
                events += self_sync.settle(self)  # a device heard from may be owed a snapshot
            return events + self._sync_if_behind(gap=gap, read=read)
        except BaseException:
            self._owed[:0] = events
            raise

    def _sync_if_behind(self, *, gap: bool, read: bool) -> list[Event]:
        records = self.state.conversations.values()
        if delivery.behind(records, gap=gap, needs_sync=self._needs_sync):
            return self.sync(read=read)
        return []

    def _checked_pushes(self, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each push of a known action checked against its shape (``sotto.frames.answers``);
        a malformed one is dropped, and a sync fetches what it may have announced."""
        checked: list[dict[str, Any]] = []
        for frame in frames:
            shape = answers.PUSHES.get(str(frame.get("action")))
            if shape is None:
                checked.append(frame)  # not one of ours to check: handled (or ignored) below
                continue
            try:
                checked.append(answers.parse(shape, frame))
            except ShapeError:
                self._needs_sync = True
        return checked

    def listen(self, *, read: bool = True, poll_s: float = 1.0) -> Iterator[Event]:
        """Sync, then yield events as they arrive, until the caller stops iterating."""
        yield from self.sync(read=read)
        while True:
            yield from self.poll(poll_s, read=read)

    def _receive(
        self,
        mail: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        *,
        read: bool,
        complete: bool,
        through: dict[str, int] | None = None,
    ) -> list[Event]:
        batch = _Batch([], [], [], {}, complete=complete)
        highest: dict[str, int] = {}
        for is_message, item in delivery.receive_order(mail, messages):
            try:
                if is_message:
                    self._message_item(item, batch, read=read, highest=highest)
                else:
                    self._mail_item(item, batch, read=read)
            except TrustError as exc:
                cid = str(item.get("conversation_id"))
                batch.events.append(NoticeEvent(cid, "identity_changed", str(exc)))
                seq = item.get("seq")
                if is_message and isinstance(seq, int):
                    data = b64d(item.get("envelope"), "envelope")
                    inbox.untrusted(self._record(cid), data, delivery.server_time(item), seq)
        for cid, seq in (through or {}).items():
            if cid in self.state.conversations:
                self.state.conversations[cid].advance(seq)
        self._retry_held(batch, read=read)
        if complete:
            for cid, record in list(self.state.conversations.items()):
                if any(p.waiting for p in record.pending):
                    # The sync is complete and the key did not come: stop waiting for it,
                    # and show what waited behind it.
                    self._retry_pending(cid, batch, read=read, give_up=True)
                record.settle(highest.get(cid, record.cursor))
        batch.events += self._drain_notices()
        receipts = self._prepare_receipts(batch, read=read)
        self.save()  # before anything is acknowledged or sent
        try:
            for receipt in receipts:
                with contextlib.suppress(FrameError):
                    self._deliver(receipt)
            self._redistribute(batch)
            self._ask_again(batch)
            self._ack(batch)
        except BaseException:
            self._owed[:0] = batch.events  # saved: owed to the caller, not to be shown again
            raise
        return batch.events

    def _ack(self, batch: _Batch) -> None:
        cursors = {
            cid: r.cursor for cid, r in self.state.conversations.items() if r.cursor > r.acked
        }
        frames = delivery.ack_frames(cursors, batch.mail_ids, batch.read)
        if not frames:
            return
        for fields in frames:
            _shaped(AckedAnswer, "ack", self._call("ack", **fields))
        for cid, cursor in cursors.items():
            self.state.conversations[cid].acked = cursor
        self._dirty = True

    def _mail_item(self, item: dict[str, Any], batch: _Batch, *, read: bool) -> None:
        mail_id = str(item.get("mail_id"))
        if mail_id in self.state.seen_mail:
            batch.mail_ids.append(mail_id)  # acknowledged before? then again: it is harmless
            return
        self.state.remember_mail(mail_id)
        batch.mail_ids.append(mail_id)
        self._dirty = True
        cid = str(item.get("conversation_id"))
        data = b64d(item.get("data"), "mail data")
        server_time = delivery.server_time(item)
        if item.get("kind") == "distribution":
            self._distribution(cid, data, batch, read=read)
        else:
            self._envelope(cid, data, server_time, None, batch, read=read)

    def _distribution(
        self, cid: str, data: bytes, batch: _Batch, *, read: bool, final: bool = False
    ) -> None:
        """Install a key distribution; what one that fails means is ``inbox.key_failed``
        (``final``: the last try after a complete sync)."""
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                conversation.receive_distribution(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)  # a device we have not seen yet
                conversation.receive_distribution(data, now=now)
        except ProtocolError as exc:
            decision = inbox.key_failed(cid, exc, inbox.header(data), final=final)
            if decision.then is Key.HOLD:
                # Kept for the session's opener, later in this batch or in the sync a lost
                # push starts: _retry_held tries it again, and asks only after a complete
                # sync (its last round's failures; a complete sync's are all kept till then).
                held = inbox.hold(self._record(cid), data, capped=not batch.complete)
                self._dirty = self._dirty or held
            elif decision.then is Key.ASK and decision.sender is not None:
                batch.asks.append((cid, decision.sender, decision.session_id))
            elif decision.notice is not None:
                batch.events.append(decision.notice)
            return
        self._retry_pending(cid, batch, read=read)

    def _retry_held(self, batch: _Batch, *, read: bool) -> None:
        """Open the distributions kept for a session this device did not hold yet, in the
        rounds ``inbox.held_rounds`` says; the last round's failures are asked for."""
        for final in inbox.held_rounds(self.state.conversations, complete=batch.complete):
            for cid, record in list(self.state.conversations.items()):
                held, record.held_keys = record.held_keys, []
                for data in held:
                    self._dirty = True
                    self._distribution(cid, data, batch, read=read, final=final)

    def _ask_again(self, batch: _Batch) -> None:
        """Send each redistribution request, once per sender device and ten minutes."""
        now = self._clock()
        for cid, sender, session_id in batch.asks:
            if not self._asked.due(cid, sender, now):
                continue
            try:
                request = self._engine(cid).redistribution_request(sender, session_id)
                self.send(cid, request, to_user=sender[0])
            except (ProtocolError, ClientError) as exc:
                batch.events.append(
                    NoticeEvent(cid, "redistribution", f"could not ask {sender[1]} again: {exc}")
                )

    def _redistribute(self, batch: _Batch) -> None:
        """Answer devices that asked for this device's chain: one distribution each."""
        for cid, conversation in list(self._live.items()):
            asked = conversation.redistribution_requests
            chain_id = conversation.sender_chain_id
            if not asked or chain_id is None:
                continue
            now = self._clock()
            unsent: list[bytes] = []
            try:
                prekeys = self._prekeys(conversation, list(asked), now)
                for address in asked:
                    with contextlib.suppress(ProtocolError):  # no prekey: it asks again later
                        unsent.append(
                            conversation.redistribute(address, prekeys.get(address), now=now).data
                        )
                self.save()  # the sessions advanced: before anything leaves
                while unsent:
                    chunk = unsent[:DISTRIBUTIONS_PER_FRAME]
                    self._call(
                        "distribute",
                        conversation_id=cid,
                        chain_id=b64e(chain_id),
                        distributions=[b64e(d) for d in chunk],
                    )
                    del unsent[: len(chunk)]
            except ClientError as exc:
                # Those not sent are not asked again until their devices ask: the sessions
                # they opened must not be continued meanwhile.
                self._unsent(unsent)
                batch.events.append(
                    NoticeEvent(cid, "redistribution", f"could not send a key again: {exc}")
                )

    def _retry_pending(self, cid: str, batch: _Batch, *, read: bool, give_up: bool = False) -> None:
        """Open what waited, in the order ``inbox.Retry`` gives, as far as it now opens."""
        retry = inbox.Retry(self._record(cid), give_up=give_up)
        for pending, waiting in retry:
            try:
                parked = self._envelope(
                    cid,
                    pending.envelope,
                    pending.server_time,
                    pending.seq,
                    batch,
                    read=read,
                    waited=True,
                    waiting=waiting,
                )
            except TrustError as exc:
                batch.events.append(NoticeEvent(cid, "identity_changed", str(exc)))
                retry.untrusted(pending)  # until the person accepts or rejects the new key
                continue
            if parked is not None:
                retry.parked(parked)

    def _message_item(
        self, item: dict[str, Any], batch: _Batch, *, read: bool, highest: dict[str, int]
    ) -> None:
        cid, seq = str(item.get("conversation_id")), item.get("seq")
        if not isinstance(seq, int):
            return
        highest[cid] = max(highest.get(cid, 0), seq)
        record = self._record(cid)
        waiting = sum(1 for p in record.pending if p.waiting)
        decision = delivery.arrival(record, seq, waiting)
        if decision is delivery.Arrival.HAD:
            return
        data = b64d(item.get("envelope"), "envelope")
        server_time = delivery.server_time(item)
        if decision is delivery.Arrival.RELEASE:
            # Held back long enough (a long catch-up): stop waiting, show what opens.
            self._retry_pending(cid, batch, read=read, give_up=True)
        if decision is delivery.Arrival.HOLD:
            # An earlier message of this conversation waits for its key: this one is
            # shown after it, not before (kept, and saved before it is acknowledged).
            inbox.park(record, data, server_time, seq, waiting=True)
        else:
            self._envelope(cid, data, server_time, seq, batch, read=read)
        record.mark_seen(seq)
        self._dirty = True

    def _envelope(
        self,
        cid: str,
        data: bytes,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        read: bool,
        waited: bool = False,
        waiting: bool = True,
    ) -> PendingItem | None:
        """Open and show one envelope; what one that does not open means is
        ``inbox.envelope_failed``. Returns the item parked to wait for its chain's key.

        ``waiting``: a parked conversation message holds back the later ones.
        """
        try:
            header = Envelope.parse(data).header
        except ProtocolError as exc:
            failed = inbox.envelope_failed(cid, exc, seq=seq, sender=None, waited=waited)
            return self._unopened(cid, failed, data, server_time, seq, batch, waiting=waiting)
        sender = (header.sender_user_id, header.sender_device_id)
        if sender == self.local.address:
            return None  # our own: its plaintext was kept when it was sent
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                received = conversation.receive_envelope(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)
                received = conversation.receive_envelope(data, now=now)
        except ProtocolError as exc:
            failed = inbox.envelope_failed(cid, exc, seq=seq, sender=sender, waited=waited)
            return self._unopened(cid, failed, data, server_time, seq, batch, waiting=waiting)
        self._deliver_content(cid, received, server_time, seq, batch, read=read)
        return None

    def _unopened(
        self,
        cid: str,
        failed: inbox.Unopened,
        data: bytes,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        waiting: bool,
    ) -> PendingItem | None:
        if failed.then is Opened.PARK:
            return inbox.park(self._record(cid), data, server_time, seq, waiting=waiting)
        if failed.notice is not None:
            batch.events.append(failed.notice)
        return None

    def _deliver_content(
        self,
        cid: str,
        received: Received,
        server_time: int,
        seq: int | None,
        batch: _Batch,
        *,
        read: bool,
    ) -> None:
        record = self._record(cid)
        user_id, device_id = received.sender
        content, header = received.content, received.header
        name = self.display_name(record)
        if isinstance(content, Receipt):
            ids, seqs = inbox.apply_receipt(record, user_id, content)
            if ids:
                kind = "read" if content.kind == Receipt.READ else "delivered"
                who = self.name_of(user_id)
                batch.events.append(
                    ReceiptEvent(cid, name, user_id, device_id, kind, ids, seqs, sender=who)
                )
            return
        if isinstance(content, Control) and content.kind == Control.REDISTRIBUTE:
            return  # the engine took it: this device answers in _redistribute
        if isinstance(content, Control) and content.kind == ROOM_PROFILE:
            self._room_profile(record, content, received, batch)
            return
        if isinstance(content, Control) and content.kind == Control.DEVICE_SYNC:
            batch.events += self_sync.received(self, cid, content, received)
            return  # contacts and labels: not a message, no receipt
        if not isinstance(content, Text | File | Location):
            batch.events.append(
                NoticeEvent(cid, "unsupported", f"a {type(content).__name__} message (not shown)")
            )
            return
        now = self._clock()
        text, attachment, location = _shown(content)
        stored = StoredMessage(
            message_id=header.message_id.hex(),
            sender_user_id=user_id,
            sender_device_id=device_id,
            text=text,
            attachment=attachment,
            location=location,
            timestamp=header.timestamp,
            server_time=server_time,
            seq=seq,
            expires_at=header.expires_at,
            burn_after_read_s=header.burn_after_read_s,
            outgoing=user_id == self.info.user_id,
            first_read_at=now if read else None,
        )
        record.add_history(stored)
        batch.events.append(
            MessageEvent(
                conversation_id=cid,
                conversation=name,
                seq=seq,
                sender_user_id=user_id,
                sender_device_id=device_id,
                text=text,
                message_id=stored.message_id,
                attachment=None if attachment is None else files.public_attachment(attachment),
                location=location,
                timestamp=header.timestamp,
                server_time=server_time,
                expires_at=header.expires_at,
                burn_after_read_s=header.burn_after_read_s,
                outgoing=stored.outgoing,
                sender=self.name_of(user_id),
            )
        )
        if user_id == self.info.user_id:
            return  # our own other device: no receipts to ourselves
        batch.delivered.setdefault((cid, user_id), []).append(header.message_id)
        if read and header.burn_after_read_s and seq is not None:
            batch.read.append({"conversation_id": cid, "seq": seq})

    def _room_profile(
        self, record: ConversationRecord, content: Control, received: Received, batch: _Batch
    ) -> None:
        try:
            profile = RoomProfile.from_control(content)
        except ProtocolError as exc:
            batch.events.append(
                NoticeEvent(record.conversation_id, exc.code, f"a bad room profile: {exc}")
            )
            return
        if received.header.timestamp < record.profile_at:
            return  # an older profile arriving late
        record.room_name, record.topic = profile.name, profile.topic
        record.profile_at = received.header.timestamp
        self._dirty = True
        who = self.name_of(received.sender[0])
        topic = f" (topic: {profile.topic})" if profile.topic else ""
        batch.events.append(
            NoticeEvent(
                record.conversation_id,
                "room_profile",
                f"{who} named the room {profile.name}{topic}",
            )
        )

    def _membership(self, frame: dict[str, Any]) -> list[Event]:
        """A ``membership`` push: the log moved; what changed is read from the verified log.

        The push's own words (who, what) are the server's and are not shown:
        the notices come from the operations that verify. A push saying this
        user was removed or left ends the conversation here (the server can
        deny service anyway; it gains nothing it could not have by silence).
        """
        cid = str(frame.get("conversation_id"))
        users = [str(u) for u in frame.get("users") or []]
        change = str(frame.get("change"))
        record = self._record(cid, kind=str(frame.get("kind") or "room"))
        if self.info.user_id in users and change in ("removed", "left"):
            record.left = True
            self._live.pop(cid, None)
            record.state = None
            self._refused.pop(cid, None)
            self._dirty = True
            verb = "left" if change == "left" else "were removed from"
            return [NoticeEvent(cid, "membership", f"you {verb} {self.display_name(record)}")]
        if self.info.user_id in users and change == "added":
            record.left = False
        try:
            self.refresh(cid)
        except MessagingError as exc:
            return [NoticeEvent(cid, "bad_membership_log", str(exc))]
        except FrameError as exc:
            return [NoticeEvent(cid, exc.code, f"could not read the membership log: {exc}")]
        return self._drain_notices()

    def _prepare_receipts(self, batch: _Batch, *, read: bool) -> list[OutboxItem]:
        if not self.policy.receipts(self._receipts):
            return []
        items = []
        for cid, user_id, content in inbox.receipt_contents(batch.delivered, read=read):
            try:
                items.append(self._prepare(cid, content, timers=None, to_user=user_id))
            except (ClientError, ProtocolError) as exc:
                batch.events.append(NoticeEvent(cid, "receipt", f"receipt not sent: {exc}"))
        return items

    @_operation
    def mark_read(self, events: list[Event]) -> None:
        """The person has now seen these messages: read receipts, burn clocks start."""
        batch = _Batch([], [], [], {})
        now = self._clock()
        for event in events:
            if not isinstance(event, MessageEvent) or event.outgoing:
                continue
            record = self._record(event.conversation_id)
            for stored in record.history:
                if stored.message_id == event.message_id and stored.first_read_at is None:
                    stored.first_read_at = now
            batch.delivered.setdefault((event.conversation_id, event.sender_user_id), []).append(
                bytes.fromhex(event.message_id)
            )
            if event.burn_after_read_s and event.seq is not None:
                batch.read.append({"conversation_id": event.conversation_id, "seq": event.seq})
        receipts = self._prepare_receipts(batch, read=True)
        self.save()
        for item in receipts:
            with contextlib.suppress(FrameError):
                self._deliver(item)
        self._ack(batch)

    def purge(self) -> bool:
        """Delete local plaintext past its deadline (expiry, or burn after first read)."""
        now, changed = self._clock(), False
        for record in self.state.conversations.values():
            kept = [m for m in record.history if (m.delete_at() or now + 1) > now]
            if len(kept) != len(record.history):
                record.history, changed = kept, True
            live = [p for p in record.pending if not inbox.expired(p.envelope, now)]
            if len(live) != len(record.pending):
                record.pending, changed = live, True
        before = len(self.state.sessions)
        self.state.sessions.prune(now=now)
        changed = changed or len(self.state.sessions) != before
        self._dirty = self._dirty or changed
        return changed

    # -- prekeys and trust -----------------------------------------------------------

    @_operation
    def replenish_prekeys(self) -> None:
        """Top up one-time prekeys (private halves saved before publishing).

        A socket that closed meanwhile (a ``prekeys_low`` push is often the last
        thing a dying socket brought) is reopened once, as every other call is.
        """
        try:
            self._replenish_prekeys()
        except ConnectionLost:
            self._reconnect()
            self._replenish_prekeys()

    def _replenish_prekeys(self) -> None:
        session = self.session
        if not isinstance(session, Session):
            return
        status = prekey_status(session)
        signed, one_time = plan_replenish(
            self.keys.device, status, through=self.keys.published_through, now=self._clock()
        )
        if signed is None and not one_time:
            return
        self.save()
        published = publish_prekeys(
            session, signed=signed, one_time=one_time, through=self.keys.published_through
        )
        self.keys.published_through = published.through
        self.save()

    def _presented(self, user_id: str) -> IdentityPublicKey:
        return _identity(self._ask(DevicesPart, "list_devices", user_id=user_id)["identity_key"])

    def safety(self, user_id: str) -> SafetyReport:
        return self._report(user_id, self._presented(user_id))

    def _report(self, user_id: str, presented: IdentityPublicKey) -> SafetyReport:
        known = self.state.tracker.get(user_id)
        changed = known is not None and known.fingerprint != presented.fingerprint
        number = safety_number(self.info.user_id, self.local.identity, user_id, presented)
        return SafetyReport(
            user_id=user_id,
            safety_number=number,
            fingerprint=presented.fingerprint.hex(),
            known=known is not None,
            verified=bool(known and known.verified and not changed),
            changed=changed,
        )

    @_operation
    def verify(
        self, user_id: str, *, confirm: bool = False, accept_change: bool = False
    ) -> SafetyReport:
        """Show the safety number; ``confirm`` marks it compared; ``accept_change`` takes a
        changed key (unverified) and drops the old key's devices from every conversation.
        """
        presented = self._presented(user_id)
        report = self._report(user_id, presented)
        if report.changed:
            if not accept_change:
                if confirm:
                    raise TrustError(user_id, self.name_of(user_id))
                return report
            self._forget_user(user_id)
            self.state.tracker.accept_change(user_id, presented)
        elif not (confirm or accept_change):
            return report
        else:
            self.state.tracker.check(user_id, presented)
        if confirm:
            self.state.tracker.mark_verified(user_id, presented)
        self._dirty = True
        self.save()
        return self._report(user_id, presented)

    def _forget_user(self, user_id: str) -> None:
        """Remove a user's devices from stored states (they name the identity being replaced)."""
        for cid, record in self.state.conversations.items():
            if record.state is None:
                continue
            self._live.pop(cid, None)
            scratch = LocalDevice(self.local.secrets, self.local.identity, IdentityTracker())
            old = Conversation.parse(record.state, scratch)
            kept = [m for a, m in old.members.items() if a[0] != user_id and a != scratch.address]
            old.set_members(kept, now=self._clock())
            record.state = old.serialize()


def _shown(
    content: Text | File | Location,
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """A content's history text, and the file or location it carries."""
    if isinstance(content, File):
        return files.file_text(content), files.attachment_record(content), None
    if isinstance(content, Location):
        place = files.location_record(content.latitude_e7, content.longitude_e7, content.label)
        return files.location_text(place), None, place
    return content.text, None, None


def _identity(raw: object) -> IdentityPublicKey:
    try:
        return IdentityPublicKey.parse(b64d(raw, "identity key"))
    except ProtocolError as exc:
        raise ClientError(f"server sent a malformed identity key: {exc}") from None


def _keys_digest(keys: DeviceKeys) -> bytes:
    return hashlib.sha256(
        keys.device.serialize() + keys.published_through.to_bytes(4, "big")
    ).digest()


S = TypeVar("S")


def _shaped(shape: type[S], action: str, frame: Mapping[str, Any]) -> S:
    """An answer as its shape (``sotto.frames.answers``), or ``MalformedFrame``."""
    return shaped(shape, action, frame)
