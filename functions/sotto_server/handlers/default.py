"""$default: every frame no route claims gets an error frame, never silence."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ..logic.errors import ErrorCode, Refused
from ..logic.frames import error_frame, refusal_frame
from ._socket import reply, standing_caller

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=MessageEvent)
    if standing_caller(request) is None:
        return {"statusCode": 200}
    # The frame module (pydantic) loads on the first frame, not in the cold start's import.
    from ..logic.requests import load_object, request_id_of

    body = None if request.is_base64_encoded else request.body
    try:
        frame = load_object(body if isinstance(body, str) else None)
    except Refused as refused:
        answer = refusal_frame(refused)
    else:
        action = frame.get("action")
        described = f"unknown action {action!r}" if isinstance(action, str) else "missing action"
        answer = error_frame(ErrorCode.UNKNOWN_ACTION, described[:120], request_id_of(frame))
    logger.info("refused frame")
    reply(request.request_context.connection_id, answer)
    return {"statusCode": 200}
