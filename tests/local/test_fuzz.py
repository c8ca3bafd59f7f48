"""Hypothesis drives arbitrary frames through a real socket.

Every frame gets exactly one documented answer (pong or an error frame with a
known code); none makes a handler fail, and none leaves a trace in the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.support.stack import Stack, seed_device

KNOWN_CODES = {"bad_json", "unknown_action", "bad_request"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ping_like = st.fixed_dictionaries(
    {"action": st.just("ping")},
    optional={
        "id": st.one_of(st.text(max_size=80), st.integers(), st.none()),
        "payload": st.one_of(st.text(max_size=300), st.lists(st.integers(), max_size=3)),
        "extra": json_values,
    },
)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(json.dumps),
    ping_like.map(json.dumps),
    st.dictionaries(st.just("action"), st.text(max_size=20)).map(json.dumps),
)


@pytest.fixture(scope="module")
def socket(stack: Stack) -> Iterator[ClientConnection]:
    device = seed_device(stack)
    with connect(stack.websocket, additional_headers=device.headers(stack.audience)) as ws:
        yield ws


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=frames)
def test_every_frame_gets_one_documented_answer(socket, frame):
    socket.send(frame)
    answer = json.loads(socket.recv(timeout=10))
    if answer.get("action") == "pong":
        return
    assert answer.get("action") == "error", answer
    assert answer["code"] in KNOWN_CODES
    assert set(answer) == {"action", "code", "message", "id"}


def test_handlers_log_no_tracebacks_and_no_tokens(stack, device):
    token = device.token(stack.audience)
    with connect(
        stack.websocket, additional_headers={"Authorization": f"Sotto-Device {token}"}
    ) as ws:
        ws.send(json.dumps({"action": "ping", "id": "log-check"}))
        ws.recv(timeout=10)
    log = stack.log()
    assert "Traceback" not in log
    assert token.split(".")[0] not in log
    assert token.split(".")[1] not in log
    assert "Sotto-Device" not in log
