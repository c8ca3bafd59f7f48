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
from ..logic import admin
from ..logic.admin_callers import admitted
from ..logic.errors import ErrorCode, Refused
from ..logic.push import disconnect
from ..logic.requests import (
    CreateNetworkRequest,
    InviteRequest,
    RetentionEnableRequest,
    RetentionRotateRequest,
    parse_body,
)
from ._http import json_body, refused_response
from ._socket import connections_store
from ._stores import retention_store, stores

logger = Logger()
app = APIGatewayHttpResolver()
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise Refused(ErrorCode.BAD_REQUEST, f"{what} must be 1-64 URL-safe characters")
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


@app.get("/v1/admin/networks/<network_id>/retention")
def show_retention(network_id: str) -> dict[str, Any]:
    from ..logic import retention

    return retention.show(retention_store(), _id(network_id, "network id"))


@app.put("/v1/admin/networks/<network_id>/retention")
def enable_retention(network_id: str) -> dict[str, Any]:
    from ..logic import retention

    request = parse_body(RetentionEnableRequest, json_body(app))
    answer = retention.enable(retention_store(), _id(network_id, "network id"), request, _now_ms())
    logger.info("retention enabled", network_id=network_id, generation=answer["generation"])
    return answer


@app.post("/v1/admin/networks/<network_id>/retention/disable")
def disable_retention(network_id: str) -> dict[str, Any]:
    from ..logic import retention

    answer = retention.disable(retention_store(), _id(network_id, "network id"), _now_ms())
    logger.info("retention disabled", network_id=network_id)
    return answer


@app.post("/v1/admin/networks/<network_id>/retention/rotate")
def rotate_retention(network_id: str) -> dict[str, Any]:
    from ..logic import retention

    request = parse_body(RetentionRotateRequest, json_body(app))
    answer = retention.rotate(retention_store(), _id(network_id, "network id"), request, _now_ms())
    logger.info("retention rotated", network_id=network_id, generation=answer["generation"])
    return answer


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


app.exception_handler(Refused)(_refused)
app.use(middlewares=[_admit_named_principals])


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
