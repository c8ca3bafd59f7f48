"""The stores each domain's handlers work with, built from the environment."""

from __future__ import annotations

from ..aws import dynamodb_client
from ..config import settings
from ..dal.conversations import ConversationsStore
from ..dal.directory import DirectoryStore
from ..dal.guards import GuardsStore
from ..logic import conversations
from ..logic.key_directory import Stores

__all__ = ["conversations_store", "messaging_stores", "stores"]


def conversations_store() -> ConversationsStore:
    return ConversationsStore(dynamodb_client(), settings().table_name("MessagesTable"))


def stores() -> Stores:
    config = settings()
    return Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        guards=GuardsStore(dynamodb_client(), config.table_name("GuardsTable")),
        limit_scale=config.rate_limit_scale,
    )


def messaging_stores() -> conversations.Stores:
    config = settings()
    return conversations.Stores(
        directory=DirectoryStore(dynamodb_client(), config.table_name("DirectoryTable")),
        conversations=conversations_store(),
        guards=GuardsStore(dynamodb_client(), config.table_name("GuardsTable")),
        limit_scale=config.rate_limit_scale,
    )
