"""The retention archive's format: records, segments, manifests, the hash chain (pure).

A *record* is one thing the server stored, as the archiver found it on the
messages stream: an envelope, a key distribution to a retention device, or a
signed membership operation, each with what an export needs to verify it
(the sender device's certificate and its user's identity key). Records are
canonical JSON (sorted keys, no spaces, binary fields base64); a record's
digest is SHA-256 of those bytes.

A *segment* is one S3 object per network per archiver batch:
``{"manifest": M, "records": [...]}``. The manifest names the network, the
segment number (1, 2, ... with no gaps), the previous segment's manifest
hash (64 zeros for the first), the time it was made, and each record's id,
kind, conversation, sequence number and digest. A manifest's hash is
SHA-256 of its canonical JSON, so the segments of a network form a hash
chain whose head the archiver keeps in DynamoDB (docs/architecture.md).

An envelope that names files carries, in ``files``, one entry per object:
``{"object_id", "key", "size", "sha256"}`` for the encrypted stream the
archiver copied to ``key`` (``file_key``), or ``{"object_id", "missing"}``
saying why it could not be copied. The entry is part of the record, so its
SHA-256 is under the record's digest and the chain: ``verify`` hashes the
archived object against it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMAT",
    "GENESIS",
    "MAX_ARCHIVED_FILE_BYTES",
    "ArchiveProblem",
    "Segment",
    "build_segment",
    "canonical",
    "check_chain",
    "check_segment",
    "digest",
    "file_key",
    "files_of",
    "manifest_hash",
    "parse_segment",
    "segment_key",
]

# S3 copies an object in one request up to 5 GiB; a multipart copy into the archive
# would need kms:Decrypt on the archive key, which no function may have.
MAX_ARCHIVED_FILE_BYTES = 5 * 1024**3

FORMAT = "sotto-archive-segment/1"
GENESIS = "0" * 64
RECORD_KINDS = ("envelope", "distribution", "membership")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(manifest)).hexdigest()


def segment_key(network_id: str, segment: int, manifest_digest: str) -> str:
    """Where a segment lives; the hash in the name keeps an uncommitted attempt apart."""
    return f"networks/{network_id}/segments/{segment:012d}-{manifest_digest[:32]}.json"


def file_key(network_id: str, object_id: str) -> str:
    """Where an archived file's encrypted stream lives (object ids are random hex)."""
    return f"networks/{network_id}/files/{object_id}"


def files_of(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The file entries of an envelope record (none for other kinds or a malformed list)."""
    entries = record.get("files") if record.get("kind") == "envelope" else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("object_id"), str)]


@dataclass(frozen=True)
class Segment:
    manifest: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def number(self) -> int:
        return int(self.manifest["segment"])

    @property
    def hash(self) -> str:
        return manifest_hash(self.manifest)

    def body(self) -> bytes:
        return canonical({"manifest": self.manifest, "records": self.records})


def build_segment(
    network_id: str,
    number: int,
    previous: str,
    records: Sequence[dict[str, Any]],
    *,
    created_at: int,
    retention_years: int,
) -> Segment:
    entries = [
        {
            "id": record["id"],
            "kind": record["kind"],
            "conversation_id": record["conversation_id"],
            "seq": record.get("seq"),
            "server_time": record["server_time"],
            "sha256": digest(record),
        }
        for record in records
    ]
    manifest = {
        "format": FORMAT,
        "network_id": network_id,
        "segment": number,
        "previous": previous,
        "created_at": created_at,
        "retention_years": retention_years,
        "count": len(entries),
        "records": entries,
    }
    return Segment(manifest, list(records))


class ArchiveProblem(Exception):
    """One named thing wrong with an archive: which object, and what."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


def parse_segment(data: bytes, where: str) -> Segment:
    try:
        value = json.loads(data)
        manifest, records = value["manifest"], value["records"]
        if not isinstance(manifest, dict) or not isinstance(records, list):
            raise TypeError("shape")
        if manifest.get("format") != FORMAT:
            raise ArchiveProblem(where, f"unknown format {manifest.get('format')!r}")
        return Segment(manifest, records)
    except ArchiveProblem:
        raise
    except (ValueError, KeyError, TypeError):
        raise ArchiveProblem(where, "not a segment (unreadable JSON)") from None


def check_segment(segment: Segment, where: str) -> list[ArchiveProblem]:
    """Every record's digest and the manifest's own counts."""
    problems: list[ArchiveProblem] = []
    entries = segment.manifest.get("records") or []
    if len(entries) != len(segment.records) or segment.manifest.get("count") != len(entries):
        problems.append(ArchiveProblem(where, "record count differs from the manifest"))
    for entry, record in zip(entries, segment.records, strict=False):
        if entry.get("sha256") != digest(record) or entry.get("id") != record.get("id"):
            problems.append(ArchiveProblem(where, f"record {entry.get('id')} was altered"))
    return problems


def check_chain(
    segments: Sequence[tuple[str, Segment]], head: tuple[int, str] | None
) -> list[ArchiveProblem]:
    """Segments 1..N in order, each linked to the previous manifest, ending at ``head``.

    ``segments`` are ``(object key, segment)`` pairs of one network, as listed.
    """
    problems: list[ArchiveProblem] = []
    by_number: dict[int, list[tuple[str, Segment]]] = {}
    for key, segment in segments:
        by_number.setdefault(segment.number, []).append((key, segment))
    last = head[0] if head is not None else max(by_number, default=0)
    # Walk back from the head: the committed chain; any other object is an attempt
    # the archiver never committed (its records are in a committed segment).
    expected = head[1] if head is not None else None
    for number in range(last, 0, -1):
        candidates = by_number.get(number, [])
        chosen = next((c for c in candidates if expected in (None, c[1].hash)), None)
        if chosen is None:
            if candidates:
                names = ", ".join(k for k, _ in candidates)
                problems.append(
                    ArchiveProblem(names, f"segment {number} does not hash to the chain (altered)")
                )
            else:
                problems.append(
                    ArchiveProblem(f"segment {number}", "missing (deleted, or never written)")
                )
            expected = None
            continue
        key, segment = chosen
        if key != segment_key(str(segment.manifest.get("network_id")), number, segment.hash):
            problems.append(ArchiveProblem(key, "manifest does not match its object name"))
        problems.extend(check_segment(segment, key))
        expected = str(segment.manifest.get("previous"))
        if number == 1 and expected != GENESIS:
            problems.append(ArchiveProblem(key, "first segment does not start the chain"))
    return problems
