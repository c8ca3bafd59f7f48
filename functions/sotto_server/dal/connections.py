"""The connections table: which device holds which open WebSocket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sotto import topology

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = ["CONNECTION_TTL_SECONDS", "Connection", "ConnectionsStore"]

# API Gateway closes every connection after two hours; $disconnect is
# best-effort, so records expire on their own a little later.
CONNECTION_TTL_SECONDS = 2 * 3600 + 600
_BY_DEVICE = topology.table("ConnectionsTable").indexes[0].name


@dataclass(frozen=True)
class Connection:
    connection_id: str
    device_id: str
    user_id: str
    network_id: str
    connected_at: int
    expires_at: int


class ConnectionsStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def put(self, connection: Connection) -> None:
        self._client.put_item(
            TableName=self._table,
            Item={
                "connection_id": {"S": connection.connection_id},
                "device_id": {"S": connection.device_id},
                "user_id": {"S": connection.user_id},
                "network_id": {"S": connection.network_id},
                "connected_at": {"N": str(connection.connected_at)},
                "expires_at": {"N": str(connection.expires_at)},
            },
        )

    def delete(self, connection_id: str) -> None:
        # Deleting a record that is already gone is fine: $disconnect and a
        # 410 on push may both try.
        self._client.delete_item(TableName=self._table, Key={"connection_id": {"S": connection_id}})

    def get(self, connection_id: str) -> Connection | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={"connection_id": {"S": connection_id}},
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else _from_item(item)

    def for_device(self, device_id: str) -> list[Connection]:
        response = self._client.query(
            TableName=self._table,
            IndexName=_BY_DEVICE,
            KeyConditionExpression="device_id = :d",
            ExpressionAttributeValues={":d": {"S": device_id}},
        )
        return [_from_item(item) for item in response.get("Items", [])]


def _from_item(item: dict[str, AttributeValueTypeDef]) -> Connection:
    return Connection(
        connection_id=item["connection_id"]["S"],
        device_id=item["device_id"]["S"],
        user_id=item["user_id"]["S"],
        network_id=item["network_id"]["S"],
        connected_at=int(item["connected_at"]["N"]),
        expires_at=int(item["expires_at"]["N"]),
    )
