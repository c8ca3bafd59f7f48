"""API Gateway event models: Powertools' parser models plus our authorizer context.

Powertools' WebSocket models ignore ``requestContext.authorizer``; ours add it
so every route gets the device, user and network the $connect authorizer
vouched for, typed and validated.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from aws_lambda_powertools.utilities.parser.models.apigw_websocket import (
    APIGatewayWebSocketConnectEventRequestContext,
    APIGatewayWebSocketMessageEventRequestContext,
)
from pydantic import BaseModel, Field

__all__ = ["AuthorizerContext", "ConnectEvent", "MessageEvent"]


class AuthorizerContext(BaseModel):
    principal_id: str = Field(alias="principalId")
    device_id: str
    user_id: str
    network_id: str


class _ConnectContext(APIGatewayWebSocketConnectEventRequestContext):
    authorizer: AuthorizerContext


class _MessageContext(APIGatewayWebSocketMessageEventRequestContext):
    authorizer: AuthorizerContext


class ConnectEvent(APIGatewayWebSocketConnectEventModel):
    request_context: _ConnectContext = Field(alias="requestContext")


class MessageEvent(APIGatewayWebSocketMessageEventModel):
    request_context: _MessageContext = Field(alias="requestContext")
