"""Pairwise sessions: chain keys to a device over a symmetric ratchet, not a prekey each time.

The first key distribution from one device to another goes through HPKE to a
prekey and carries a fresh 32-byte session key; both keep a **session** for
that ordered device pair (docs/protocol.md §16). Later distributions to that
device use the session instead: one AES-256-GCM encryption under the next
step key, no KEM, no prekey consumed. Step (as a sender chain, §6)::

    seed_n       = HMAC-SHA384(SK_n, 0x01)[0:32]          SK_0 = the session key
    SK_{n+1}     = HMAC-SHA384(SK_n, 0x02)[0:32]
    key || nonce = HKDF-SHA384(salt = 16 random bytes, IKM = seed_n, domain("session-step"), 44)

Each step's seed is deleted once used (forward secrecy: a stolen state opens
no distribution already received), the random salt means a sender whose
state was rolled back never repeats a key and nonce, a receiver skips at
most ``MAX_SESSION_SKIP`` steps and keeps at most ``MAX_SKIPPED_STEPS``
skipped seeds, and a used step is refused (replay). Sessions age out: the
sender re-establishes through HPKE after ``SESSION_MAX_AGE_MS`` or
``SESSION_MAX_STEPS``, and the receiver deletes a session
``SESSION_RETENTION_MS`` after it was established. A session belongs to the
peer's device key and identity: if either changes, it is not used.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from .errors import MalformedMessage, UnknownSession
from .keys import FINGERPRINT_LENGTH, Random
from .ratchet import CHAIN_KEY_LENGTH, advance_to, chain_step, seed_at
from .wire import (
    ID_LENGTH,
    MessageType,
    Reader,
    Writer,
    check_identifiers,
    check_random_id,
    domain,
    parse_prefix,
)

__all__ = [
    "MAX_SESSION_SKIP",
    "MAX_SKIPPED_STEPS",
    "NO_SESSION",
    "SESSION_MAX_AGE_MS",
    "SESSION_MAX_STEPS",
    "SESSION_RETENTION_MS",
    "PairwiseSessions",
    "ReceiveSession",
    "SendSession",
    "step_keys",
]

DAY_MS = 24 * 3600 * 1000
SESSION_MAX_AGE_MS = 7 * DAY_MS
SESSION_MAX_STEPS = 10_000
SESSION_RETENTION_MS = 9 * DAY_MS  # max age plus two days for distributions in flight
MAX_SESSION_SKIP = 256
MAX_SKIPPED_STEPS = 256
MAX_RECEIVE_SESSIONS = 2  # per peer: the newest, and the one it replaced (distributions in flight)
MAX_PEERS = 20_000
NO_SESSION = bytes(ID_LENGTH)  # an HPKE distribution that offers no session
SALT_LENGTH = 16
KEY_LENGTH = 97  # a peer's device key (SEC1 P-384 point): a session is for that key only
_STEP_INFO = domain("session-step") + b"\x01"

Address = tuple[str, str]


def step_keys(seed: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM key and nonce of one step, under the distribution's random salt."""
    if len(salt) != SALT_LENGTH:
        raise MalformedMessage("session salt must be 16 bytes")
    prk = hmac.digest(salt, seed, hashlib.sha384)
    material = hmac.digest(prk, _STEP_INFO, hashlib.sha384)
    return material[:32], material[32:44]


@dataclass(repr=False)
class _Peer:
    """Who a session is with: the device, its key and its user's identity fingerprint."""

    user_id: str
    device_id: str
    device_key: bytes
    identity: bytes

    def __post_init__(self) -> None:
        check_identifiers((self.user_id, "peer user id"), (self.device_id, "peer device id"))
        if len(self.device_key) != KEY_LENGTH or len(self.identity) != FINGERPRINT_LENGTH:
            raise MalformedMessage("a session names a 97-byte device key and a 32-byte identity")

    @property
    def address(self) -> Address:
        return (self.user_id, self.device_id)

    def write(self, w: Writer) -> None:
        w.text8(self.user_id).text8(self.device_id).raw(self.device_key).raw(self.identity)

    @classmethod
    def read(cls, r: Reader) -> _Peer:
        return cls(r.text8(), r.text8(), r.take(KEY_LENGTH), r.take(FINGERPRINT_LENGTH))


@dataclass(repr=False)
class SendSession:
    """This device's side of a session to one peer device."""

    peer: _Peer
    session_id: bytes
    chain_key: bytes
    step: int
    created_at: int

    def __post_init__(self) -> None:
        check_random_id(self.session_id, "session id")
        if self.session_id == NO_SESSION or len(self.chain_key) != CHAIN_KEY_LENGTH:
            raise MalformedMessage("a session has a non-zero id and a 32-byte key")
        if not 0 <= self.step <= SESSION_MAX_STEPS or not 0 <= self.created_at < 2**64:
            raise MalformedMessage("session step or time out of range")

    def usable(self, device_key: bytes, identity: bytes, *, now: int) -> bool:
        return (
            (self.peer.device_key, self.peer.identity) == (device_key, identity)
            and self.step < SESSION_MAX_STEPS
            and now - self.created_at < SESSION_MAX_AGE_MS
        )

    def advanced(self) -> tuple[SendSession, int, bytes]:
        """The session after one step, that step's number and seed (this one is unchanged)."""
        seed, chain_key = chain_step(self.chain_key)
        return replace(self, chain_key=chain_key, step=self.step + 1), self.step, seed

    def write(self, w: Writer) -> None:
        self.peer.write(w)
        w.raw(self.session_id).raw(self.chain_key).u32(self.step).u64(self.created_at)

    @classmethod
    def read(cls, r: Reader) -> SendSession:
        peer = _Peer.read(r)
        return cls(peer, r.take(ID_LENGTH), r.take(CHAIN_KEY_LENGTH), r.u32(), r.u64())

    def __repr__(self) -> str:
        return f"SendSession({self.peer.address}, step={self.step}, <secret>)"


@dataclass(repr=False)
class ReceiveSession:
    """The peer's side: next step's chain key and the seeds of skipped steps."""

    peer: _Peer
    session_id: bytes
    chain_key: bytes
    next_step: int
    created_at: int
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        check_random_id(self.session_id, "session id")
        if self.session_id == NO_SESSION or len(self.chain_key) != CHAIN_KEY_LENGTH:
            raise MalformedMessage("a session has a non-zero id and a 32-byte key")
        if not 0 <= self.next_step <= SESSION_MAX_STEPS or not 0 <= self.created_at < 2**64:
            raise MalformedMessage("session step or time out of range")

    def peek(self, step: int) -> bytes:
        """The seed of ``step``; nothing changes (``commit`` after the AEAD opened)."""
        return seed_at(
            self.chain_key, self.next_step, self.skipped, step,
            limit=SESSION_MAX_STEPS, max_skip=MAX_SESSION_SKIP,
        )  # fmt: skip

    def commit(self, step: int) -> None:
        """Mark ``step`` used: delete its seed, keep those skipped over (replays now fail)."""
        self.chain_key = advance_to(
            self.chain_key, self.next_step, self.skipped, step,
            limit=SESSION_MAX_STEPS, max_skip=MAX_SESSION_SKIP, max_skipped=MAX_SKIPPED_STEPS,
        )  # fmt: skip
        self.next_step = max(self.next_step, step + 1)

    def write(self, w: Writer) -> None:
        self.peer.write(w)
        w.raw(self.session_id).raw(self.chain_key).u32(self.next_step).u64(self.created_at)
        w.u16(len(self.skipped))
        for step in sorted(self.skipped):
            w.u32(step).raw(self.skipped[step])

    @classmethod
    def read(cls, r: Reader) -> ReceiveSession:
        peer = _Peer.read(r)
        session = cls(peer, r.take(ID_LENGTH), r.take(CHAIN_KEY_LENGTH), r.u32(), r.u64())
        count = r.u16()
        if count > MAX_SKIPPED_STEPS:
            raise MalformedMessage(f"more than {MAX_SKIPPED_STEPS} skipped session steps")
        previous = -1
        for _ in range(count):
            step = r.u32()
            if not previous < step < session.next_step:
                raise MalformedMessage("skipped steps must ascend and precede next_step")
            session.skipped[step] = r.take(32)
            previous = step
        return session

    def __repr__(self) -> str:
        return f"ReceiveSession({self.peer.address}, next_step={self.next_step}, <secret>)"


class PairwiseSessions:
    """A device's sessions with other devices, shared by all its conversations (keystore entry).

    Mutated by the conversation engine: ``prepare_send``/``redistribute``
    advance send sessions, ``receive_distribution`` installs and advances
    receive sessions. Persist it after those calls, before sending (§14.6).
    """

    def __init__(self) -> None:
        self._send: dict[Address, SendSession] = {}
        self._receive: dict[Address, list[ReceiveSession]] = {}

    # -- sending ---------------------------------------------------------------------------

    def send_session(
        self, address: Address, device_key: bytes, identity: bytes, *, now: int
    ) -> SendSession | None:
        """The session to use for ``address``, if there is one still good for that key."""
        session = self._send.get(address)
        if session is None or not session.usable(device_key, identity, now=now):
            return None
        return session

    @staticmethod
    def new_send_session(
        address: Address, device_key: bytes, identity: bytes, *, now: int, rng: Random
    ) -> SendSession:
        """A fresh session for an HPKE distribution (stored by ``store_send`` once sent)."""
        session_id = rng(ID_LENGTH)
        if session_id == NO_SESSION:  # pragma: no cover - a 2^-128 event
            raise MalformedMessage("the random source returned zeros")
        peer = _Peer(address[0], address[1], device_key, identity)
        return SendSession(peer, session_id, rng(CHAIN_KEY_LENGTH), 0, now)

    def store_send(self, session: SendSession) -> None:
        self._send[session.peer.address] = session

    def drop_send(self, address: Address, session_id: bytes | None = None) -> bool:
        """Forget the send session to ``address`` (only if it is ``session_id``, when given)."""
        session = self._send.get(address)
        if session is None or (session_id is not None and session.session_id != session_id):
            return False
        del self._send[address]
        return True

    def restored(self) -> None:
        """The state is older than the last save: never continue a send session (§14.6)."""
        self._send.clear()

    # -- receiving -------------------------------------------------------------------------

    def receive_session(
        self, address: Address, session_id: bytes, device_key: bytes, identity: bytes
    ) -> ReceiveSession:
        for session in self._receive.get(address, []):
            if session.session_id == session_id and (
                session.peer.device_key,
                session.peer.identity,
            ) == (device_key, identity):
                return session
        raise UnknownSession(address, session_id)

    def install_receive(
        self,
        address: Address,
        device_key: bytes,
        identity: bytes,
        session_id: bytes,
        session_key: bytes,
        *,
        now: int,
    ) -> None:
        peer = _Peer(address[0], address[1], device_key, identity)
        sessions = [s for s in self._receive.get(address, []) if s.session_id != session_id]
        sessions.append(ReceiveSession(peer, session_id, session_key, 0, now))
        self._receive[address] = sessions[-MAX_RECEIVE_SESSIONS:]

    def prune(self, *, now: int) -> None:
        """Delete receive sessions past their retention and send sessions past their age."""
        for address in list(self._receive):
            kept = [s for s in self._receive[address] if now - s.created_at < SESSION_RETENTION_MS]
            if kept:
                self._receive[address] = kept
            else:
                del self._receive[address]
        for address in [
            a for a, s in self._send.items() if now - s.created_at >= SESSION_MAX_AGE_MS
        ]:
            del self._send[address]

    def __len__(self) -> int:
        return len(self._send) + sum(len(s) for s in self._receive.values())

    # -- persistence -----------------------------------------------------------------------

    def serialize(self) -> bytes:
        """``prefix(0x36) || u32 s || send*s || u32 r || receive*r``, each sorted by peer."""
        w = Writer().prefix(MessageType.SESSIONS).u32(len(self._send))
        for address in sorted(self._send):
            self._send[address].write(w)
        receive = [s for a in sorted(self._receive) for s in self._receive[a]]
        w.u32(len(receive))
        for session in receive:
            session.write(w)
        return bytes(w)

    @classmethod
    def parse(cls, data: bytes) -> PairwiseSessions:
        r = Reader(data, "pairwise sessions")
        parse_prefix(r, MessageType.SESSIONS)
        store = cls()
        count = r.u32()
        if count > MAX_PEERS:
            raise MalformedMessage(f"more than {MAX_PEERS} send sessions")
        for _ in range(count):
            session = SendSession.read(r)
            address = session.peer.address
            if store._send and address <= max(store._send):
                raise MalformedMessage("send sessions are not sorted by peer and unique")
            store._send[address] = session
        count = r.u32()
        if count > MAX_PEERS * MAX_RECEIVE_SESSIONS:
            raise MalformedMessage("too many receive sessions")
        last: Address | None = None
        for _ in range(count):
            receive = ReceiveSession.read(r)
            address = receive.peer.address
            if last is not None and address < last:
                raise MalformedMessage("receive sessions are not sorted by peer")
            kept = store._receive.setdefault(address, [])
            if len(kept) >= MAX_RECEIVE_SESSIONS or any(
                s.session_id == receive.session_id for s in kept
            ):
                raise MalformedMessage("too many or repeated receive sessions for one peer")
            kept.append(receive)
            last = address
        r.done()
        return store

    def __repr__(self) -> str:
        return f"PairwiseSessions(send={len(self._send)}, receive={len(self._receive)}, <secret>)"
