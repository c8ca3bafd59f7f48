"""What a route returns: frames for the caller and notices for other devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_FRAME_BYTES", "Outcome", "paginate", "paginate_lists"]

# @connections accepts 128 KB; answers stay well under it.
MAX_FRAME_BYTES = 100 * 1024


@dataclass
class Outcome:
    """Frames for the caller, (device_id, frame) notices for other devices, and
    housekeeping nobody waits for (run after the answer went out; it must be
    safe to lose, as a Lambda may stop after answering)."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    afterwards: list[Callable[[], None]] = field(default_factory=list)
    # Push the notices before answering: what the caller does next (a send after a
    # distribute) must not reach the other devices before them.
    notices_first: bool = False


def paginate(
    header: dict[str, Any], key: str, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Split ``entries`` over frames that each stay under MAX_FRAME_BYTES."""
    base = len(str(header)) + 64
    pages: list[list[dict[str, Any]]] = [[]]
    size = base
    for entry in entries:
        entry_size = sum(len(str(v)) for v in entry.values()) + 100
        if pages[-1] and size + entry_size > MAX_FRAME_BYTES:
            pages.append([])
            size = base
        pages[-1].append(entry)
        size += entry_size
    return [
        {**header, "part": index, "final": index == len(pages) - 1, key: page}
        for index, page in enumerate(pages)
    ]


def paginate_lists(
    header: dict[str, Any], lists: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The pagination contract of every multi-part answer (docs/api.md).

    Each part carries ``part`` (from 0) and ``final``; the answer's lists
    are split over the parts in order, each part carrying every list name
    (possibly empty); the other fields repeat in every part. A client joins
    the parts by concatenating each list.
    """
    entries = [{"_list": name, **entry} for name, items in lists.items() for entry in items]
    pages = paginate(header, "_entries", entries)
    for page in pages:
        items = page.pop("_entries")
        for name in lists:
            page[name] = [
                {k: v for k, v in e.items() if k != "_list"} for e in items if e["_list"] == name
            ]
    return pages
