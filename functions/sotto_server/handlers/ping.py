"""ping: answer pong on the caller's socket, through @connections."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ..logic.errors import Refused
from ..logic.frames import encode, refusal_frame
from ._socket import reply, standing_caller

if TYPE_CHECKING:
    from sotto.frames.answers_devices import PongAnswer

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=MessageEvent)
    if standing_caller(request) is None:
        return {"statusCode": 200}
    # The frame models (pydantic) load on the first frame, not in the cold start's import.
    from sotto.frames.requests import PingRequest

    from ..logic.requests import parse_frame

    body = request.body if isinstance(request.body, str) else None
    try:
        ping = parse_frame(PingRequest, body)
    except Refused as refused:
        answer = refusal_frame(refused)
    else:
        pong: PongAnswer = {
            "action": "pong",
            "id": ping.id,
            "payload": ping.payload,
            "server_time": int(time.time() * 1000),
        }
        answer = encode(pong)
    reply(request.request_context.connection_id, answer)
    return {"statusCode": 200}
