"""The local HTTP server: a client that goes away mid-request is not an error.

A soak of the local stack logged 106 ``BrokenPipeError`` tracebacks from
clients that timed out or were killed. They meant nothing had gone wrong
on the server; real errors are still printed.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, cast

import pytest

from sotto.local.http_server import LocalHttpServer


@pytest.fixture
def server() -> Any:
    # The handler reads a request before it looks at any route: no gateway, no functions.
    local = LocalHttpServer(
        cast(Any, None), cast(Any, None), cast(Any, None), api_id="x", stage="s"
    )
    local.start()
    yield local
    local.stop()


def leave_mid_request(url: str) -> None:
    """Send half a request, then reset the connection (as a killed client's kernel does)."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)))
    client.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
    time.sleep(0.2)  # the server is reading the body
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_that_leaves_mid_request_prints_no_traceback(server, capfd) -> None:
    for _ in range(3):
        leave_mid_request(server.url)
    time.sleep(0.5)  # the handler threads see the reset
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError()])
def test_a_closed_pipe_while_answering_is_not_reported(server, capfd, error) -> None:
    try:
        raise error
    except ConnectionError:
        server._server.handle_error(None, ("127.0.0.1", 1))
    assert capfd.readouterr().err == ""


def test_other_errors_are_still_reported(server, capfd) -> None:
    try:
        raise ValueError("a real bug")
    except ValueError:
        server._server.handle_error(None, ("127.0.0.1", 1))
    err = capfd.readouterr().err
    assert "Traceback" in err
    assert "ValueError: a real bug" in err
