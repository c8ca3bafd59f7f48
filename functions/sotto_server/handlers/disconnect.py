"""$disconnect: forget the connection (best-effort; TTL catches what is missed)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import DisconnectEvent, parse
from ._socket import connections_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=DisconnectEvent)
    connections_store().delete(request.request_context.connection_id)
    logger.info("disconnected", status=request.disconnect_status_code)
    return {"statusCode": 200}
