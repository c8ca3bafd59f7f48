"""A device's messaging state, sealed in the profile's vault (``vault.py``), a file a part.

Everything here is secret or private (chain keys inside the conversation
states, plaintext history, who talks to whom), so it lives only under the
profile's data key (docs/protocol.md §10, §14.3). The encoding is JSON with
binary values as base64url; it is versioned and parsed strictly enough that a
damaged file is an error, never a silent reset (a reset would forget chain
keys and the identities this device trusts).

``messaging``: the device's identity tracker, recently processed mail ids,
contacts, and what it shares of them (and of room labels) with its user's
other devices (``self_sync.SyncBook``). ``conv-<hash of the id>``, one per
conversation: the engine state (``Conversation.serialize()``), the sync
cursor (highest seq accounted for)
plus the seqs seen above it, envelopes waiting for their chain's
distribution, the local history with each message's deletion deadline, and
the outbox (prepared but unconfirmed sends, replayed byte-identically after a
crash or reconnect) — in the same file as the engine state that prepared
them, so the advanced chain and its envelope are written together.
``MessagingStore.save`` writes only the files whose contents changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sotto.protocol.errors import ProtocolError
from sotto.protocol.safety import IdentityTracker
from sotto.protocol.sessions import PairwiseSessions

from .encoding import b64d, b64e
from .errors import ClientError
from .profile import LEGACY_MESSAGING_FILE
from .self_sync import SyncBook
from .vault import Vault

__all__ = [
    "ConversationRecord",
    "MessagingState",
    "MessagingStore",
    "OutboxItem",
    "PendingItem",
    "StoredMessage",
]

VERSION = 1
DEVICE_FILE = "messaging"
CONVERSATION_PREFIX = "conv-"
MAX_SEEN_MAIL = 2000  # mail ids remembered to drop a push that races its own sync
MAX_HISTORY = 500  # messages kept per conversation (oldest dropped first)
MAX_PENDING = 1000  # envelopes kept per conversation while their chain is missing
MAX_HELD_KEYS = 64  # distributions kept per conversation while their session is missing


@dataclass
class StoredMessage:
    """One message in the local history; deleted at ``delete_at`` (expiry or burn)."""

    message_id: str  # hex
    sender_user_id: str
    sender_device_id: str
    text: str
    timestamp: int
    server_time: int | None
    seq: int | None
    expires_at: int  # 0 = never
    burn_after_read_s: int  # 0 = off
    outgoing: bool
    first_read_at: int | None = None
    receipts: dict[str, str] = field(default_factory=dict)  # user_id -> delivered | read
    # A File content's fields (key and digest base64) to fetch it later, or a
    # Location's; the history is sealed like everything here.
    attachment: dict[str, Any] | None = None
    location: dict[str, Any] | None = None

    def delete_at(self) -> int | None:
        """``min(expires_at, first_read + burn)``; the sender's copy follows expiry only."""
        deadlines = [self.expires_at] if self.expires_at else []
        if self.burn_after_read_s and self.first_read_at is not None and not self.outgoing:
            deadlines.append(self.first_read_at + self.burn_after_read_s * 1000)
        return min(deadlines) if deadlines else None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredMessage:
        return cls(**data)


@dataclass
class PendingItem:
    """An envelope not shown yet: it arrived before its chain's distribution (retried after
    the next one), or it follows such a message in its conversation and waits its turn.

    ``waiting``: a conversation message still expected to open soon; while one waits,
    the conversation's later messages wait behind it, so they are shown in seq order.
    A complete sync that did not bring its key ends the wait (the key is presumed lost).
    """

    envelope: bytes
    server_time: int
    seq: int | None  # None: it came through the mailbox (a receipt)
    waiting: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "envelope": b64e(self.envelope),
            "server_time": self.server_time,
            "seq": self.seq,
            "waiting": self.waiting,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingItem:
        return cls(
            b64d(data["envelope"], "pending envelope"),
            data["server_time"],
            data["seq"],
            bool(data.get("waiting", False)),  # files written before the field: not waiting
        )


@dataclass
class ConversationRecord:
    conversation_id: str
    kind: str  # direct | room | self (this user's own devices, ``self_sync``) | unknown
    peer: str | None = None  # direct: the other user
    label: str | None = None  # room: the local name (never sent to the server)
    state: bytes | None = None  # Conversation.serialize()
    cursor: int = 0  # every seq <= cursor is accounted for
    acked: int = 0  # the cursor the server last acknowledged
    seen: set[int] = field(default_factory=set)  # processed seqs above the cursor
    pending: list[PendingItem] = field(default_factory=list)
    history: list[StoredMessage] = field(default_factory=list)
    private_sends: int = 0  # to_user envelopes since the last conversation-wide one
    # room: the name and topic its members share end-to-end (newest by envelope time)
    room_name: str | None = None
    topic: str = ""
    profile_at: int = 0
    left: bool = False  # this user left or was removed
    roster_version: int = 0  # the server's, when this device last verified the membership
    outbox: list[OutboxItem] = field(default_factory=list)
    # Key distributions over a pairwise session this device does not hold yet: the one
    # that opens it may be a push that was lost and is due in the next sync (§16.4).
    held_keys: list[bytes] = field(default_factory=list)
    # Redistribution requests sent, by "user/device" asked: when (ms). Kept with the
    # record, so the next command does not ask the same sender again at once.
    asked: dict[str, int] = field(default_factory=dict)

    def mark_seen(self, seq: int) -> None:
        """Record ``seq`` as processed; the cursor moves over every contiguous one."""
        if seq > self.cursor:
            self.seen.add(seq)
        while self.cursor + 1 in self.seen:
            self.cursor += 1
            self.seen.discard(self.cursor)

    def advance(self, through: int) -> None:
        """A sync page covered every seq up to ``through``: none of them is missing."""
        self.cursor = max(self.cursor, through)
        self.seen = {s for s in self.seen if s > self.cursor}
        self.mark_seen(self.cursor)

    def settle(self, through: int) -> None:
        """After a complete sync: nothing up to ``through`` is still missing."""
        top = max([through, *self.seen]) if self.seen else through
        self.cursor = max(self.cursor, top)
        self.seen.clear()

    def add_history(self, message: StoredMessage) -> None:
        self.history.append(message)
        del self.history[:-MAX_HISTORY]

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "kind": self.kind,
            "peer": self.peer,
            "label": self.label,
            "state": None if self.state is None else b64e(self.state),
            "cursor": self.cursor,
            "acked": self.acked,
            "seen": sorted(self.seen),
            "pending": [p.to_json() for p in self.pending[-MAX_PENDING:]],
            "history": [m.to_json() for m in self.history],
            "private_sends": self.private_sends,
            "room_name": self.room_name,
            "topic": self.topic,
            "profile_at": self.profile_at,
            "left": self.left,
            "roster_version": self.roster_version,
            "outbox": [o.to_json() for o in self.outbox],
            # All of them: over the cap only during a complete sync, whose last round
            # asks for the rest (a crash before it must not lose what it held).
            "held_keys": [b64e(k) for k in self.held_keys],
            "asked": dict(self.asked),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConversationRecord:
        state = data["state"]
        return cls(
            conversation_id=data["conversation_id"],
            kind=data["kind"],
            peer=data["peer"],
            label=data["label"],
            state=None if state is None else b64d(state, "conversation state"),
            cursor=data["cursor"],
            acked=data["acked"],
            seen=set(data["seen"]),
            pending=[PendingItem.from_json(p) for p in data["pending"]],
            history=[StoredMessage.from_json(m) for m in data["history"]],
            private_sends=data["private_sends"],
            room_name=data.get("room_name"),
            topic=data.get("topic", ""),
            profile_at=data.get("profile_at", 0),
            left=data.get("left", False),
            roster_version=data.get("roster_version", 0),
            outbox=[OutboxItem.from_json(o) for o in data.get("outbox", [])],
            held_keys=[b64d(k, "held key") for k in data.get("held_keys", [])],
            asked={str(k): int(v) for k, v in data.get("asked", {}).items()},
        )


@dataclass
class OutboxItem:
    """A prepared send: its engine state is already saved, so it must go out byte-identically."""

    conversation_id: str
    message_id: str  # hex
    envelope: bytes
    chain_id: bytes
    distributions: list[bytes]
    to_user: str | None
    distributed: bool = False
    # What was prepared, so a send the server refuses for a moved roster can be prepared
    # again for the new one rather than lost (sealed with the rest of the state).
    content: bytes = b""
    expires_at: int = 0  # absolute, ms; 0 = never
    burn_after_read_s: int = 0
    files: list[str] = field(default_factory=list)  # object ids the send frame names

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "envelope": b64e(self.envelope),
            "chain_id": b64e(self.chain_id),
            "distributions": [b64e(d) for d in self.distributions],
            "to_user": self.to_user,
            "distributed": self.distributed,
            "content": b64e(self.content),
            "expires_at": self.expires_at,
            "burn_after_read_s": self.burn_after_read_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboxItem:
        return cls(
            conversation_id=data["conversation_id"],
            message_id=data["message_id"],
            envelope=b64d(data["envelope"], "outbox envelope"),
            chain_id=b64d(data["chain_id"], "outbox chain id"),
            distributions=[b64d(d, "outbox distribution") for d in data["distributions"]],
            to_user=data["to_user"],
            files=list(data.get("files", [])),
            distributed=data["distributed"],
            content=b64d(data.get("content", ""), "outbox content"),
            expires_at=data.get("expires_at", 0),
            burn_after_read_s=data.get("burn_after_read_s", 0),
        )


def file_of(conversation_id: str) -> str:
    """A conversation's file name: a hash, so ids never reach the file system as names."""
    return CONVERSATION_PREFIX + hashlib.sha256(conversation_id.encode()).hexdigest()[:40]


@dataclass
class MessagingState:
    tracker: IdentityTracker = field(default_factory=IdentityTracker)
    conversations: dict[str, ConversationRecord] = field(default_factory=dict)
    seen_mail: list[str] = field(default_factory=list)
    contacts: dict[str, str] = field(default_factory=dict)  # handle -> user_id
    # Handles as the directory gives them (user_id -> handle): names to show and to type,
    # below the person's own contacts; the identity key, not the handle, is what is pinned.
    handles: dict[str, str] = field(default_factory=dict)
    # The device's pairwise sessions (docs/protocol.md §16), shared by its conversations.
    sessions: PairwiseSessions = field(default_factory=PairwiseSessions)
    # Contacts and labels as shared with this user's other devices (``self_sync``).
    sync: SyncBook = field(default_factory=SyncBook)

    @property
    def outbox(self) -> list[OutboxItem]:
        """Every prepared, unconfirmed send, across conversations (oldest first per one)."""
        return [item for record in self.conversations.values() for item in record.outbox]

    def remember_mail(self, mail_id: str) -> None:
        self.seen_mail.append(mail_id)
        del self.seen_mail[:-MAX_SEEN_MAIL]

    def room(self, label: str) -> ConversationRecord | None:
        """The room this device labels ``label``, else the one room its members named so."""
        labelled = next((r for r in self.conversations.values() if r.label == label), None)
        if labelled is not None:
            return labelled
        named = [r for r in self.conversations.values() if r.label is None and r.room_name == label]
        return named[0] if len(named) == 1 else None

    def device_part(self) -> bytes:
        data = {
            "version": VERSION,
            "tracker": b64e(self.tracker.serialize()),
            "seen_mail": self.seen_mail,
            "contacts": self.contacts,
            "handles": self.handles,
            "sessions": b64e(self.sessions.serialize()),
            "sync": self.sync.to_json(),
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    def load_device_part(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self.tracker = IdentityTracker.parse(b64d(data["tracker"], "identity tracker"))
            self.seen_mail = [str(m) for m in data["seen_mail"]]
            self.contacts = {str(k): str(v) for k, v in data["contacts"].items()}
            self.handles = {str(k): str(v) for k, v in (data.get("handles") or {}).items()}
            # A state written before sessions has none: the next rotations establish them.
            sessions = data.get("sessions")
            self.sessions = (
                PairwiseSessions()
                if sessions is None
                else PairwiseSessions.parse(b64d(sessions, "pairwise sessions"))
            )
            self.sync = SyncBook.from_json(data.get("sync"))  # absent: written before it
        except ProtocolError as exc:
            raise ClientError(f"the profile's pairwise sessions are damaged: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ClientError(f"the profile's messaging state is damaged: {exc}") from None


def _record_bytes(record: ConversationRecord) -> bytes:
    data = {"version": VERSION, "record": record.to_json()}
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _parse_record(raw: bytes) -> ConversationRecord:
    try:
        data = json.loads(raw)
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        return ConversationRecord.from_json(data["record"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ClientError(f"a conversation's state is damaged: {exc}") from None


class MessagingStore:
    """Reads and writes a ``MessagingState`` as vault files, only those that changed."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._written: dict[str, bytes] = {}  # file -> the digest of what it holds

    def load(self) -> MessagingState:
        state = MessagingState()
        legacy = self._vault.read(LEGACY_MESSAGING_FILE)
        raw = self._vault.read(DEVICE_FILE)
        if raw is None and legacy is not None:
            state = _parse_legacy(legacy)
            self.save(state)
            return state
        if raw is not None:
            state.load_device_part(raw)
            self._written[DEVICE_FILE] = _digest(raw)
        for name in self._vault.names(CONVERSATION_PREFIX):
            record = self._read_record(name)
            if record is not None:
                state.conversations[record.conversation_id] = record
        return state

    def _read_record(self, name: str) -> ConversationRecord | None:
        raw = self._vault.read(name)
        if raw is None:
            return None
        self._written[name] = _digest(raw)
        return _parse_record(raw)

    def save(self, state: MessagingState, *, only: set[str] | None = None) -> None:
        """Write the device's part and the conversations in ``only`` (all if None)."""
        self._put(DEVICE_FILE, state.device_part())
        for cid, record in state.conversations.items():
            if only is None or cid in only:
                self._put(file_of(cid), _record_bytes(record))

    def _put(self, name: str, data: bytes) -> None:
        digest = _digest(data)
        if self._written.get(name) != digest:
            self._vault.write(name, data)
            self._written[name] = digest

    def refresh(self, state: MessagingState) -> set[str]:
        """Read again what another process wrote; the conversations it changed."""
        changed: set[str] = set()
        if self._vault.changed(DEVICE_FILE):
            raw = self._vault.read(DEVICE_FILE)
            if raw is not None:
                state.load_device_part(raw)
                self._written[DEVICE_FILE] = _digest(raw)
        names = {file_of(cid): cid for cid in state.conversations}
        for name in self._vault.names(CONVERSATION_PREFIX):
            if name in names and not self._vault.changed(name):
                continue
            record = self._read_record(name)
            if record is not None:
                state.conversations[record.conversation_id] = record
                changed.add(record.conversation_id)
        return changed


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _parse_legacy(raw: bytes) -> MessagingState:
    """The state an earlier version kept in the keystore, as one JSON document."""
    try:
        data = json.loads(raw)
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        records = {
            r["conversation_id"]: ConversationRecord.from_json(r) for r in data["conversations"]
        }
        for item in data["outbox"]:
            outbox = OutboxItem.from_json(item)
            records[outbox.conversation_id].outbox.append(outbox)
        return MessagingState(
            tracker=IdentityTracker.parse(b64d(data["tracker"], "identity tracker")),
            conversations=records,
            seen_mail=[str(m) for m in data["seen_mail"]],
            contacts={str(k): str(v) for k, v in data["contacts"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ClientError(f"the earlier messaging state is damaged: {exc}") from None
