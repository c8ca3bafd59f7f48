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
  the message id. ``stale_devices`` drops it, refreshes the roster, rotates
  the chain and prepares again (at most ``MAX_SEND_ATTEMPTS`` times).
* **The server's copy and the cursor are the truth.** Pushes are processed
  as they come but de-duplicated by seq and mail id; the cursor acknowledged
  is the highest seq with nothing missing below it, and a gap starts a sync.
  Mail and messages are processed merged in server order (§14.5).
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.content import Content, Control, Receipt, Text
from sotto.protocol.conversation import (
    Address,
    Conversation,
    LocalDevice,
    Member,
    MessageTimers,
    Received,
)
from sotto.protocol.envelope import Envelope
from sotto.protocol.errors import (
    IdentityChanged,
    MessageExpired,
    PrekeysRequired,
    ProtocolError,
    ReplayedMessage,
    UnknownChain,
    UnknownSender,
)
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.room import ROOM_PROFILE, RoomProfile
from sotto.protocol.safety import IdentityTracker, safety_number

from .encoding import b64d, b64e
from .errors import ClientError, ConnectionLost, FrameError, MessagingError, TrustError
from .events import Event, MessageEvent, NoticeEvent, ReceiptEvent
from .prekeys import now_ms, plan_replenish, prekey_status, publish_prekeys
from .profile import DeviceKeys, Profile, ProfileInfo
from .session import Session, join_parts
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
DISTRIBUTIONS_PER_FRAME = 40  # docs/api.md: at most 40 per distribute frame
BUNDLES_PER_REQUEST = 100  # docs/api.md: at most 100 devices per fetch_bundles
ROOM_CREATE_MEMBERS = 31  # docs/api.md: members named at creation, besides the creator
ROOM_ADD_MEMBERS = 32  # ...and per add_members / remove_members
MAX_SEND_ATTEMPTS = 3  # stale_devices repairs before giving up
MAX_RECONNECTS = 3  # per request: a lost connection is retried on a new one
# Envelopes to one user skip an iteration for every other member; rotate before the
# receivers' 256-step skip limit (docs/protocol.md §6) could be reached.
MAX_PRIVATE_SENDS = 128


class SessionLike(Protocol):
    """What a Messenger needs from ``Session`` (tests supply an in-memory one)."""

    def request(self, action: str, **fields: Any) -> dict[str, Any]: ...

    def request_parts(self, action: str, **fields: Any) -> list[dict[str, Any]]: ...

    def next_push(self, timeout: float) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SentMessage:
    conversation_id: str
    message_id: str
    seq: int
    server_time: int
    delete_at: int | None


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


def _operation(
    method: Callable[Concatenate[Messenger, P], T],
) -> Callable[Concatenate[Messenger, P], T]:
    """Run a Messenger method as one ``operation`` (locked, refreshed, saved)."""

    def run(self: Messenger, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.operation():
            return method(self, *args, **kwargs)

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
        self._session: SessionLike | None = None
        self._identity = identity
        self._vault = profile.unlock(passphrase)
        self._store = MessagingStore(self._vault)
        self._depth = 0
        with self._vault.lock():
            self.state = self._store.load()
            self._keys_written = _keys_digest(keys)
        self.local = LocalDevice(keys.device, identity, self.state.tracker)
        self._live: dict[str, Conversation] = {}
        self._touched: set[str] = set()
        self._dirty = False
        # A Messenger just opened has missed what arrived while it was closed:
        # its first poll syncs before it hands out any push.
        self._needs_sync = True

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
        if rebuild or self.state.tracker is not tracker:
            # Engines hold the device and its tracker: parse them again on use.
            self.local = LocalDevice(self.keys.device, self._identity, self.state.tracker)
            self._live.clear()
        for cid in changed:
            self._live.pop(cid, None)

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
        self._session = None

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

    # -- conversations ---------------------------------------------------------------

    def resolve_user(self, text: str) -> str:
        """A contact's handle (``sotto contacts``) or a user id."""
        return self.state.contacts.get(text.removeprefix("@"), text.removeprefix("@"))

    def name_of(self, user_id: str) -> str:
        for handle, known in self.state.contacts.items():
            if known == user_id:
                return handle
        return "you" if user_id == self.info.user_id else user_id

    @_operation
    def add_contact(self, handle: str, user_id: str) -> None:
        self.state.contacts[handle.removeprefix("@")] = user_id
        self._dirty = True

    def resolve(self, target: str) -> str:
        """``#room`` (a local label), or a user (handle or id): the conversation id."""
        if target.startswith("#"):
            record = self.state.room(target[1:])
            if record is None:
                raise MessagingError(f"no room named {target!r} on this device")
            return record.conversation_id
        if target in self.state.conversations:
            return target
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
        try:
            return self.direct(user_id)
        except FrameError as exc:
            if exc.code not in ("not_found", "bad_request"):
                raise
            self.conversations()  # perhaps a conversation id this device has not seen yet
            if target in self.state.conversations:
                return target
            raise MessagingError(f"no user or conversation {target!r}") from None

    @_operation
    def direct(self, user_id: str) -> str:
        answer = self._call("create_conversation", kind="direct", user_id=user_id)
        conversation = self._conversation_frame(answer)
        record = self._record(conversation["conversation_id"], kind="direct")
        record.peer = user_id
        return record.conversation_id

    @_operation
    def create_room(self, label: str, user_ids: list[str]) -> str:
        """Create a room (this user its moderator) with any number of members.

        The server takes 31 members at creation and 32 per addition; larger
        rooms are created, then grown, in as many calls as that takes.
        """
        label = label.removeprefix("#")
        if not label or self.state.room(label) is not None:
            raise MessagingError(f"a room named #{label} already exists on this device")
        members = sorted(set(user_ids) - {self.info.user_id})
        first, rest = members[:ROOM_CREATE_MEMBERS], members[ROOM_CREATE_MEMBERS:]
        answer = self._call("create_conversation", retry=False, kind="room", members=first)
        conversation = self._conversation_frame(answer)
        record = self._record(conversation["conversation_id"], kind="room")
        record.label = label
        self._dirty = True
        self.save()
        for start in range(0, len(rest), ROOM_ADD_MEMBERS):
            batch = rest[start : start + ROOM_ADD_MEMBERS]
            self._call("add_members", conversation_id=record.conversation_id, user_ids=batch)
        return record.conversation_id

    @_operation
    def add_members(self, target: str, user_ids: list[str]) -> None:
        cid = self.resolve(target)
        wanted = sorted(set(user_ids))
        for start in range(0, len(wanted), ROOM_ADD_MEMBERS):
            batch = wanted[start : start + ROOM_ADD_MEMBERS]
            self._call("add_members", conversation_id=cid, user_ids=batch)
        self.refresh(cid)  # the next send rotates to the new roster
        record = self._record(cid)
        if record.room_name:
            # Newcomers see nothing sent before they joined: tell them the room's name.
            self.send(cid, RoomProfile(record.room_name, record.topic).to_control())
        self.save()

    @_operation
    def remove_members(self, target: str, user_ids: list[str]) -> None:
        """Remove members (moderators only); every sender rotates before its next message."""
        cid = self.resolve(target)
        wanted = sorted(set(user_ids))
        for start in range(0, len(wanted), ROOM_ADD_MEMBERS):
            batch = wanted[start : start + ROOM_ADD_MEMBERS]
            self._call("remove_members", conversation_id=cid, user_ids=batch)
        self.refresh(cid)
        self._engine(cid).request_rotation()
        self.save()

    @_operation
    def leave(self, target: str) -> None:
        cid = self.resolve(target)
        self._call("leave", conversation_id=cid)
        record = self._record(cid)
        record.left = True
        self._live.pop(cid, None)
        record.state = None  # its chain keys serve nobody now
        self._dirty = True
        self.save()

    @_operation
    def set_role(self, target: str, user_id: str, role: str) -> None:
        cid = self.resolve(target)
        self._call("set_role", conversation_id=cid, user_id=user_id, role=role)

    def members(self, target: str) -> list[dict[str, Any]]:
        """The room's members as the server lists them, with their roles and device counts."""
        cid = self.resolve(target)
        answer = self._call("conversation_devices", conversation_id=cid)
        devices: dict[str, int] = {}
        for device in answer.get("devices") or []:
            user_id = str(device.get("user_id"))
            devices[user_id] = devices.get(user_id, 0) + 1
        return [
            {
                "user_id": str(m.get("user_id")),
                "name": self.name_of(str(m.get("user_id"))),
                "role": str(m.get("role")),
                "devices": devices.get(str(m.get("user_id")), 0),
            }
            for m in answer.get("members") or []
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
        """Name a room someone else created (labels never leave this device)."""
        label = label.removeprefix("#")
        existing = self.state.room(label)
        if existing is not None and existing.conversation_id != conversation_id:
            raise MessagingError(f"#{label} already names another room")
        self._record(conversation_id).label = label
        self._dirty = True

    @_operation
    def conversations(self) -> list[dict[str, Any]]:
        """The server's list, with this device's labels and last local message."""
        listed = self._call_parts("list_conversations")
        rows: list[dict[str, Any]] = []
        for part in listed:
            for item in part.get("conversations") or []:
                cid = str(item.get("conversation_id"))
                record = self._record(cid, kind=str(item.get("kind") or "room"))
                last = record.history[-1] if record.history else None
                rows.append(
                    {
                        "conversation_id": cid,
                        "kind": record.kind,
                        "name": self.display_name(record),
                        "role": item.get("role"),
                        "members": item.get("member_count"),
                        "last_seq": item.get("last_seq"),
                        "read_through": record.cursor,
                        "last_message": None if last is None else last.text,
                    }
                )
        return rows

    def display_name(self, record: ConversationRecord) -> str:
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

    def _conversation_frame(self, answer: dict[str, Any]) -> dict[str, Any]:
        conversation = answer.get("conversation")
        if not isinstance(conversation, dict) or not isinstance(
            conversation.get("conversation_id"), str
        ):
            raise ClientError("server sent a malformed conversation answer")
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
        """Fetch the roster, verify every certificate against trusted identities, set members."""
        parts = self._call_parts("conversation_devices", conversation_id=cid)
        now = self._clock()
        identities: dict[str, IdentityPublicKey] = {}
        for part in parts:
            for member in part.get("members") or []:
                user_id = str(member.get("user_id"))
                identity = _identity(member.get("identity_key"))
                if user_id == self.info.user_id and identity != self.local.identity:
                    raise TrustError(user_id, "your own user")
                known = self.state.tracker.get(user_id)
                if known is not None and known.fingerprint != identity.fingerprint:
                    raise TrustError(user_id, self.name_of(user_id))
                identities[user_id] = identity
        members: list[Member] = []
        for part in parts:
            for device in part.get("devices") or []:
                member = self._member(device, identities, now)
                if member is not None and member.address != self.local.address:
                    members.append(member)
        record = self._record(cid)
        others = sorted(u for u in identities if u != self.info.user_id)
        if record.kind == "unknown":
            record.kind = "room" if not cid.startswith("dm-") else "direct"
        if record.kind == "direct" and len(others) == 1:
            record.peer = others[0]
        conversation = self._live.get(cid)
        try:
            if conversation is None and record.state is not None:
                conversation = self._engine(cid)
            if conversation is None:
                conversation = Conversation.create(cid, self.local, members, now=now)
            else:
                conversation.set_members(members, now=now)
        except IdentityChanged as exc:
            raise TrustError(exc.user_id, self.name_of(exc.user_id)) from None
        self._live[cid] = conversation
        self._dirty = True
        return conversation

    def _member(
        self, device: dict[str, Any], identities: dict[str, IdentityPublicKey], now: int
    ) -> Member | None:
        user_id, device_id = str(device.get("user_id")), str(device.get("device_id"))
        identity = identities.get(user_id)
        if identity is None:
            return None
        try:
            certificate = DeviceCertificate.parse(b64d(device.get("certificate"), "certificate"))
            if (certificate.user_id, certificate.device_id) != (user_id, device_id):
                return None
            certificate.verify(identity, now=now)
        except (ProtocolError, ClientError):
            return None  # never a recipient; the server will call it missing, and we refuse
        return Member(certificate, identity)

    # -- sending ---------------------------------------------------------------------

    def send_text(
        self, target: str, text: str, *, expires_s: int = 0, burn_s: int = 0
    ) -> SentMessage:
        cid = self.resolve(target)
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
    ) -> SentMessage:
        """Prepare, save, distribute (if the chain is new), send; repair stale rosters."""
        for attempt in range(MAX_SEND_ATTEMPTS):
            item = self._prepare(cid, content, timers=timers, to_user=to_user)
            self.save()
            try:
                return self._deliver(item)
            except FrameError as exc:
                self._record(cid).outbox.remove(item)
                self._forget_sent(cid, item.message_id)
                # A distribution to a device the server no longer lists is refused outright
                # (invalid_envelope): the same repair as stale_devices.
                repairable = exc.code == "stale_devices" or exc.action == "distribute"
                if not repairable or attempt == MAX_SEND_ATTEMPTS - 1:
                    self.save()
                    raise
                self.refresh(cid)
                self._engine(cid).request_rotation()
        raise AssertionError("unreachable")

    def _prepare(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None,
        to_user: str | None,
    ) -> OutboxItem:
        conversation = self._engine(cid)
        record = self._record(cid)
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
        )
        record.outbox.append(item)
        if isinstance(content, Text):
            header = outgoing.header
            record.add_history(
                StoredMessage(
                    message_id=item.message_id,
                    sender_user_id=self.info.user_id,
                    sender_device_id=self.info.device_id,
                    text=content.text,
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
        """One prekey per device from ``fetch_bundles`` (100 devices a request), each
        checked against the member's certificate; a prekey that does not verify is dropped.
        """
        wanted = sorted(set(needed))
        found: dict[Address, PrekeyCertificate] = {}
        for start in range(0, len(wanted), BUNDLES_PER_REQUEST):
            batch = wanted[start : start + BUNDLES_PER_REQUEST]
            answer = self._call(
                "fetch_bundles", devices=[{"user_id": u, "device_id": d} for u, d in batch]
            )
            for bundle in answer.get("bundles") or []:
                address = (str(bundle.get("user_id")), str(bundle.get("device_id")))
                member = conversation.members.get(address)
                if address not in batch or member is None:
                    continue
                try:
                    prekey = PrekeyCertificate.parse(b64d(bundle.get("prekey"), "prekey"))
                    prekey.verify(member.certificate, now=now)
                except (ProtocolError, ClientError):
                    continue
                found[address] = prekey
        return found

    def _deliver(self, item: OutboxItem) -> SentMessage:
        """Distributions first (40 a frame), then the envelope; same bytes on every retry."""
        if item.distributions and not item.distributed:
            for start in range(0, len(item.distributions), DISTRIBUTIONS_PER_FRAME):
                batch = item.distributions[start : start + DISTRIBUTIONS_PER_FRAME]
                self._call(
                    "distribute",
                    conversation_id=item.conversation_id,
                    chain_id=b64e(item.chain_id),
                    distributions=[b64e(d) for d in batch],
                )
            item.distributed = True
        fields: dict[str, Any] = {
            "conversation_id": item.conversation_id,
            "envelope": b64e(item.envelope),
        }
        if item.to_user is not None:
            fields["to_user"] = item.to_user
        for attempt in range(MAX_SEND_ATTEMPTS):
            try:
                answer = self._call("send", **fields)
                break
            except FrameError as exc:
                # conflict: another member's send took the same seq; ours is not stored.
                if exc.code != "conflict" or attempt == MAX_SEND_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        outbox = self._record(item.conversation_id).outbox
        if item in outbox:
            outbox.remove(item)
        self._dirty = True
        seq, server_time = answer.get("seq"), answer.get("server_time")
        record = self._record(item.conversation_id)
        envelope = Envelope.parse(item.envelope).header
        if isinstance(seq, int) and item.to_user is None:
            record.mark_seen(seq)
            for stored in record.history:
                if stored.message_id == item.message_id:
                    stored.seq = seq
                    stored.server_time = server_time if isinstance(server_time, int) else None
        return SentMessage(
            conversation_id=item.conversation_id,
            message_id=item.message_id,
            seq=seq if isinstance(seq, int) else 0,
            server_time=server_time if isinstance(server_time, int) else 0,
            delete_at=envelope.delete_at(None),
        )

    def _forget_sent(self, cid: str, message_id: str) -> None:
        record = self._record(cid)
        record.history = [m for m in record.history if m.message_id != message_id]

    @_operation
    def flush_outbox(self) -> list[SentMessage]:
        """Send what a previous run prepared but could not confirm (same bytes)."""
        sent = []
        for item in list(self.state.outbox):
            try:
                sent.append(self._deliver(item))
            except FrameError as exc:
                self._record(item.conversation_id).outbox.remove(item)
                self._forget_sent(item.conversation_id, item.message_id)
                self._dirty = True
                if exc.code != "stale_devices":
                    raise
        return sent

    # -- receiving -------------------------------------------------------------------

    @_operation
    def sync(self, *, read: bool = False) -> list[Event]:
        """Everything missed, page by page: process, save, then acknowledge.

        ``read=True``: the caller displays the messages now (receipts say "read",
        burn-on-read clocks start); otherwise receipts say "delivered".
        """
        self._needs_sync = False
        self.flush_outbox()
        events: list[Event] = []
        while True:
            parts = self._call_parts("sync")
            mail = [m for p in parts for m in (p.get("mail") or [])]
            messages = [m for p in parts for m in (p.get("messages") or [])]
            more = any(p.get("more") is True for p in parts)
            # The server's own extension: the last seq it scanned per conversation (its
            # sender's own messages and expired ones are skipped, so seqs have gaps).
            through: dict[str, int] = {}
            for part in parts:
                for cid, seq in (part.get("through") or {}).items():
                    if isinstance(seq, int):
                        through[str(cid)] = max(through.get(str(cid), 0), seq)
            events += self._receive(mail, messages, read=read, complete=not more, through=through)
            if not more:
                return events

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
        mail = [f for f in frames if f.get("action") == "mail"]
        messages = [f for f in frames if f.get("action") == "message"]
        if any(f.get("action") == "prekeys_low" for f in frames):
            with contextlib.suppress(ClientError):  # a closed socket: the next poll reconnects
                self.replenish_prekeys()
        events: list[Event] = []
        for frame in frames:
            if frame.get("action") == "membership":
                events += self._membership(frame)
        events += self._receive(mail, messages, read=read, complete=False) if frames else []
        if self._needs_sync or any(r.seen for r in self.state.conversations.values()):
            events += self.sync(read=read)
        return events

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
        batch = _Batch([], [], [], {})
        # Distributions are stored before the envelopes that need them: merge by server time.
        items = [(int(m.get("server_time") or 0), 0, m) for m in mail]
        items += [(int(m.get("server_time") or 0), 1, m) for m in messages]
        items.sort(key=lambda entry: (entry[0], entry[1]))
        highest: dict[str, int] = {}
        for _, is_message, item in items:
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
                    # Kept until the person accepts or rejects the new key.
                    data = b64d(item.get("envelope"), "envelope")
                    record = self._record(cid)
                    record.pending.append(PendingItem(data, int(item.get("server_time") or 0), seq))
                    record.mark_seen(seq)
        for cid, seq in (through or {}).items():
            if cid in self.state.conversations:
                self.state.conversations[cid].advance(seq)
        if complete:
            for cid, record in self.state.conversations.items():
                record.settle(highest.get(cid, record.cursor))
        receipts = self._prepare_receipts(batch, read=read)
        self.save()  # before anything is acknowledged or sent
        for receipt in receipts:
            with contextlib.suppress(FrameError):
                self._deliver(receipt)
        self._ack(batch)
        return batch.events

    def _ack(self, batch: _Batch) -> None:
        cursors = {
            cid: r.cursor for cid, r in self.state.conversations.items() if r.cursor > r.acked
        }
        if not (cursors or batch.mail_ids or batch.read):
            return
        # The server takes at most 100 cursors, 500 mail ids and 200 read refs per ack.
        mail, read, pending = batch.mail_ids, batch.read, sorted(cursors.items())
        first = True
        while first or mail or read or pending:
            fields: dict[str, Any] = {
                "mail": mail[:400],
                "read": read[:200],
                "cursors": dict(pending[:100]),
            }
            self._call("ack", **fields)
            mail, read, pending, first = mail[400:], read[200:], pending[100:], False
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
        server_time = int(item.get("server_time") or 0)
        if item.get("kind") == "distribution":
            self._distribution(cid, data, batch, read=read)
        else:
            self._envelope(cid, data, server_time, None, batch, read=read)

    def _distribution(self, cid: str, data: bytes, batch: _Batch, *, read: bool) -> None:
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                conversation.receive_distribution(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)  # a device we have not seen yet
                conversation.receive_distribution(data, now=now)
        except ReplayedMessage:
            return  # a retried distribute: the chain is installed already
        except ProtocolError as exc:
            batch.events.append(NoticeEvent(cid, exc.code, f"a key distribution failed: {exc}"))
            return
        self._retry_pending(cid, batch, read=read)

    def _retry_pending(self, cid: str, batch: _Batch, *, read: bool) -> None:
        record = self._record(cid)
        waiting, record.pending = record.pending, []
        for pending in waiting:
            self._envelope(
                cid, pending.envelope, pending.server_time, pending.seq, batch, read=read
            )

    def _message_item(
        self, item: dict[str, Any], batch: _Batch, *, read: bool, highest: dict[str, int]
    ) -> None:
        cid, seq = str(item.get("conversation_id")), item.get("seq")
        if not isinstance(seq, int):
            return
        highest[cid] = max(highest.get(cid, 0), seq)
        record = self._record(cid)
        if seq <= record.cursor or seq in record.seen:
            return  # a push and a sync page both brought it
        data = b64d(item.get("envelope"), "envelope")
        server_time = int(item.get("server_time") or 0)
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
    ) -> None:
        try:
            header = Envelope.parse(data).header
        except ProtocolError as exc:
            batch.events.append(NoticeEvent(cid, exc.code, f"unreadable message #{seq}: {exc}"))
            return
        if (header.sender_user_id, header.sender_device_id) == self.local.address:
            return  # our own: its plaintext was kept when it was sent
        conversation = self._engine(cid)
        now = self._clock()
        try:
            try:
                received = conversation.receive_envelope(data, now=now)
            except UnknownSender:
                conversation = self.refresh(cid)
                received = conversation.receive_envelope(data, now=now)
        except UnknownChain:
            self._record(cid).pending.append(PendingItem(data, server_time, seq))
            return
        except (MessageExpired, ReplayedMessage):
            return  # expired unread (key deleted), or already opened
        except ProtocolError as exc:
            who = f"{header.sender_user_id}/{header.sender_device_id}"
            batch.events.append(
                NoticeEvent(cid, exc.code, f"message #{seq} from {who} rejected: {exc}")
            )
            return
        self._deliver_content(cid, received, server_time, seq, batch, read=read)

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
            kind = "read" if content.kind == Receipt.READ else "delivered"
            ids = {m.hex() for m in content.message_ids}
            seqs = []
            for stored in record.history:
                if stored.outgoing and stored.message_id in ids:
                    if stored.receipts.get(user_id) != "read":
                        stored.receipts[user_id] = kind
                    if stored.seq is not None:
                        seqs.append(stored.seq)
            batch.events.append(
                ReceiptEvent(cid, name, user_id, device_id, kind, tuple(sorted(ids)), tuple(seqs))
            )
            return
        if isinstance(content, Control) and content.kind == ROOM_PROFILE:
            self._room_profile(record, content, received, batch)
            return
        if not isinstance(content, Text):
            batch.events.append(
                NoticeEvent(cid, "unsupported", f"a {type(content).__name__} message (not shown)")
            )
            return
        now = self._clock()
        stored = StoredMessage(
            message_id=header.message_id.hex(),
            sender_user_id=user_id,
            sender_device_id=device_id,
            text=content.text,
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
                text=content.text,
                message_id=stored.message_id,
                timestamp=header.timestamp,
                server_time=server_time,
                expires_at=header.expires_at,
                burn_after_read_s=header.burn_after_read_s,
                outgoing=stored.outgoing,
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
        """A ``membership`` push: someone joined, left, was removed, promoted or demoted."""
        cid = str(frame.get("conversation_id"))
        users = [str(u) for u in frame.get("users") or []]
        change = str(frame.get("change"))
        record = self._record(cid, kind=str(frame.get("kind") or "room"))
        if self.info.user_id in users and change in ("removed", "left"):
            record.left = True
            self._live.pop(cid, None)
            record.state = None
        elif self.info.user_id in users and change == "added":
            record.left = False
        self._dirty = True
        names = ", ".join(self.name_of(u) for u in users)
        by = self.name_of(str(frame.get("by")))
        text = {
            "added": f"{by} added {names}",
            "removed": f"{by} removed {names}",
            "left": f"{names} left",
            "promoted": f"{by} made {names} a moderator",
            "demoted": f"{by} made {names} a member",
        }.get(change, f"membership changed ({change})")
        return [NoticeEvent(cid, "membership", text)]

    def _prepare_receipts(self, batch: _Batch, *, read: bool) -> list[OutboxItem]:
        if not self._receipts:
            return []
        kind = Receipt.READ if read else Receipt.DELIVERED
        items = []
        for (cid, user_id), ids in batch.delivered.items():
            for start in range(0, len(ids), 256):
                content = Receipt(kind, tuple(ids[start : start + 256]))
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
            live = [p for p in record.pending if not _expired(p.envelope, now)]
            if len(live) != len(record.pending):
                record.pending, changed = live, True
        self._dirty = self._dirty or changed
        return changed

    # -- prekeys and trust -----------------------------------------------------------

    @_operation
    def replenish_prekeys(self) -> None:
        """Top up one-time prekeys (private halves saved before publishing)."""
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
        return _identity(self._call("list_devices", user_id=user_id).get("identity_key"))

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


def _identity(raw: object) -> IdentityPublicKey:
    try:
        return IdentityPublicKey.parse(b64d(raw, "identity key"))
    except ProtocolError as exc:
        raise ClientError(f"server sent a malformed identity key: {exc}") from None


def _expired(envelope: bytes, now: int) -> bool:
    try:
        header = Envelope.parse(envelope).header
    except ProtocolError:
        return True
    return bool(header.expires_at) and header.expires_at <= now


def _keys_digest(keys: DeviceKeys) -> bytes:
    return hashlib.sha256(
        keys.device.serialize() + keys.published_through.to_bytes(4, "big")
    ).digest()
