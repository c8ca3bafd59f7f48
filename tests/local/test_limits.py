"""API Gateway's connection limits, on a stack started with short timeouts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.stack import Stack, running_stack, seed_device

from .test_gateway import connection_ids, wait_for


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("short-limits")
    with running_stack(data_dir, "--idle-timeout", "1.0", "--max-connection", "3.0") as running:
        yield running


def test_idle_socket_is_closed_with_1001_and_forgotten(short_stack):
    device = seed_device(short_stack)
    with connect(
        short_stack.websocket, additional_headers=device.headers(short_stack.audience)
    ) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert 0.5 < elapsed < 5
    assert wait_for(lambda: connection_ids(short_stack, device) == [])


def keep_pinging(ws) -> None:
    """Stay active until closed: a ping every 0.4 s keeps the idle timer from firing."""
    while True:
        ws.send(json.dumps({"action": "ping"}))
        ws.recv(timeout=10)
        time.sleep(0.4)


def test_active_socket_is_closed_at_the_maximum_connection_time(short_stack):
    device = seed_device(short_stack)
    with connect(
        short_stack.websocket, additional_headers=device.headers(short_stack.audience)
    ) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            keep_pinging(ws)
        elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert 2.5 < elapsed < 6
