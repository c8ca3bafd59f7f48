"""Reading and verifying a network's audit log from the admin CLI.

The entries come from the admin API; the sealed segments from the archive
bucket, read with the caller's own AWS credentials (in AWS, the compliance
role: only it may decrypt the archive; locally, the local stack's moto).
Verification trusts neither source: it recomputes every hash and link
(``sotto.auditchain``) and compares every sealed entry with the live one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sotto.auditchain import ChainEntry, parse_segment, verify_chain, verify_segments
from sotto.frames.answers_http import AuditHead

from .api import AdminApi
from .errors import ClientError, MalformedFrame

__all__ = ["ArchiveReader", "AuditReport", "local_archive", "read_log", "verify_log"]


@dataclass
class AuditReport:
    network_id: str
    entries: list[ChainEntry]
    head: tuple[int, str] | None
    sealed_seq: int = 0
    segments: dict[str, list[ChainEntry]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class ArchiveReader:
    """The sealed segments of a network in the archive bucket (S3 list + get)."""

    def __init__(self, bucket: str, *, endpoint: str | None = None, local: bool = False) -> None:
        import boto3  # only --verify needs it

        kwargs: dict[str, Any] = {}
        if local:
            from .http import LOCAL_CREDENTIALS

            kwargs = {
                "aws_access_key_id": LOCAL_CREDENTIALS[0],
                "aws_secret_access_key": LOCAL_CREDENTIALS[1],
                "region_name": "us-east-1",
                "endpoint_url": endpoint,
            }
        self._s3 = boto3.session.Session().client("s3", **kwargs)
        self._bucket = bucket

    def segments(self, network_id: str) -> dict[str, list[ChainEntry]]:
        from botocore.exceptions import BotoCoreError
        from botocore.exceptions import ClientError as AwsError

        found: dict[str, list[ChainEntry]] = {}
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=f"audit/{network_id}/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    body = self._s3.get_object(Bucket=self._bucket, Key=item["Key"])["Body"]
                    found[item["Key"]] = parse_segment(body.read())
        except (BotoCoreError, AwsError) as error:
            raise ClientError(f"cannot read the archive bucket {self._bucket}: {error}") from None
        except (ValueError, KeyError):
            raise ClientError("a sealed segment in the archive is not readable") from None
        return found


def local_archive(server_spec: str) -> ArchiveReader | None:
    """The local stack's archive, when ``--server`` names its data dir or endpoints.json."""
    path = Path(server_spec).expanduser()
    path = path / "endpoints.json" if path.is_dir() else path
    if path.suffix != ".json" or not path.is_file():
        return None
    data = json.loads(path.read_text())
    bucket = data["resources"]["buckets"]["ArchiveBucket"]
    return ArchiveReader(bucket, endpoint=data["aws"], local=True)


def read_log(api: AdminApi, network_id: str) -> AuditReport:
    entries: list[ChainEntry] = []
    after: int | None = 0
    head: AuditHead | None = None
    while after is not None:
        page = api.audit(network_id, after=after)
        head = page["head"]
        entries += [ChainEntry(raw["seq"], raw["body"], raw["hash"]) for raw in page["entries"]]
        following = page["next_after"]
        if following is not None and following <= after:
            # A page that does not move on would be read forever.
            raise MalformedFrame("audit log", ["next_after"])
        after = following
    return AuditReport(
        network_id=network_id,
        entries=entries,
        head=None if head is None else (head["seq"], head["hash"]),
        sealed_seq=0 if head is None else head["sealed_seq"],
    )


def verify_log(report: AuditReport, archive: ArchiveReader | None) -> AuditReport:
    report.problems = verify_chain(report.entries, head=report.head)
    if archive is None:
        report.problems.append(
            "sealed segments not checked: name the archive bucket (--archive-bucket)"
        )
        return report
    report.segments = archive.segments(report.network_id)
    report.problems += verify_segments(report.entries, report.segments)
    sealed = max((s[-1].seq for s in report.segments.values() if s), default=0)
    if sealed < report.sealed_seq:
        report.problems.append(
            f"gap: the log says entries through {report.sealed_seq} are sealed, "
            f"the archive holds them through {sealed}"
        )
    return report
