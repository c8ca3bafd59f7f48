"""API Gateway WebSocket events: the fields the handlers read, typed and checked.

The shapes follow Powertools' parser models (``utilities/parser/models/
apigw_websocket.py``: connect, disconnect and message events told apart by
``eventType``) plus ``requestContext.authorizer``, the device, user and
network the $connect authorizer vouched for. ``tests/local/test_events.py``
checks the local gateway's events against Powertools' models and these.

Why not Powertools' models or data classes: importing either package builds
or loads every event type it knows (the parser about 70 ms, the data classes
about 15 ms) in every function's cold start, whose budget is 1.3x a bare
``import boto3`` (``bench/bench_cold_start.py``). An event that lacks a field
API Gateway always sends raises ``EventError`` (Lambda reports an error):
no client input is involved, frame bodies are validated by the typed frame
models of ``logic/requests.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .logic.principal import Principal

__all__ = [
    "ConnectEvent",
    "DisconnectEvent",
    "EventError",
    "MessageEvent",
    "RequestContext",
    "parse",
]

_Event = TypeVar("_Event", bound="_WebSocketEvent")


class EventError(ValueError):
    """An event lacks a field API Gateway always sends (or the authorizer's context)."""

    def __init__(self, kind: str, field: str) -> None:
        super().__init__(kind, field)
        self.kind = kind
        self.field = field

    def __str__(self) -> str:
        return f"{self.kind} event without a valid {self.field}"


@dataclass(frozen=True)
class RequestContext:
    route_key: str
    event_type: str
    connection_id: str
    stage: str
    api_id: str
    # Epoch milliseconds, as API Gateway sends it.
    connected_at: int
    authorizer: dict[str, Any]
    disconnect_status_code: int | None = None


@dataclass(frozen=True)
class _WebSocketEvent:
    EVENT_TYPE: ClassVar[str] = ""
    # Whether the $connect authorizer's context travels with this kind of event.
    AUTHORIZED: ClassVar[bool] = True

    request_context: RequestContext
    body: str | None = None
    is_base64_encoded: bool = False

    @classmethod
    def from_event(cls: type[_Event], event: dict[str, Any]) -> _Event:
        context = event.get("requestContext")
        if not isinstance(context, dict):
            raise EventError(cls.EVENT_TYPE, "requestContext")
        strings = {}
        for key in ("routeKey", "eventType", "connectionId", "stage", "apiId"):
            value = context.get(key)
            if not isinstance(value, str) or not value:
                raise EventError(cls.EVENT_TYPE, f"requestContext.{key}")
            strings[key] = value
        if strings["eventType"] != cls.EVENT_TYPE:
            raise EventError(cls.EVENT_TYPE, "requestContext.eventType")
        connected_at = context.get("connectedAt")
        if not isinstance(connected_at, int) or isinstance(connected_at, bool):
            raise EventError(cls.EVENT_TYPE, "requestContext.connectedAt")
        authorizer = context.get("authorizer") or {}
        status = context.get("disconnectStatusCode")
        body = event.get("body")
        parsed = cls(
            RequestContext(
                route_key=strings["routeKey"],
                event_type=strings["eventType"],
                connection_id=strings["connectionId"],
                stage=strings["stage"],
                api_id=strings["apiId"],
                connected_at=connected_at,
                authorizer=authorizer if isinstance(authorizer, dict) else {},
                disconnect_status_code=status if isinstance(status, int) else None,
            ),
            body=body if isinstance(body, str) else None,
            is_base64_encoded=event.get("isBase64Encoded") is True,
        )
        if cls.AUTHORIZED:
            parsed.principal  # noqa: B018 - raises if the authorizer context is incomplete
        return parsed

    @property
    def principal(self) -> Principal:
        """The device, user and network the $connect authorizer vouched for."""
        context = self.request_context.authorizer
        values = [context.get(k) for k in ("device_id", "user_id", "network_id")]
        strings = [v for v in values if isinstance(v, str) and v]
        if len(strings) != len(values):
            raise EventError(self.EVENT_TYPE, "requestContext.authorizer")
        device_id, user_id, network_id = strings
        return Principal(device_id, user_id, network_id)

    @property
    def connected_at_s(self) -> int:
        return self.request_context.connected_at // 1000


class ConnectEvent(_WebSocketEvent):
    EVENT_TYPE = "CONNECT"


class DisconnectEvent(_WebSocketEvent):
    EVENT_TYPE = "DISCONNECT"
    AUTHORIZED = False

    @property
    def disconnect_status_code(self) -> int | None:
        return self.request_context.disconnect_status_code


class MessageEvent(_WebSocketEvent):
    EVENT_TYPE = "MESSAGE"


def parse(event: dict[str, Any], model: type[_Event]) -> _Event:
    """The event as ``model``, checked (Powertools' ``parse`` signature)."""
    return model.from_event(event)
