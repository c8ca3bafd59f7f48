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
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws import connections_client
from ..logic import admin, policy_admin
from ..logic.admin_callers import admitted
from ..logic.errors import ErrorCode, Refused
from ..logic.frames import encode
from ..logic.push import disconnect
from ..logic.requests import (
    CreateNetworkRequest,
    GroupMembersRequest,
    GroupRequest,
    InviteRequest,
    PolicySettingsRequest,
    parse_body,
)
from ._http import json_body, refused_response
from ._socket import connections_store, online_pushes, reply
from ._stores import stores

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
def create_network() -> dict[str, Any]:
    request = parse_body(CreateNetworkRequest, json_body(app))
    return admin.create_network(stores().directory, request, _now_ms())


@app.get("/v1/admin/networks")
def list_networks() -> dict[str, Any]:
    return admin.list_networks(stores().directory)


@app.post("/v1/admin/networks/<network_id>/invites")
def create_invite(network_id: str) -> dict[str, Any]:
    request = parse_body(InviteRequest, json_body(app))
    answer = admin.create_invite(
        stores().directory, _id(network_id, "network id"), request, _now_ms()
    )
    logger.info("invited", network_id=network_id, user_id=answer["user_id"])
    return answer


@app.get("/v1/admin/networks/<network_id>/users")
def list_users(network_id: str) -> dict[str, Any]:
    return admin.list_users(stores().directory, _id(network_id, "network id"))


@app.get("/v1/admin/users/<user_id>")
def get_user(user_id: str) -> dict[str, Any]:
    return admin.get_user(stores().directory, _id(user_id, "user id"))


@app.post("/v1/admin/users/<user_id>/suspend")
def suspend_user(user_id: str) -> dict[str, Any]:
    logger.info("suspending", user_id=user_id)
    return admin.set_user_status(
        stores().directory, connections_store(), _disconnect, _id(user_id, "user id"), "suspended"
    )


@app.post("/v1/admin/users/<user_id>/reinstate")
def reinstate_user(user_id: str) -> dict[str, Any]:
    return admin.set_user_status(
        stores().directory, connections_store(), _disconnect, _id(user_id, "user id"), "active"
    )


@app.get("/v1/admin/devices/<device_id>")
def get_device(device_id: str) -> dict[str, Any]:
    return admin.get_device(stores().directory, _id(device_id, "device id"))


@app.post("/v1/admin/devices/<device_id>/revoke")
def revoke_device(device_id: str) -> dict[str, Any]:
    logger.info("revoking", device_id=device_id)
    return admin.revoke_device(
        stores().directory,
        connections_store(),
        _disconnect,
        _id(device_id, "device id"),
        _now_ms(),
    )


def _push_policies(network_id: str, user_ids: list[str]) -> int:
    """Push each affected user's online devices its new effective policy; returns how many.

    A courtesy, as every push: a device offline now reads its policy on its next sync.
    """
    directory = stores().directory
    notices: list[tuple[str, bytes]] = []
    for policy in policy_admin.effective_policies(directory, network_id, user_ids):
        frame = encode({"action": "policy", **policy.to_json()})
        for device_id, _certificate, status in directory.list_devices(policy.user_id):
            if status == "active":
                notices.append((device_id, frame))
    pushes = online_pushes(notices) if notices else []
    for connection_id, frame in pushes:
        reply(connection_id, frame)
    return len(pushes)


@app.get("/v1/admin/networks/<network_id>/policy")
def show_policy(network_id: str) -> dict[str, Any]:
    return policy_admin.show_policy(stores().directory, _id(network_id, "network id"))


@app.put("/v1/admin/networks/<network_id>/policy")
def set_network_policy(network_id: str) -> dict[str, Any]:
    request = parse_body(PolicySettingsRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer, affected = policy_admin.set_policy(
        stores().directory, network_id, None, request, _now_ms()
    )
    answer["pushed"] = _push_policies(network_id, affected)
    logger.info("network policy set", network_id=network_id, knobs=sorted(request.model_fields_set))
    return answer


@app.post("/v1/admin/networks/<network_id>/groups")
def create_group(network_id: str) -> dict[str, Any]:
    request = parse_body(GroupRequest, json_body(app))
    return policy_admin.create_group(
        stores().directory, _id(network_id, "network id"), request.name, _now_ms()
    )


@app.put("/v1/admin/networks/<network_id>/groups/<group>/policy")
def set_group_policy(network_id: str, group: str) -> dict[str, Any]:
    request = parse_body(PolicySettingsRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer, affected = policy_admin.set_policy(
        stores().directory, network_id, _group(group), request, _now_ms()
    )
    answer["pushed"] = _push_policies(network_id, affected)
    return answer


def _set_members(network_id: str, group: str, *, member: bool) -> dict[str, Any]:
    request = parse_body(GroupMembersRequest, json_body(app))
    network_id = _id(network_id, "network id")
    answer, changed = policy_admin.set_members(
        stores().directory,
        network_id,
        _group(group),
        request.user_ids,
        member=member,
        now_ms=_now_ms(),
    )
    answer["pushed"] = _push_policies(network_id, changed)
    return answer


@app.post("/v1/admin/networks/<network_id>/groups/<group>/members")
def add_group_members(network_id: str, group: str) -> dict[str, Any]:
    return _set_members(network_id, group, member=True)


@app.post("/v1/admin/networks/<network_id>/groups/<group>/members/remove")
def remove_group_members(network_id: str, group: str) -> dict[str, Any]:
    return _set_members(network_id, group, member=False)


@app.get("/v1/admin/users/<user_id>/policy")
def user_policy(user_id: str) -> dict[str, Any]:
    return policy_admin.user_policy(stores().directory, _id(user_id, "user id"))


app.exception_handler(Refused)(_refused)
app.use(middlewares=[_admit_named_principals])


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
