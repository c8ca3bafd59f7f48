"""The local stack's state on disk, so a restart comes back as it was.

moto keeps every table, object, key and queue in memory. ``sotto local up``
saves moto's backends for the services the stack uses (pickled, with the
few objects pickle cannot take — locks, private keys — reduced to what
rebuilds them), the physical names it provisioned, the default network and
the ports it listened on, and restores them on the next start: profiles
keep working, with the same endpoints. ``--fresh`` throws the state away.

The file is written whole to a temporary name and renamed, while moto is
held still (one request at a time), so a crash leaves the previous save.
It is a development convenience: it holds only what the servers hold
(ciphertext and public keys), and it is no backup of a deployment.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["SERVICES", "STATE_FILE", "SavedState", "StateError", "load", "save"]

STATE_FILE = "state.pickle"
VERSION = 1
# Every AWS service the stack provisions or its handlers call.
SERVICES = ("dynamodb", "dynamodbstreams", "s3", "kms", "sqs", "events")


class StateError(Exception):
    """The saved state cannot be used; the message says what to do."""


@dataclass
class SavedState:
    """What a restart needs besides moto: names, the default network, the ports."""

    resources: Any  # LocalResources
    default_network: dict[str, str]
    ports: dict[str, int]  # websocket, http, aws
    positions: dict[str, str]  # stream function -> the last record it was given


def _private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def _reduce_private_key(key: Any) -> tuple[Any, tuple[bytes]]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _private_key, (pem,)


def _dispatch_table() -> dict[type, Any]:
    table: dict[type, Any] = dict(copyreg.dispatch_table)
    table[type(threading.Lock())] = lambda _: (threading.Lock, ())
    table[type(threading.RLock())] = lambda _: (threading.RLock, ())
    # moto's KMS keeps key objects; their types are only known from an instance.
    table[type(rsa.generate_private_key(65537, 2048))] = _reduce_private_key
    table[type(ec.generate_private_key(ec.SECP256R1()))] = _reduce_private_key
    return table


def save(path: Path, saved: SavedState, moto_lock: Any) -> None:
    """Write moto's backends and ``saved`` to ``path`` atomically, moto held still."""
    from moto.backends import get_backend

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _dispatch_table()
    with moto_lock:
        pickler.dump(
            {
                "version": VERSION,
                "saved": saved,
                "backends": {name: get_backend(name) for name in SERVICES},  # type: ignore[call-overload]
            }
        )
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary.chmod(0o600)
    temporary.replace(path)


def load(path: Path) -> SavedState | None:
    """Restore moto's backends from ``path``; None if nothing was saved (``StateError``)."""
    from moto.backends import get_backend

    if not path.exists():
        return None
    fix = "start with --fresh to discard it"
    try:
        # The file is this machine's own, written by save() above (mode 0600 in the data dir).
        data = pickle.loads(path.read_bytes())  # noqa: S301
    except Exception as exc:  # a truncated file, another moto's classes: all mean the same
        raise StateError(f"the saved state in {path} cannot be read ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateError(f"the saved state in {path} is from another version; {fix}")
    for name, backends in data["backends"].items():
        live = get_backend(name)
        live.clear()
        live.update(backends)
    saved = data["saved"]
    assert isinstance(saved, SavedState)
    return saved
