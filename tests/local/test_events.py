"""Every event the local gateway builds parses with Powertools' models, and with ours.

Shapes are checked for arbitrary inputs (hypothesis) and, through recorded
examples in tests/events/, the same files feed the handler tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
)
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventV2Model,
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.local import events
from sotto_server import events as ours
from sotto_server.events import ConnectEvent, DisconnectEvent, EventError, MessageEvent

EVENTS = Path(__file__).parent.parent / "events"

header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
bodies = st.one_of(st.text(max_size=200), st.binary(max_size=200))


@st.composite
def connections(draw: st.DrawFn, authorized: bool = True) -> events.ConnectionInfo:
    info = events.ConnectionInfo(
        connection_id=events.new_connection_id(),
        api_id="sottolocal",
        stage=draw(st.sampled_from(["local", "prod", "dev-1"])),
        domain_name="127.0.0.1:4000",
        source_ip=draw(st.sampled_from(["127.0.0.1", "::1", "10.1.2.3"])),
        user_agent=draw(st.one_of(st.none(), header_values)),
        connected_at_ms=draw(st.integers(1_600_000_000_000, 2_000_000_000_000)),
        headers=draw(
            st.dictionaries(header_names, st.lists(header_values, min_size=1, max_size=3))
        ),
        query=draw(st.dictionaries(header_names, st.lists(header_values, min_size=1, max_size=2))),
    )
    if authorized:
        info.authorizer = {
            "principalId": "dev-1",
            "device_id": "dev-1",
            "user_id": "user-1",
            "network_id": "net-1",
        }
    return info


@settings(max_examples=60)
@given(connections(authorized=False))
def test_authorizer_event_reads_as_a_request_authorizer_event(info):
    event = APIGatewayAuthorizerRequestEvent(events.authorizer_event(info, info.connected_at_ms))
    assert event.get_type == "REQUEST"
    assert event.method_arn.endswith(f"/{info.stage}/$connect")
    assert event.request_context.api_id == "sottolocal"
    assert event.request_context.stage == info.stage
    # The WebSocket-only fields Powertools' data class does not name.
    assert event["requestContext"]["connectionId"] == info.connection_id
    assert event["requestContext"]["routeKey"] == "$connect"
    assert event["requestContext"]["eventType"] == "CONNECT"


@settings(max_examples=60)
@given(connections())
def test_connect_event_parses_with_powertools_and_carries_authorizer(info):
    event = events.connect_event(info, info.connected_at_ms)
    parse(event=event, model=APIGatewayWebSocketConnectEventModel)
    connect = ours.parse(event, ConnectEvent)
    assert connect.principal.device_id == "dev-1"
    assert connect.connected_at_s == info.connected_at_ms // 1000


@settings(max_examples=60)
@given(connections(), st.sampled_from(["$default", "ping"]), bodies)
def test_message_event_parses_with_powertools(info, route, body):
    event = events.message_event(info, route, body, info.connected_at_ms + 5)
    parsed = parse(event=event, model=APIGatewayWebSocketMessageEventModel)
    assert parsed.request_context.route_key == route
    assert parsed.is_base64_encoded == isinstance(body, bytes)
    message = ours.parse(event, MessageEvent)
    assert message.principal.user_id == "user-1"
    assert message.request_context.route_key == route
    assert message.request_context.connection_id == info.connection_id
    assert message.is_base64_encoded == isinstance(body, bytes)


@settings(max_examples=60)
@given(connections(), st.sampled_from([1000, 1001, 1006, 1009]), st.text(max_size=50))
def test_disconnect_event_parses_with_powertools(info, code, reason):
    event = events.disconnect_event(info, code, reason, info.connected_at_ms + 10)
    parsed = parse(event=event, model=APIGatewayWebSocketDisconnectEventModel)
    assert parsed.request_context.disconnect_status_code == code
    assert ours.parse(event, DisconnectEvent).disconnect_status_code == code


@settings(max_examples=60)
@given(
    st.sampled_from(["GET", "POST"]),
    st.dictionaries(header_names, header_values, max_size=5),
    st.binary(max_size=100),
    st.booleans(),
)
def test_http_event_parses_with_powertools(method, headers, body, iam):
    event = events.http_event(
        api_id="sottolocal",
        domain_name="127.0.0.1:4001",
        route_key=f"{method} /v1/admin/devices/{{device_id}}",
        method=method,
        path="/v1/admin/devices/dev-1",
        raw_query="a=1&a=2&b=",
        headers=headers,
        body=body,
        path_parameters={"device_id": "dev-1"},
        source_ip="127.0.0.1",
        iam_access_key="AKIALOCALSOTTO000000" if iam else None,
        now_ms=1_700_000_000_000,
    )
    parsed = parse(event=event, model=APIGatewayProxyEventV2Model)
    assert parsed.pathParameters == {"device_id": "dev-1"}
    assert parsed.queryStringParameters == {"a": "1,2", "b": ""}
    assert (parsed.requestContext.authorizer is not None) == iam


def test_our_models_refuse_an_event_without_what_api_gateway_always_sends():
    event = json.loads((EVENTS / "ws_message_ping.json").read_text())
    assert ours.parse(event, MessageEvent).principal.device_id
    without_authorizer = json.loads(json.dumps(event))
    del without_authorizer["requestContext"]["authorizer"]["device_id"]
    with pytest.raises(EventError, match="authorizer"):
        ours.parse(without_authorizer, MessageEvent)
    with pytest.raises(EventError, match="eventType"):
        ours.parse(event, ConnectEvent)
    with pytest.raises(EventError, match="requestContext"):
        ours.parse({}, MessageEvent)


def test_recorded_events_parse_with_their_models():
    models: dict[str, Any] = {
        "ws_connect.json": APIGatewayWebSocketConnectEventModel,
        "ws_message_ping.json": APIGatewayWebSocketMessageEventModel,
        "ws_disconnect.json": APIGatewayWebSocketDisconnectEventModel,
        "http_admin_device.json": APIGatewayProxyEventV2Model,
    }
    for name, model in models.items():
        parse(event=json.loads((EVENTS / name).read_text()), model=model)
    authorizer = json.loads((EVENTS / "ws_authorizer.json").read_text())
    assert APIGatewayAuthorizerRequestEvent(authorizer).get_type == "REQUEST"
