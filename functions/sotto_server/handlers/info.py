"""GET /v1/info (public): what this deployment is and which protocol it speaks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

import sotto
from sotto.protocol import connect_token

from ..config import settings

if TYPE_CHECKING:
    from sotto.frames.answers_http import InfoAnswer

logger = Logger()
app = APIGatewayHttpResolver()


@app.get("/v1/info")
def info() -> InfoAnswer:
    return {
        "service": "sotto",
        "version": sotto.__version__,
        "stage": settings().stage,
        "connect_token_version": connect_token.VERSION,
        "websocket": settings().websocket_url,
        "audience": settings().audience,
    }


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
