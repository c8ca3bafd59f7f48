"""Admin HTTP API (docs/api.md).

API Gateway has IAM-authorized the request before this code runs; this
function then admits only the principals the deployment names
(``SOTTO_ADMIN_PRINCIPALS``, context ``admin_principals``) and logs every
caller, admitted or not.
"""

from __future__ import annotations

import os
import re
import time
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.typing import LambdaContext

from sotto.frames.requests import (
    BulkInviteRequest,
    CreateNetworkRequest,
    GroupMembersRequest,
    GroupRequest,
    InviteRequest,
    PolicySettingsRequest,
    ReissueInviteRequest,
    RetentionEnableRequest,
    RetentionRotateRequest,
)

from ..aws import connections_client
from ..logic import admin, invites, policy_admin
from ..logic.admin_callers import admitted
from ..logic.errors import ErrorCode, Refused
from ..logic.frames import encode
from ..logic.push import disconnect
from ..logic.requests import parse_body
from ._audit import Actor, AuditEvent, audit
from ._http import json_body, refused_response
from ._socket import connections_store, online_pushes, reply
from ._stores import retention_store, stores

if TYPE_CHECKING:
    from sotto.frames.answers import PolicyFields, PolicyPush
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
        MemberRefusal,
        NetworkAnswer,
        NetworkPolicyAnswer,
        NetworksAnswer,
        PolicyRetention,
        PolicySetAnswer,
        RetentionAdminAnswer,
        RetentionOffAnswer,
        UsersAnswer,
    )
    from sotto.frames.answers_http import AuditPage

logger = Logger()
app = APIGatewayHttpResolver()
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_GROUP = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


def _id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise Refused(ErrorCode.BAD_REQUEST, f"{what} must be 1-64 URL-safe characters")
    return value


def _group(value: str) -> str:
    if not _GROUP.match(value):
        raise Refused(ErrorCode.BAD_REQUEST, "a group name is 1-32 of a-z 0-9 . _ -")
    return value


def _caller() -> Actor:
    return Actor("iam", str(app.current_event.request_context.authorizer.iam.user_arn))


def _audit(network_id: str, event: str, subject: dict[str, str], **detail: Any) -> None:
    audit(AuditEvent(network_id, event, _caller(), subject, detail=detail))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _disconnect(connection_id: str) -> None:
    disconnect(connections_client(), connections_store(), connection_id)


def _refused(refused: Refused) -> Response[str]:
    return refused_response(refused)


@cache
def _admin_principals() -> tuple[str, ...]:
    raw = os.environ.get("SOTTO_ADMIN_PRINCIPALS", "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _admit_named_principals(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Any:
    caller = app.current_event.request_context.authorizer.iam.user_arn
    route = app.current_event.route_key
    if not admitted(caller, _admin_principals()):
        logger.warning("admin caller refused", caller=caller, route=route)
        raise Refused(ErrorCode.FORBIDDEN, "this caller is not an administrator of the deployment")
    logger.info("admin call", caller=caller, route=route)
    return next_middleware(app)


@app.post("/v1/admin/networks")
def create_network() -> NetworkAnswer:
    request = parse_body(CreateNetworkRequest, json_body(app))
    answer = admin.create_network(stores().directory, request, _now_ms())
    _audit(answer["network_id"], "network.created", {"network_id": answer["network_id"]})
    return answer


@app.get("/v1/admin/networks")
def list_networks() -> NetworksAnswer:
    return admin.list_networks(stores().directory)


@app.post("/v1/admin/networks/<network_id>/invites")
def create_invite(network_id: str) -> InviteAnswer:
    request = parse_body(InviteRequest, json_body(app))
    answer = admin.create_invite(
        stores().directory, _id(network_id, "network id"), request, _now_ms()
    )
    logger.info("invited", network_id=network_id, user_id=answer["user_id"])
    _audit(
        network_id,
        "invite.created",
        {"user_id": answer["user_id"], "handle": answer["handle"]},
        expires_at=answer["expires_at"],
    )
    return answer


@app.get("/v1/admin/networks/<network_id>/invites")
def list_invites(network_id: str) -> InvitesAnswer:
    return invites.list_invites(stores().directory, _id(network_id, "network id"), _now_ms())


@app.post("/v1/admin/networks/<network_id>/invites/<user_id>/revoke")
def revoke_invite(network_id: str, user_id: str) -> InviteRevokedAnswer:
    network_id = _id(network_id, "network id")
    answer = invites.revoke_invite(stores().directory, network_id, _id(user_id, "user id"))
    _audit(network_id, "invite.revoked", {"user_id": user_id, "handle": answer["handle"]})
    return answer


@app.post("/v1/admin/networks/<network_id>/invites/<user_id>/reissue")
def reissue_invite(network_id: str, user_id: str) -> InviteAnswer:
    request = parse_body(ReissueInviteRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer = invites.reissue_invite(
        stores().directory, network_id, _id(user_id, "user id"), request.ttl_s, _now_ms()
    )
    _audit(
        network_id,
        "invite.reissued",
        {"user_id": user_id, "handle": answer["handle"]},
        expires_at=answer["expires_at"],
    )
    return answer


@app.post("/v1/admin/networks/<network_id>/invites/bulk")
def bulk_invite(network_id: str) -> BulkInviteAnswer:
    request = parse_body(BulkInviteRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer = invites.bulk_invite(stores().directory, network_id, request, _now_ms())
    for made in answer["created"]:
        _audit(
            network_id,
            "invite.created",
            {"user_id": made["user_id"], "handle": made["handle"]},
            expires_at=made["expires_at"],
            bulk=True,
        )
    return answer


@app.get("/v1/admin/networks/<network_id>/audit")
def read_audit(network_id: str) -> AuditPage:
    from ..logic.audit import read_page
    from ._audit import audit_store

    network_id = _id(network_id, "network id")
    if stores().directory.get_network(network_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such network")
    raw = app.current_event.get_query_string_value("after", "0") or "0"
    if not raw.isdigit() or len(raw) > 12:
        raise Refused(ErrorCode.BAD_REQUEST, "after must be a sequence number")
    return read_page(audit_store(), network_id, int(raw))


@app.get("/v1/admin/networks/<network_id>/users")
def list_users(network_id: str) -> UsersAnswer:
    return admin.list_users(stores().directory, _id(network_id, "network id"))


@app.get("/v1/admin/networks/<network_id>/retention")
def show_retention(network_id: str) -> RetentionOffAnswer | RetentionAdminAnswer:
    from ..logic import retention

    network = _id(network_id, "network id")
    answer = retention.show(retention_store(), network)
    # The wrapped keys go to whoever asked: every export and rotation starts here.
    _audit(network, "retention.shown", {"network_id": network})
    return answer


@app.put("/v1/admin/networks/<network_id>/retention")
def enable_retention(network_id: str) -> RetentionAdminAnswer:
    from ..logic import retention

    request = parse_body(RetentionEnableRequest, json_body(app))
    network = _id(network_id, "network id")
    answer = retention.enable(retention_store(), network, request, _now_ms())
    logger.info("retention enabled", network_id=network_id, generation=answer["generation"])
    _audit(
        network,
        "retention.enabled",
        {"network_id": network},
        generation=answer["generation"],
        years=request.years,
    )
    return answer


@app.post("/v1/admin/networks/<network_id>/retention/disable")
def disable_retention(network_id: str) -> RetentionAdminAnswer:
    from ..logic import retention

    network = _id(network_id, "network id")
    answer = retention.disable(retention_store(), network, _now_ms())
    logger.info("retention disabled", network_id=network_id)
    _audit(network, "retention.disabled", {"network_id": network})
    return answer


@app.post("/v1/admin/networks/<network_id>/retention/rotate")
def rotate_retention(network_id: str) -> RetentionAdminAnswer:
    from ..logic import retention

    request = parse_body(RetentionRotateRequest, json_body(app))
    network = _id(network_id, "network id")
    answer = retention.rotate(retention_store(), network, request, _now_ms())
    logger.info("retention rotated", network_id=network_id, generation=answer["generation"])
    _audit(network, "retention.rotated", {"network_id": network}, generation=answer["generation"])
    return answer


@app.get("/v1/admin/users/<user_id>")
def get_user(user_id: str) -> AdminUserAnswer:
    return admin.get_user(stores().directory, _id(user_id, "user id"))


@app.post("/v1/admin/users/<user_id>/suspend")
def suspend_user(user_id: str) -> AdminUserAnswer:
    logger.info("suspending", user_id=user_id)
    answer = admin.set_user_status(
        stores().directory, connections_store(), _disconnect, _id(user_id, "user id"), "suspended"
    )
    _audit(answer["network_id"], "user.suspended", {"user_id": user_id})
    return answer


@app.post("/v1/admin/users/<user_id>/reinstate")
def reinstate_user(user_id: str) -> AdminUserAnswer:
    answer = admin.set_user_status(
        stores().directory, connections_store(), _disconnect, _id(user_id, "user id"), "active"
    )
    _audit(answer["network_id"], "user.reinstated", {"user_id": user_id})
    return answer


@app.get("/v1/admin/devices/<device_id>")
def get_device(device_id: str) -> AdminDeviceAnswer:
    return admin.get_device(stores().directory, _id(device_id, "device id"))


@app.post("/v1/admin/devices/<device_id>/revoke")
def revoke_device(device_id: str) -> AdminDeviceAnswer:
    logger.info("revoking", device_id=device_id)
    answer = admin.revoke_device(
        stores().directory,
        connections_store(),
        _disconnect,
        _id(device_id, "device id"),
        _now_ms(),
    )
    _audit(
        answer["network_id"],
        "device.revoked",
        {"device_id": device_id, "user_id": answer["user_id"]},
    )
    return answer


def _push_policies(network_id: str, user_ids: list[str]) -> int:
    """Push each affected user's online devices its new effective policy; returns how many.

    A courtesy, as every push: a device offline now reads its policy on its next sync.
    """
    directory = stores().directory
    notices: list[tuple[str, bytes]] = []
    for policy in policy_admin.effective_policies(directory, network_id, user_ids):
        push: PolicyPush = {"action": "policy", **policy.to_json()}
        frame = encode(push)
        for device_id, _certificate, status in directory.list_devices(policy.user_id):
            if status == "active":
                notices.append((device_id, frame))
    pushes = online_pushes(notices) if notices else []
    for connection_id, frame in pushes:
        reply(connection_id, frame)
    return len(pushes)


@app.get("/v1/admin/networks/<network_id>/policy")
def show_policy(network_id: str) -> NetworkPolicyAnswer:
    from ..logic.retention import retention_for

    network_id = _id(network_id, "network id")
    documents = policy_admin.show_policy(stores().directory, network_id)
    # Not a knob: on exactly while `sotto admin retention enable` holds (network-wide).
    retained = retention_for(retention_store(), network_id)
    retention: PolicyRetention = (
        {"required": True, "years": retained.years} if retained is not None else {"required": False}
    )
    return {**documents, "retention": retention}


@app.put("/v1/admin/networks/<network_id>/policy")
def set_network_policy(network_id: str) -> PolicySetAnswer:
    request = parse_body(PolicySettingsRequest, json_body(app))
    network_id = _id(network_id, "network id")
    document, affected = policy_admin.set_policy(
        stores().directory, network_id, None, request, _now_ms()
    )
    answer: PolicySetAnswer = {**document, "pushed": _push_policies(network_id, affected)}
    logger.info("network policy set", network_id=network_id, knobs=sorted(request.model_fields_set))
    _audit(network_id, "policy.set", {"network_id": network_id}, policy=answer["policy"])
    return answer


@app.post("/v1/admin/networks/<network_id>/groups")
def create_group(network_id: str) -> GroupCreatedAnswer:
    request = parse_body(GroupRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer = policy_admin.create_group(stores().directory, network_id, request.name, _now_ms())
    _audit(network_id, "group.created", {"group": request.name})
    return answer


@app.put("/v1/admin/networks/<network_id>/groups/<group>/policy")
def set_group_policy(network_id: str, group: str) -> PolicySetAnswer:
    request = parse_body(PolicySettingsRequest, json_body(app))
    network_id = _id(network_id, "network id")
    document, affected = policy_admin.set_policy(
        stores().directory, network_id, _group(group), request, _now_ms()
    )
    answer: PolicySetAnswer = {**document, "pushed": _push_policies(network_id, affected)}
    _audit(network_id, "group.policy_set", {"group": group}, policy=answer["policy"])
    return answer


def _set_members(
    network_id: str, group: str, *, member: bool
) -> tuple[str, list[str], list[MemberRefusal], int]:
    """The network, who changed, who was refused, and how many sockets were pushed."""
    request = parse_body(GroupMembersRequest, json_body(app))
    network_id = _id(network_id, "network id")
    changed, refused = policy_admin.set_members(
        stores().directory,
        network_id,
        _group(group),
        request.user_ids,
        member=member,
        now_ms=_now_ms(),
    )
    pushed = _push_policies(network_id, changed)
    event = "group.member_added" if member else "group.member_removed"
    for user_id in changed:
        _audit(network_id, event, {"group": group, "user_id": user_id})
    return network_id, changed, refused, pushed


@app.post("/v1/admin/networks/<network_id>/groups/<group>/members")
def add_group_members(network_id: str, group: str) -> GroupMembersAddedAnswer:
    network, added, refused, pushed = _set_members(network_id, group, member=True)
    return {
        "network_id": network,
        "group": group,
        "added": added,
        "refused": refused,
        "pushed": pushed,
    }


@app.post("/v1/admin/networks/<network_id>/groups/<group>/members/remove")
def remove_group_members(network_id: str, group: str) -> GroupMembersRemovedAnswer:
    network, removed, refused, pushed = _set_members(network_id, group, member=False)
    return {
        "network_id": network,
        "group": group,
        "removed": removed,
        "refused": refused,
        "pushed": pushed,
    }


@app.get("/v1/admin/users/<user_id>/policy")
def user_policy(user_id: str) -> PolicyFields:
    return policy_admin.user_policy(stores().directory, _id(user_id, "user id"))


app.exception_handler(Refused)(_refused)
app.use(middlewares=[_admit_named_principals])


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
