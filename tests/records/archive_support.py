"""Reading a network's archive from the local stack's bucket, as verify and export do."""

from __future__ import annotations

import time
from typing import Any

from sotto.protocol.archive import Segment, parse_segment
from sotto_server.dal.archive import ArchiveHead, ArchiveHeads
from tests.support.stack import Stack


def bucket(stack: Stack) -> str:
    return str(stack.endpoints["resources"]["buckets"]["ArchiveBucket"])


def segments(stack: Stack, network: str) -> list[tuple[str, Segment]]:
    s3 = stack.client("s3")
    found = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket(stack), Prefix=f"networks/{network}/segments/"
    )
    for page in pages:
        for entry in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket(stack), Key=entry["Key"])["Body"].read()
            found.append((entry["Key"], parse_segment(body, entry["Key"])))
    return sorted(found, key=lambda pair: pair[0])


def head(stack: Stack, network: str) -> ArchiveHead | None:
    return ArchiveHeads(stack.client("dynamodb"), stack.table("MessagesTable")).head(network)


def committed_records(stack: Stack, network: str) -> list[dict[str, Any]]:
    """Records of the committed chain, oldest first (uncommitted attempts left out)."""
    top = head(stack, network)
    by_hash = {segment.hash: segment for _key, segment in segments(stack, network)}
    chain: list[Segment] = []
    expected = None if top is None else top.manifest_hash
    while expected in by_hash:
        chain.append(by_hash[expected])
        expected = str(by_hash[expected].manifest["previous"])
    return [record for segment in reversed(chain) for record in segment.records]


def wait_archived(
    stack: Stack, network: str, kind: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in committed_records(stack, network) if r["kind"] == kind]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.3)
