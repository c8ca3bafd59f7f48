"""A WebSocket server on 127.0.0.1 that behaves like API Gateway's WebSocket API.

What it reproduces, and why each matters to code that must work in AWS:

- ``$connect`` goes through the REQUEST authorizer on the HTTP upgrade: an
  ``Unauthorized`` error answers 401, a Deny policy 403, and the ``$connect``
  route's own non-2xx answer refuses the upgrade with that status.
- Route selection on the ``action`` field of text frames; everything else
  (binary frames, non-JSON, unknown actions) goes to ``$default``.
- Integrations run concurrently, as API Gateway gives no ordering between
  messages of one connection; a failed integration answers the client with
  API Gateway's generic ``Internal server error`` frame.
- Limits: 32 KB frames and 128 KB messages (close code 1009), a 10 minute
  idle timeout counted on inbound messages, a 2 hour maximum connection.
- ``$disconnect`` is invoked after every close, whoever closed.
- The @connections operations (POST, GET, DELETE) on live connections, with
  "gone" for connections that are not open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sotto import topology

from . import events
from .lambdas import INTEGRATION_TIMEOUT_SECONDS, FunctionError, LocalFunctions

__all__ = ["GatewayLimits", "LiveConnection", "WebSocketGateway"]

log = logging.getLogger("sotto.local.gateway")

# API Gateway closes idle and over-age connections with 1001 "Going away".
GOING_AWAY = 1001
_INTERNAL = "Internal server error"


@dataclass(frozen=True)
class GatewayLimits:
    max_message_bytes: int = 128 * 1024
    max_frame_bytes: int = 32 * 1024
    idle_timeout_seconds: float = 10 * 60
    max_connection_seconds: float = 2 * 60 * 60


@dataclass
class LiveConnection:
    connection: ServerConnection
    info: events.ConnectionInfo
    last_active_ms: int
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class WebSocketGateway:
    def __init__(
        self,
        functions: LocalFunctions,
        *,
        api_id: str,
        stage: str,
        limits: GatewayLimits | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.functions = functions
        self.api_id = api_id
        self.stage = stage
        self.limits = limits or GatewayLimits()
        self._host = host
        self._port = port
        self._server: Server | None = None
        self._pending: dict[ServerConnection, events.ConnectionInfo] = {}
        self._live: dict[str, LiveConnection] = {}
        self._routes = {route.route_key: route.function for route in topology.WS_ROUTES}
        self.url = ""

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> str:
        self._server = await serve(
            self._serve,
            self._host,
            self._port,
            process_request=self._authorize_upgrade,
            # The authorizer and $connect, each up to the integration timeout (websockets'
            # default, 10 s, dropped a slow handshake without an answer).
            open_timeout=2 * INTEGRATION_TIMEOUT_SECONDS + 2,
            max_size=(self.limits.max_message_bytes, self.limits.max_frame_bytes),
            # API Gateway negotiates no extensions and sends no pings of its own.
            compression=None,
            ping_interval=None,
            server_header=None,
        )
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        self.url = f"ws://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    # -- the upgrade: authorizer, then $connect ------------------------------

    async def _authorize_upgrade(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        now_ms = int(time.time() * 1000)
        url = urlsplit(request.path)
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            headers.setdefault(name, []).append(value)
        remote = connection.remote_address
        info = events.ConnectionInfo(
            connection_id=events.new_connection_id(),
            api_id=self.api_id,
            stage=self.stage,
            domain_name=request.headers.get("Host", self.url.removeprefix("ws://")),
            source_ip=str(remote[0]) if remote else "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            connected_at_ms=now_ms,
            headers=headers,
            query={k: v for k, v in parse_qs(url.query, keep_blank_values=True).items()},
        )
        try:
            result = await self.functions.invoke(
                topology.WS_AUTHORIZER, events.authorizer_event(info, now_ms)
            )
        except FunctionError as exc:
            if exc.message == "Unauthorized":
                return _refuse(connection, HTTPStatus.UNAUTHORIZED, "Unauthorized")
            return _refuse(connection, HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL)
        except TimeoutError:
            return _refuse(connection, HTTPStatus.INTERNAL_SERVER_ERROR, _INTERNAL)
        if not _policy_allows(result, events.authorizer_event(info, now_ms)["methodArn"]):
            return _refuse(connection, HTTPStatus.FORBIDDEN, "Forbidden")
        context = result.get("context") or {}
        info.authorizer = {"principalId": str(result.get("principalId", "")), **context}

        route_function = self._routes.get("$connect")
        if route_function is not None:
            try:
                answer = await self.functions.invoke(
                    route_function, events.connect_event(info, now_ms)
                )
            except (FunctionError, TimeoutError):
                return _refuse(
                    connection, HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error"
                )
            status = answer.get("statusCode", 200) if isinstance(answer, dict) else 200
            if not isinstance(status, int) or not 200 <= status < 300:
                valid = isinstance(status, int) and status in HTTPStatus._value2member_map_
                refusal = HTTPStatus(status) if valid else HTTPStatus.INTERNAL_SERVER_ERROR
                return _refuse(connection, refusal, "Forbidden")
        self._pending[connection] = info
        return None

    # -- an open socket ------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        info = self._pending.pop(connection)
        live = LiveConnection(connection, info, last_active_ms=info.connected_at_ms)
        self._live[info.connection_id] = live
        deadline = time.monotonic() + self.limits.max_connection_seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                idle_left = (
                    live.last_active_ms / 1000 + self.limits.idle_timeout_seconds - time.time()
                )
                wait = min(remaining, idle_left)
                if wait <= 0:
                    await connection.close(GOING_AWAY, "Going away")
                    break
                try:
                    message = await asyncio.wait_for(connection.recv(), wait)
                except TimeoutError:
                    continue  # the loop head decides which limit was reached
                live.last_active_ms = int(time.time() * 1000)
                task = asyncio.create_task(self._dispatch(live, message))
                live.tasks.add(task)
                task.add_done_callback(live.tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            del self._live[info.connection_id]
            await self._disconnect(live)

    def _route_for(self, message: str | bytes) -> str:
        if isinstance(message, str):
            try:
                frame = json.loads(message)
            except (ValueError, RecursionError):  # incl. integers past the digit limit
                frame = None
            action = (
                frame.get(topology.WS_ROUTE_SELECTION_FIELD) if isinstance(frame, dict) else None
            )
            if isinstance(action, str) and action in self._routes and not action.startswith("$"):
                return action
        return "$default"

    async def _dispatch(self, live: LiveConnection, message: str | bytes) -> None:
        route = self._route_for(message)
        now_ms = int(time.time() * 1000)
        event = events.message_event(live.info, route, message, now_ms)
        try:
            await self.functions.invoke(self._routes[route], event)
        except (FunctionError, TimeoutError):
            # What API Gateway sends when an integration fails.
            error = {
                "message": _INTERNAL,
                "connectionId": live.info.connection_id,
                "requestId": event["requestContext"]["requestId"],
            }
            with contextlib.suppress(ConnectionClosed):
                await live.connection.send(json.dumps(error))

    async def _disconnect(self, live: LiveConnection) -> None:
        connection = live.connection
        code = connection.close_code if connection.close_code is not None else 1006
        reason = connection.close_reason or ""
        received = connection.protocol.close_rcvd is not None
        side = "Client-side" if received else "Server-side"
        description = f"{side} close frame status code '{code}' and reason '{reason}'"
        event = events.disconnect_event(live.info, code, description, int(time.time() * 1000))
        # Integrations still running for this socket finish on their own, as in AWS.
        with contextlib.suppress(FunctionError, TimeoutError):
            await self.functions.invoke(self._routes["$disconnect"], event)

    # -- @connections ----------------------------------------------------------

    async def post(self, connection_id: str, data: bytes) -> Literal["ok", "gone"]:
        live = self._live.get(connection_id)
        if live is None:
            return "gone"
        try:
            text = data.decode()
        except UnicodeDecodeError:
            payload: str | bytes = data
        else:
            payload = text
        try:
            await live.connection.send(payload)
        except ConnectionClosed:
            return "gone"
        return "ok"

    def describe(self, connection_id: str) -> dict[str, Any] | None:
        live = self._live.get(connection_id)
        if live is None:
            return None
        # The wire names of GetConnection's response (botocore maps them).
        return {
            "connectedAt": _iso(live.info.connected_at_ms),
            "identity": {"sourceIp": live.info.source_ip, "userAgent": live.info.user_agent or ""},
            "lastActiveAt": _iso(live.last_active_ms),
        }

    async def delete(self, connection_id: str) -> Literal["ok", "gone"]:
        live = self._live.get(connection_id)
        if live is None:
            return "gone"
        await live.connection.close(1000, "")
        return "ok"


def _refuse(connection: ServerConnection, status: HTTPStatus, message: str) -> Response:
    response = connection.respond(status, json.dumps({"message": message}))
    response.headers["Content-Type"] = "application/json"
    return response


def _policy_allows(result: Any, method_arn: str) -> bool:
    """Whether an authorizer's IAM policy allows invoking ``method_arn``."""
    if not isinstance(result, dict):
        return False
    document = result.get("policyDocument")
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return False
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            return False
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else resources or []
        matches = any(_arn_matches(pattern, method_arn) for pattern in resources)
        if not matches:
            continue
        if statement.get("Effect") == "Deny":
            return False  # an explicit deny wins, as in IAM
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


def _arn_matches(pattern: str, arn: str) -> bool:
    # IAM resource patterns use * and ? wildcards, as fnmatch does.
    return fnmatchcase(arn, pattern)


def _iso(epoch_ms: int) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_ms / 1000))
        + f".{epoch_ms % 1000:03d}Z"
    )
