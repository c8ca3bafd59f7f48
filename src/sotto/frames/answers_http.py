"""Typed JSON bodies of the HTTP routes' answers (docs/api.md, HTTP API).

| Route                        | Answer              |
| ---------------------------- | ------------------- |
| ``GET /v1/info``             | ``InfoAnswer``      |
| ``POST /v1/enroll/lookup``   | ``EnrollLookupAnswer`` |
| ``POST /v1/enroll``          | ``EnrolledAnswer``  |
| ``POST /v1/link/requests``   | ``LinkRequestAnswer`` |
| ``POST /v1/link/status``     | ``LinkStatusAnswer`` |
| ``GET /v1/admin/networks/{network_id}/audit`` | ``AuditPage`` |

The other admin routes' answers are in ``answers_admin``; ``HTTP_ANSWERS`` names
the answer shape of every HTTP route (``topology.HTTP_ROUTES``), by method and
path: one each, but a network's retention, which answers one of two.

An HTTP answer is one body, never in parts: a long one (the audit log) is
read page by page, each page naming where the next starts (``next_after``).
Error bodies (``{"code", "message", "retry_after_s"?}``) are not typed here:
API Gateway's own refusals carry only ``message`` (``sotto.client.http``).
"""

from __future__ import annotations

from typing import Any, NotRequired

from typing_extensions import TypedDict

from . import answers_admin as _admin
from .answers import PolicyFields
from .shapes import strict

__all__ = [
    "HTTP_ANSWERS",
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

_NETWORK = "/v1/admin/networks/{network_id}"
# The shapes each HTTP route may answer, by "METHOD path" as topology.HTTP_ROUTES names it.
HTTP_ANSWERS: dict[str, tuple[type[Any], ...]] = {
    "GET /v1/info": (InfoAnswer,),
    "POST /v1/enroll/lookup": (EnrollLookupAnswer,),
    "POST /v1/enroll": (EnrolledAnswer,),
    "POST /v1/link/requests": (LinkRequestAnswer,),
    "POST /v1/link/status": (LinkStatusAnswer,),
    f"GET {_NETWORK}/audit": (AuditPage,),
    # answers_admin
    "POST /v1/admin/networks": (_admin.NetworkAnswer,),
    "GET /v1/admin/networks": (_admin.NetworksAnswer,),
    f"POST {_NETWORK}/invites": (_admin.InviteAnswer,),
    f"GET {_NETWORK}/invites": (_admin.InvitesAnswer,),
    f"POST {_NETWORK}/invites/bulk": (_admin.BulkInviteAnswer,),
    f"POST {_NETWORK}/invites/{{user_id}}/revoke": (_admin.InviteRevokedAnswer,),
    f"POST {_NETWORK}/invites/{{user_id}}/reissue": (_admin.InviteAnswer,),
    f"GET {_NETWORK}/users": (_admin.UsersAnswer,),
    f"GET {_NETWORK}/retention": (_admin.RetentionOffAnswer, _admin.RetentionAdminAnswer),
    f"PUT {_NETWORK}/retention": (_admin.RetentionAdminAnswer,),
    f"POST {_NETWORK}/retention/disable": (_admin.RetentionAdminAnswer,),
    f"POST {_NETWORK}/retention/rotate": (_admin.RetentionAdminAnswer,),
    f"GET {_NETWORK}/policy": (_admin.NetworkPolicyAnswer,),
    f"PUT {_NETWORK}/policy": (_admin.PolicySetAnswer,),
    f"POST {_NETWORK}/groups": (_admin.GroupCreatedAnswer,),
    f"PUT {_NETWORK}/groups/{{group}}/policy": (_admin.PolicySetAnswer,),
    f"POST {_NETWORK}/groups/{{group}}/members": (_admin.GroupMembersAddedAnswer,),
    f"POST {_NETWORK}/groups/{{group}}/members/remove": (_admin.GroupMembersRemovedAnswer,),
    "GET /v1/admin/users/{user_id}": (_admin.AdminUserAnswer,),
    "POST /v1/admin/users/{user_id}/suspend": (_admin.AdminUserAnswer,),
    "POST /v1/admin/users/{user_id}/reinstate": (_admin.AdminUserAnswer,),
    "GET /v1/admin/users/{user_id}/policy": (PolicyFields,),
    "GET /v1/admin/devices/{device_id}": (_admin.AdminDeviceAnswer,),
    "POST /v1/admin/devices/{device_id}/revoke": (_admin.AdminDeviceAnswer,),
}
