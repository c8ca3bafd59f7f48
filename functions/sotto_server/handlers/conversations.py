"""Conversation routes (docs/api.md, Messaging): create, moderate, leave, list, rosters."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..events import MessageEvent, parse
from ._routes import Route, run_route
from ._stores import messaging_stores

logger = Logger()
metrics = Metrics()


@cache
def routes() -> dict[str, Route]:
    """The route table, imported on the first frame: its models and logic cost more
    than ``import boto3`` itself, which is the cold start's budget (bench_cold_start)."""
    from sotto.frames.requests import (
        AddMembersRequest,
        ConversationDevicesRequest,
        CreateConversationRequest,
        IdentitiesRequest,
        LeaveRequest,
        ListConversationsRequest,
        MembershipLogRequest,
        RemoveMembersRequest,
        SetRoleRequest,
    )

    from ..logic import conversations as logic

    return {
        "create_conversation": (CreateConversationRequest, logic.create_conversation),
        "add_members": (AddMembersRequest, logic.add_members),
        "remove_members": (RemoveMembersRequest, logic.remove_members),
        "leave": (LeaveRequest, logic.leave),
        "set_role": (SetRoleRequest, logic.set_role),
        "list_conversations": (ListConversationsRequest, logic.list_conversations),
        "conversation_devices": (ConversationDevicesRequest, logic.conversation_devices),
        "membership_log": (MembershipLogRequest, logic.membership_log),
        "identities": (IdentitiesRequest, logic.identities),
    }


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_route(parse(event=event, model=MessageEvent), routes(), messaging_stores, logger, metrics)
    return {"statusCode": 200}
