"""Answers that keep a client busy or break it while staying inside their shapes.

Shape checks (``sotto.frames``) refuse a missing or mistyped field; these
frames are well-shaped and still wrong: a page that never moves on, a page
without the part asked for. A hostile or broken server gets a clear error,
never an endless loop or a ``KeyError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from sotto.client import retention_admin
from sotto.client.api import AdminApi
from sotto.client.audit import read_log
from sotto.client.bulk import bulk_invite
from sotto.client.errors import MalformedFrame
from sotto.client.files import _UrlPages
from sotto.records.commands import _opener


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


class AdminServer:
    """Stands in for the admin API's HTTP client: answers every call with ``answer``."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls = 0

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls += 1
        return dict(self.answer)

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.call("POST", path, body)


def _admin_api(answer: dict[str, Any]) -> AdminApi:
    api = AdminApi.__new__(AdminApi)
    api._http = cast(Any, AdminServer(answer))
    return api


def test_a_bulk_invite_part_whose_lists_are_not_lists_is_refused(tmp_path: Path) -> None:
    rows = tmp_path / "people.csv"
    rows.write_text("handle,display name,group\nann,Ann,\nbob,Bob,\n")
    api = _admin_api({"network_id": "net-1", "created": 2, "refused": {"row": 3}})
    with pytest.raises(MalformedFrame) as raised:
        bulk_invite(api, "net-1", rows)
    assert raised.value.action == "bulk invite"
    assert raised.value.fields == ("created", "refused")


def test_a_retention_identity_without_its_fields_is_refused_before_any_kms_call() -> None:
    # Not "off", and none of the identity: rotate must not guess at what is missing.
    api = _admin_api({"status": "enabled"})
    kms = cast(retention_admin.ArchiveKms, None)  # never reached
    with pytest.raises(MalformedFrame, match="malformed show retention answer") as raised:
        retention_admin.rotate(api, kms, "net-1")
    assert {"network_id", "generation", "officer_identity"} <= set(raised.value.fields)


def test_a_retention_generation_off_its_shape_is_refused_before_any_kms_call() -> None:
    generation = {"generation": 1, "device_id": 7, "certificate": "AAAA", "prekey": "AAAA"}
    api = _admin_api(
        {
            "network_id": "net-1",
            "status": "enabled",
            "years": 7,
            "officer_identity": "AAAA",
            "wrapped_officer_key": "AAAA",
            "generation": 1,
            "device_id": "rtn-1",
            "certificate": "AAAA",
            "prekey": "AAAA",
            "updated_at": 1,
            "generations": [generation],
        }
    )
    kms = cast(retention_admin.ArchiveKms, None)  # never reached
    with pytest.raises(MalformedFrame) as raised:
        _opener(api, kms, "net-1")
    assert raised.value.fields == (
        "generations.0.created_at",
        "generations.0.device_id",
        "generations.0.wrapped_device_key",
    )
