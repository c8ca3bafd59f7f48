"""Pushes to sockets through the @connections API.

A push is a courtesy: the stored copy of a message is the truth and clients
sync by cursor. So a failed push is logged and counted, never raised, and a
410 GoneException removes exactly that connection's record and nothing else.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from ..dal.connections import ConnectionsStore

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

__all__ = ["PushResult", "disconnect", "push"]

PushResult = Literal["delivered", "gone", "failed"]


def push(
    client: ApiGatewayManagementApiClient,
    connections: ConnectionsStore,
    connection_id: str,
    data: bytes,
) -> PushResult:
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=data)
    except client.exceptions.GoneException:
        connections.delete(connection_id)
        return "gone"
    except (ClientError, BotoCoreError):
        return "failed"
    return "delivered"


def disconnect(
    client: ApiGatewayManagementApiClient, connections: ConnectionsStore, connection_id: str
) -> None:
    """Close a socket now (its $disconnect follows); forget it either way."""
    with contextlib.suppress(client.exceptions.GoneException):
        client.delete_connection(ConnectionId=connection_id)
    connections.delete(connection_id)
