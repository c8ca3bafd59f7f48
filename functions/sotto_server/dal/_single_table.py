"""What the pk/sk tables' stores share: keys, consistent reads, paged queries, transactions.

Each table still has exactly one store (its own module); this is the
plumbing under them, so the rules of conditional writes are written once.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

__all__ = ["Conflict", "Item", "SingleTableStore", "b64_value", "error_code", "key", "number"]

Item = dict[str, "AttributeValueTypeDef"]


class Conflict(Exception):
    """A conditional write lost: ``reason`` names which condition."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def number(value: int) -> AttributeValueTypeDef:
    return {"N": str(value)}


def b64_value(data: bytes) -> AttributeValueTypeDef:
    return {"S": base64.b64encode(data).decode()}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class SingleTableStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _get(self, pk: str, sk: str) -> Item | None:
        return self._client.get_item(
            TableName=self._table, Key=key(pk, sk), ConsistentRead=True
        ).get("Item")

    def _query(
        self,
        pk: str,
        prefix: str,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Item]:
        """Items of ``pk`` whose sort key starts with ``prefix`` (from ``start`` on, up to
        ``end`` inclusive), in order."""
        if start is None and end is None:
            condition = "pk = :pk AND begins_with(sk, :prefix)"
            values: dict[str, Any] = {":pk": {"S": pk}, ":prefix": {"S": prefix}}
        else:
            # From ``start`` (inclusive) to the end of this kind: prefix + "~"
            # is an upper bound, since keys use only [A-Za-z0-9_#-].
            condition = "pk = :pk AND sk BETWEEN :start AND :end"
            values = {
                ":pk": {"S": pk},
                ":start": {"S": prefix if start is None else start},
                ":end": {"S": prefix + "~" if end is None else end},
            }
        args: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        remaining = limit
        while True:
            if remaining is not None:
                args["Limit"] = remaining
            page = self._client.query(**args)
            items = page.get("Items", [])
            yield from items
            if remaining is not None:
                remaining -= len(items)
                if remaining <= 0:
                    return
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_get(
        self, keys: list[tuple[str, str]], attributes: Sequence[str] = ()
    ) -> dict[tuple[str, str], Item]:
        """Consistent reads of many items: 100 keys per request, unprocessed ones retried.

        ``attributes``: only these (and the key) come back; a read that needs
        a device's status need not carry its 7 KB certificate over the wire.
        """
        found: dict[tuple[str, str], Item] = {}
        unique = list(dict.fromkeys(keys))
        projection: dict[str, Any] = {}
        if attributes:
            names = {f"#a{i}": name for i, name in enumerate(("pk", "sk", *attributes))}
            projection = {
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": names,
            }
        for start in range(0, len(unique), 100):
            chunk: list[Any] = [key(pk, sk) for pk, sk in unique[start : start + 100]]
            request: dict[str, Any] = {
                self._table: {"Keys": chunk, "ConsistentRead": True, **projection}
            }
            for attempt in range(8):
                answer = self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                request = dict(answer.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise RuntimeError("DynamoDB left reads unprocessed")
        return found

    def _batch_write(self, requests: list[Any]) -> None:
        pending: dict[str, Any] = {self._table: requests}
        for attempt in range(8):
            response = self._client.batch_write_item(RequestItems=pending)
            pending = dict(response.get("UnprocessedItems") or {})
            if not pending:
                return
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise RuntimeError("DynamoDB left writes unprocessed")

    def _transact_losers(self, items: list[TransactWriteItemTypeDef]) -> list[int]:
        """One transaction; the indexes of the items whose condition lost ([] if it committed)."""
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise
            cancellations = error.response.get("CancellationReasons", [])
            lost = [
                index
                for index, reason in enumerate(cancellations)
                if reason.get("Code") in ("ConditionalCheckFailed", "TransactionConflict")
            ]
            if not lost:
                raise  # throttling or validation: not a lost condition
            return lost
        return []

    def _transact(self, items: list[TransactWriteItemTypeDef], reasons: dict[int, str]) -> None:
        """One transaction; a lost condition raises Conflict named by ``reasons[index]``."""
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error_code(error) != "TransactionCanceledException":
                raise
            cancellations = error.response.get("CancellationReasons", [])
            for index, reason in enumerate(cancellations):
                # A concurrent transaction on the same item lost the same race.
                if reason.get("Code") in ("ConditionalCheckFailed", "TransactionConflict"):
                    raise Conflict(reasons.get(index, "conflict")) from None
            # Any other reason (throttling, validation) is not a lost
            # condition: let it fail loudly rather than pass as one.
            raise
