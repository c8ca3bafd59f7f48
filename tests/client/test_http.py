"""The HTTP client against a stub server: typed errors, JSON checks, SigV4 headers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from sotto.client.errors import ApiError, TransportError
from sotto.client.http import HttpClient, SigV4Signer

# path -> (status, headers, body)
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok": (200, {}, b'{"hello": "world"}'),
    "/refused": (404, {}, b'{"code": "not_found", "message": "unknown, used or expired code"}'),
    "/gateway": (403, {}, b'{"message": "Forbidden"}'),
    "/limited": (429, {"Retry-After": "12"}, b'{"code": "rate_limited", "message": "too many"}'),
    "/broken": (502, {}, b"<html>bad gateway</html>"),
    "/list": (200, {}, b"[1, 2]"),
}


class Stub(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Stub.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, headers, data = ROUTES[self.path]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_client_returns_json_objects(base_url: str) -> None:
    assert HttpClient(base_url).get("/ok") == {"hello": "world"}


def test_http_client_posts_json(base_url: str) -> None:
    HttpClient(base_url).post("/ok", {"code": "C"})
    assert json.loads(Stub.seen[-1]["body"]) == {"code": "C"}
    assert Stub.seen[-1]["headers"]["Content-Type"] == "application/json"


def test_documented_error_body_becomes_a_typed_api_error(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        HttpClient(base_url).post("/refused", {})
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == "unknown, used or expired code"


def test_gateway_refusal_without_code_gets_one_from_the_status(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        HttpClient(base_url).get("/gateway")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        403,
        "forbidden",
        "Forbidden",
    )


def test_rate_limit_carries_the_retry_hint(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        HttpClient(base_url).get("/limited")
    assert caught.value.retry_after_s == 12
    assert "retry in 12 s" in str(caught.value)


def test_non_json_error_is_still_an_api_error(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        HttpClient(base_url).get("/broken")
    assert caught.value.code == "internal_error"


def test_json_that_is_not_an_object_is_refused(base_url: str) -> None:
    with pytest.raises(TransportError, match="not an object"):
        HttpClient(base_url).get("/list")


def test_admin_requests_carry_a_sigv4_signature_for_execute_api(base_url: str) -> None:
    HttpClient(base_url, signer=SigV4Signer("us-east-1", local=True)).post("/ok", {"name": "n"})
    headers = Stub.seen[-1]["headers"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIALOCALSOTTO000000/")
    assert "/us-east-1/execute-api/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers


def test_unreachable_server_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="cannot reach"):
        HttpClient("http://127.0.0.1:9", timeout=2).get("/ok")
