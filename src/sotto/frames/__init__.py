"""The WebSocket frame contract both sides share: multi-part answers and error frames.

Written once, imported by the server (``sotto_server.logic``: this module
ships in the Lambda asset) and by the SDK (``sotto.client.session``), so
the two cannot drift apart. docs/api.md, "Answers in parts".

An answer that carries lists may arrive as several frames. Every part
carries ``part`` (from 0) and ``final`` (true on the last), the answer's
other fields repeat in every part, and each list is split over the parts
in order, every part carrying every list name (possibly empty). A client
joins the parts by concatenating each list. Each part's JSON stays under
``MAX_ANSWER_BYTES``, under API Gateway's 128 KB message limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_ANSWER_BYTES",
    "PartError",
    "Parts",
    "error_frame",
    "is_gateway_error",
    "join_parts",
    "paginate",
    "paginate_lists",
]

# @connections accepts 128 KB; answers stay well under it.
MAX_ANSWER_BYTES = 100 * 1024
# What wrapping an entry in a list costs beyond its own JSON: a comma, and slack.
_ENTRY_OVERHEAD = 8


def _size(value: Any) -> int:
    # With ensure_ascii every character is one byte and a non-ASCII one counts as its
    # escape (6 or 12 bytes), never less than its UTF-8: the server's frames are no larger.
    return len(json.dumps(value, separators=(",", ":")))


def paginate(
    header: Mapping[str, Any], key: str, entries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``entries`` under ``key`` over parts whose JSON each stays under MAX_ANSWER_BYTES
    (an entry too large for any part goes alone in its own)."""
    base = _size({**header, "part": 10**6, "final": False, key: []})
    pages: list[list[Mapping[str, Any]]] = [[]]
    size = base
    for entry in entries:
        entry_size = _size(entry) + _ENTRY_OVERHEAD
        if pages[-1] and size + entry_size > MAX_ANSWER_BYTES:
            pages.append([])
            size = base
        pages[-1].append(entry)
        size += entry_size
    return [
        {**header, "part": index, "final": index == len(pages) - 1, key: list(page)}
        for index, page in enumerate(pages)
    ]


def paginate_lists(
    header: Mapping[str, Any], lists: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """An answer with several lists, as parts (the contract above)."""
    tagged = [{"_list": name, **entry} for name, items in lists.items() for entry in items]
    pages = paginate(header, "_entries", tagged)
    for page in pages:
        entries = page.pop("_entries")
        for name in lists:
            page[name] = [
                {k: v for k, v in e.items() if k != "_list"} for e in entries if e["_list"] == name
            ]
    return pages


class PartError(ValueError):
    """A part that breaks the contract: a number that is not a count, or a repeat."""


class Parts:
    """One answer's parts as they arrive, in any order (they are separate frames)."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, Any]] = {}
        self._last: int | None = None

    def add(self, frame: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every part in order once all up to the final one are here, else None.

        A frame without ``part`` or ``final`` is a whole answer on its own.
        """
        if "part" not in frame and "final" not in frame:
            return [frame]
        number = frame.get("part", 0)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise PartError(f"bad part number {number!r}")
        if number in self._parts:
            raise PartError(f"part {number} came twice")
        self._parts[number] = frame
        if frame.get("final") is True:
            self._last = number
        if self._last is None or any(i not in self._parts for i in range(self._last + 1)):
            return None
        return [self._parts[i] for i in range(self._last + 1)]


def join_parts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parts of one answer as one frame: lists concatenated in part order; the rest
    as the first part has it."""
    joined = {k: v for k, v in parts[0].items() if k not in ("part", "final")}
    for name, value in parts[0].items():
        if isinstance(value, list):
            joined[name] = [item for part in parts for item in (part.get(name) or [])]
    return joined


def error_frame(
    code: str, message: str, request_id: str | None, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"action": "error", "code", "message", "id": id | null, ...}``: every refusal.

    ``details`` are the code's own fields (``retry_after_s``, ``missing``, ...);
    they never replace the four above.
    """
    return {
        **(details or {}),
        "action": "error",
        "code": code,
        "message": message,
        "id": request_id,
    }


# API Gateway's own frame when an integration fails (a Lambda error or timeout): no
# ``action``, no ``id``, so it answers whichever request of the connection failed.
GATEWAY_ERROR_MESSAGE = "Internal server error"


def is_gateway_error(frame: Mapping[str, Any]) -> bool:
    """Whether ``frame`` is API Gateway's ``{"message": "Internal server error", ...}``."""
    return "action" not in frame and frame.get("message") == GATEWAY_ERROR_MESSAGE
