"""boto3 clients, created once per execution environment and on first use.

Endpoints come from the environment (``AWS_ENDPOINT_URL`` and its per-service
forms such as ``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI``), exactly as in
Lambda, so no handler knows whether it runs locally. Creation is lazy so that
importing a handler stays cheap (cold start) and tests can inject clients.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client

__all__ = ["connections_client", "dynamodb_client", "events_client", "s3_client"]

# Lambda's integration timeout is 29 s; fail fast rather than hold the socket.
_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


@cache
def dynamodb_client() -> DynamoDBClient:
    # Fan-out threads look up connections concurrently through this client too.
    return boto3.client("dynamodb", config=_CONFIG.merge(Config(max_pool_connections=32)))


@cache
def connections_client() -> ApiGatewayManagementApiClient:
    # A push is a courtesy (the stored copy is the truth), so one retry at most;
    # the pool matches the fan-out threads so connections are reused, not redialled.
    config = _CONFIG.merge(
        Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=32)
    )
    return boto3.client("apigatewaymanagementapi", config=config)


@cache
def events_client() -> EventBridgeClient:
    return boto3.client("events", config=_CONFIG)


@cache
def s3_client() -> S3Client:
    return boto3.client("s3", config=_CONFIG.merge(Config(read_timeout=30)))
