"""$connect: record which device holds the new connection."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..dal.connections import CONNECTION_TTL_SECONDS, Connection
from ..events import ConnectEvent, parse
from ._socket import connections_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=ConnectEvent)
    principal = request.principal
    connected_at = request.connected_at_s
    connections_store().put(
        Connection(
            connection_id=request.request_context.connection_id,
            device_id=principal.device_id,
            user_id=principal.user_id,
            network_id=principal.network_id,
            connected_at=connected_at,
            expires_at=connected_at + CONNECTION_TTL_SECONDS,
        )
    )
    logger.info("connected", device_id=principal.device_id)
    return {"statusCode": 200}
