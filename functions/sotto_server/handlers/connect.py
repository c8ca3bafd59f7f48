"""$connect: record which device holds the new connection, then re-check its standing.

The authorizer read the device and user before this connection existed. A
revocation that commits in between closes the sockets it can find; this
socket's record is written first and the standing read after it, so either
the revocation sees the record or this read sees the revocation (403).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..dal.connections import CONNECTION_TTL_SECONDS, Connection
from ..events import ConnectEvent
from ..logic.principal import Principal
from ..logic.standing import NotInGoodStanding, in_good_standing
from ._socket import connections_store, directory_store

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(event=event, model=ConnectEvent)
    ctx = request.request_context
    connected_at = int(ctx.connected_at.timestamp())
    authorized = ctx.authorizer
    connections = connections_store()
    connections.put(
        Connection(
            connection_id=ctx.connection_id,
            device_id=authorized.device_id,
            user_id=authorized.user_id,
            network_id=authorized.network_id,
            connected_at=connected_at,
            expires_at=connected_at + CONNECTION_TTL_SECONDS,
        )
    )
    principal = Principal(authorized.device_id, authorized.user_id, authorized.network_id)
    try:
        in_good_standing(directory_store(), principal)
    except NotInGoodStanding as refused:
        connections.delete(ctx.connection_id)
        logger.info("connect refused after recording", reason=refused.code.value)
        return {"statusCode": 403}
    logger.info("connected", device_id=authorized.device_id)
    return {"statusCode": 200}
