"""Bulk invites from a CSV: ``handle, display name, group`` per row, a header optional.

Rows go to the server a hundred at a time (one request each, within the
Lambda's time); the report joins every part: each invite made (with its
one-time code, shown only now) and each row refused, with its line and why.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from sotto.frames.answers_admin import BulkRefusal, InviteAnswer

from .api import AdminApi
from .errors import UsageError

__all__ = ["BULK_PART", "bulk_invite", "read_rows"]

BULK_PART = 100


def read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    rows = []
    for line, cells in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in cells]
        if not cells or not any(cells):
            continue
        if line == 1 and cells[0].lower() == "handle":
            continue  # the header
        if len(cells) > 3:
            raise UsageError(f"{path}:{line}: at most three columns (handle, display name, group)")
        handle, name, group = [*cells, "", ""][:3]
        rows.append({"row": line, "handle": handle, "display_name": name, "group": group})
    if not rows:
        raise UsageError(f"{path} has no rows to invite")
    return rows


def bulk_invite(
    api: AdminApi, network_id: str, path: Path, *, ttl_s: int | None = None
) -> dict[str, Any]:
    created: list[InviteAnswer] = []
    refused: list[BulkRefusal] = []
    rows = read_rows(path)
    for start in range(0, len(rows), BULK_PART):
        # Each part's answer is of its shape (the api parses it): lists, always there.
        answer = api.bulk_invite(network_id, rows[start : start + BULK_PART], ttl_s=ttl_s)
        created += answer["created"]
        refused += answer["refused"]
    return {
        "network_id": network_id,
        "rows": len(rows),
        "invited": len(created),
        "refused_rows": len(refused),
        "created": created,
        "refused": refused,
    }
