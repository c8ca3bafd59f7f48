"""What the WebSocket message handlers share: stores, the caller, answering."""

from __future__ import annotations

from ..aws import connections_client, dynamodb_client
from ..config import settings
from ..dal.connections import ConnectionsStore
from ..dal.conversations import ConversationsStore
from ..dal.directory import DirectoryStore
from ..dal.guards import GuardsStore
from ..events import MessageEvent
from ..logic import conversations
from ..logic.auth import Principal
from ..logic.key_directory import Stores
from ..logic.push import PushResult, push

__all__ = [
    "caller",
    "connections_store",
    "conversations_store",
    "messaging_stores",
    "notify_device",
    "reply",
    "stores",
]


def connections_store() -> ConnectionsStore:
    return ConnectionsStore(dynamodb_client(), settings().table_name("ConnectionsTable"))


def stores() -> Stores:
    config = settings()
    return Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        guards=GuardsStore(dynamodb_client(), config.table_name("GuardsTable")),
        conversations=conversations_store() if "MessagesTable" in config.tables else None,
        limit_scale=config.rate_limit_scale,
    )


def conversations_store() -> ConversationsStore:
    return ConversationsStore(dynamodb_client(), settings().table_name("MessagesTable"))


def messaging_stores() -> conversations.Stores:
    config = settings()
    return conversations.Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        conversations=conversations_store(),
    )


def caller(event: MessageEvent) -> Principal:
    context = event.request_context.authorizer
    return Principal(context.device_id, context.user_id, context.network_id)


def reply(connection_id: str, frame: bytes) -> PushResult:
    return push(connections_client(), connections_store(), connection_id, frame)


def notify_device(device_id: str, frame: bytes) -> None:
    """Push to every open socket of a device; offline devices learn on their next sync."""
    store = connections_store()
    for connection in store.for_device(device_id):
        push(connections_client(), store, connection.connection_id, frame)
