"""The local HTTP endpoint: the @connections management API and the HTTP API.

- ``POST /{stage}/@schedules/{function}`` (SigV4, local only) runs a
  scheduled function now, with the event its EventBridge rule would send.
- ``POST|GET|DELETE /{stage}/@connections/{id}`` behave as API Gateway's
  management API, so handlers push with an unchanged boto3
  ``apigatewaymanagementapi`` client (410 ``GoneException`` for connections
  that are not open, 413 ``PayloadTooLargeException`` over 128 KB).
- The HTTP API routes of ``sotto.topology.HTTP_ROUTES`` invoke their
  functions with payload-format-2.0 events; IAM routes require a
  SigV4-shaped ``Authorization`` header. The signature itself is not checked
  (there is no IAM here): any well-formed credentials are accepted.

Requests are served from threads; work on sockets is handed to the gateway's
event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from sotto import topology

from . import events
from .gateway import WebSocketGateway
from .lambdas import FunctionError, LocalFunctions

__all__ = ["LocalHttpServer", "sigv4_access_key"]

_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/\d{8}/[a-z0-9-]+/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{64}$"
)
MAX_POST_BYTES = 128 * 1024
# HTTP APIs accept payloads up to 10 MB.
MAX_HTTP_API_BODY = 10 * 1024 * 1024


def sigv4_access_key(headers: Any, service: str = "execute-api") -> str | None:
    """The access key of a SigV4-shaped request for ``service``, or None."""
    match = _SIGV4.match(headers.get("Authorization", ""))
    if match is None or match["service"] != service or not headers.get("X-Amz-Date"):
        return None
    return match["key"]


def _compile(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
    return re.compile(f"^{pattern}$")


class _Server(ThreadingHTTPServer):
    """Serves from threads; a client that goes away mid-request is not an error.

    A closed pipe or a reset connection while reading a request or writing its
    answer means the client left (a timeout, a killed process, a dropped
    network): there is no one left to answer and nothing to report. Anything
    else is still printed with its traceback by ``socketserver``.
    """

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # BrokenPipeError, ConnectionResetError, ConnectionAbortedError
        super().handle_error(request, client_address)


class LocalHttpServer:
    def __init__(
        self,
        gateway: WebSocketGateway,
        functions: LocalFunctions,
        loop: asyncio.AbstractEventLoop,
        *,
        api_id: str,
        stage: str,
        port: int = 0,
    ) -> None:
        self.gateway = gateway
        self.functions = functions
        self.loop = loop
        self.api_id = api_id
        self.stage = stage
        self.routes = [(route, _compile(route.path)) for route in topology.HTTP_ROUTES]
        self._server = _Server(("127.0.0.1", port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.connections_url = f"{self.url}/{stage}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def on_loop(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)


def _handler_class(server: LocalHttpServer) -> type[BaseHTTPRequestHandler]:
    connections_path = re.compile(rf"^/{re.escape(server.stage)}/@connections/(?P<id>[^/]+)$")
    # Local only: run a scheduled function now, as its EventBridge rule would.
    schedules_path = re.compile(rf"^/{re.escape(server.stage)}/@schedules/(?P<name>[a-z_]+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sotto-local"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines would drown the local stack's own output

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_HTTP_API_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": "Request too large"})
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            match = connections_path.match(url.path)
            if match is not None:
                self._connections(method, unquote(match["id"]), body)
                return
            match = schedules_path.match(url.path)
            if match is not None and method == "POST":
                self._schedule(match["name"])
                return
            for route, pattern in server.routes:
                found = pattern.match(url.path)
                if found is not None and route.method == method:
                    self._route(route, found.groupdict(), url.path, url.query, body)
                    return
            self._json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

        # -- @connections ------------------------------------------------------

        def _connections(self, method: str, connection_id: str, body: bytes) -> None:
            if sigv4_access_key(self.headers) is None:
                self._error(HTTPStatus.FORBIDDEN, "ForbiddenException", "Missing Authentication")
                return
            if method == "POST":
                if len(body) > MAX_POST_BYTES:
                    self._error(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        "PayloadTooLargeException",
                        "Request entity too large",
                    )
                    return
                outcome = server.on_loop(server.gateway.post(connection_id, body))
                self._gone() if outcome == "gone" else self._empty()
            elif method == "GET":
                description = server.on_loop(_describe(server.gateway, connection_id))
                self._gone() if description is None else self._json(HTTPStatus.OK, description)
            elif method == "DELETE":
                outcome = server.on_loop(server.gateway.delete(connection_id))
                self._gone() if outcome == "gone" else self._empty(HTTPStatus.NO_CONTENT)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

        def _schedule(self, name: str) -> None:
            if sigv4_access_key(self.headers) is None:
                self._error(HTTPStatus.FORBIDDEN, "ForbiddenException", "Missing Authentication")
                return
            scheduled = {spec.name for spec in topology.FUNCTIONS if spec.schedule}
            if name not in scheduled:
                self._json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})
                return
            try:
                result = server.functions.invoke_sync(name, events.scheduled_event(name))
            except FunctionError:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"message": "Internal Server Error"})
                return
            self._json(HTTPStatus.OK, result)

        def _gone(self) -> None:
            self._error(HTTPStatus.GONE, "GoneException", "")

        # -- HTTP API routes -----------------------------------------------------

        def _route(
            self,
            route: topology.HttpRouteSpec,
            params: dict[str, str],
            path: str,
            query: str,
            body: bytes,
        ) -> None:
            access_key = None
            if route.iam:
                access_key = sigv4_access_key(self.headers)
                if access_key is None:
                    self._json(HTTPStatus.FORBIDDEN, {"message": "Forbidden"})
                    return
            event = events.http_event(
                api_id=server.api_id,
                domain_name=server.url.removeprefix("http://"),
                route_key=f"{route.method} {route.path}",
                method=route.method,
                path=path,
                raw_query=query,
                headers=dict(self.headers.items()),
                body=body,
                path_parameters={k: unquote(v) for k, v in params.items()},
                source_ip=self.client_address[0],
                iam_access_key=access_key,
                now_ms=int(time.time() * 1000),
            )
            try:
                result = server.functions.invoke_sync(route.function, event)
            except FunctionError:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"message": "Internal Server Error"})
                return
            self._lambda_response(result)

        def _lambda_response(self, result: Any) -> None:
            # Payload format 2.0: a dict without statusCode is a 200 JSON body.
            if not isinstance(result, dict) or "statusCode" not in result:
                self._json(HTTPStatus.OK, result)
                return
            raw = result.get("body") or ""
            data = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
            headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
            self._send(int(result["statusCode"]), data, headers)

        # -- writing -------------------------------------------------------------

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, error_type: str, message: str) -> None:
            self._send(
                status,
                json.dumps({"message": message}).encode(),
                {"Content-Type": "application/json", "x-amzn-ErrorType": error_type},
            )

        def _empty(self, status: int = HTTPStatus.OK) -> None:
            self._send(status, b"", {})

        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

    return Handler


async def _describe(gateway: WebSocketGateway, connection_id: str) -> dict[str, Any] | None:
    return gateway.describe(connection_id)
