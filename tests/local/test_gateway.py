"""A real WebSocket client against the local stack: the gateway's API Gateway behaviour."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.stack import SeededDevice, Stack, seed_device


def open_socket(stack: Stack, device: SeededDevice, **kwargs) -> ClientConnection:
    return connect(
        stack.websocket,
        additional_headers=device.headers(stack.audience, **kwargs),
        max_size=None,
        open_timeout=10,
    )


def receive_json(ws: ClientConnection) -> dict[str, Any]:
    answer = json.loads(ws.recv(timeout=10))
    assert isinstance(answer, dict)
    return answer


def connection_ids(stack: Stack, device: SeededDevice) -> list[str]:
    items = stack.client("dynamodb").query(
        TableName=stack.table("ConnectionsTable"),
        IndexName="by_device",
        KeyConditionExpression="device_id = :d",
        ExpressionAttributeValues={":d": {"S": device.device_id}},
    )["Items"]
    return [item["connection_id"]["S"] for item in items]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ping_is_answered_with_pong_through_connections(stack, device):
    with open_socket(stack, device) as ws:
        ws.send(json.dumps({"action": "ping", "id": "r1", "payload": "hello"}))
        answer = receive_json(ws)
    assert answer["action"] == "pong"
    assert answer["id"] == "r1"
    assert answer["payload"] == "hello"
    assert abs(answer["server_time"] - time.time() * 1000) < 60_000


def test_unknown_action_gets_error_frame_with_request_id(stack, device):
    with open_socket(stack, device) as ws:
        ws.send(json.dumps({"action": "teleport", "id": "r2"}))
        answer = receive_json(ws)
    assert answer == {
        "action": "error",
        "code": "unknown_action",
        "message": "unknown action 'teleport'",
        "id": "r2",
    }


@pytest.mark.parametrize("frame", ["not json", "[1,2,3]", '"ping"', "{", ""])
def test_non_json_text_frame_gets_bad_json_error(stack, device, frame):
    with open_socket(stack, device) as ws:
        ws.send(frame)
        answer = receive_json(ws)
    assert answer["action"] == "error"
    assert answer["code"] == "bad_json"


def test_binary_frame_gets_bad_json_error(stack, device):
    with open_socket(stack, device) as ws:
        ws.send(b"\x00\x01binary")
        answer = receive_json(ws)
    assert answer["code"] == "bad_json"


@pytest.mark.parametrize(
    "frame",
    [
        {"action": "ping", "id": 7},
        {"action": "ping", "payload": "x" * 257},
        {"action": "ping", "extra": True},
        {"action": "ping", "id": ""},
    ],
)
def test_invalid_ping_fields_get_bad_request_error(stack, device, frame):
    with open_socket(stack, device) as ws:
        ws.send(json.dumps(frame))
        answer = receive_json(ws)
    assert answer["action"] == "error"
    assert answer["code"] == "bad_request"
    assert "Traceback" not in answer["message"]


def close_code_after(ws: ClientConnection, message: str | list[str]) -> int | None:
    """Send ``message`` and return the close code the server closed with.

    The server may close while the client is still sending, so the send can
    fail too; either way the closing handshake is waited for.
    """
    with contextlib.suppress(ConnectionClosed):
        ws.send(message)
        ws.recv(timeout=10)
    with contextlib.suppress(ConnectionClosed):
        ws.recv(timeout=10)
    return ws.close_code


def test_message_over_128_kb_closes_with_1009(stack, device):
    with open_socket(stack, device) as ws:
        # Fragments of 16 KB each stay under the frame limit; the message does not.
        fragments = [json.dumps({"action": "ping", "payload": "x"})[:1]] + ["x" * 16384] * 9
        assert close_code_after(ws, fragments) == 1009


def test_frame_over_32_kb_closes_with_1009(stack, device):
    with open_socket(stack, device) as ws:
        assert close_code_after(ws, json.dumps({"action": "ping", "payload": "x" * 40_000})) == 1009


def test_fragmented_message_under_128_kb_is_accepted(stack, device):
    text = json.dumps({"action": "teleport", "id": "big", "pad": "x" * 100_000})
    fragments = [text[i : i + 30_000] for i in range(0, len(text), 30_000)]
    with open_socket(stack, device) as ws:
        ws.send(fragments)
        answer = receive_json(ws)
    assert answer["code"] == "unknown_action"
    assert answer["id"] == "big"


def test_closed_socket_removes_its_connection_record(stack, device):
    with open_socket(stack, device) as ws:
        ws.send(json.dumps({"action": "ping"}))
        receive_json(ws)
        assert len(connection_ids(stack, device)) == 1
    assert wait_for(lambda: connection_ids(stack, device) == [])


def test_connections_api_get_post_delete_on_live_socket(stack, device):
    client = stack.connections_client()
    with open_socket(stack, device) as ws:
        ws.send(json.dumps({"action": "ping"}))
        receive_json(ws)
        (connection_id,) = connection_ids(stack, device)
        described = client.get_connection(ConnectionId=connection_id)
        assert described["Identity"]["SourceIp"] == "127.0.0.1"
        assert described["ConnectedAt"] <= described["LastActiveAt"]
        client.post_to_connection(ConnectionId=connection_id, Data=b'{"hello":"world"}')
        assert receive_json(ws) == {"hello": "world"}
        client.delete_connection(ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert wait_for(lambda: connection_ids(stack, device) == [])


def test_connections_api_answers_gone_for_closed_connection(stack):
    client = stack.connections_client()
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"{}")
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId="AAAAAAAAAAAAAAA=")


# -- the authorizer on $connect -------------------------------------------------


def upgrade_status(stack: Stack, headers: dict[str, str]) -> int:
    try:
        with connect(stack.websocket, additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def test_connect_without_token_is_401(stack):
    assert upgrade_status(stack, {}) == 401


def test_connect_with_garbage_token_is_401(stack):
    assert upgrade_status(stack, {"Authorization": "Sotto-Device not-a-token"}) == 401


def test_connect_with_other_scheme_is_401(stack, device):
    token = device.token(stack.audience)
    assert upgrade_status(stack, {"Authorization": f"Bearer {token}"}) == 401


def test_connect_with_forged_signature_is_403(stack, device):
    impostor = seed_device(stack)
    forged = SeededDevice(device.device_id, device.user_id, device.network_id, impostor.key)
    assert upgrade_status(stack, forged.headers(stack.audience)) == 403


def test_connect_from_unknown_device_is_403(stack, device):
    stranger = SeededDevice("dev-never-enrolled", "u", "n", device.key)
    assert upgrade_status(stack, stranger.headers(stack.audience)) == 403


def test_connect_from_revoked_device_is_403(stack):
    revoked = seed_device(stack, status="revoked")
    assert upgrade_status(stack, revoked.headers(stack.audience)) == 403


def test_connect_with_stale_token_is_403(stack, device):
    assert upgrade_status(stack, device.headers(stack.audience, now=int(time.time()) - 301)) == 403


def test_connect_with_future_token_is_403(stack, device):
    assert upgrade_status(stack, device.headers(stack.audience, now=int(time.time()) + 301)) == 403


def test_connect_with_wrong_audience_is_403(stack, device):
    assert upgrade_status(stack, device.headers("otherapi/local")) == 403


def test_refused_upgrade_writes_no_connection_record(stack, device):
    upgrade_status(stack, device.headers("otherapi/local"))
    assert connection_ids(stack, device) == []
