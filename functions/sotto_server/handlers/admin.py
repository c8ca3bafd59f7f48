"""Admin HTTP API (IAM-authorized by API Gateway before this code runs)."""

from __future__ import annotations

import base64
import re
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws import dynamodb_client
from ..config import settings
from ..dal.directory import DirectoryStore

logger = Logger()
app = APIGatewayHttpResolver()
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@app.get("/v1/admin/devices/<device_id>")
def get_device(device_id: str) -> dict[str, Any]:
    if not _DEVICE_ID.match(device_id):
        raise BadRequestError("device id must be 1-64 URL-safe characters")
    directory = DirectoryStore(dynamodb_client(), settings().table_name("DirectoryTable"))
    device = directory.get_device(device_id)
    if device is None:
        raise NotFoundError("no such device")
    return {
        "device_id": device.device_id,
        "user_id": device.user_id,
        "network_id": device.network_id,
        "status": device.status,
        "created_at": device.created_at,
        "signing_key": base64.b64encode(device.signing_key).decode(),
    }


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
