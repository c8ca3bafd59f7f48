"""The Messenger's core: what every part shares, and the rules of using it.

``Core`` holds the device's sealed state, the live conversation engines, the
notices waiting to be shown and the session. An ``operation`` (``_operation``
makes a method one) locks the profile, first reads again what another
process wrote, and at its end saves only what this one changed; a request
that loses its connection is sent again on a new one (``_call*``, ``_ask``);
the network's policy and its retention identity are read once a session.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from sotto.frames import answers
from sotto.frames.answers_devices import RetentionAnswer
from sotto.protocol.conversation import Address, Conversation, LocalDevice
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import RetentionIdentity, officer_user_id

from .. import inbox
from ..encoding import b64d
from ..errors import ClientError, ConnectionLost, MessagingError
from ..events import Event
from ..policy import ClientPolicy, parse_policy
from ..prekeys import now_ms
from ..profile import DeviceKeys, Profile, ProfileInfo
from ..retention import RetentionNotice, fetch_retention
from ..session import Session, join_parts, shaped
from ..store import MessagingStore

__all__ = ["Core", "SessionLike"]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S")
C = TypeVar("C", bound="Core")  # the part a decorated method belongs to
MAX_RECONNECTS = 3  # per request: a lost connection is retried on a new one


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


def _operation(
    method: Callable[Concatenate[C, P], T],
) -> Callable[Concatenate[C, P], T]:
    """Run a Messenger method as one ``operation`` (locked, refreshed, saved)."""

    def run(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.operation():
            return method(self, *args, **kwargs)

    functools.update_wrapper(run, method)
    return run


class Core:
    """A device's state, its profile lock and its session (the base of every part)."""

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

    @classmethod
    def open(
        cls, profile: Profile, info: ProfileInfo, keys: DeviceKeys, passphrase: str, **kwargs: Any
    ) -> Self:
        return cls(profile, info, keys, passphrase, **kwargs)

    def __enter__(self) -> Self:
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

    @property
    def session(self) -> SessionLike:
        if self._session is None:
            self._session = self._connect()
        return self._session

    def disconnect(self) -> None:
        """Close the socket (the next call opens a new one); state stays as it is."""
        self._reconnect()

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


def _identity(raw: object) -> IdentityPublicKey:
    try:
        return IdentityPublicKey.parse(b64d(raw, "identity key"))
    except ProtocolError as exc:
        raise ClientError(f"server sent a malformed identity key: {exc}") from None


def _keys_digest(keys: DeviceKeys) -> bytes:
    return hashlib.sha256(
        keys.device.serialize() + keys.published_through.to_bytes(4, "big")
    ).digest()


def _shaped(shape: type[S], action: str, frame: Mapping[str, Any]) -> S:
    """An answer as its shape (``sotto.frames.answers``), or ``MalformedFrame``."""
    return shaped(shape, action, frame)
