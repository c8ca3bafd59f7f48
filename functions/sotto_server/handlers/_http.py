"""What the HTTP API handlers share: JSON bodies in, refusals out."""

from __future__ import annotations

import binascii
import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from ..logic.errors import ErrorCode, Refused
from ..logic.requests import load_object

__all__ = ["json_body", "refused_response", "source_ip"]


def json_body(app: APIGatewayHttpResolver) -> dict[str, Any]:
    event = app.current_event
    try:
        body = event.decoded_body if event.is_base64_encoded else event.body
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise Refused(ErrorCode.BAD_JSON, "the body must be JSON in UTF-8") from None
    return load_object(body if isinstance(body, str) else None)


def source_ip(app: APIGatewayHttpResolver) -> str:
    return str(app.current_event.request_context.http.source_ip)


def refused_response(refused: Refused) -> Response[str]:
    payload: dict[str, Any] = {"code": refused.code.value, "message": refused.message}
    headers: dict[str, str] = {}
    if refused.retry_after_s is not None:
        payload["retry_after_s"] = refused.retry_after_s
        headers["Retry-After"] = str(refused.retry_after_s)
    return Response(
        status_code=refused.code.http_status,
        content_type="application/json",
        body=json.dumps(payload),
        headers=headers,
    )
