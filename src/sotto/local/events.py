"""Lambda events shaped exactly as API Gateway builds them.

Pure functions of their inputs (the clock and ids are passed in), so tests can
check every shape against Powertools' parser models. Shapes follow the API
Gateway developer guide's examples for WebSocket APIs (REQUEST authorizer,
$connect, message routes, $disconnect) and HTTP APIs (payload format 2.0).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "ACCOUNT_ID",
    "LOCAL_ACCESS_KEY",
    "LOCAL_ADMIN_ARN",
    "REGION",
    "ConnectionInfo",
    "authorizer_event",
    "connect_event",
    "disconnect_event",
    "http_event",
    "message_event",
    "new_connection_id",
    "new_request_id",
    "scheduled_event",
]

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# The local credentials' access key, and the caller ARN the HTTP API passes
# for it: the one principal the local stage's admin API admits. Any other key
# becomes another user of the account (as other credentials would in AWS).
LOCAL_ACCESS_KEY = "AKIALOCALSOTTO000000"
LOCAL_ADMIN_ARN = f"arn:aws:iam::{ACCOUNT_ID}:user/local"


def _caller_arn(access_key: str) -> str:
    return (
        LOCAL_ADMIN_ARN
        if access_key == LOCAL_ACCESS_KEY
        else f"arn:aws:iam::{ACCOUNT_ID}:user/{access_key}"
    )


def new_connection_id() -> str:
    # API Gateway's ids are 16 base64 characters ending in "=" (11 random
    # bytes); the URL-safe alphabet keeps them usable in @connections paths.
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


def new_request_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(6)).decode()


def _request_time(epoch_ms: int) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms / 1000))


@dataclass
class ConnectionInfo:
    """What the gateway knows about one socket, from the upgrade on."""

    connection_id: str
    api_id: str
    stage: str
    domain_name: str
    source_ip: str
    user_agent: str | None
    connected_at_ms: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    # The authorizer's principalId and context, set once $connect is allowed.
    authorizer: dict[str, Any] | None = None


def _context(info: ConnectionInfo, route_key: str, event_type: str, now_ms: int) -> dict[str, Any]:
    identity: dict[str, Any] = {"sourceIp": info.source_ip}
    if info.user_agent is not None:
        identity["userAgent"] = info.user_agent
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": new_request_id(),
        "requestTime": _request_time(now_ms),
        "messageDirection": "IN",
        "stage": info.stage,
        "connectedAt": info.connected_at_ms,
        "requestTimeEpoch": now_ms,
        "identity": identity,
        "requestId": new_request_id(),
        "domainName": info.domain_name,
        "connectionId": info.connection_id,
        "apiId": info.api_id,
    }


def _single(values: Mapping[str, list[str]]) -> dict[str, str]:
    # API Gateway's single-value maps keep the last value of a repeated name.
    return {name: vals[-1] for name, vals in values.items() if vals}


def _gateway_headers(info: ConnectionInfo) -> dict[str, list[str]]:
    headers = {name: list(vals) for name, vals in info.headers.items()}
    headers.setdefault("X-Forwarded-For", [info.source_ip])
    headers.setdefault("X-Forwarded-Proto", ["https"])
    return headers


def authorizer_event(info: ConnectionInfo, now_ms: int) -> dict[str, Any]:
    headers = _gateway_headers(info)
    return {
        "type": "REQUEST",
        "methodArn": (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{info.api_id}/{info.stage}/$connect"
        ),
        "headers": _single(headers),
        "multiValueHeaders": headers,
        "queryStringParameters": _single(info.query),
        "multiValueQueryStringParameters": {k: list(v) for k, v in info.query.items()},
        "stageVariables": {},
        "requestContext": _context(info, "$connect", "CONNECT", now_ms),
    }


def connect_event(info: ConnectionInfo, now_ms: int) -> dict[str, Any]:
    headers = _gateway_headers(info)
    context = _context(info, "$connect", "CONNECT", now_ms)
    if info.authorizer is not None:
        context["authorizer"] = dict(info.authorizer)
    event: dict[str, Any] = {
        "headers": _single(headers),
        "multiValueHeaders": headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if info.query:
        event["queryStringParameters"] = _single(info.query)
        event["multiValueQueryStringParameters"] = {k: list(v) for k, v in info.query.items()}
    return event


def message_event(
    info: ConnectionInfo, route_key: str, body: str | bytes, now_ms: int
) -> dict[str, Any]:
    context = _context(info, route_key, "MESSAGE", now_ms)
    context["messageId"] = new_request_id()
    if info.authorizer is not None:
        context["authorizer"] = dict(info.authorizer)
    binary = isinstance(body, bytes)
    return {
        "requestContext": context,
        "body": base64.b64encode(body).decode() if isinstance(body, bytes) else body,
        "isBase64Encoded": binary,
    }


def disconnect_event(
    info: ConnectionInfo, status_code: int, reason: str, now_ms: int
) -> dict[str, Any]:
    headers = {
        "Host": [info.domain_name],
        "x-api-key": [""],
        "X-Forwarded-For": [""],
        "x-restapi": [""],
    }
    context = _context(info, "$disconnect", "DISCONNECT", now_ms)
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    if info.authorizer is not None:
        context["authorizer"] = dict(info.authorizer)
    return {
        "headers": _single(headers),
        "multiValueHeaders": headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }


def http_event(
    *,
    api_id: str,
    domain_name: str,
    route_key: str,
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    path_parameters: Mapping[str, str],
    source_ip: str,
    iam_access_key: str | None,
    now_ms: int,
) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) event."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        # Repeated headers are joined with commas in format 2.0.
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": domain_name,
        "domainPrefix": domain_name.split(".", 1)[0],
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": lowered.get("user-agent", ""),
        },
        "requestId": new_request_id(),
        "routeKey": route_key,
        "stage": "$default",
        "time": _request_time(now_ms),
        "timeEpoch": now_ms,
    }
    if iam_access_key is not None:
        context["authorizer"] = {
            "iam": {
                "accessKey": iam_access_key,
                "accountId": ACCOUNT_ID,
                "callerId": iam_access_key,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": _caller_arn(iam_access_key),
                "userId": iam_access_key,
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if raw_query:
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            # Repeated parameters are joined with commas in format 2.0.
            query[name] = f"{query[name]},{value}" if name in query else value
        event["queryStringParameters"] = query
    if body:
        try:
            event["body"] = body.decode()
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def scheduled_event(function: str, now_ms: int | None = None) -> dict[str, Any]:
    """What an EventBridge schedule rule sends the function it targets."""
    when = int(time.time() * 1000) if now_ms is None else now_ms
    return {
        "version": "0",
        "id": new_request_id(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.fromtimestamp(when / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/sotto-local-{function}"],
        "detail": {},
    }
