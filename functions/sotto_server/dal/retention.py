"""A network's retention identity, kept in the directory table beside the network.

Its own module (the directory store is already the largest), on items of its own::

    pk                  sk                    item
    NET#<network_id>    RETENTION             status, years, officer identity, current generation
    NET#<network_id>    RETENTION#G#<g:06d>   one key generation: device, certificates, wrapped key

Everything stored is public except the wrapped keys, which are KMS ciphertext
under the archive key (encryption context names the network): no function
role may decrypt them. Enabling and rotating are one transaction each, under
conditions on the current generation, so two admins racing cannot fork it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._single_table import Conflict, Item, SingleTableStore, key, number

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

__all__ = ["Conflict", "Retention", "RetentionGeneration", "RetentionStatus", "RetentionStore"]

RetentionStatus = Literal["enabled", "disabled"]


@dataclass(frozen=True)
class RetentionGeneration:
    generation: int
    device_id: str
    certificate: bytes
    prekey: bytes
    # KMS ciphertext of the device's signing and KEM private keys.
    wrapped_device_key: bytes
    created_at: int


@dataclass(frozen=True)
class Retention:
    network_id: str
    status: RetentionStatus
    years: int
    officer_identity: bytes
    # KMS ciphertext of the officer's identity private key (rotation signs with it).
    wrapped_officer_key: bytes
    current: RetentionGeneration
    updated_at: int

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


def _generation_sk(generation: int) -> str:
    return f"RETENTION#G#{generation:06d}"


def _generation(item: Item) -> RetentionGeneration:
    return RetentionGeneration(
        generation=int(item["generation"]["N"]),
        device_id=item["device_id"]["S"],
        certificate=item["certificate"]["B"],
        prekey=item["prekey"]["B"],
        wrapped_device_key=item["wrapped_device_key"]["B"],
        created_at=int(item["created_at"]["N"]),
    )


def _generation_fields(generation: RetentionGeneration) -> Item:
    return {
        "generation": number(generation.generation),
        "device_id": {"S": generation.device_id},
        "certificate": {"B": generation.certificate},
        "prekey": {"B": generation.prekey},
        "wrapped_device_key": {"B": generation.wrapped_device_key},
        "created_at": number(generation.created_at),
    }


class RetentionStore(SingleTableStore):
    def get(self, network_id: str) -> Retention | None:
        item = self._get(f"NET#{network_id}", "RETENTION")
        if item is None:
            return None
        status: RetentionStatus = "enabled" if item["status"]["S"] == "enabled" else "disabled"
        return Retention(
            network_id=network_id,
            status=status,
            years=int(item["years"]["N"]),
            officer_identity=item["officer_identity"]["B"],
            wrapped_officer_key=item["wrapped_officer_key"]["B"],
            current=_generation(item),
            updated_at=int(item["updated_at"]["N"]),
        )

    def generations(self, network_id: str) -> list[RetentionGeneration]:
        """Every key generation, oldest first (an export opens each era with its own key)."""
        return [_generation(i) for i in self._query(f"NET#{network_id}", "RETENTION#G#")]

    def _write(self, retention: Retention, condition: str, values: Item, reason: str) -> None:
        pk = f"NET#{retention.network_id}"
        head: Item = {
            **key(pk, "RETENTION"),
            "status": {"S": retention.status},
            "years": number(retention.years),
            "officer_identity": {"B": retention.officer_identity},
            "wrapped_officer_key": {"B": retention.wrapped_officer_key},
            "updated_at": number(retention.updated_at),
            **_generation_fields(retention.current),
        }
        put_head: dict[str, object] = {"TableName": self._table, "Item": head}
        put_head["ConditionExpression"] = condition
        if values:
            put_head["ExpressionAttributeValues"] = values
        items: list[TransactWriteItemTypeDef] = [
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": key(pk, "NETWORK"),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {"Put": put_head},  # type: ignore[typeddict-item]
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(pk, _generation_sk(retention.current.generation)),
                        **_generation_fields(retention.current),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        self._transact(items, {0: "no_such_network", 1: reason, 2: reason})

    def create(self, retention: Retention) -> None:
        """The first generation of a network's retention identity."""
        self._write(retention, "attribute_not_exists(pk)", {}, "exists")

    def rotate(self, retention: Retention, previous_generation: int) -> None:
        """A new generation replaces ``previous_generation`` (which must still be current)."""
        self._write(
            retention,
            "generation = :previous",
            {":previous": number(previous_generation)},
            "moved",
        )

    def set_status(self, network_id: str, status: RetentionStatus, now_ms: int) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"NET#{network_id}", "RETENTION"),
                UpdateExpression="SET #s = :s, updated_at = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":t": number(now_ms)},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise Conflict("no_retention") from None
