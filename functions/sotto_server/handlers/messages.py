"""Message routes (docs/api.md, Messaging): distribute, send, sync, ack, policy."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ._routes import Route, run_route
from ._stores import messaging_stores

logger = Logger()
metrics = Metrics()


@cache
def routes() -> dict[str, Route]:
    """The route table, imported on the first frame: its models and logic cost more
    than ``import boto3`` itself, which is the cold start's budget (bench_cold_start)."""
    from sotto.frames.requests import (
        AckRequest,
        DistributeRequest,
        PolicyRequest,
        SendRequest,
        SyncRequest,
    )

    from ..logic import messaging as logic

    return {
        "distribute": (DistributeRequest, logic.distribute),
        "send": (SendRequest, logic.send),
        "sync": (SyncRequest, logic.sync),
        "ack": (AckRequest, logic.ack),
        "policy": (PolicyRequest, logic.policy),
    }


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), routes(), messaging_stores, logger, metrics)
    return {"statusCode": 200}
