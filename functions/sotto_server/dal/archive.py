"""The retention archive's storage: segment objects in the archive bucket, and the
chain head and per-record markers beside the conversations (MessagesTable).

MessagesTable items of their own (the stream filters never match them)::

    pk                  sk               item
    ARCHIVE#<network>   HEAD             segment number, manifest hash, object key
    ARCHIVE#<network>   R#<record id>    this record is in a committed segment (TTL 3 days)

A segment commits in one transaction: the head moves from the segment it
was read at (a condition), and every record's marker is created (a
condition each). A replayed batch therefore cannot archive a record twice,
and two invocations racing on one network cannot fork its chain: the loser
re-reads and tries again. Markers outlive any stream retry (streams keep
records 24 hours).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ._single_table import Conflict, SingleTableStore, error_code, key, number

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MARKER_TTL_SECONDS",
    "ArchiveHead",
    "ArchiveHeads",
    "ArchiveObjects",
    "Conflict",
]

MARKER_TTL_SECONDS = 3 * 24 * 3600


@dataclass(frozen=True)
class ArchiveHead:
    segment: int
    manifest_hash: str
    object_key: str


# MD5 of the empty body, base64.
_EMPTY_MD5 = base64.b64encode(hashlib.md5(b"", usedforsecurity=False).digest()).decode()


def _integrity_header(params: dict[str, Any], **_: Any) -> None:
    """Writes into an Object Lock bucket must carry Content-MD5 or a checksum header; a
    copy's request body is empty, and its MD5 is what botocore would not send unasked."""
    params["headers"].setdefault("Content-MD5", _EMPTY_MD5)


class ArchiveHeads(SingleTableStore):
    def head(self, network_id: str) -> ArchiveHead | None:
        item = self._get(f"ARCHIVE#{network_id}", "HEAD")
        if item is None:
            return None
        return ArchiveHead(
            int(item["segment"]["N"]), item["manifest_hash"]["S"], item["object_key"]["S"]
        )

    def archived(self, network_id: str, record_ids: Sequence[str]) -> set[str]:
        pk = f"ARCHIVE#{network_id}"
        found = self._batch_get([(pk, f"R#{rid}") for rid in record_ids])
        return {sk.removeprefix("R#") for _pk, sk in found}

    def commit(
        self,
        network_id: str,
        previous: int,
        head: ArchiveHead,
        record_ids: Sequence[str],
        now_ms: int,
    ) -> None:
        """Move the head from ``previous`` to ``head`` and mark the records; all or nothing."""
        pk = f"ARCHIVE#{network_id}"
        condition = "attribute_not_exists(pk)" if previous == 0 else "#segment = :previous"
        put_head: dict[str, object] = {
            "TableName": self._table,
            "Item": {
                **key(pk, "HEAD"),
                "segment": number(head.segment),
                "manifest_hash": {"S": head.manifest_hash},
                "object_key": {"S": head.object_key},
                "updated_at": number(now_ms),
            },
            "ConditionExpression": condition,
        }
        if previous:
            # "segment" is a DynamoDB reserved word.
            put_head["ExpressionAttributeNames"] = {"#segment": "segment"}
            put_head["ExpressionAttributeValues"] = {":previous": number(previous)}
        expires = number(now_ms // 1000 + MARKER_TTL_SECONDS)
        items: list[TransactWriteItemTypeDef] = [{"Put": put_head}]  # type: ignore[typeddict-item]
        items += [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {**key(pk, f"R#{rid}"), "expires_at": expires},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for rid in record_ids
        ]
        self._transact(items, {0: "moved", **{i + 1: "archived" for i in range(len(record_ids))}})


class ArchiveObjects:
    """Segment objects: written once, encrypted with the archive key through S3
    (a bucket key, so not a KMS call per object), locked by the bucket's default
    retention (the archiver may not set locks: only the compliance role may)."""

    def __init__(self, client: S3Client, bucket: str, key_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key_id = key_id
        client.meta.events.register(
            "before-call.s3.CopyObject", _integrity_header, unique_id="sotto-archive-copy-md5"
        )

    def put(self, object_key: str, body: bytes) -> None:
        self._client.put_object(
            Bucket=self._bucket,
            Key=object_key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=self._key_id,
            BucketKeyEnabled=True,
            # Object Lock buckets want an integrity checksum on every PUT.
            ChecksumAlgorithm="SHA256",
        )

    def source_size(self, bucket: str, object_key: str) -> int | None:
        """The size of a file object in the attachments bucket; None if it is gone."""
        try:
            return self._client.head_object(Bucket=bucket, Key=object_key)["ContentLength"]
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def copy_file(self, bucket: str, source_key: str, object_key: str) -> str | None:
        """Copy a file object into the archive inside S3 (no byte passes through the
        function), re-encrypted under the archive key and locked by the bucket's default
        retention; the copy's SHA-256 (hex) as S3 computed it, or None if the source is gone.

        One CopyObject, not a multipart copy: that would need kms:Decrypt on the archive
        key, which no function role may have (hence MAX_ARCHIVED_FILE_BYTES)."""
        try:
            answer = self._client.copy_object(
                Bucket=self._bucket,
                Key=object_key,
                CopySource={"Bucket": bucket, "Key": source_key},
                MetadataDirective="REPLACE",
                ContentType="application/octet-stream",
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=self._key_id,
                BucketKeyEnabled=True,
                ChecksumAlgorithm="SHA256",
            )
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        checksum = answer.get("CopyObjectResult", {}).get("ChecksumSHA256")
        if not checksum:
            raise RuntimeError(f"S3 gave no SHA-256 for the copy of {source_key}")
        return base64.b64decode(checksum).hex()
