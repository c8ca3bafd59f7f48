"""Typed JSON bodies of the HTTP routes' answers (docs/api.md, HTTP API).

| Route                        | Answer              |
| ---------------------------- | ------------------- |
| ``GET /v1/info``             | ``InfoAnswer``      |
| ``POST /v1/enroll/lookup``   | ``EnrollLookupAnswer`` |
| ``POST /v1/enroll``          | ``EnrolledAnswer``  |
| ``POST /v1/link/requests``   | ``LinkRequestAnswer`` |
| ``POST /v1/link/status``     | ``LinkStatusAnswer`` |
| ``GET /v1/admin/networks/{network_id}/audit`` | ``AuditPage`` |

An HTTP answer is one body, never in parts: a long one (the audit log) is
read page by page, each page naming where the next starts (``next_after``).
Error bodies (``{"code", "message", "retry_after_s"?}``) are not typed here:
API Gateway's own refusals carry only ``message`` (``sotto.client.http``).
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

from .shapes import strict

__all__ = [
    "AuditEntry",
    "AuditHead",
    "AuditPage",
    "EnrollLookupAnswer",
    "EnrolledAnswer",
    "InfoAnswer",
    "LinkRequestAnswer",
    "LinkStatusAnswer",
]


class InfoAnswer(TypedDict):
    """Where to connect, and the audience a connect token names."""

    service: str
    version: str
    stage: str
    connect_token_version: int
    websocket: str
    audience: str


class EnrollLookupAnswer(TypedDict):
    network_id: str
    network_name: str  # "" when the network has no name
    user_id: str
    handle: str
    expires_at: int


class EnrolledAnswer(TypedDict):
    network_id: str
    user_id: str
    device_id: str


class LinkRequestAnswer(TypedDict):
    network_id: str
    user_id: str
    handle: str
    link_id: str


class LinkStatusAnswer(TypedDict):
    """The link's state; once approved, the new device's certificate (base64url)."""

    state: str  # open, requested, approved or expired
    device_certificate: NotRequired[str]


class AuditHead(TypedDict):
    seq: int
    hash: str
    sealed_seq: int


class AuditEntry(TypedDict):
    seq: int
    body: str  # the entry's canonical JSON
    hash: str


class AuditPage(TypedDict):
    network_id: str
    head: AuditHead | None
    entries: list[AuditEntry]
    next_after: int | None  # read on from here; None on the last page


strict(
    InfoAnswer,
    EnrollLookupAnswer,
    EnrolledAnswer,
    LinkRequestAnswer,
    LinkStatusAnswer,
    AuditHead,
    AuditEntry,
    AuditPage,
)
