"""The connections table: which device holds which open WebSocket.

Two kinds of item share the key ``connection_id``:

    <connection id>            a connection: device, user, network (GSI by_device)
    presence#<device_id>       the set of a device's open connection ids

The presence item lets a fan-out find the open sockets of a whole room with
one BatchGetItem per 100 devices, instead of one Query per device. It is
kept with every connect and disconnect; an id left behind by a missed
$disconnect answers 410 on the next push and is removed then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sotto import topology

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = ["CONNECTION_TTL_SECONDS", "Connection", "ConnectionsStore"]

# API Gateway closes every connection after two hours; $disconnect is
# best-effort, so records expire on their own a little later.
CONNECTION_TTL_SECONDS = 2 * 3600 + 600
_BY_DEVICE = topology.table("ConnectionsTable").indexes[0].name
# Connection ids are base64url, so never contain "#".
_PRESENCE = "presence#"


def _presence(device_id: str) -> str:
    return _PRESENCE + device_id


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
        self._put_record(connection)
        self._client.update_item(
            TableName=self._table,
            Key={"connection_id": {"S": _presence(connection.device_id)}},
            UpdateExpression="ADD connections :c SET expires_at = :e",
            ExpressionAttributeValues={
                ":c": {"SS": [connection.connection_id]},
                ":e": {"N": str(connection.expires_at)},
            },
        )

    def _put_record(self, connection: Connection) -> None:
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
        old = self._client.delete_item(
            TableName=self._table,
            Key={"connection_id": {"S": connection_id}},
            ReturnValues="ALL_OLD",
        ).get("Attributes", {})
        if "device_id" in old:
            self._client.update_item(
                TableName=self._table,
                Key={"connection_id": {"S": _presence(old["device_id"]["S"])}},
                UpdateExpression="DELETE connections :c",
                ExpressionAttributeValues={":c": {"SS": [connection_id]}},
            )

    def online(self, device_ids: Sequence[str]) -> dict[str, list[str]]:
        """The open connection ids of each device that has any; 100 devices per request."""
        found: dict[str, list[str]] = {}
        for start in range(0, len(device_ids), 100):
            keys: list[Any] = [
                {"connection_id": {"S": _presence(d)}} for d in device_ids[start : start + 100]
            ]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            for _ in range(8):
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    ids = item.get("connections", {}).get("SS", [])
                    if ids:
                        device = item["connection_id"]["S"].removeprefix(_PRESENCE)
                        found[device] = sorted(ids)
                request = dict(answer.get("UnprocessedKeys") or {})
                if not request:
                    break
        return found

    def for_device(self, device_id: str) -> list[Connection]:
        """Every connection record of a device, page by page (the index may lag a write)."""
        args: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": _BY_DEVICE,
            "KeyConditionExpression": "device_id = :d",
            "ExpressionAttributeValues": {":d": {"S": device_id}},
        }
        found: list[Connection] = []
        while True:
            response = self._client.query(**args)
            found.extend(_from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return found
            args["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _from_item(item: dict[str, AttributeValueTypeDef]) -> Connection:
    return Connection(
        connection_id=item["connection_id"]["S"],
        device_id=item["device_id"]["S"],
        user_id=item["user_id"]["S"],
        network_id=item["network_id"]["S"],
        connected_at=int(item["connected_at"]["N"]),
        expires_at=int(item["expires_at"]["N"]),
    )
