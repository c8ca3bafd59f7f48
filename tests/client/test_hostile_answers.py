"""Answers that keep a client busy or break it while staying inside their shapes.

Shape checks (``sotto.frames``) refuse a missing or mistyped field; these
frames are well-shaped and still wrong: a page that never moves on, a page
without the part asked for. A hostile or broken server gets a clear error,
never an endless loop or a ``KeyError``.
"""

from __future__ import annotations

from typing import Any

import pytest

from sotto.client.audit import read_log
from sotto.client.errors import MalformedFrame
from sotto.client.files import _UrlPages


class RepeatingAudit:
    """An admin API whose audit log says "read on from 1" on every page."""

    def __init__(self) -> None:
        self.pages = 0

    def audit(self, network_id: str, *, after: int) -> dict[str, Any]:
        self.pages += 1
        assert self.pages < 10, "read_log kept reading a page that does not move on"
        entry = {"seq": 1, "body": "{}", "hash": "00"}
        return {"network_id": network_id, "head": None, "entries": [entry], "next_after": 1}


def test_an_audit_log_whose_next_page_does_not_move_on_is_refused() -> None:
    api = RepeatingAudit()
    with pytest.raises(MalformedFrame, match="next_after"):
        read_log(api, "net-1")  # type: ignore[arg-type]
    assert api.pages == 2


def test_an_upload_page_without_the_part_asked_for_is_refused() -> None:
    def call(action: str, **fields: Any) -> dict[str, Any]:
        assert action == "file_upload_parts"
        return {
            "action": "file_upload_parts",
            "id": "r1",
            "object_id": fields["object_id"],
            "part_size": 8 << 20,
            "part_count": 10,
            "url_expires_at": 0,
            "urls": [{"part": 9, "url": "https://x"}],
            "held": [],
        }

    pages = _UrlPages(call, "obj-1", 10)
    with pytest.raises(MalformedFrame, match="part 2"):
        pages.url(2)
