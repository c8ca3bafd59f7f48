"""Helpers for tests that talk to a running local stack over real sockets."""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.sync.client import connect

from sotto.client.session import drain
from sotto.protocol import connect_token
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair

FRAME_BYTES = 32_000
CREDENTIALS = {
    "aws_access_key_id": "AKIALOCALSOTTO000000",
    "aws_secret_access_key": "local-secret-not-a-real-key",
    "region_name": "us-east-1",
}


@dataclass
class Stack:
    endpoints: dict[str, Any]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def websocket(self) -> str:
        return str(self.endpoints["websocket"])

    @property
    def audience(self) -> str:
        return f"{self.endpoints['api_id']}/{self.endpoints['stage']}"

    def client(self, service: str) -> Any:
        return aws_client(service, str(self.endpoints["aws"]))

    def connections_client(self) -> Any:
        """A boto3 @connections client, as handlers build it."""
        return aws_client("apigatewaymanagementapi", str(self.endpoints["connections"]))

    def table(self, logical_id: str) -> str:
        return str(self.endpoints["resources"]["tables"][logical_id])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def aws_client(service: Any, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region_name"],
    )


@contextmanager
def running_stack(
    data_dir: Path,
    *extra: str,
    rate_limit_scale: float = 100.0,
    persist: bool = False,
    verbose: bool = True,
) -> Iterator[Stack]:
    """Start ``sotto local up`` in a subprocess; stop it with SIGINT afterwards."""
    log_path = data_dir / "stack.log"
    log = log_path.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Line by line, so the log is complete even if the stack has to be killed.
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "sotto.cli", "local", "up", "--data-dir", str(data_dir)),
            *("--rate-limit-scale", str(rate_limit_scale)),
            # The suite reads the handlers' logs (plaintext scans); restarts are asked for.
            *(("--verbose",) if verbose else ()),
            *(() if persist else ("--ephemeral",)),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    endpoints_file = data_dir / "endpoints.json"
    try:
        deadline = time.monotonic() + 60
        while not endpoints_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"local stack did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield Stack(json.loads(endpoints_file.read_text()), process, log_path)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class SeededDevice:
    device_id: str
    user_id: str
    network_id: str
    key: ec.EllipticCurvePrivateKey
    identity: IdentityKeyPair | None = None
    secrets: DeviceSecrets | None = None
    handle: str = ""

    def token(self, audience: str, *, now: int | None = None, nonce: bytes | None = None) -> str:
        return connect_token.issue(
            self.device_id,
            self.key,
            audience,
            now=int(time.time()) if now is None else now,
            nonce=secrets.token_bytes(16) if nonce is None else nonce,
        )

    def headers(self, audience: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Sotto-Device {self.token(audience, **kwargs)}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_loopbacks = itertools.count(1)


def next_loopback() -> str:
    """A loopback address no other call of this process used (127.0.0.0/8 is all local).

    People enroll from their own devices, each from its own address; tests
    that enroll many users at the deployment's per-IP limits do the same.
    """
    n = next(_loopbacks)
    return f"127.{100 + (n >> 16) % 150}.{(n >> 8) % 256}.{n % 256 or 1}"


def http(
    stack: Stack,
    method: str,
    path: str,
    body: Any = None,
    *,
    signed: bool = False,
    source: str | None = None,
) -> tuple[int, Any]:
    """One HTTP API call; admin routes are SigV4-signed with the local credentials.

    ``source`` is the local address to call from (a loopback address).
    """
    url = f"{stack.endpoints['http']}{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if signed:
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        credentials = Credentials(
            CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"]
        )
        SigV4Auth(credentials, "execute-api", CREDENTIALS["region_name"]).add_auth(request)
        headers = dict(request.headers.items())
    if source is not None:
        parts = urllib.parse.urlsplit(url)
        connection = HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=30, source_address=(source, 0)
        )
        try:
            connection.request(method, parts.path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()
    call = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    status, answer = http(stack, method, f"/v1/admin{path}", body, signed=True)
    assert status == 200, (status, answer)
    return answer


def invite(stack: Stack, network_id: str | None = None, handle: str | None = None) -> Any:
    network_id = network_id or stack.endpoints["default_network"]["network_id"]
    handle = handle or f"user-{secrets.token_hex(4)}"
    return admin(stack, "POST", f"/networks/{network_id}/invites", {"handle": handle})


def seed_device(
    stack: Stack, *, status: str = "active", network_id: str | None = None
) -> SeededDevice:
    """Enroll a new user and device through the real routes (admin invite, then enroll).

    Each enrollment comes from its own loopback address, as people enroll
    from their own devices (the per-IP limits hold at any scale).
    """
    handle = f"user-{secrets.token_hex(4)}"
    invited = invite(stack, network_id, handle)
    identity = IdentityKeyPair.generate()
    device_id = f"dev-{secrets.token_hex(6)}"
    now_ms = int(time.time() * 1000)
    device = DeviceSecrets.create(identity, invited["user_id"], device_id, now=now_ms)
    code, answer = http(
        stack,
        "POST",
        "/v1/enroll",
        source=next_loopback(),
        body={
            "code": invited["code"],
            "identity_key": b64(identity.public.serialize()),
            "device_certificate": b64(device.certificate.serialize()),
            "signed_prekey": b64(device.current_signed_prekey().serialize()),
        },
    )
    assert code == 200, answer
    if status == "revoked":
        admin(stack, "POST", f"/devices/{device_id}/revoke")
    return SeededDevice(
        device_id=device_id,
        user_id=invited["user_id"],
        network_id=invited["network_id"],
        key=device.signing_key.key,
        identity=identity,
        secrets=device,
        handle=handle,
    )


class Socket:
    """A device's WebSocket with request/answer matching by ``id``; pushes are kept aside."""

    def __init__(self, stack: Stack, device: SeededDevice) -> None:
        self.device = device
        self.pushes: list[dict[str, Any]] = []
        self._exit = ExitStack()
        self._ws = self._exit.enter_context(
            connect(stack.websocket, additional_headers=device.headers(stack.audience))
        )
        self._counter = 0

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        drain(self._ws)  # unread pushes would hold the close for its 10 s timeout
        self._exit.close()

    def send(self, frame: dict[str, Any]) -> str:
        self._counter += 1
        request_id = frame.get("id") or f"r{self._counter}"
        text = json.dumps({**frame, "id": request_id})
        # API Gateway refuses frames over 32 KB: larger messages go in fragments.
        self._ws.send([text[i : i + FRAME_BYTES] for i in range(0, len(text), FRAME_BYTES)])
        return str(request_id)

    def answer(self, request_id: str, timeout: float = 15) -> dict[str, Any]:
        while True:
            frame = json.loads(self._ws.recv(timeout=timeout))
            if frame.get("id") == request_id:
                return dict(frame)
            self.pushes.append(frame)

    def request(self, action: str, **fields: Any) -> dict[str, Any]:
        return self.answer(self.send({"action": action, **fields}))

    def answers(self, action: str, **fields: Any) -> list[dict[str, Any]]:
        """All parts of an answer; multi-part answers carry ``part`` and ``final``."""
        request_id = self.send({"action": action, **fields})
        parts = [self.answer(request_id)]
        while "final" in parts[-1] and not parts[-1]["final"]:
            parts.append(self.answer(request_id))
        return parts

    def push(self, action: str, timeout: float = 10) -> dict[str, Any]:
        """The next push with ``action`` (kept ones first)."""
        for index, frame in enumerate(self.pushes):
            if frame.get("action") == action:
                return self.pushes.pop(index)
        while True:
            frame = json.loads(self._ws.recv(timeout=timeout))
            if frame.get("action") == action:
                return dict(frame)
            self.pushes.append(frame)


def publish_prekeys(socket: Socket, count: int, *, signed: bool = False) -> dict[str, Any]:
    """Make ``count`` one-time prekeys on the device and publish them (40 per frame)."""
    device = socket.device.secrets
    assert device is not None
    now_ms = int(time.time() * 1000)
    prekeys = device.new_one_time_prekeys(count, now=now_ms)
    answer: dict[str, Any] = {}
    for start in range(0, max(count, 1), 40):
        batch = prekeys[start : start + 40]
        fields: dict[str, Any] = {"one_time_prekeys": [b64(p.serialize()) for p in batch]}
        if signed and start == 0:
            fields["signed_prekey"] = b64(device.current_signed_prekey().serialize())
        answer = socket.request("publish_prekeys", **fields)
    return answer


def run_schedule(stack: Stack, function: str) -> Any:
    """Run a scheduled function now, as its EventBridge rule would (local stack only)."""
    status, answer = http(
        stack, "POST", f"/{stack.endpoints['stage']}/@schedules/{function}", signed=True
    )
    assert status == 200, (status, answer)
    return answer
