"""The audit table: each network's hash-chained log of administrative and security events.

    pk                 sk                 item
    NET#<network_id>   HEAD               seq and hash of the newest entry; sealed_seq, sealed_hash
    NET#<network_id>   E#<seq:012d>       one entry (its canonical JSON, its hash)
    INDEX              NET#<network_id>   the networks that have a log (the sealer walks these)

An append is one transaction: the head moves from the seq it was read at
(a condition), and the entry is put where nothing was. Two writers that
read the same head cannot both commit, so the chain never forks; the loser
reads the new head and links after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._single_table import Conflict, Item, SingleTableStore, key, number

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

__all__ = ["AuditHead", "AuditStore", "StoredEntry"]


@dataclass(frozen=True)
class AuditHead:
    network_id: str
    seq: int
    hash: str
    sealed_seq: int = 0
    sealed_hash: str = ""


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: ``body`` is its canonical JSON (hash input), ``hash`` its SHA-256."""

    network_id: str
    seq: int
    body: str
    hash: str


def _entry_sk(seq: int) -> str:
    return f"E#{seq:012d}"


class AuditStore(SingleTableStore):
    def head(self, network_id: str) -> AuditHead | None:
        item = self._get(f"NET#{network_id}", "HEAD")
        return None if item is None else _head(network_id, item)

    def append(self, network_id: str, after: AuditHead | None, entry: StoredEntry) -> None:
        """Put ``entry`` right after ``after`` (None: the first); Conflict("moved") if it moved."""
        pk = f"NET#{network_id}"
        if after is None:
            condition = "attribute_not_exists(pk)"
            values: dict[str, object] = {}
        else:
            condition = "seq = :prev"
            values = {":prev": number(after.seq)}
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": key(pk, "HEAD"),
                    "UpdateExpression": "SET seq = :seq, #h = :hash",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#h": "hash"},
                    "ExpressionAttributeValues": {
                        ":seq": number(entry.seq),
                        ":hash": {"S": entry.hash},
                        **values,  # type: ignore[dict-item]
                    },
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(pk, _entry_sk(entry.seq)),
                        "body": {"S": entry.body},
                        "hash": {"S": entry.hash},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if after is None:
            items.append(
                {"Put": {"TableName": self._table, "Item": key("INDEX", pk)}},
            )
        self._transact(items, {0: "moved", 1: "moved"})

    def entries(
        self, network_id: str, *, after_seq: int = 0, through: int | None = None
    ) -> list[StoredEntry]:
        """Entries after ``after_seq`` (through ``through``), in order."""
        found = []
        for item in self._query(f"NET#{network_id}", "E#", start=_entry_sk(after_seq + 1)):
            seq = int(item["sk"]["S"].removeprefix("E#"))
            if through is not None and seq > through:
                break
            found.append(StoredEntry(network_id, seq, item["body"]["S"], item["hash"]["S"]))
        return found

    def networks(self) -> list[str]:
        """Every network that has an audit log."""
        return [item["sk"]["S"].removeprefix("NET#") for item in self._query("INDEX", "NET#")]

    def mark_sealed(self, head: AuditHead, seq: int, hash_: str) -> None:
        """Record that entries through ``seq`` are sealed; only forward, from what was read."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"NET#{head.network_id}", "HEAD"),
                UpdateExpression="SET sealed_seq = :seq, sealed_hash = :hash",
                ConditionExpression="attribute_not_exists(sealed_seq) OR sealed_seq = :was",
                ExpressionAttributeValues={
                    ":seq": number(seq),
                    ":hash": {"S": hash_},
                    ":was": number(head.sealed_seq),
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise Conflict("sealed_elsewhere") from None


def _head(network_id: str, item: Item) -> AuditHead:
    return AuditHead(
        network_id=network_id,
        seq=int(item["seq"]["N"]),
        hash=item["hash"]["S"],
        sealed_seq=int(item.get("sealed_seq", {"N": "0"})["N"]),
        sealed_hash=item.get("sealed_hash", {"S": ""})["S"],
    )
