"""The attachments bucket: multipart uploads, presigned URLs and deletion of every version.

Objects are client-encrypted streams (docs/protocol.md §8) under random keys;
the bucket adds SSE-KMS with its bucket key (its default encryption, named on
each upload too so no request can fall back to another key). A presigned URL
is authorized as this function's role, for ``expires_s`` seconds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["ObjectsStore", "Part"]


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int


class ObjectsStore:
    def __init__(self, client: S3Client, bucket: str, kms_key_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._kms_key_id = kms_key_id

    def start_upload(self, key: str) -> str:
        answer = self._client.create_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            ContentType="application/octet-stream",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=self._kms_key_id,
            BucketKeyEnabled=True,
        )
        return answer["UploadId"]

    def part_url(self, key: str, upload_id: str, number: int, expires_s: int) -> str:
        return self._client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
            },
            ExpiresIn=expires_s,
        )

    def download_url(self, key: str, expires_s: int) -> str:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_s
        )

    def parts(self, key: str, upload_id: str) -> list[Part] | None:
        """The parts S3 holds, in order (None: no such upload any more)."""
        found: list[Part] = []
        marker = 0
        while True:
            try:
                page = self._client.list_parts(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
            except self._client.exceptions.NoSuchUpload:
                return None
            found += [Part(p["PartNumber"], p["ETag"], p["Size"]) for p in page.get("Parts", [])]
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def complete(self, key: str, upload_id: str, parts: list[Part]) -> None:
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    def abort(self, key: str, upload_id: str) -> None:
        # Already aborted or completed: nothing to do.
        with contextlib.suppress(self._client.exceptions.NoSuchUpload):
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except self._client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def purge(self, key: str) -> int:
        """Abort the key's unfinished uploads and delete every version of it; how many went."""
        removed = 0
        uploads = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=key)
        for upload in uploads.get("Uploads", []):
            if upload["Key"] == key:
                self.abort(key, upload["UploadId"])
                removed += 1
        versions = self._client.list_object_versions(Bucket=self._bucket, Prefix=key)
        for entry in [*versions.get("Versions", []), *versions.get("DeleteMarkers", [])]:
            if entry["Key"] == key:
                self._client.delete_object(
                    Bucket=self._bucket, Key=key, VersionId=entry["VersionId"]
                )
                removed += 1
        return removed
