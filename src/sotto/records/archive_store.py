"""Reading a network's archive with the records officer's AWS credentials.

The segments and their locks from the archive bucket, the chain head from
the messages table (the compliance role may read ``ARCHIVE#`` items only).
For the local stack, the endpoints file names the bucket, table and the
moto endpoint; for AWS, the stack outputs do (``--archive-bucket``,
``--messages-table``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sotto.client.errors import ClientError as SottoClientError
from sotto.client.http import LOCAL_CREDENTIALS as _LOCAL_CREDENTIALS
from sotto.client.server import ServerConfig
from sotto.protocol.archive import ArchiveProblem, Segment, parse_segment

from .verify import Lock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

__all__ = ["ArchiveStore", "RecordsError", "archive_store"]


class RecordsError(SottoClientError):
    """The archive could not be read (credentials, names, network)."""


@dataclass
class ArchiveStore:
    s3: S3Client
    dynamodb: DynamoDBClient
    bucket: str
    table: str

    def head(self, network_id: str) -> tuple[int, str] | None:
        try:
            item = self.dynamodb.get_item(
                TableName=self.table,
                Key={"pk": {"S": f"ARCHIVE#{network_id}"}, "sk": {"S": "HEAD"}},
                ConsistentRead=True,
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise RecordsError(f"cannot read the archive head: {exc}") from None
        if item is None:
            return None
        return int(item["segment"]["N"]), item["manifest_hash"]["S"]

    def segments(self, network_id: str) -> tuple[list[tuple[str, Segment]], list[str]]:
        """Every segment object of the network, and the objects that are not segments."""
        found: list[tuple[str, Segment]] = []
        unreadable: list[str] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"networks/{network_id}/segments/"
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    body = self.s3.get_object(Bucket=self.bucket, Key=entry["Key"])["Body"].read()
                    try:
                        found.append((entry["Key"], parse_segment(body, entry["Key"])))
                    except ArchiveProblem as problem:
                        unreadable.append(str(problem))
        except (BotoCoreError, ClientError) as exc:
            raise RecordsError(f"cannot read the archive bucket: {exc}") from None
        return sorted(found, key=lambda pair: pair[0]), unreadable

    def file_digest(self, key: str) -> str | None:
        """SHA-256 (hex) of the archived file copy's current bytes, read as a stream;
        None if there is none (deleted, or never copied)."""
        digest = hashlib.sha256()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise RecordsError(f"cannot read {key}: {exc}") from None
        except BotoCoreError as exc:
            raise RecordsError(f"cannot read {key}: {exc}") from None
        return digest.hexdigest()

    def file_stream(self, key: str) -> Iterator[bytes]:
        """An archived file copy's bytes, a MiB at a time."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from body.iter_chunks(1 << 20)
        except (BotoCoreError, ClientError) as exc:
            raise RecordsError(f"cannot read {key}: {exc}") from None

    def set_legal_hold(self, key: str, on: bool) -> None:
        try:
            self.s3.put_object_legal_hold(
                Bucket=self.bucket,
                Key=key,
                LegalHold={"Status": "ON" if on else "OFF"},
                ChecksumAlgorithm="SHA256",
            )
        except (BotoCoreError, ClientError) as exc:
            raise RecordsError(
                f"cannot {'place' if on else 'remove'} the legal hold on {key} "
                f"(only the compliance role may): {exc}"
            ) from None

    def extend_lock(self, key: str, mode: str, until: datetime) -> None:
        """Lock ``key`` until ``until`` in ``mode`` (its current one: never weaker)."""
        try:
            self.s3.put_object_retention(
                Bucket=self.bucket,
                Key=key,
                Retention={
                    "Mode": "COMPLIANCE" if mode == "COMPLIANCE" else "GOVERNANCE",
                    "RetainUntilDate": until,
                },
                ChecksumAlgorithm="SHA256",
            )
        except (BotoCoreError, ClientError) as exc:
            raise RecordsError(
                f"cannot extend the lock on {key} (only the compliance role may): {exc}"
            ) from None

    def legal_hold(self, key: str) -> bool:
        try:
            answer = self.s3.get_object_legal_hold(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return answer.get("LegalHold", {}).get("Status") == "ON"

    def lock(self, key: str) -> Lock:
        # HEAD carries the object's lock to a caller allowed s3:GetObjectRetention.
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return Lock(None, None)
        return Lock(head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate"))


def archive_store(
    spec: str, server: ServerConfig, bucket: str | None, table: str | None
) -> ArchiveStore:
    session_args: dict[str, Any] = {"region_name": server.region}
    endpoint = None
    if server.local:
        path = Path(spec).expanduser()
        endpoints = json.loads((path / "endpoints.json" if path.is_dir() else path).read_text())
        endpoint = endpoints["aws"]
        bucket = bucket or endpoints["resources"]["buckets"]["ArchiveBucket"]
        table = table or endpoints["resources"]["tables"]["MessagesTable"]
        session_args.update(
            aws_access_key_id=_LOCAL_CREDENTIALS[0], aws_secret_access_key=_LOCAL_CREDENTIALS[1]
        )
    if not bucket or not table:
        raise RecordsError(
            "name the archive: --archive-bucket BUCKET --messages-table TABLE (stack outputs)"
        )
    session = boto3.session.Session(**session_args)
    return ArchiveStore(
        session.client("s3", endpoint_url=endpoint),
        session.client("dynamodb", endpoint_url=endpoint),
        bucket,
        table,
    )
