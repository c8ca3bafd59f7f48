"""The key directory's WebSocket routes (docs/api.md): one function, routed by action."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent
from ..logic import key_directory as routes
from ..logic.errors import Refused
from ..logic.frames import encode, refusal_frame
from ..logic.requests import (
    FetchBundlesRequest,
    LinkApproveRequest,
    LinkCreateRequest,
    LinkPendingRequest,
    ListDevicesRequest,
    PrekeyStatusRequest,
    PublishPrekeysRequest,
    parse_frame,
)
from ._socket import caller, notify_device, reply, stores

logger = Logger()
metrics = Metrics()

Route = Callable[[routes.Stores, Any, Any, int], routes.Outcome]
ROUTES: dict[str, tuple[type[Any], Route]] = {
    "publish_prekeys": (PublishPrekeysRequest, routes.publish_prekeys),
    "prekey_status": (PrekeyStatusRequest, routes.prekey_status),
    "fetch_bundles": (FetchBundlesRequest, routes.fetch_bundles),
    "list_devices": (ListDevicesRequest, routes.list_devices),
    "link_create": (LinkCreateRequest, routes.link_create),
    "link_pending": (LinkPendingRequest, routes.link_pending),
    "link_approve": (LinkApproveRequest, routes.link_approve),
}


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=MessageEvent)
    route = request.request_context.route_key
    connection_id = request.request_context.connection_id
    model, run = ROUTES[route]
    try:
        parsed = parse_frame(model, request.body if isinstance(request.body, str) else None)
        outcome = run(stores(), caller(request), parsed, int(time.time() * 1000))
    except Refused as refused:
        logger.info("refused", route=route, code=refused.code.value)
        metrics.add_metric(name="Refused", unit=MetricUnit.Count, value=1)
        reply(connection_id, refusal_frame(refused))
        return {"statusCode": 200}
    for frame in outcome.replies:
        reply(connection_id, encode(frame))
    for device_id, notice in outcome.notices:
        notify_device(device_id, encode(notice))
    metrics.add_metric(name="Answered", unit=MetricUnit.Count, value=1)
    return {"statusCode": 200}
