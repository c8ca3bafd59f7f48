"""The key directory's WebSocket routes (docs/api.md): one function, routed by action."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent
from ..logic import key_directory as logic
from ..logic.requests import (
    FetchBundlesRequest,
    LinkApproveRequest,
    LinkCreateRequest,
    LinkPendingRequest,
    ListDevicesRequest,
    PrekeyStatusRequest,
    PublishPrekeysRequest,
)
from ._routes import Route, run_route
from ._stores import stores

logger = Logger()
metrics = Metrics()

ROUTES: dict[str, Route] = {
    "publish_prekeys": (PublishPrekeysRequest, logic.publish_prekeys),
    "prekey_status": (PrekeyStatusRequest, logic.prekey_status),
    "fetch_bundles": (FetchBundlesRequest, logic.fetch_bundles),
    "list_devices": (ListDevicesRequest, logic.list_devices),
    "link_create": (LinkCreateRequest, logic.link_create),
    "link_pending": (LinkPendingRequest, logic.link_pending),
    "link_approve": (LinkApproveRequest, logic.link_approve),
}


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), ROUTES, stores, logger, metrics)
    return {"statusCode": 200}
