"""The guards table: used connect-token nonces and rate-limit counters.

Every item expires (TTL ``expires_at``, epoch seconds); correctness never
depends on TTL deletion, since each check compares times itself.

    pk = "NONCE#<device_id>#<nonce>"               a nonce already presented
    pk = "RATE#<bucket>#<subject>#<window_start>"  requests counted in one window
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import UpdateTypeDef

__all__ = ["GuardsStore"]


class GuardsStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def use_nonce(self, device_id: str, nonce: str, expires_at: int) -> bool:
        """Record a nonce; False if this device presented it before (a replay)."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"NONCE#{device_id}#{nonce}"},
                    "expires_at": {"N": str(expires_at)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def count_update(
        self, bucket: str, subject: str, window_start: int, window: int, limit: int, cost: int = 1
    ) -> UpdateTypeDef:
        """The conditional ADD that counts ``cost`` units, as an Update of a transaction.

        A route whose one write is a transaction counts its request there, so
        the rate limit costs no request of its own.
        """
        return {
            "TableName": self._table,
            "Key": {"pk": {"S": f"RATE#{bucket}#{subject}#{window_start}"}},
            "UpdateExpression": "ADD hits :cost SET expires_at = :expires",
            "ConditionExpression": "attribute_not_exists(hits) OR hits <= :room",
            "ExpressionAttributeValues": {
                ":cost": {"N": str(cost)},
                ":room": {"N": str(limit - cost)},
                ":expires": {"N": str(window_start + 2 * window)},
            },
        }

    def count(
        self, bucket: str, subject: str, window_start: int, window: int, limit: int, cost: int = 1
    ) -> bool:
        """Count ``cost`` units in the window; False (counting nothing) if that passes ``limit``.

        One conditional atomic ADD: concurrent callers can never push the
        count past the limit.
        """
        update = self.count_update(bucket, subject, window_start, window, limit, cost)
        try:
            self._client.update_item(**update)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
