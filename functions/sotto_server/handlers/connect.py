"""$connect: record which device holds the new connection, then re-check its standing.

The authorizer read the device and user before this connection existed. A
revocation that commits in between closes the sockets it can find; this
socket's record is written first and the standing read after it, so either
the revocation sees the record or this read sees the revocation (403).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..dal.connections import CONNECTION_TTL_SECONDS, Connection
from ..events import ConnectEvent, parse
from ._socket import connections_store, directory_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=ConnectEvent)
    principal = request.principal
    connected_at = request.connected_at_s
    connection_id = request.request_context.connection_id
    connections = connections_store()
    connections.put(
        Connection(
            connection_id=connection_id,
            device_id=principal.device_id,
            user_id=principal.user_id,
            network_id=principal.network_id,
            connected_at=connected_at,
            expires_at=connected_at + CONNECTION_TTL_SECONDS,
        )
    )
    from ..logic.standing import NotInGoodStanding, in_good_standing  # first event, not import

    try:
        in_good_standing(directory_store(), principal)
    except NotInGoodStanding as refused:
        connections.delete(connection_id)
        logger.info("connect refused after recording", reason=refused.code.value)
        return {"statusCode": 403}
    logger.info("connected", device_id=principal.device_id)
    return {"statusCode": 200}
