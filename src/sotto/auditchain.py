"""The audit log's hash chain: how an entry is encoded and hashed, and how a chain is verified.

Shared by the server (which appends) and the admin CLI (which verifies what
the server and the archive hand it, trusting neither). Standard library only.

An entry's body is canonical JSON (sorted keys, no spaces, UTF-8) of::

    {"seq", "prev", "at", "network_id", "event", "actor", "subject", "outcome", "detail"}

``prev`` is the previous entry's hash (64 zeros for the first); an entry's
hash is the SHA-256 of its body. A sealed segment (in the archive, under
Object Lock) is JSON lines, one ``{"seq", "body", "hash"}`` per entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GENESIS",
    "ChainEntry",
    "encode_body",
    "entry_hash",
    "parse_segment",
    "segment_key",
    "segment_lines",
    "verify_chain",
    "verify_segments",
]

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    body: str
    hash: str

    def fields(self) -> dict[str, Any]:
        value = json.loads(self.body)
        if not isinstance(value, dict):
            raise ValueError("an entry body is a JSON object")
        return value


def encode_body(seq: int, prev: str, fields: Mapping[str, Any]) -> str:
    return json.dumps(
        {**fields, "seq": seq, "prev": prev},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def entry_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def segment_key(network_id: str, first: int, last: int) -> str:
    return f"audit/{network_id}/{first:012d}-{last:012d}.jsonl"


def segment_lines(entries: Iterable[ChainEntry]) -> bytes:
    return b"".join(
        json.dumps({"seq": e.seq, "body": e.body, "hash": e.hash}, sort_keys=True).encode() + b"\n"
        for e in entries
    )


def parse_segment(data: bytes) -> list[ChainEntry]:
    entries = []
    for line in data.splitlines():
        if line.strip():
            value = json.loads(line)
            entries.append(ChainEntry(int(value["seq"]), str(value["body"]), str(value["hash"])))
    return entries


def verify_chain(
    entries: Sequence[ChainEntry], *, head: tuple[int, str] | None = None
) -> list[str]:
    """Every problem of a chain read from seq 1, in words; [] when it holds.

    Names a gap (a seq missing), an edit (a body that no longer hashes to its
    hash, or a hash the next entry does not link to), and a head that does
    not match the last entry (entries removed from the end).
    """
    problems: list[str] = []
    prev, expected = GENESIS, 1
    for entry in entries:
        if entry.seq != expected:
            problems.append(f"gap: entries {expected}..{entry.seq - 1} are missing")
        if entry_hash(entry.body) != entry.hash:
            problems.append(f"edit: entry {entry.seq} does not hash to its recorded hash")
        try:
            fields = entry.fields()
        except ValueError:
            problems.append(f"edit: entry {entry.seq} is not a JSON object")
            fields = {}
        if fields.get("seq") != entry.seq:
            problems.append(f"edit: entry {entry.seq} names seq {fields.get('seq')}")
        if entry.seq == expected and fields.get("prev") != prev:
            problems.append(f"edit: entry {entry.seq} does not link to entry {entry.seq - 1}")
        prev, expected = entry.hash, entry.seq + 1
    if head is not None and head != (expected - 1, prev if entries else GENESIS):
        if head[0] > expected - 1:
            problems.append(
                f"gap: entries {expected}..{head[0]} are missing (the head is at {head[0]})"
            )
        else:
            problems.append(f"edit: the head ({head[0]}) does not match the last entry")
    return problems


def verify_segments(
    entries: Sequence[ChainEntry], segments: Mapping[str, Sequence[ChainEntry]]
) -> list[str]:
    """The sealed copies against the live entries: every sealed entry must be there, unchanged.

    ``segments`` maps each archive object key to its entries. Segments must
    cover seq 1 onwards without a hole; a live entry that differs from its
    sealed copy was edited after sealing, one missing was removed.
    """
    problems: list[str] = []
    live = {entry.seq: entry for entry in entries}
    covered = 0
    for name in sorted(segments):
        sealed = segments[name]
        if not sealed:
            problems.append(f"segment {name} is empty")
            continue
        if sealed[0].seq != covered + 1:
            problems.append(
                f"gap: sealed segments skip entries {covered + 1}..{sealed[0].seq - 1} ({name})"
            )
        problems += [f"segment {name}: {p}" for p in _segment_links(sealed)]
        for entry in sealed:
            current = live.get(entry.seq)
            if current is None:
                problems.append(f"gap: sealed entry {entry.seq} was removed from the log ({name})")
            elif current != entry:
                problems.append(f"edit: entry {entry.seq} differs from its sealed copy ({name})")
        covered = max(covered, sealed[-1].seq)
    return problems


def _segment_links(sealed: Sequence[ChainEntry]) -> list[str]:
    problems = []
    for before, after in itertools.pairwise(sealed):
        if after.seq != before.seq + 1 or after.fields().get("prev") != before.hash:
            problems.append(f"entries {before.seq} and {after.seq} do not link")
    for entry in sealed:
        if entry_hash(entry.body) != entry.hash:
            problems.append(f"entry {entry.seq} does not hash to its recorded hash")
    return problems
