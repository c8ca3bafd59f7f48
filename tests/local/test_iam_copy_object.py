"""The IAM recorder authorizes a CopyObject as IAM does: read and decrypt the source,
write and encrypt the target (the archiver's copies of file objects)."""

from __future__ import annotations

from pathlib import Path

from sotto.local.iam_trace import IamRecorder


def test_copy_object_is_a_get_of_the_source_and_a_put_of_the_target(tmp_path: Path) -> None:
    recorder = IamRecorder(
        tmp_path / "trace.jsonl",
        tables={},
        buckets={
            "sotto-attachments": ("AttachmentsBucket", "DataKey"),
            "sotto-archive": ("ArchiveBucket", "ArchiveKey"),
        },
    )
    params = {
        "Bucket": "sotto-archive",
        "Key": "networks/net-x/files/abc",
        "CopySource": {"Bucket": "sotto-attachments", "Key": "f/abc"},
    }
    assert list(recorder._authorizations("s3", "CopyObject", params)) == [
        ("s3:GetObject", "object:AttachmentsBucket/f/abc"),
        ("kms:Decrypt", "key:DataKey/s3"),
        ("s3:PutObject", "object:ArchiveBucket/networks/net-x/files/abc"),
        ("kms:GenerateDataKey", "key:ArchiveKey/s3"),
    ]
    as_text = dict(params, CopySource="sotto-attachments/f/abc")
    assert next(recorder._authorizations("s3", "CopyObject", as_text)) == (
        "s3:GetObject",
        "object:AttachmentsBucket/f/abc",
    )
