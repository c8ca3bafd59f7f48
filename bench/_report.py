"""Plain-text tables for the benchmarks: one header row, a rule, right-aligned numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["cell", "conversation_name", "table"]


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[h for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        print(f"{first}  {rest}".rstrip())
        if index == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def cell(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def conversation_name(members: int) -> str:
    return "1:1" if members == 2 else f"room {members}"
