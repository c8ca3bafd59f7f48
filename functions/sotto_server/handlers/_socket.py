"""What the WebSocket handlers share: the caller, answering, notifying.

Kept light (no protocol or domain imports): $connect, $disconnect, $default
and ping import only this, so their cold start stays small.
"""

from __future__ import annotations

from ..aws import connections_client, dynamodb_client
from ..config import settings
from ..dal.connections import ConnectionsStore
from ..events import MessageEvent
from ..logic.principal import Principal
from ..logic.push import PushResult, push

__all__ = ["caller", "connections_store", "notify_device", "online_pushes", "reply"]


def connections_store() -> ConnectionsStore:
    return ConnectionsStore(dynamodb_client(), settings().table_name("ConnectionsTable"))


def caller(event: MessageEvent) -> Principal:
    return event.principal


def reply(connection_id: str, frame: bytes) -> PushResult:
    return push(connections_client(), connections_store(), connection_id, frame)


def notify_device(device_id: str, frame: bytes) -> None:
    """Push to every open socket of a device; offline devices learn on their next sync."""
    for connection_id, data in online_pushes([(device_id, frame)]):
        reply(connection_id, data)


def online_pushes(notices: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(connection_id, frame) for every open socket of the noticed devices."""
    online = connections_store().online(sorted({device for device, _ in notices}))
    return [(cid, frame) for device, frame in notices for cid in online.get(device, [])]
