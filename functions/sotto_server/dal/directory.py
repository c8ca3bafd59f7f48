"""The directory table: networks, users and devices with their public keys.

Single-table layout (every access pattern is in docs/architecture.md)::

    pk = "DEVICE#<device_id>"  sk = "DEVICE"   a device and its signing key
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = ["DeviceRecord", "DeviceStatus", "DirectoryStore"]

DeviceStatus = Literal["active", "revoked"]
_STATUSES: dict[str, DeviceStatus] = {"active": "active", "revoked": "revoked"}


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    user_id: str
    network_id: str
    # DER SubjectPublicKeyInfo of the device's ECDSA P-384 signing key.
    signing_key: bytes
    status: DeviceStatus
    created_at: int


class DirectoryStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def get_device(self, device_id: str) -> DeviceRecord | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"DEVICE#{device_id}"}, "sk": {"S": "DEVICE"}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        status = _STATUSES.get(_s(item, "status"))
        if status is None:
            raise ValueError(f"device {device_id} has an unknown status")
        return DeviceRecord(
            device_id=device_id,
            user_id=_s(item, "user_id"),
            network_id=_s(item, "network_id"),
            signing_key=base64.b64decode(_s(item, "signing_key")),
            status=status,
            created_at=int(item["created_at"].get("N", "0")),
        )

    def put_device(self, device: DeviceRecord) -> None:
        """Write a device; refuses to overwrite one that exists."""
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"DEVICE#{device.device_id}"},
                "sk": {"S": "DEVICE"},
                "user_id": {"S": device.user_id},
                "network_id": {"S": device.network_id},
                "signing_key": {"S": base64.b64encode(device.signing_key).decode()},
                "status": {"S": device.status},
                "created_at": {"N": str(device.created_at)},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )


def _s(item: dict[str, AttributeValueTypeDef], name: str) -> str:
    return item[name]["S"]
