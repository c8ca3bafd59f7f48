"""``sotto records verify``: is a network's archive complete and untouched? (pure)

Checks, each problem named by the object it concerns:

- the hash chain from the head the archiver committed back to segment 1
  (a deleted segment, an altered manifest or record, a foreign object);
- every committed object's Object Lock (a mode, and a retain-until date
  still ahead);
- each conversation's archived envelope and membership sequence numbers are
  gap-free from the first archived one on, and no record is archived twice;
- every file an archived envelope names: its copy is in the archive, hashes
  to the SHA-256 the (chained) record holds, and is under Object Lock; a file
  the archiver found already gone is named too.

What this cannot see: messages after the last archived one that never
reached the archive (the chain head is the archiver's own word; the
archiver's failure queue holds what it gave up on).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sotto.protocol.archive import ArchiveProblem, Segment, check_chain, files_of

__all__ = ["Lock", "VerifyReport", "archived_files", "committed_chain", "verify_archive"]


@dataclass(frozen=True)
class Lock:
    mode: str | None
    retain_until: datetime | None


@dataclass
class VerifyReport:
    network_id: str
    segments: int = 0
    records: int = 0
    conversations: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)
    # Objects locked, but not yet for their network's whole retention period: not a
    # fault (the bucket's default is the stage's), the records officer's step to take.
    short_locks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [
            f"network        {self.network_id}",
            f"segments       {self.segments}",
            f"records        {self.records}",
            f"conversations  {self.conversations}",
            f"files          {self.files}",
        ]
        if self.ok:
            lines.append(
                "result         OK: chain, digests, files, locks and sequence numbers verify"
            )
        else:
            lines.append(f"result         {len(self.problems)} PROBLEM(S)")
            lines += [f"  - {problem}" for problem in self.problems]
        if self.short_locks:
            lines.append(
                f"note           {self.short_locks} object(s) locked for less than the network's"
                f" retention period: sotto records extend-locks {self.network_id}"
            )
        return "\n".join(lines)


def committed_chain(
    segments: Sequence[tuple[str, Segment]], head: tuple[int, str] | None
) -> list[tuple[str, Segment]]:
    by_hash = {segment.hash: (key, segment) for key, segment in segments}
    chain: list[tuple[str, Segment]] = []
    expected = None if head is None else head[1]
    while expected in by_hash:
        chain.append(by_hash[expected])
        expected = str(by_hash[expected][1].manifest.get("previous"))
    return list(reversed(chain))


def archived_files(segments: Sequence[tuple[str, Segment]]) -> list[str]:
    """The archive keys of every file copy the ``segments``' envelopes name, once each."""
    keys = (str(e["key"]) for _k, s in segments for r in s.records for e in files_of(r))
    return list(dict.fromkeys(k for k in keys if k != "None"))


def _lock_problem(key: str, lock: Lock | None, now: datetime) -> ArchiveProblem | None:
    if lock is None or lock.mode is None or lock.retain_until is None:
        return ArchiveProblem(key, "not under Object Lock")
    if lock.retain_until <= now:
        return ArchiveProblem(key, f"lock ended {lock.retain_until.isoformat()}")
    return None


def _file_problems(
    record: Mapping[str, object],
    files: Mapping[str, str | None],
    locks: Mapping[str, Lock],
    now: datetime,
) -> list[ArchiveProblem]:
    problems: list[ArchiveProblem] = []
    for entry in files_of(record):
        where = f"record {record.get('id')}: file {entry['object_id']}"
        if "missing" in entry or not entry.get("key"):
            problems.append(ArchiveProblem(where, f"not archived ({entry.get('missing')})"))
            continue
        key = str(entry["key"])
        found = files.get(key)
        if found is None:
            problems.append(ArchiveProblem(key, f"missing from the archive ({where})"))
            continue
        if found != entry.get("sha256"):
            problems.append(ArchiveProblem(key, f"altered: SHA-256 differs ({where})"))
        lock = _lock_problem(key, locks.get(key), now)
        if lock is not None:
            problems.append(lock)
    return problems


def _gaps(kind: str, cid: str, numbers: list[int]) -> list[str]:
    problems = []
    seen = sorted(numbers)
    for previous, current in itertools.pairwise(seen):
        if current == previous:
            problems.append(f"conversation {cid}: {kind} {current} archived twice")
        elif current != previous + 1:
            missing = (
                f"{previous + 1}" if current == previous + 2 else f"{previous + 1}-{current - 1}"
            )
            problems.append(f"conversation {cid}: {kind} {missing} missing from the archive")
    return problems


def verify_archive(
    network_id: str,
    segments: Sequence[tuple[str, Segment]],
    head: tuple[int, str] | None,
    locks: Mapping[str, Lock],
    *,
    now: datetime,
    files: Mapping[str, str | None] | None = None,
) -> VerifyReport:
    """``locks`` of segment and file objects; ``files``: each archived file copy's key to
    the SHA-256 (hex) of the bytes stored there now, or None if it is gone."""
    report = VerifyReport(network_id)
    files = files or {}
    if head is None:
        if segments:
            report.problems.append("segments exist but the archive has no committed head")
        return report
    problems: list[ArchiveProblem] = list(check_chain(segments, head))
    committed = committed_chain(segments, head)
    report.segments = len(committed)
    seen_ids: set[str] = set()
    numbers: dict[tuple[str, str], list[int]] = {}
    for key, segment in committed:
        lock = _lock_problem(key, locks.get(key), now)
        if lock is not None:
            problems.append(lock)
        if segment.manifest.get("network_id") != network_id:
            problems.append(ArchiveProblem(key, "segment of another network"))
        for record in segment.records:
            report.records += 1
            if record.get("id") in seen_ids:
                problems.append(ArchiveProblem(key, f"record {record.get('id')} archived twice"))
            seen_ids.add(str(record.get("id")))
            report.files += len(files_of(record))
            problems.extend(_file_problems(record, files, locks, now))
            if record.get("kind") in ("envelope", "membership") and isinstance(
                record.get("seq"), int
            ):
                kind = "message" if record["kind"] == "envelope" else "membership operation"
                numbers.setdefault((kind, str(record["conversation_id"])), []).append(record["seq"])
    report.conversations = len({cid for _kind, cid in numbers})
    report.problems = [str(p) for p in problems]
    for (kind, cid), seqs in sorted(numbers.items()):
        report.problems += _gaps(kind, cid, seqs)
    return report
