"""$connect REQUEST authorizer: only a device with a fresh, signed token gets in."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sotto import topology

from ..aws import dynamodb_client
from ..config import settings

logger = Logger()
metrics = Metrics()


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Loaded on the first connect, not at import (bench/bench_cold_start.py):
    # the event and policy classes, the directory, and signature verification.
    from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
        APIGatewayAuthorizerRequestEvent,
        APIGatewayAuthorizerResponseWebSocket,
    )

    from ..dal.directory import DirectoryStore
    from ..dal.guards import GuardsStore
    from ..logic.auth import Refusal, authorize

    request = APIGatewayAuthorizerRequestEvent(event)
    request_context = request.request_context
    directory = DirectoryStore(dynamodb_client(), settings().table_name("DirectoryTable"))
    guards = GuardsStore(dynamodb_client(), settings().table_name("GuardsTable"))
    try:
        principal = authorize(
            request.get_header_value(topology.WS_AUTHORIZER_IDENTITY_HEADER, case_sensitive=False),
            directory.get_device,
            directory.get_user,
            guards.use_nonce,
            audience=f"{request_context.api_id}/{request_context.stage}",
            now=int(time.time()),
        )
    except Refusal as refusal:
        logger.info("connect refused", status=refusal.status, reason=refusal.reason)
        metrics.add_metric(name="ConnectRefused", unit=MetricUnit.Count, value=1)
        if refusal.status == 401:
            # API Gateway's contract: this exact message makes it answer 401.
            raise Exception("Unauthorized") from None
        policy = APIGatewayAuthorizerResponseWebSocket.from_route_arn(
            request.method_arn, "anonymous", {"reason": refusal.reason}
        )
        policy.deny_all_routes()
        return policy.asdict()
    logger.info("connect allowed", device_id=principal.device_id)
    metrics.add_metric(name="ConnectAllowed", unit=MetricUnit.Count, value=1)
    policy = APIGatewayAuthorizerResponseWebSocket.from_route_arn(
        request.method_arn, principal.device_id, principal.context()
    )
    policy.allow_route("$connect")
    return policy.asdict()
