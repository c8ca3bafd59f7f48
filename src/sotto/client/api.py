"""The HTTP API routes of docs/api.md, one method each.

``PublicApi``: info, enrollment and link requests (no AWS credentials).
``AdminApi``: the IAM-authorized admin routes, signed with SigV4.
Every answer is parsed with its route's shape (``sotto.frames.answers_http``,
``sotto.frames.answers_admin``): a missing or mistyped field is
``MalformedFrame`` naming the route and the field, and fields a shape does
not name are dropped. Every JSON body is checked first
against the model the server parses it with (``sotto.frames.requests``): an
invalid one is ``InvalidRequest``, not sent.
"""

from __future__ import annotations

from typing import Any

from sotto.frames.answers import PolicyFields
from sotto.frames.answers_admin import (
    AdminDeviceAnswer,
    AdminUserAnswer,
    BulkInviteAnswer,
    GroupCreatedAnswer,
    GroupMembersAddedAnswer,
    GroupMembersRemovedAnswer,
    InviteAnswer,
    InviteRevokedAnswer,
    InvitesAnswer,
    NetworkAnswer,
    NetworkPolicyAnswer,
    NetworksAnswer,
    PolicySetAnswer,
    RetentionAdminAnswer,
    RetentionOffAnswer,
    UsersAnswer,
)
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

    def create_network(self, name: str) -> NetworkAnswer:
        body = check_body("create network", "CreateNetworkRequest", {"name": name})
        return shaped(NetworkAnswer, "create network", self._http.post("/v1/admin/networks", body))

    def list_networks(self) -> NetworksAnswer:
        return shaped(NetworksAnswer, "list networks", self._http.get("/v1/admin/networks"))

    def invite(self, network_id: str, handle: str, *, ttl_s: int | None = None) -> InviteAnswer:
        body: dict[str, Any] = {"handle": handle}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        check_body("invite", "InviteRequest", body)
        answer = self._http.post(f"{_network(network_id)}/invites", body)
        return shaped(InviteAnswer, "invite", answer)

    def list_users(self, network_id: str) -> UsersAnswer:
        return shaped(UsersAnswer, "list users", self._http.get(f"{_network(network_id)}/users"))

    def get_user(self, user_id: str) -> AdminUserAnswer:
        return shaped(AdminUserAnswer, "get user", self._http.get(_user(user_id)))

    def suspend_user(self, user_id: str) -> AdminUserAnswer:
        answer = self._http.post(f"{_user(user_id)}/suspend")
        return shaped(AdminUserAnswer, "suspend user", answer)

    def reinstate_user(self, user_id: str) -> AdminUserAnswer:
        answer = self._http.post(f"{_user(user_id)}/reinstate")
        return shaped(AdminUserAnswer, "reinstate user", answer)

    def get_device(self, device_id: str) -> AdminDeviceAnswer:
        return shaped(AdminDeviceAnswer, "get device", self._http.get(_device(device_id)))

    def revoke_device(self, device_id: str) -> AdminDeviceAnswer:
        answer = self._http.post(f"{_device(device_id)}/revoke")
        return shaped(AdminDeviceAnswer, "revoke device", answer)

    def audit(self, network_id: str, *, after: int = 0) -> AuditPage:
        page = self._http.get(f"{_network(network_id)}/audit?after={after}")
        return shaped(AuditPage, "audit", page)

    def list_invites(self, network_id: str) -> InvitesAnswer:
        answer = self._http.get(f"{_network(network_id)}/invites")
        return shaped(InvitesAnswer, "list invites", answer)

    def revoke_invite(self, network_id: str, user_id: str) -> InviteRevokedAnswer:
        answer = self._http.post(f"{_network(network_id)}/invites/{path_segment(user_id)}/revoke")
        return shaped(InviteRevokedAnswer, "revoke invite", answer)

    def reissue_invite(
        self, network_id: str, user_id: str, *, ttl_s: int | None = None
    ) -> InviteAnswer:
        body = check_body(
            "reissue invite", "ReissueInviteRequest", {} if ttl_s is None else {"ttl_s": ttl_s}
        )
        answer = self._http.post(
            f"{_network(network_id)}/invites/{path_segment(user_id)}/reissue", body
        )
        return shaped(InviteAnswer, "reissue invite", answer)

    def bulk_invite(
        self, network_id: str, rows: list[dict[str, Any]], *, ttl_s: int | None = None
    ) -> BulkInviteAnswer:
        body: dict[str, Any] = {"invites": rows}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        check_body("bulk invite", "BulkInviteRequest", body)
        answer = self._http.post(f"{_network(network_id)}/invites/bulk", body)
        return shaped(BulkInviteAnswer, "bulk invite", answer)

    def show_policy(self, network_id: str) -> NetworkPolicyAnswer:
        answer = self._http.get(f"{_network(network_id)}/policy")
        return shaped(NetworkPolicyAnswer, "show policy", answer)

    def set_policy(
        self, network_id: str, settings: dict[str, Any], *, group: str | None = None
    ) -> PolicySetAnswer:
        base = _network(network_id)
        path = f"{base}/policy" if group is None else f"{base}/groups/{path_segment(group)}/policy"
        body = check_body("set policy", "PolicySettingsRequest", settings)
        return shaped(PolicySetAnswer, "set policy", self._http.call("PUT", path, body))

    def user_policy(self, user_id: str) -> PolicyFields:
        return shaped(PolicyFields, "user policy", self._http.get(f"{_user(user_id)}/policy"))

    def create_group(self, network_id: str, name: str) -> GroupCreatedAnswer:
        body = check_body("create group", "GroupRequest", {"name": name})
        answer = self._http.post(f"{_network(network_id)}/groups", body)
        return shaped(GroupCreatedAnswer, "create group", answer)

    def add_group_members(
        self, network_id: str, group: str, user_ids: list[str]
    ) -> GroupMembersAddedAnswer:
        answer = self._group_members(network_id, group, user_ids, "members")
        return shaped(GroupMembersAddedAnswer, "add group members", answer)

    def remove_group_members(
        self, network_id: str, group: str, user_ids: list[str]
    ) -> GroupMembersRemovedAnswer:
        answer = self._group_members(network_id, group, user_ids, "members/remove")
        return shaped(GroupMembersRemovedAnswer, "remove group members", answer)

    def _group_members(
        self, network_id: str, group: str, user_ids: list[str], route: str
    ) -> dict[str, Any]:
        path = f"{_network(network_id)}/groups/{path_segment(group)}/{route}"
        body = check_body("group members", "GroupMembersRequest", {"user_ids": user_ids})
        return self._http.post(path, body)

    def get_retention(self, network_id: str) -> RetentionOffAnswer | RetentionAdminAnswer:
        """``{"status": "off"}`` while retention was never enabled, else the identity."""
        answer = self._http.get(f"{_network(network_id)}/retention")
        if answer.get("status") == "off":
            return shaped(RetentionOffAnswer, "show retention", answer)
        return shaped(RetentionAdminAnswer, "show retention", answer)

    def enable_retention(self, network_id: str, body: dict[str, Any]) -> RetentionAdminAnswer:
        check_body("enable retention", "RetentionEnableRequest", body)
        answer = self._http.call("PUT", f"{_network(network_id)}/retention", body)
        return shaped(RetentionAdminAnswer, "enable retention", answer)

    def disable_retention(self, network_id: str) -> RetentionAdminAnswer:
        answer = self._http.post(f"{_network(network_id)}/retention/disable")
        return shaped(RetentionAdminAnswer, "disable retention", answer)

    def rotate_retention(self, network_id: str, body: dict[str, Any]) -> RetentionAdminAnswer:
        check_body("rotate retention", "RetentionRotateRequest", body)
        answer = self._http.post(f"{_network(network_id)}/retention/rotate", body)
        return shaped(RetentionAdminAnswer, "rotate retention", answer)


def _network(network_id: str) -> str:
    return f"/v1/admin/networks/{path_segment(network_id)}"


def _user(user_id: str) -> str:
    return f"/v1/admin/users/{path_segment(user_id)}"


def _device(device_id: str) -> str:
    return f"/v1/admin/devices/{path_segment(device_id)}"
