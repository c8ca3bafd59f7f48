"""How long each archived object must stay locked: its segment's creation plus the
network's retention years, which may be longer than the bucket's default lock.

The archiver cannot set retention (the bucket policy reserves
``PutObjectRetention`` to the compliance role), so objects start with the
stage's default; ``sotto records extend-locks`` moves each lock out to what
its segment's manifest asks for. A lock is only ever extended: S3 refuses to
shorten a COMPLIANCE lock, and this code never asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sotto.protocol.archive import Segment, files_of

from .verify import Lock

__all__ = ["required_until", "short_locks"]


def required_until(segment: Segment) -> datetime | None:
    """The end of the segment's retention period (None: the manifest names none)."""
    years = segment.manifest.get("retention_years")
    created = segment.manifest.get("created_at")
    if not isinstance(years, int) or years <= 0 or not isinstance(created, int):
        return None
    start = datetime.fromtimestamp(created / 1000, UTC)
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February, and the end year is not a leap year
        return start.replace(year=start.year + years, day=28)


def short_locks(
    segments: Sequence[tuple[str, Segment]], locks: Mapping[str, Lock]
) -> dict[str, datetime]:
    """Every segment and file copy whose lock ends before its segment's retention does
    (or that has none), with the date it must be locked until."""
    wanted: dict[str, datetime] = {}
    for key, segment in segments:
        until = required_until(segment)
        if until is None:
            continue
        copies = [str(e["key"]) for r in segment.records for e in files_of(r) if e.get("key")]
        for name in [key, *copies]:
            wanted[name] = max(until, wanted.get(name, until))
    return {
        name: until
        for name, until in wanted.items()
        if (lock := locks.get(name)) is None
        or lock.retain_until is None
        or lock.retain_until < until
    }
