"""The local stack in this process, for benchmarks that count what the handlers do.

``BenchStack`` runs ``sotto.local.LocalStack`` on an asyncio loop in a
background thread, so the handlers run here and a ``Meter`` installed on
boto3's default session sees every request they make. Setup writes go
through the DAL classes with separate, uncounted clients.

Members are enrolled directly through ``DirectoryStore`` (invite, then
enroll, with the records ``check_enrollment`` builds): each has its own
device certificate, device key and signed prekey made by the protocol
library, but users share one identity key, since an ML-DSA-87 identity per
user would cost more than the rest of the benchmark.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO, TypeVar

import boto3
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as connect_async
from websockets.sync.client import connect

import sotto.local.stack as local_stack
from sotto.local.aws import LOCAL_CREDENTIALS
from sotto.local.lambdas import LocalFunctions
from sotto.protocol import connect_token
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.conversation import LocalDevice, Member
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair, IdentityPublicKey
from sotto.protocol.safety import IdentityTracker
from sotto_server.dal.connections import ConnectionsStore
from sotto_server.dal.conversations import ConversationsStore
from sotto_server.dal.directory import DirectoryStore, Invite
from sotto_server.logic.frames import b64
from sotto_server.logic.identity import check_enrollment

from ._meter import Meter

__all__ = ["BenchStack", "Device", "Listeners", "Socket", "now_ms", "unb64"]

T = TypeVar("T")
FRAME_BYTES = 32_000  # API Gateway refuses larger frames: send fragments


def now_ms() -> int:
    return int(time.time() * 1000)


def unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _MainThreadOnly(io.TextIOBase):
    """sys.stdout for the benchmark's own thread; other threads' output is dropped."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


@contextmanager
def _quiet_handler_threads() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _MainThreadOnly(original)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Powertools: "No application metrics to publish"
            yield
    finally:
        sys.stdout = original


class _DiscardCounter(logging.Filter):
    """Counts urllib3's "Connection pool is full, discarding connection" instead of printing it.

    Each one is a pooled connection closed because more threads used a boto3
    client at once than its pool holds (botocore's default: 10): in AWS, a new
    TLS connection for a later request.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._logger = logging.getLogger("urllib3.connectionpool")

    def filter(self, record: logging.LogRecord) -> bool:
        if "Connection pool is full" in record.getMessage():
            self.count += 1
            return False
        return True

    def __enter__(self) -> _DiscardCounter:
        self._logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeFilter(self)


class _TrackedFunctions(LocalFunctions):
    """LocalFunctions that know how many invocations are running (fan-out ends after the reply)."""

    made: ClassVar[list[_TrackedFunctions]] = []

    def __init__(self, stage: str = "local", recorder: Any = None) -> None:
        super().__init__(stage, recorder)
        _TrackedFunctions.made.append(self)
        self.idle = threading.Condition()
        self.running = 0
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def invoke_sync(self, name: str, event: dict[str, Any]) -> Any:
        with self.idle:
            self.running += 1
        started = time.perf_counter()
        try:
            return super().invoke_sync(name, event)
        finally:
            with self.idle:
                self.running -= 1
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1
                self.idle.notify_all()


@dataclass
class Device:
    """An enrolled device whose secrets the benchmark holds."""

    secrets: DeviceSecrets
    identity: IdentityKeyPair
    network_id: str

    @property
    def user_id(self) -> str:
        return self.secrets.user_id

    @property
    def device_id(self) -> str:
        return self.secrets.device_id

    @property
    def address(self) -> tuple[str, str]:
        return (self.user_id, self.device_id)

    def prekey(self) -> PrekeyCertificate:
        return self.secrets.current_signed_prekey()

    def local(self) -> LocalDevice:
        return LocalDevice(self.secrets, self.identity.public, IdentityTracker())

    def headers(self, audience: str) -> dict[str, str]:
        token = connect_token.issue(
            self.device_id,
            self.secrets.signing_key.key,
            audience,
            now=int(time.time()),
            nonce=secrets.token_bytes(16),
        )
        return {"Authorization": f"Sotto-Device {token}"}


def enroll_through_dal(
    directory: DirectoryStore,
    network_id: str,
    identity: IdentityKeyPair,
    user_id: str,
    *,
    handle: str,
    now: int,
) -> DeviceSecrets:
    """A user and first device, written as the enroll route writes them (invite, checks,
    one transaction) without the HTTP round trip or its per-IP enrollment limit."""
    device = DeviceSecrets.create(identity, user_id, f"dev-{secrets.token_hex(6)}", now=now)
    invite = Invite(
        code_hash=secrets.token_hex(32),
        network_id=network_id,
        user_id=user_id,
        handle=handle,
        created_at=now,
        expires_at=now + 3_600_000,
        used=False,
    )
    directory.create_invite(invite, now // 1000 + 3600)
    user, record, signed = check_enrollment(
        invite,
        identity.public.serialize(),
        device.certificate.serialize(),
        device.current_signed_prekey().serialize(),
        now_ms=now,
    )
    directory.enroll(invite, user, record, signed, now)
    return device


class BenchStack:
    def __init__(self, *, rate_limit_scale: float = 1000.0) -> None:
        """``rate_limit_scale``: 1 for the deployment's defaults; cost benchmarks raise it."""
        self.rate_limit_scale = rate_limit_scale
        self._exit = ExitStack()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._shared_identity = IdentityKeyPair.generate()

    def __enter__(self) -> BenchStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start(self) -> None:
        environ = dict(os.environ)

        def restore_environ() -> None:
            os.environ.clear()
            os.environ.update(environ)

        self._exit.callback(restore_environ)
        # Handlers log and print EMF metrics on stdout, as in Lambda; here the
        # tables are the output, so what handler threads print is dropped.
        os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
        self._exit.enter_context(_quiet_handler_threads())
        self.discarded = _DiscardCounter()
        self._exit.enter_context(self.discarded)
        self._thread.start()
        self._exit.callback(self._thread.join, 5)
        self._exit.callback(self._loop.call_soon_threadsafe, self._loop.stop)
        # LocalStack builds its LocalFunctions itself: hand it the tracking kind.
        original = getattr(local_stack, "LocalFunctions")  # noqa: B009
        setattr(local_stack, "LocalFunctions", _TrackedFunctions)  # noqa: B010
        try:
            data_dir = Path(self._exit.enter_context(tempfile.TemporaryDirectory()))
            self._stack = local_stack.LocalStack(
                data_dir, rate_limit_scale=self.rate_limit_scale, persist=False
            )
            self.endpoints = self.run(self._stack.start())
            self._exit.callback(lambda: self.run(self._stack.stop()))
        finally:
            setattr(local_stack, "LocalFunctions", original)  # noqa: B010
        self.functions = _TrackedFunctions.made.pop()
        self.audience = f"{self.endpoints.api_id}/{self.endpoints.stage}"
        self.network_id = self.endpoints.default_network["network_id"]
        tables = self.endpoints.resources["tables"]
        # The handlers' clients come from boto3's default session: count there.
        previous = boto3.DEFAULT_SESSION
        self._exit.callback(setattr, boto3, "DEFAULT_SESSION", previous)
        boto3.setup_default_session()
        self.meter = Meter(tables, probe=self.client("dynamodb"))
        self.meter.install(boto3.DEFAULT_SESSION)
        from sotto_server import aws, config

        for cached in (aws.dynamodb_client, aws.connections_client, config.settings):
            cached.cache_clear()
        dynamodb = self.client("dynamodb")
        self.directory = DirectoryStore(dynamodb, tables["DirectoryTable"])
        self.conversations = ConversationsStore(dynamodb, tables["MessagesTable"])
        self.connections = ConnectionsStore(dynamodb, tables["ConnectionsTable"])

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def client(self, service: str, config: Any = None) -> Any:
        """An uncounted client (its own session) for setup and raw measurements."""
        endpoint = (
            self.endpoints.connections
            if service == "apigatewaymanagementapi"
            else self.endpoints.aws
        )
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
            region_name=LOCAL_CREDENTIALS["region_name"],
        )
        return session.client(service, endpoint_url=endpoint, config=config)  # type: ignore[call-overload]

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no handler is running: a route's fan-out continues after its answer."""
        with self.functions.idle:
            if not self.functions.idle.wait_for(lambda: self.functions.running == 0, timeout):
                raise TimeoutError("handlers still running")

    # -- enrollment through the DAL --------------------------------------------------

    def enroll(self, *, own_identity: bool = False, label: str = "u") -> Device:
        identity = IdentityKeyPair.generate() if own_identity else self._shared_identity
        user_id = f"{label}-{secrets.token_hex(5)}"
        now = now_ms()
        device = enroll_through_dal(
            self.directory, self.network_id, identity, user_id, handle=user_id, now=now
        )
        return Device(device, identity, self.network_id)

    def socket(self, device: Device) -> Socket:
        return Socket(self.endpoints.websocket, device.headers(self.audience))


class Socket:
    """A device's socket: requests answered by ``id``, multi-part answers gathered."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._ws = connect(url, additional_headers=headers, max_size=None)
        self._counter = 0
        self.pushes = 0

    def close(self) -> None:
        self._ws.close()

    def request(self, action: str, **fields: Any) -> list[dict[str, Any]]:
        self._counter += 1
        request_id = f"r{self._counter}"
        text = json.dumps({"action": action, "id": request_id, **fields})
        self._ws.send([text[i : i + FRAME_BYTES] for i in range(0, len(text), FRAME_BYTES)])
        parts: list[dict[str, Any]] = []
        while True:
            frame = json.loads(self._ws.recv(timeout=60))
            if "action" not in frame:  # API Gateway's answer to a failed integration
                raise RuntimeError(f"{action} failed: {frame}")
            if frame.get("id") != request_id:
                self.pushes += 1
                continue
            if frame.get("action") == "error":
                raise RuntimeError(f"{action} refused: {frame}")
            parts.append(frame)
            if frame.get("final", True):
                return parts

    def members(self, cid: str) -> list[Member]:
        """The conversation's devices, as a client reads them (certificates verified later)."""
        parts = self.request("conversation_devices", conversation_id=cid)
        identities = {
            m["user_id"]: IdentityPublicKey.parse(unb64(m["identity_key"]))
            for part in parts
            for m in part["members"]
        }
        return [
            Member(DeviceCertificate.parse(unb64(d["certificate"])), identities[d["user_id"]])
            for part in parts
            for d in part["devices"]
        ]


class Listeners:
    """Many connected devices that only drain their sockets, counting ``message`` pushes."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._sockets: list[ClientConnection] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.received = 0
        self._target = 0
        self.reached = threading.Event()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(300)

    def connect(self, url: str, headers: list[dict[str, str]], concurrency: int = 16) -> None:
        async def one(header: dict[str, str], gate: asyncio.Semaphore) -> None:
            async with gate:
                socket = await connect_async(url, additional_headers=header, max_size=None)
            self._sockets.append(socket)
            self._tasks.append(asyncio.create_task(self._drain(socket)))

        async def all_of() -> None:
            gate = asyncio.Semaphore(concurrency)
            await asyncio.gather(*(one(h, gate) for h in headers))

        self._run(all_of())

    async def _drain(self, socket: ClientConnection) -> None:
        async for frame in socket:
            data = frame.encode() if isinstance(frame, str) else frame
            if data.startswith(b'{"action":"message"'):
                self.received += 1
                if self.received >= self._target:
                    self.reached.set()

    def expect(self, more: int) -> None:
        """Set ``reached`` once ``more`` further message pushes have arrived."""

        async def arm() -> None:
            self._target = self.received + more
            self.reached.clear()

        self._run(arm())

    def close(self) -> None:
        async def close_all() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*(s.close() for s in self._sockets), return_exceptions=True)

        self._run(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def payload_frame(cid: str, envelope: bytes) -> bytes:
    """A push the size of the real one, for the raw @connections measurement."""
    frame = {"action": "message", "conversation_id": cid, "seq": 1, "envelope": b64(envelope)}
    return json.dumps({**frame, "server_time": now_ms()}, separators=(",", ":")).encode()
