"""The stores each domain's handlers work with, built from the environment.

The storage and logic modules load with a function's route table, on its
first frame: at import they would cost the cold start more than boto3 does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..aws import dynamodb_client
from ..config import settings

if TYPE_CHECKING:
    from ..dal.conversations import ConversationsStore
    from ..dal.retention import RetentionStore
    from ..logic import conversations
    from ..logic.key_directory import Stores

__all__ = ["conversations_store", "messaging_stores", "retention_store", "stores"]


def conversations_store() -> ConversationsStore:
    from ..dal.conversations import ConversationsStore

    return ConversationsStore(dynamodb_client(), settings().table_name("MessagesTable"))


def stores() -> Stores:
    from ..dal.directory import DirectoryStore
    from ..dal.guards import GuardsStore
    from ..logic.key_directory import Stores
    from ._audit import audit  # keys, enroll and admin record audit events

    config = settings()
    return Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        guards=GuardsStore(dynamodb_client(), config.table_name("GuardsTable")),
        limit_scale=config.rate_limit_scale,
        audit=audit,
        close_sockets=_close_sockets,
        retention=retention_store(),
    )


def _close_sockets(device_id: str) -> int:
    from ..aws import connections_client
    from ..logic.push import disconnect
    from ..logic.standing import close_device_sockets
    from ._socket import connections_store

    connections = connections_store()
    return close_device_sockets(
        connections, lambda cid: disconnect(connections_client(), connections, cid), device_id
    )


def messaging_stores() -> conversations.Stores:
    from ..dal.directory import DirectoryStore
    from ..dal.guards import GuardsStore
    from ..logic import conversations

    config = settings()
    return conversations.Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        conversations=conversations_store(),
        guards=GuardsStore(dynamodb_client(), config.table_name("GuardsTable")),
        limit_scale=config.rate_limit_scale,
        retention=retention_store(),
    )


def retention_store() -> RetentionStore:
    """Retention identities: items of the directory table with a store of their own."""
    from ..dal.retention import RetentionStore

    return RetentionStore(dynamodb_client(), settings().table_name("DirectoryTable"))
