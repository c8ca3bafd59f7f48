"""What the WebSocket handlers share: the caller, its standing, answering, notifying.

Kept light (no protocol or domain imports): $connect, $disconnect, $default
and ping import only this, so their cold start stays small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..aws import connections_client, dynamodb_client
from ..config import settings
from ..dal.connections import ConnectionsStore
from ..events import MessageEvent
from ..logic.frames import refusal_frame
from ..logic.principal import Principal
from ..logic.push import PushResult, disconnect, push

if TYPE_CHECKING:
    from ..dal.directory import DirectoryStore

__all__ = [
    "caller",
    "connections_store",
    "directory_store",
    "notify_device",
    "online_pushes",
    "reply",
    "standing_caller",
]


def connections_store() -> ConnectionsStore:
    return ConnectionsStore(dynamodb_client(), settings().table_name("ConnectionsTable"))


def directory_store() -> DirectoryStore:
    # On the first frame, not at import: $disconnect never needs it (cold start).
    from ..dal.directory import DirectoryStore

    return DirectoryStore(dynamodb_client(), settings().table_name("DirectoryTable"))


def caller(event: MessageEvent) -> Principal:
    return event.principal


def standing_caller(event: MessageEvent) -> Principal | None:
    """The caller with its records read for this frame; None once refused and disconnected.

    A revoked device or suspended user gets one error frame (``revoked`` or
    ``suspended``) and then loses the socket, whatever route it called.
    """
    from ..logic.standing import NotInGoodStanding, in_good_standing

    principal = caller(event)
    try:
        return in_good_standing(directory_store(), principal)
    except NotInGoodStanding as refused:
        connection_id = event.request_context.connection_id
        reply(connection_id, refusal_frame(refused))
        disconnect(connections_client(), connections_store(), connection_id)
        return None


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
