"""The key directory's WebSocket routes (docs/api.md): one function, routed by action."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ._routes import Route, run_route
from ._stores import stores

logger = Logger()
metrics = Metrics()


@cache
def routes() -> dict[str, Route]:
    """The route table, imported on the first frame: its models and logic cost more
    than ``import boto3`` itself, which is the cold start's budget (bench_cold_start)."""
    from sotto.frames.requests import (
        FetchBundlesRequest,
        LinkApproveRequest,
        LinkCreateRequest,
        LinkPendingRequest,
        ListDevicesRequest,
        LookupUserRequest,
        PrekeyStatusRequest,
        PublishPrekeysRequest,
        RetentionIdentityRequest,
        RevokeDeviceRequest,
    )

    from ..logic import key_directory as logic
    from ..logic import retention
    from ..logic.device_revocation import revoke_device

    return {
        "publish_prekeys": (PublishPrekeysRequest, logic.publish_prekeys),
        "prekey_status": (PrekeyStatusRequest, logic.prekey_status),
        "fetch_bundles": (FetchBundlesRequest, logic.fetch_bundles),
        "list_devices": (ListDevicesRequest, logic.list_devices),
        "lookup_user": (LookupUserRequest, logic.lookup_user),
        "link_create": (LinkCreateRequest, logic.link_create),
        "link_pending": (LinkPendingRequest, logic.link_pending),
        "revoke_device": (RevokeDeviceRequest, revoke_device),
        "link_approve": (LinkApproveRequest, logic.link_approve),
        "retention": (RetentionIdentityRequest, retention.retention_identity),
    }


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), routes(), stores, logger, metrics)
    return {"statusCode": 200}
