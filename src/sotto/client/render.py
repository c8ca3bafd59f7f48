"""Human-readable rendering of API answers: aligned fields, tables, readable times.

Admin answers are rendered generically (the server decides which fields a
network or user has), with two conventions: ``*_at`` integers are epoch
milliseconds, and a list of objects is a table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .sanitize import sanitize

__all__ = ["format_time", "local_time", "render", "render_json", "render_table"]

# Keys and certificates are kilobytes of base64: noise on a terminal, kept for --json.
_BINARY_FIELDS = frozenset({"identity_key", "certificate", "signing_key", "device_key"})


def render_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def format_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_time(ms: int, *, now_ms: int | None = None, full: bool = False) -> str:
    """``HH:MM`` today, else the date too; ``full`` adds seconds and the zone (history)."""
    when = datetime.fromtimestamp(ms / 1000).astimezone()
    if full:
        return when.strftime("%Y-%m-%d %H:%M:%S %Z")
    today = datetime.fromtimestamp((now_ms or time.time() * 1000) / 1000).astimezone().date()
    return when.strftime("%H:%M" if when.date() == today else "%Y-%m-%d %H:%M")


def _scalar(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in _BINARY_FIELDS and isinstance(value, str):
        return f"({len(value) * 3 // 4} bytes; --json shows it)"
    if key.endswith("_at") and isinstance(value, int) and not isinstance(value, bool):
        return format_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return sanitize(value)  # a handle, a name, a detail: from the network
    if isinstance(value, int | float):
        return str(value)
    return sanitize(json.dumps(value, sort_keys=True, ensure_ascii=False))


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns and not isinstance(row[k], list | dict))
    cells = [[_scalar(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(sanitize(c).upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def render(value: Mapping[str, Any]) -> str:
    """Scalars as ``key  value`` lines, then each list of objects as a titled table."""
    scalars = {k: v for k, v in value.items() if not isinstance(v, list | dict)}
    width = max((len(k) for k in scalars), default=0)
    lines = [f"{sanitize(k).ljust(width)}  {_scalar(k, v)}" for k, v in scalars.items()]
    for key, item in value.items():
        if isinstance(item, dict):
            lines += ["", f"{sanitize(key)}:", *("  " + line for line in render(item).splitlines())]
        elif isinstance(item, list):
            if all(isinstance(row, dict) for row in item):
                table = render_table(item)
            else:
                table = "\n".join(_scalar(key, v) for v in item) or "(none)"
            lines += ["", f"{sanitize(key)}:", *("  " + line for line in table.splitlines())]
    return "\n".join(lines).strip("\n")
