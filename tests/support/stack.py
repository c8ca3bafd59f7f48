"""Helpers for tests that talk to a running local stack over real sockets."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sotto.protocol import connect_token
from sotto_server.dal.directory import DeviceRecord, DirectoryStore

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
def running_stack(data_dir: Path, *extra: str) -> Iterator[Stack]:
    """Start ``sotto local up`` in a subprocess; stop it with SIGINT afterwards."""
    log_path = data_dir / "stack.log"
    log = log_path.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sotto.cli", "local", "up", "--data-dir", str(data_dir), *extra],
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


def seed_device(stack: Stack, *, status: str = "active", network_id: str = "net1") -> SeededDevice:
    """Write a device straight into the directory table, as enrollment will."""
    device = SeededDevice(
        device_id=f"dev-{secrets.token_hex(6)}",
        user_id=f"user-{secrets.token_hex(4)}",
        network_id=network_id,
        key=ec.generate_private_key(ec.SECP384R1()),
    )
    store = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    store.put_device(
        DeviceRecord(
            device_id=device.device_id,
            user_id=device.user_id,
            network_id=device.network_id,
            signing_key=device.key.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            ),
            status="active" if status == "active" else "revoked",
            created_at=int(time.time()),
        )
    )
    return device
