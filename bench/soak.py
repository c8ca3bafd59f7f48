"""Soak (issue 14 item 11): many devices, random faults, and a count of what each one showed.

Users with 1-3 devices talk in direct conversations and rooms through the
real SDK (``Messenger``), every device in its own thread with its own
profile on disk, against the local stack in a child process
(``sotto local up``). Senders send concurrently; every device polls (and so
syncs) between its sends. Faults, drawn from a seeded random generator:

* **socket dropped**: the device's socket is closed under the Messenger
  between two operations (pushes sent meanwhile are gone);
* **answer lost**: the socket is closed right after a request left, before
  its answer (``send``, ``ack``, ``sync``, ``distribute``, ``fetch_bundles``);
* **push lost**: a ``message``, ``mail`` or ``membership`` push is dropped;
* **device crash** at one of four points: a received batch saved but not
  acknowledged (``stored, not acked``), acknowledged but not yet shown
  (``acked, not shown``), a prepared message saved in the outbox but not sent
  (``prepared, not sent``), stored by the server but its answer not saved
  (``stored by server, answer lost``). The Messenger is dropped without
  saving anything more, its socket closed, and the device reopened from disk
  (a new key derivation, as a restarted process);
* **member added** to a room mid-run (by the room's owner device) and
  **device linked** mid-run (written to the directory, then started).

Ground truth: every message a sender prepared (message id and text), every
message the server stored (conversation, seq, message id, sending device),
each conversation's members with the seq they joined at, and the cursor a
linked device started at. A stored message is due to every device of every
member who joined before its seq, except the device that sent it (the
sender's other devices show it too) and a linked device's messages from
before it was linked. After a last full sync on every device, for every
device: **lost** = due, never shown; **duplicated** = shown more than once;
**out of order** = shown, in a conversation, after a message with a higher
seq. Messages a sender prepared that the server never stored are counted too
(``never stored``), unless the sender was told (a refusal raised by ``send``).
A message a device stored and then crashed before showing is shown from its
history when the device comes back (``shown from history after a crash``),
as ``sotto chat`` shows its backlog.

``make bench`` runs a small soak; the issue's size (at least 100 devices,
20,000 messages)::

    SOTTO_SOAK_DEVICES=100 SOTTO_SOAK_MESSAGES=20000 .venv/bin/python -m bench.soak

Other knobs: SOTTO_SOAK_SEED, SOTTO_SOAK_ADDS (members added mid-run),
SOTTO_SOAK_LINKS (devices linked mid-run), SOTTO_SOAK_HOME (where the
profiles live; a temporary directory by default). Thread scheduling is not
seeded, so two runs with one seed inject the same kinds of faults at about
the same rates, not at the same instants.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3

from sotto.client.encoding import b64e
from sotto.client.errors import ClientError, FrameError
from sotto.client.events import Event, MessageEvent, NoticeEvent
from sotto.client.messenger import Messenger
from sotto.client.profile import DeviceKeys, Profile, ProfileInfo
from sotto.client.server import ServerConfig, from_endpoints
from sotto.client.session import Session
from sotto.client.store import OutboxItem
from sotto.local.aws import LOCAL_CREDENTIALS
from sotto.protocol.content import Content, Text
from sotto.protocol.conversation import MessageTimers
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from sotto_server.dal.conversations import ConversationsStore
from sotto_server.dal.directory import DeviceRecord, DirectoryStore
from sotto_server.logic.identity import signing_key_der

from ._cli_stack import cli_stack
from ._report import table
from ._stack import enroll_through_dal

__all__ = ["Crash", "SoakConfig", "SoakFailed", "SoakResult", "main", "run"]

PASSPHRASE = "soak passphrase, long enough"
ONE_TIME_PREKEYS = 5
CRASH_POINTS = (
    "stored, not acked",
    "acked, not shown",
    "prepared, not sent",
    "stored by server, answer lost",
)
ANSWER_LOST_ACTIONS = frozenset({"send", "ack", "sync", "distribute", "fetch_bundles"})
DROPPABLE_PUSHES = frozenset({"message", "mail", "membership"})
# Notices every run shows (a member joined, a device was added); others are printed.
ROUTINE_NOTICES = frozenset({"membership", "new_device"})


_KDF = threading.Lock()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SoakConfig:
    devices: int = 10  # at the end, linked ones included
    messages: int = 120
    seed: int = 1
    adds: int = 2  # members added to rooms mid-run
    links: int = 2  # devices linked mid-run
    # Per opportunity: a crash hook reached, a loop turn, a push, a request.
    crash_rate: float = 0.01
    disconnect_rate: float = 0.005
    push_loss_rate: float = 0.03
    answer_loss_rate: float = 0.005
    receipts: bool = False  # delivery receipts: each delivery sends one more message
    # The stack's rate limits, as a multiple of the deployment's defaults (1: as deployed).
    rate_limit_scale: float = 1.0
    # Each fault kind surely happens at least once (armed on one device each): small runs.
    every_fault: bool = False
    home: Path | None = None  # where profiles live (a temporary directory if None)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SoakConfig:
        env = os.environ if environ is None else environ
        base = cls()

        def number(name: str, default: float) -> float:
            return float(env.get(f"SOTTO_SOAK_{name}", default))

        home = env.get("SOTTO_SOAK_HOME")
        return replace(
            base,
            devices=int(number("DEVICES", base.devices)),
            messages=int(number("MESSAGES", base.messages)),
            seed=int(number("SEED", base.seed)),
            adds=int(number("ADDS", base.adds)),
            links=int(number("LINKS", base.links)),
            receipts=env.get("SOTTO_SOAK_RECEIPTS", "0") == "1",
            rate_limit_scale=number("RATE_LIMIT_SCALE", base.rate_limit_scale),
            home=Path(home) if home else None,
        )


class Crash(BaseException):
    """The device's process died here. A BaseException so nothing in the SDK catches it."""


class SoakFailed(AssertionError):
    """The soak found lost, duplicated or out-of-order deliveries."""


# -- ground truth --------------------------------------------------------------------


@dataclass
class Shown:
    conversation_id: str
    seq: int | None
    text: str
    # Not handed out as an event but found in the device's history: after a crash
    # (the backlog a person sees when the device comes back), or only at the end.
    from_history: str = ""  # "", "crash", "end"


@dataclass
class Intent:
    text: str
    conversation_id: str
    outcome: str = "pending"  # sent, crashed, refused:<code>, error:<kind>


@dataclass
class DeviceLog:
    name: str
    user_id: str
    device_id: str
    shown: list[Shown] = field(default_factory=list)
    intents: list[Intent] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    notices: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    left_in_outbox: int = 0
    notice_texts: list[str] = field(default_factory=list)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: Counter[str] = field(default_factory=Counter)


@dataclass
class SoakResult:
    devices: int
    users: int
    conversations: int
    messages: int  # stored by the server
    deliveries: int  # due
    lost: int
    duplicated: int
    out_of_order: int
    never_stored: int
    left_in_outbox: int
    unexpected: int  # shown to a device it was not due to
    from_history: int
    # Stored, never an event, without a crash: the call that stored them raised, or
    # they were found in history only at the end.
    never_handed_out: int
    refused: int
    faults: Counter[str]
    notices: Counter[str]
    errors: Counter[str]
    wall_s: float
    examples: list[str]
    phases: dict[str, float] = field(default_factory=dict)
    steps: dict[str, tuple[int, float]] = field(default_factory=dict)  # count, seconds

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.out_of_order
            or self.never_stored
            or self.never_handed_out
        )

    def print(self) -> None:
        rows: list[list[Any]] = [
            ["devices (users)", f"{self.devices} ({self.users})"],
            ["conversations", self.conversations],
            ["messages stored", self.messages],
            ["deliveries due", self.deliveries],
            ["lost", self.lost],
            ["duplicated", self.duplicated],
            ["out of order", self.out_of_order],
            ["prepared, never stored", self.never_stored],
            ["left in an outbox", self.left_in_outbox],
            ["shown to a device not due", self.unexpected],
            ["shown from history after a crash", self.from_history],
            ["stored, never handed out (no crash)", self.never_handed_out],
            ["not sent, the sender was told (send raised)", self.refused],
            ["wall time (s)", round(self.wall_s, 1)],
            *([f"  {name} (s)", round(seconds, 1)] for name, seconds in self.phases.items()),
        ]
        table("Soak: what every device showed", ["", "count"], rows)
        table(
            "Soak: device steps (all threads)",
            ["step", "count", "seconds", "ms each"],
            [[k, n, round(t, 1), round(1000 * t / n, 1)] for k, (n, t) in self.steps.items()],
        )
        table(
            "Soak: faults injected",
            ["fault", "count"],
            [[kind, count] for kind, count in sorted(self.faults.items())],
        )
        if self.notices or self.errors:
            table(
                "Soak: notices shown and errors raised to the caller",
                ["kind", "count"],
                [[f"notice {k}", v] for k, v in sorted(self.notices.items())]
                + [[f"error {k}", v] for k, v in sorted(self.errors.items())],
            )
        for line in self.examples:
            print(f"  {line}")


# -- the stack and its people --------------------------------------------------------


@dataclass
class User:
    index: int
    user_id: str
    identity: IdentityKeyPair
    devices: list[DeviceSecrets] = field(default_factory=list)


class Directory:
    """Enrollment and device links written through the DAL, as the routes would write them."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
            region_name=LOCAL_CREDENTIALS["region_name"],
        )
        dynamodb = session.client("dynamodb", endpoint_url=endpoints["aws"])
        tables = endpoints["resources"]["tables"]
        self.directory = DirectoryStore(dynamodb, tables["DirectoryTable"])
        self.conversations = ConversationsStore(dynamodb, tables["MessagesTable"])
        self.network_id = str(endpoints["default_network"]["network_id"])

    def enroll(self, index: int) -> User:
        identity = IdentityKeyPair.generate()
        user_id = f"usr-{secrets.token_hex(8)}"
        now = _now_ms()
        device = enroll_through_dal(
            self.directory,
            self.network_id,
            identity,
            user_id,
            handle=f"soak{index}-{secrets.token_hex(3)}",
            now=now,
        )
        self._publish(device, signed=False)
        return User(index, user_id, identity, [device])

    def link(self, user: User) -> DeviceSecrets:
        """Another device of the user, certified by its identity (what a link writes)."""
        now = _now_ms()
        device = DeviceSecrets.create(
            user.identity, user.user_id, f"dev-{secrets.token_hex(6)}", now=now
        )
        self.directory.put_device(
            DeviceRecord(
                device_id=device.device_id,
                user_id=user.user_id,
                network_id=self.network_id,
                signing_key=signing_key_der(device.certificate.device_key),
                status="active",
                created_at=now,
                certificate=device.certificate.serialize(),
            )
        )
        self._publish(device, signed=True)
        user.devices.append(device)
        return device

    def _publish(self, device: DeviceSecrets, *, signed: bool) -> None:
        now = _now_ms()
        spk = device.current_signed_prekey()
        otpk = device.new_one_time_prekeys(ONE_TIME_PREKEYS, now=now)
        self.directory.put_prekeys(
            device.device_id,
            (spk.prekey_id, spk.expires_at, spk.serialize()) if signed else None,
            [(p.prekey_id, p.serialize()) for p in otpk],
            now,
        )

    def start_cursors(self, device_id: str, user_id: str, timeout: float = 60) -> dict[str, int]:
        """Where a linked device starts in each of its user's conversations.

        The directory stream adds it to every roster and sets its cursor at the
        last message stored before (``roster_add``): nothing at or below is due.
        """
        cids = [cid for cid, *_ in self.conversations.user_conversations(user_id)]
        deadline = time.monotonic() + timeout
        while True:
            cursors = self.conversations.cursors_of(device_id, cids) if cids else {}
            if len(cursors) == len(cids):
                return cursors
            if time.monotonic() > deadline:
                raise TimeoutError(f"{device_id} never reached the rosters of {cids}")
            time.sleep(0.1)


def _write_profile(
    home: Path, server: ServerConfig, network_id: str, user: User, device: DeviceSecrets
) -> str:
    name = f"soak-{device.device_id}"
    published = [cert.prekey_id for _, cert in device.one_time_prekeys.values()]
    keys = DeviceKeys(device, user.identity, published_through=max(published, default=0))
    info = ProfileInfo(
        server=server,
        network_id=network_id,
        user_id=user.user_id,
        device_id=device.device_id,
        handle=name,
        created_at=_now_ms(),
        holds_identity=True,
        identity_key=b64e(user.identity.public.serialize()),
    )
    with _KDF, Profile.create(name, home) as profile:
        profile.write_info(info)
        profile.save_keys(keys, PASSPHRASE)
    return name


# -- faults --------------------------------------------------------------------------


class Faults:
    """One device's fault dice (seeded) and what they injected."""

    def __init__(self, config: SoakConfig, seed: str, log: DeviceLog) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.log = log
        self.on = True
        self.forced: dict[str, int] = {}  # kind -> chances left before it surely happens
        self._lock = threading.Lock()

    def roll(self, rate: float, kind: str = "") -> bool:
        with self._lock:
            if not self.on:
                return False
            if kind in self.forced:  # armed: this kind happens at its n-th chance
                self.forced[kind] -= 1
                if self.forced[kind] <= 0:
                    del self.forced[kind]
                    return True
            return self.rng.random() < rate

    def count(self, kind: str) -> None:
        with self._lock:
            self.log.faults[kind] += 1


class FaultySession(Session):
    """The real session, with pushes dropped and answers cut off at random."""

    faults: Faults

    def next_push(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            frame = super().next_push(max(deadline - time.monotonic(), 0.0))
            if frame is not None and "action" not in frame:
                # API Gateway's answer to a failed integration: no action, no id.
                self.faults.log.errors[f"gateway frame: {str(frame.get('message'))[:40]}"] += 1
            if frame is None or frame.get("action") not in DROPPABLE_PUSHES:
                return frame
            if not self.faults.roll(self.faults.config.push_loss_rate, "push lost"):
                return frame
            self.faults.count(f"push lost ({frame.get('action')})")

    def _send(self, frame: dict[str, Any]) -> None:
        super()._send(frame)
        action = str(frame.get("action"))
        rate = self.faults.config.answer_loss_rate
        if action in ANSWER_LOST_ACTIONS and self.faults.roll(rate, "answer lost"):
            self.faults.count("answer lost (socket closed)")
            with contextlib.suppress(Exception):
                self._connection.close()


class SoakMessenger(Messenger):
    """A Messenger that can die at chosen points and reports every message it prepares."""

    faults: Faults
    prepared: Callable[[str, str], None]
    crashed = False
    in_pushes = False

    def _crash_point(self, point: str) -> None:
        if self.faults.roll(self.faults.config.crash_rate, point):
            self.faults.count(f"crash: {point}")
            self.crashed = True
            raise Crash(point)

    def save(self) -> None:
        if not self.crashed:  # a dead process writes nothing more
            super().save()

    def _prepare(
        self,
        cid: str,
        content: Content,
        *,
        timers: MessageTimers | None,
        to_user: str | None,
    ) -> OutboxItem:
        item = super()._prepare(cid, content, timers=timers, to_user=to_user)
        if isinstance(content, Text):
            self.prepared(item.message_id, content.text)
        return item

    def _process_pushes(self, frames: list[dict[str, Any]], *, read: bool) -> list[Event]:
        self.in_pushes = True
        try:
            return super()._process_pushes(frames, read=read)
        finally:
            self.in_pushes = False

    def sync(self, *, read: bool = False) -> list[Event]:
        pushes, self.in_pushes = self.in_pushes, False  # a poll's sync reads pages
        try:
            return super().sync(read=read)
        finally:
            self.in_pushes = pushes

    def _ask_again(self, batch: Any) -> None:
        # A device asks a sender for its chain again when it cannot open a distribution
        # (docs/protocol.md §16.4): counted, with where the distribution came from.
        if batch.asks:
            where = "pushes" if self.in_pushes else "a sync"
            self.faults.log.notices[f"asked for a chain again (from {where})"] += len(batch.asks)
        super()._ask_again(batch)

    def _ack(self, batch: Any) -> None:
        self._crash_point(CRASH_POINTS[0])
        super()._ack(batch)
        self._crash_point(CRASH_POINTS[1])

    def _deliver(self, item: OutboxItem) -> Any:
        self._crash_point(CRASH_POINTS[2])
        return super()._deliver(item)

    def _call_parts(
        self, action: str, *, retry: bool = True, **fields: Any
    ) -> list[dict[str, Any]]:
        parts = super()._call_parts(action, retry=retry, **fields)
        if action == "send":
            self._crash_point(CRASH_POINTS[3])
        return parts


# -- one device ----------------------------------------------------------------------


class Harness:
    """What every device thread shares: the plan, the ground truth, the phase."""

    def __init__(self, config: SoakConfig, server: ServerConfig, home: Path) -> None:
        self.config = config
        self.server = server
        self.home = home
        self.lock = threading.Lock()
        self.prepared: dict[str, str] = {}  # message id -> text
        self.conversations_of: dict[str, list[str]] = defaultdict(list)  # user -> cids
        self.sent = 0
        self.faults_on = True
        # How long each device waits for pushes between its sends: short for a few
        # devices, longer for many, so that polling itself does not take every core.
        self.poll_s = max(0.05, config.devices / 200)

    def record_prepared(self, message_id: str, text: str) -> None:
        with self.lock:
            self.prepared[message_id] = text

    def conversations(self, user_id: str) -> list[str]:
        with self.lock:
            return list(self.conversations_of[user_id])


@dataclass
class Command:
    """Work for a device's own thread (a Messenger is used by one thread only)."""

    name: str
    argument: Any = None
    result: Any = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


class DeviceRunner(threading.Thread):
    """One device: its Messenger, its sends, its polls; reopened from disk after a crash."""

    def __init__(
        self, harness: Harness, user: User, device: DeviceSecrets, profile: str, quota: int
    ) -> None:
        super().__init__(name=profile, daemon=True)
        self.harness = harness
        self.user = user
        self.device = device
        self.profile = profile
        self.quota = quota
        self.log = DeviceLog(profile, user.user_id, device.device_id)
        self.faults = Faults(harness.config, f"{harness.config.seed}:{profile}", self.log)
        self.rng = random.Random(f"{harness.config.seed}:{profile}:plan")
        self.commands: queue.Queue[Command] = queue.Queue()
        self.sessions: list[FaultySession] = []
        self.messenger: SoakMessenger | None = None
        self.failure: BaseException | None = None
        self._counter = 0
        self._shown_texts: set[str] = set()

    # -- lifetime

    def open(self) -> SoakMessenger:
        # One key derivation at a time: OpenSSL's Argon2id run from several threads
        # at once was seen to stall them all (no CPU used, for minutes) and to fail
        # with MemoryError.
        with _KDF:
            profile = Profile.open(self.profile, self.harness.home)
            info = profile.read_info()
            keys = profile.load_keys(PASSPHRASE)

        def connect() -> FaultySession:
            session = FaultySession.open(info.server, info.device_id, keys.device.signing_key)
            session.faults = self.faults
            self.sessions.append(session)
            return session

        messenger = SoakMessenger.open(
            profile, info, keys, PASSPHRASE, connect=connect, receipts=self.harness.config.receipts
        )
        assert isinstance(messenger, SoakMessenger)
        messenger.faults = self.faults
        messenger.prepared = self.harness.record_prepared
        self.messenger = messenger
        return messenger

    def _revive(self) -> None:
        """The process died: its socket goes with it; a new one reads the profile from disk."""
        if self.sessions:
            with contextlib.suppress(Exception):
                self.sessions[-1].close()
        self.messenger = None
        with self.timed("reopen after a crash"):
            messenger = self.open()
        self._shown_from_history(messenger, "crash")

    def _shown_from_history(self, messenger: Messenger, when: str) -> None:
        """What the dead process stored but never handed out is the backlog a person sees."""
        backlog = [
            Shown(cid, stored.seq, stored.text, from_history=when)
            for cid, record in messenger.state.conversations.items()
            for stored in record.history
            if stored.sender_device_id != self.device.device_id
            and stored.text.startswith("soak ")
            and stored.text not in self._shown_texts
        ]
        backlog.sort(key=lambda s: (s.conversation_id, s.seq or 0))
        for item in backlog:
            self._shown_texts.add(item.text)
        self.log.shown.extend(backlog)

    def _record(self, events: list[Event]) -> int:
        new = 0
        for event in events:
            if isinstance(event, MessageEvent) and event.text.startswith("soak "):
                self.log.shown.append(Shown(event.conversation_id, event.seq, event.text))
                self._shown_texts.add(event.text)
                new += 1
            elif isinstance(event, NoticeEvent):
                self.log.notices[event.code] += 1
                if event.code not in ROUTINE_NOTICES and len(self.log.notice_texts) < 5:
                    self.log.notice_texts.append(f"notice on {self.profile}: {event.detail}")
        return new

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.log.seconds[step] += time.perf_counter() - begun
            self.log.steps[step] += 1

    def guarded(self, name: str, step: Callable[[SoakMessenger], list[Event]]) -> int:
        """Run one step; a crash reopens the device, an error is counted. New messages shown."""
        with self.timed(name):
            return self._guarded(step)

    def _guarded(self, step: Callable[[SoakMessenger], list[Event]]) -> int:
        messenger = self.messenger or self.open()
        try:
            return self._record(step(messenger))
        except Crash:
            self._revive()
        # A call that raised after it stored messages hands them out with the next call
        # (the Messenger owes them); what it never hands out is found at the end.
        except FrameError as exc:
            self.log.errors[exc.code] += 1
            time.sleep(0.05)
        except ClientError as exc:
            self.log.errors[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
            time.sleep(0.05)
        return 0

    # -- the loop

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.failure = exc

    def _run(self) -> None:
        self.open()
        while True:
            with contextlib.suppress(queue.Empty):
                command = self.commands.get_nowait()
                try:
                    if command.name == "stop":
                        self._stop()
                        return
                    command.result = self._command(command.name, command.argument)
                finally:
                    command.done.set()
                continue
            rate = self.harness.config.disconnect_rate
            if self.harness.faults_on and self.faults.roll(rate, "socket dropped"):
                self._drop_socket()
            if self.quota > 0 and self.rng.random() < 0.5:
                self._send_one()
            self.guarded("poll", lambda m: m.poll(self.harness.poll_s))

    def _drop_socket(self) -> None:
        messenger = self.messenger
        if messenger is not None and messenger._session is not None and self.sessions:
            self.faults.count("socket dropped")
            with contextlib.suppress(Exception):
                self.sessions[-1].close()

    def _send_one(self) -> None:
        conversations = self.harness.conversations(self.user.user_id)
        if not conversations:
            return
        self._counter += 1
        self.quota -= 1
        cid = self.rng.choice(conversations)
        text = f"soak {self.profile}:{self._counter}"
        intent = Intent(text, cid)
        self.log.intents.append(intent)
        messenger = self.messenger or self.open()
        try:
            with self.timed("send"):
                messenger.send_text(cid, text)
            intent.outcome = "sent"
        except Crash:
            intent.outcome = "crashed"
            self._revive()
        except FrameError as exc:
            intent.outcome = f"refused:{exc.code}"
            self.log.errors[f"send {exc.code}"] += 1
        except ClientError as exc:
            intent.outcome = f"error:{type(exc).__name__}"
            self.log.errors[f"send {type(exc).__name__}: {str(exc)[:60]}"] += 1
        with self.harness.lock:
            self.harness.sent += 1

    def _command(self, command: str, argument: Any) -> Any:
        if command == "sync":
            return self.guarded("final sync", lambda m: m.sync())
        if command == "add":
            cid, user_id = argument

            def add(m: SoakMessenger) -> list[Event]:
                m.add_members(cid, [user_id])
                return []

            self.guarded("add member", add)
            return None
        raise ValueError(command)

    def _stop(self) -> None:
        """Close as a person would (state saved), then read the profile back from disk."""
        self.faults.on = False
        if self.messenger is not None:
            with contextlib.suppress(ClientError):
                self.messenger.close()
        messenger = self.open()
        try:
            self._shown_from_history(messenger, "end")
            self.log.left_in_outbox = len(messenger.state.outbox)
        finally:
            messenger.close()

    def ask(self, name: str, argument: Any = None) -> Command:
        command = Command(name, argument)
        self.commands.put(command)
        return command


# -- the run -------------------------------------------------------------------------


def _plan_users(config: SoakConfig, rng: random.Random) -> list[int]:
    """Devices per user (1-3) for the devices there at the start."""
    initial = max(config.devices - config.links, 2)
    sizes: list[int] = []
    while sum(sizes) < initial:
        sizes.append(min(rng.choice((1, 1, 2, 2, 3)), initial - sum(sizes)))
    while len(sizes) < min(4, initial):  # a room, and someone outside it to add
        largest = sizes.index(max(sizes))
        sizes[largest] -= 1
        sizes.append(1)
    return sizes


def run(config: SoakConfig, endpoints_file: Path | None = None) -> SoakResult:
    """One soak; against the stack whose ``endpoints.json`` is given, else a new one."""
    if endpoints_file is not None:
        return _run(config, endpoints_file)
    with tempfile.TemporaryDirectory(prefix="sotto-soak-stack-") as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with cli_stack(env, Path(data), "--rate-limit-scale", str(config.rate_limit_scale)):
            return _run(config, Path(data) / "endpoints.json")


def _run(config: SoakConfig, endpoints_file: Path) -> SoakResult:
    with contextlib.ExitStack() as cleanup:
        if config.home is None:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sotto-soak-")))
        else:
            home = config.home
            home.mkdir(parents=True, exist_ok=True)
        return _soak(config, endpoints_file, home)
    raise AssertionError("unreachable")


def _soak(config: SoakConfig, endpoints_file: Path, home: Path) -> SoakResult:
    started = time.perf_counter()
    endpoints = json.loads(endpoints_file.read_text())
    server = from_endpoints(endpoints_file)
    directory = Directory(endpoints)
    rng = random.Random(config.seed)
    harness = Harness(config, server, home)

    # People: users with 1-3 devices.
    users: list[User] = []
    for index, size in enumerate(_plan_users(config, rng)):
        user = directory.enroll(index)
        for _ in range(size - 1):
            directory.link(user)
        users.append(user)
    profiles = {
        d.device_id: _write_profile(home, server, directory.network_id, u, d)
        for u in users
        for d in u.devices
    }

    # Conversations: a ring of direct ones, and rooms of 3-8 members made by their owner.
    rooms: dict[str, User] = {}  # room -> owner
    with _plain_messenger(home, profiles[users[0].devices[0].device_id]) as first:
        del first  # one open first: the stack's network policy is read once, here
    pairs = {tuple(sorted((i, (i + 1) % len(users)))) for i in range(len(users))}
    for a, b in sorted(pairs):
        owner, peer = users[a], users[b]
        with _plain_messenger(home, profiles[owner.devices[0].device_id]) as m:
            cid = m.direct(peer.user_id)
        harness.conversations_of[owner.user_id].append(cid)
        harness.conversations_of[peer.user_id].append(cid)
    for number in range(max(2, len(users) // 3)):
        # Someone stays outside every room, so that members can be added mid-run.
        most = max(2, min(8, len(users) - 1))
        size = rng.randint(min(3, most), most)
        members = rng.sample(users, size)
        owner = members[0]
        with _plain_messenger(home, profiles[owner.devices[0].device_id]) as m:
            cid = m.create_room(f"soak-{number}", [u.user_id for u in members[1:]])
        rooms[cid] = owner
        for member in members:
            harness.conversations_of[member.user_id].append(cid)

    # Quotas: every device there at the end sends its share (linked ones once started).
    slots = sum(len(u.devices) for u in users) + config.links
    share, extra = divmod(config.messages, slots)
    quotas = [share + (1 if i < extra else 0) for i in range(slots)]
    runners: list[DeviceRunner] = []
    runner_of: dict[str, DeviceRunner] = {}
    for user in users:
        for device in user.devices:
            runner = DeviceRunner(
                harness, user, device, profiles[device.device_id], quotas[len(runners)]
            )
            runners.append(runner)
            runner_of[device.device_id] = runner
    if config.every_fault:
        kinds = ["socket dropped", "answer lost", "push lost", *CRASH_POINTS]
        for index, kind in enumerate(kinds):
            runners[index % len(runners)].faults.forced[kind] = 3
    for runner in runners:
        runner.start()

    phases = {"setup": time.perf_counter() - started}
    # Mid-run: members added and devices linked, spread over the run.
    events = ["add"] * config.adds + ["link"] * config.links
    rng.shuffle(events)
    marks = [config.messages * (i + 1) // (len(events) + 1) for i in range(len(events))]
    linked_starts: dict[str, dict[str, int]] = {}
    adds_done = links_done = 0
    for event, mark in zip(events, marks, strict=True):
        while harness.sent < mark and any(r.is_alive() for r in runners):
            time.sleep(0.1)
        if event == "add":
            choices = [
                (cid, user)
                for cid in rooms
                for user in users
                if cid not in harness.conversations(user.user_id)
            ]
            if not choices:
                continue
            cid, user = rng.choice(choices)
            owner_runner = runner_of[rooms[cid].devices[0].device_id]
            if not owner_runner.ask("add", (cid, user.user_id)).wait(120):
                raise TimeoutError("the room owner never ran the add")
            if directory.conversations.member(cid, user.user_id) is not None:
                with harness.lock:
                    harness.conversations_of[user.user_id].append(cid)
                owner_runner.log.faults["member added mid-run"] += 1
                adds_done += 1
        else:
            candidates = [u for u in users if len(u.devices) < 3] or users
            user = rng.choice(candidates)
            device = directory.link(user)
            linked_starts[device.device_id] = directory.start_cursors(
                device.device_id, user.user_id
            )
            profiles[device.device_id] = _write_profile(
                home, server, directory.network_id, user, device
            )
            runner = DeviceRunner(
                harness, user, device, profiles[device.device_id], quotas[len(runners)]
            )
            runner.log.faults["device linked mid-run"] += 1
            runners.append(runner)
            runner_of[device.device_id] = runner
            runner.start()
            links_done += 1

    # Every device sends its share, then faults stop and every device syncs until quiet.
    while any(r.quota > 0 and r.is_alive() for r in runners):
        time.sleep(0.2)
    phases["sending"] = time.perf_counter() - started - phases["setup"]
    harness.faults_on = False
    for runner in runners:
        runner.faults.on = False
    time.sleep(2)
    for _ in range(6):
        waits = [(r, r.ask("sync")) for r in runners if r.is_alive()]
        new = 0
        for runner, command in waits:
            if not command.wait(300):
                raise TimeoutError(f"{runner.name} never finished its sync")
            new += int(command.result or 0)
        if new == 0:
            break
    for runner in runners:
        if runner.is_alive():
            runner.ask("stop").wait(120)
        runner.join(60)
    failures = [r for r in runners if r.failure is not None]
    if failures:
        raise RuntimeError(f"{failures[0].name} failed") from failures[0].failure
    phases["final syncs"] = time.perf_counter() - started - sum(phases.values())
    result = _count(config, harness, directory, runners, linked_starts, started)
    result.phases = phases
    return result


@contextlib.contextmanager
def _plain_messenger(home: Path, name: str) -> Iterator[Messenger]:
    with _KDF:
        profile = Profile.open(name, home)
        keys = profile.load_keys(PASSPHRASE)
    with Messenger.open(profile, profile.read_info(), keys, PASSPHRASE) as m:
        yield m


def _count(
    config: SoakConfig,
    harness: Harness,
    directory: Directory,
    runners: list[DeviceRunner],
    linked_starts: dict[str, dict[str, int]],
    started: float,
) -> SoakResult:
    store = directory.conversations
    cids = sorted({cid for cids in harness.conversations_of.values() for cid in cids})
    # What the server stored, by text (the message id a sender prepared it under).
    stored: dict[str, list[tuple[str, int, str]]] = defaultdict(list)  # text -> (cid, seq, dev)
    for cid in cids:
        for message in store.messages_after(cid, 0, 10**9):
            text = harness.prepared.get(message.message_id)
            if text is not None:
                stored[text].append((cid, message.seq, message.sender_device))
    joined = {cid: {m.user_id: m.joined_seq for m in store.members(cid)} for cid in cids}

    examples: list[str] = []
    by_device = {r.device.device_id: r for r in runners}
    due_total = lost = duplicated = out_of_order = unexpected = from_history = unhanded = 0
    for runner in runners:
        log = runner.log
        due: dict[str, tuple[str, int]] = {}
        for text, copies in stored.items():
            cid, seq, sender = copies[0]
            member_since = joined[cid].get(log.user_id)
            starts = linked_starts.get(log.device_id, {})
            if sender == log.device_id or member_since is None or seq <= member_since:
                continue
            if cid in starts and seq <= starts[cid]:
                continue
            due[text] = (cid, seq)
        due_total += len(due)
        counts = Counter(s.text for s in log.shown)
        for text in due:
            if counts[text] == 0:
                lost += 1
                if len(examples) < 10:
                    cid, seq = due[text]
                    sender_log = by_device[stored[text][0][2]].log
                    linked = " (linked mid-run)" if log.device_id in linked_starts else ""
                    examples.append(
                        f"lost: {text!r} ({cid} #{seq}) on {log.name}{linked};"
                        f" its faults {dict(log.faults)}, the sender's {dict(sender_log.faults)}"
                    )
        for text, count in counts.items():
            if count > 1:
                duplicated += count - 1
                if len(examples) < 10:
                    examples.append(f"duplicated: {text!r} shown {count}x on {log.name}")
            if text not in due:
                unexpected += 1
        highest: dict[str, int] = {}
        for shown in log.shown:
            if shown.seq is None:
                continue
            if shown.seq < highest.get(shown.conversation_id, 0):
                out_of_order += 1
                if len(examples) < 10:
                    how = f" (from history: {shown.from_history})" if shown.from_history else ""
                    examples.append(
                        f"out of order: #{shown.seq}{how} after #{highest[shown.conversation_id]}"
                        f" in {shown.conversation_id} on {log.name}"
                    )
            highest[shown.conversation_id] = max(highest.get(shown.conversation_id, 0), shown.seq)
        from_history += sum(1 for s in log.shown if s.from_history == "crash")
        for shown in log.shown:
            if shown.from_history == "end":
                unhanded += 1
                if len(examples) < 10:
                    examples.append(
                        f"stored, never handed out ({shown.from_history}): {shown.text!r}"
                        f" ({shown.conversation_id} #{shown.seq}) on {log.name}"
                    )

    intents = [i for r in runners for i in r.log.intents]
    prepared = set(harness.prepared.values())

    def told(intent: Intent) -> bool:
        """``send`` raised a refusal, or an error before anything was prepared: the
        sender knows it was not sent. An error after preparing leaves the message in
        the outbox, for the next command to send."""
        if intent.outcome.startswith("refused"):
            return True
        return intent.outcome.startswith("error") and intent.text not in prepared

    refused = sum(1 for i in intents if told(i))
    never_stored = 0
    for intent in intents:
        if intent.text not in stored and not told(intent):
            never_stored += 1
            if len(examples) < 10:
                examples.append(f"never stored: {intent.text!r} ({intent.outcome})")
    examples += [text for r in runners for text in r.log.notice_texts][:10]
    faults: Counter[str] = Counter()
    notices: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    seconds: defaultdict[str, float] = defaultdict(float)
    steps: Counter[str] = Counter()
    for runner in runners:
        faults.update(runner.log.faults)
        notices.update(runner.log.notices)
        errors.update(runner.log.errors)
        for step, spent in runner.log.seconds.items():
            seconds[step] += spent
        steps.update(runner.log.steps)
    return SoakResult(
        devices=len(runners),
        users=len({r.user.user_id for r in runners}),
        conversations=len(cids),
        messages=len(stored),
        deliveries=due_total,
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        never_stored=never_stored,
        left_in_outbox=sum(r.log.left_in_outbox for r in runners),
        unexpected=unexpected,
        from_history=from_history,
        never_handed_out=unhanded,
        refused=refused,
        faults=faults,
        notices=notices,
        errors=errors,
        wall_s=time.perf_counter() - started,
        examples=examples,
        steps={k: (steps[k], seconds[k]) for k in sorted(steps)},
    )


def main() -> None:
    config = SoakConfig.from_env()
    print(
        f"soak: {config.devices} devices, {config.messages} messages, seed {config.seed}",
        flush=True,
    )
    endpoints = os.environ.get("SOTTO_SOAK_ENDPOINTS")  # a running stack's endpoints.json
    result = run(config, Path(endpoints) if endpoints else None)
    result.print()
    if not result.clean:
        raise SoakFailed(
            f"lost {result.lost}, duplicated {result.duplicated},"
            f" out of order {result.out_of_order}, never stored {result.never_stored},"
            f" stored but never handed out {result.never_handed_out}"
        )


if __name__ == "__main__":
    try:
        main()
    except SoakFailed as failed:
        print(f"soak failed: {failed}", file=sys.stderr)
        sys.exit(1)
