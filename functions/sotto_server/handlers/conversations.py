"""Conversation routes (docs/api.md, Messaging): create, moderate, leave, list, rosters."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent
from ..logic import conversations as logic
from ..logic.requests import (
    AddMembersRequest,
    ConversationDevicesRequest,
    CreateConversationRequest,
    LeaveRequest,
    ListConversationsRequest,
    RemoveMembersRequest,
    SetRoleRequest,
)
from ._routes import Route, run_route
from ._stores import messaging_stores

logger = Logger()
metrics = Metrics()

ROUTES: dict[str, Route] = {
    "create_conversation": (CreateConversationRequest, logic.create_conversation),
    "add_members": (AddMembersRequest, logic.add_members),
    "remove_members": (RemoveMembersRequest, logic.remove_members),
    "leave": (LeaveRequest, logic.leave),
    "set_role": (SetRoleRequest, logic.set_role),
    "list_conversations": (ListConversationsRequest, logic.list_conversations),
    "conversation_devices": (ConversationDevicesRequest, logic.conversation_devices),
}


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), ROUTES, messaging_stores, logger, metrics)
    return {"statusCode": 200}
