"""What the WebSocket message handlers share: answering on the caller's socket."""

from __future__ import annotations

from ..aws import connections_client, dynamodb_client
from ..config import settings
from ..dal.connections import ConnectionsStore
from ..logic.push import PushResult, push

__all__ = ["connections_store", "reply"]


def connections_store() -> ConnectionsStore:
    return ConnectionsStore(dynamodb_client(), settings().table_name("ConnectionsTable"))


def reply(connection_id: str, frame: bytes) -> PushResult:
    return push(connections_client(), connections_store(), connection_id, frame)
