"""The HTTP API routes of docs/api.md, one method each.

``PublicApi``: info, enrollment and link requests (no AWS credentials).
``AdminApi``: the IAM-authorized admin routes, signed with SigV4.
The public routes' answers, and the audit log's pages, are parsed with their
shapes (``sotto.frames.answers_http``): a missing or mistyped field is
``MalformedFrame`` naming it. The other admin answers are returned as the
server's JSON objects (the CLI shows them). Every JSON body is checked first
against the model the server parses it with (``sotto.frames.requests``): an
invalid one is ``InvalidRequest``, not sent.
"""

from __future__ import annotations

from typing import Any

from sotto.frames.answers_http import (
    AuditPage,
    EnrolledAnswer,
    EnrollLookupAnswer,
    InfoAnswer,
    LinkRequestAnswer,
    LinkStatusAnswer,
)

from .http import DEFAULT_TIMEOUT_S, HttpClient, SigV4Signer, path_segment
from .server import ServerConfig
from .session import check_body, shaped

__all__ = ["AdminApi", "PublicApi", "fetch_info"]


def fetch_info(http_url: str) -> InfoAnswer:
    """``GET /v1/info``: how ``resolve_server`` learns the WebSocket URL and audience."""
    return shaped(InfoAnswer, "info", HttpClient(http_url).get("/v1/info"))


class PublicApi:
    def __init__(self, server: ServerConfig, *, timeout: float | None = None) -> None:
        self._http = HttpClient(server.http, timeout=timeout or DEFAULT_TIMEOUT_S)

    def info(self) -> InfoAnswer:
        return shaped(InfoAnswer, "info", self._http.get("/v1/info"))

    def enroll_lookup(self, code: str) -> EnrollLookupAnswer:
        body = check_body("enroll lookup", "EnrollLookupRequest", {"code": code})
        answer = self._http.post("/v1/enroll/lookup", body)
        return shaped(EnrollLookupAnswer, "enroll lookup", answer)

    def enroll(
        self, code: str, *, identity_key: str, device_certificate: str, signed_prekey: str
    ) -> EnrolledAnswer:
        body = {
            "code": code,
            "identity_key": identity_key,
            "device_certificate": device_certificate,
            "signed_prekey": signed_prekey,
        }
        answer = self._http.post("/v1/enroll", check_body("enroll", "EnrollRequest", body))
        return shaped(EnrolledAnswer, "enroll", answer)

    def link_request(self, code: str, *, device_id: str, device_key: str) -> LinkRequestAnswer:
        body = {"code": code, "device_id": device_id, "device_key": device_key}
        checked = check_body("link request", "LinkRequest", body)
        return shaped(
            LinkRequestAnswer, "link request", self._http.post("/v1/link/requests", checked)
        )

    def link_status(self, code: str) -> LinkStatusAnswer:
        body = check_body("link status", "LinkStatusRequest", {"code": code})
        return shaped(LinkStatusAnswer, "link status", self._http.post("/v1/link/status", body))


class AdminApi:
    def __init__(self, server: ServerConfig, *, signer: SigV4Signer | None = None) -> None:
        signer = signer or SigV4Signer(server.region, local=server.local)
        self._http = HttpClient(server.http, signer=signer)

    def create_network(self, name: str) -> dict[str, Any]:
        body = check_body("create network", "CreateNetworkRequest", {"name": name})
        return self._http.post("/v1/admin/networks", body)

    def list_networks(self) -> dict[str, Any]:
        return self._http.get("/v1/admin/networks")

    def invite(self, network_id: str, handle: str, *, ttl_s: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"handle": handle}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        check_body("invite", "InviteRequest", body)
        return self._http.post(f"/v1/admin/networks/{path_segment(network_id)}/invites", body)

    def list_users(self, network_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/networks/{path_segment(network_id)}/users")

    def get_user(self, user_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/users/{path_segment(user_id)}")

    def suspend_user(self, user_id: str) -> dict[str, Any]:
        return self._http.post(f"/v1/admin/users/{path_segment(user_id)}/suspend")

    def reinstate_user(self, user_id: str) -> dict[str, Any]:
        return self._http.post(f"/v1/admin/users/{path_segment(user_id)}/reinstate")

    def get_device(self, device_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/devices/{path_segment(device_id)}")

    def revoke_device(self, device_id: str) -> dict[str, Any]:
        return self._http.post(f"/v1/admin/devices/{path_segment(device_id)}/revoke")

    def audit(self, network_id: str, *, after: int = 0) -> AuditPage:
        page = self._http.get(f"/v1/admin/networks/{path_segment(network_id)}/audit?after={after}")
        return shaped(AuditPage, "audit", page)

    def list_invites(self, network_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/networks/{path_segment(network_id)}/invites")

    def revoke_invite(self, network_id: str, user_id: str) -> dict[str, Any]:
        return self._http.post(
            f"/v1/admin/networks/{path_segment(network_id)}/invites/{path_segment(user_id)}/revoke"
        )

    def reissue_invite(
        self, network_id: str, user_id: str, *, ttl_s: int | None = None
    ) -> dict[str, Any]:
        body = check_body(
            "reissue invite", "ReissueInviteRequest", {} if ttl_s is None else {"ttl_s": ttl_s}
        )
        return self._http.post(
            f"/v1/admin/networks/{path_segment(network_id)}/invites/{path_segment(user_id)}"
            "/reissue",
            body,
        )

    def bulk_invite(
        self, network_id: str, rows: list[dict[str, Any]], *, ttl_s: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"invites": rows}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        check_body("bulk invite", "BulkInviteRequest", body)
        return self._http.post(f"/v1/admin/networks/{path_segment(network_id)}/invites/bulk", body)

    def show_policy(self, network_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/networks/{path_segment(network_id)}/policy")

    def set_policy(
        self, network_id: str, settings: dict[str, Any], *, group: str | None = None
    ) -> dict[str, Any]:
        base = f"/v1/admin/networks/{path_segment(network_id)}"
        path = f"{base}/policy" if group is None else f"{base}/groups/{path_segment(group)}/policy"
        return self._http.call(
            "PUT", path, check_body("set policy", "PolicySettingsRequest", settings)
        )

    def user_policy(self, user_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/users/{path_segment(user_id)}/policy")

    def create_group(self, network_id: str, name: str) -> dict[str, Any]:
        body = check_body("create group", "GroupRequest", {"name": name})
        return self._http.post(f"/v1/admin/networks/{path_segment(network_id)}/groups", body)

    def group_members(
        self, network_id: str, group: str, user_ids: list[str], *, add: bool
    ) -> dict[str, Any]:
        path = f"/v1/admin/networks/{path_segment(network_id)}/groups/{path_segment(group)}/members"
        body = check_body("group members", "GroupMembersRequest", {"user_ids": user_ids})
        return self._http.post(path if add else f"{path}/remove", body)

    def get_retention(self, network_id: str) -> dict[str, Any]:
        return self._http.get(f"/v1/admin/networks/{path_segment(network_id)}/retention")

    def enable_retention(self, network_id: str, body: dict[str, Any]) -> dict[str, Any]:
        check_body("enable retention", "RetentionEnableRequest", body)
        return self._http.call(
            "PUT", f"/v1/admin/networks/{path_segment(network_id)}/retention", body
        )

    def disable_retention(self, network_id: str) -> dict[str, Any]:
        return self._http.post(f"/v1/admin/networks/{path_segment(network_id)}/retention/disable")

    def rotate_retention(self, network_id: str, body: dict[str, Any]) -> dict[str, Any]:
        check_body("rotate retention", "RetentionRotateRequest", body)
        return self._http.post(
            f"/v1/admin/networks/{path_segment(network_id)}/retention/rotate", body
        )
