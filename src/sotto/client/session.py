"""A device's WebSocket session: authenticated connect, then request/answer by ``id``.

The connect token (``sotto.protocol.connect_token``) is made fresh for every
connection: a nonce is usable once and the server allows 300 s of clock skew.
Frames that answer no pending request (``prekeys_low`` and, later, message
pushes) are kept in ``pushes`` for the caller rather than dropped.

Every request is checked against its route's model (``sotto.frames.requests``,
the models the server parses with) before it is sent: a frame the server
would refuse as ``bad_request`` fails here, as ``InvalidRequest``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sotto.frames import PartError, Parts, is_gateway_error, join_parts
from sotto.protocol import connect_token
from sotto.protocol.keys import SigningKey

from .errors import (
    ConnectionLost,
    ConnectRefused,
    FrameError,
    InvalidRequest,
    MalformedFrame,
    ServerUnreachable,
    SessionError,
)
from .server import ServerConfig

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "PIPELINE_WINDOW",
    "Session",
    "check_body",
    "check_request",
    "drain",
    "join_parts",
    "shaped",
]

T = TypeVar("T")

# API Gateway's WebSocket message limit; frames larger than this never arrive.
MAX_MESSAGE_BYTES = 128 * 1024
# ...and its frame limit: a longer message must be sent as fragments no larger than this.
MAX_FRAME_BYTES = 32 * 1024
# A little above the Lambda integration timeout (29 s): a slower answer is not coming.
DEFAULT_REQUEST_TIMEOUT_S = 35.0
# Requests of one batch in flight at once (``request_many``): enough to keep a
# handful of integration calls busy, few enough not to trip API Gateway's
# per-connection throttling or a device's rate limits in a burst.
PIPELINE_WINDOW = 8
OPEN_TIMEOUT_S = 15.0
# Closing (``drain``): unread frames are dropped until none came for DRAIN_QUIET_S
# (a burst arrives back to back), at most DRAIN_LIMIT of them; a server that sends
# more still meets the close, bounded by websockets' close timeout.
DRAIN_QUIET_S = 0.05
DRAIN_LIMIT = 1_000
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Session:
    """``with Session.open(server, device_id, key) as s: s.request("prekey_status")``."""

    def __init__(self, connection: ClientConnection, *, check_requests: bool = True) -> None:
        self._connection = connection
        self.pushes: deque[dict[str, Any]] = deque()
        # Off only for tests that drive a fake server with frames no route takes.
        self.check_requests = check_requests

    @classmethod
    def open(
        cls,
        server: ServerConfig,
        device_id: str,
        signing_key: SigningKey,
        *,
        now: int | None = None,
    ) -> Self:
        token = connect_token.issue(
            device_id,
            signing_key.key,
            server.audience,
            now=int(time.time()) if now is None else now,
            nonce=os.urandom(16),
        )
        host = urlsplit(server.websocket).hostname or ""
        try:
            connection = connect(
                server.websocket,
                additional_headers={"Authorization": f"Sotto-Device {token}"},
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                # API Gateway negotiates no extensions; keep frames as it sees them.
                compression=None,
                proxy=None if host in _LOOPBACK else True,
                user_agent_header="sotto",
            )
        except InvalidStatus as exc:
            raise ConnectRefused(exc.response.status_code) from None
        except (InvalidHandshake, TimeoutError, OSError) as exc:
            raise ServerUnreachable(f"cannot connect to {server.websocket}: {exc}") from None
        # Entering it marks the connection as owned by us (websockets 17 warns otherwise);
        # Session.close() is the matching exit. Works the same on websockets 15 and 16.
        return cls(connection.__enter__())

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        drain(self._connection)
        self._connection.close()

    def request(
        self, action: str, *, timeout: float = DEFAULT_REQUEST_TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        """Send ``{"action", "id", **fields}``; return the answer with that id.

        A multi-part answer (docs/api.md, pagination) is returned as one frame
        whose lists join every part's, in order. An error frame raises
        ``FrameError``.
        """
        return join_parts(self.request_parts(action, timeout=timeout, **fields))

    def request_as(
        self,
        shape: type[T],
        action: str,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        **fields: Any,
    ) -> T:
        """``request``, its answer parsed as ``shape`` (``sotto.frames.answers.ANSWERS``):
        a missing or mistyped field is ``MalformedFrame`` naming it."""
        return shaped(shape, action, self.request(action, timeout=timeout, **fields))

    def request_parts(
        self, action: str, *, timeout: float = DEFAULT_REQUEST_TIMEOUT_S, **fields: Any
    ) -> list[dict[str, Any]]:
        """Like ``request``, but a multi-part answer (``part``, ``final``) comes back as its
        parts in order (``bundles``, ``sync``, ``conversation_devices``); a plain answer as one.
        """
        answered: dict[int, list[dict[str, Any]]] = {}
        self.request_many(action, [fields], answered, window=1, timeout=timeout)
        return answered[0]

    def request_many(
        self,
        action: str,
        requests: Sequence[Mapping[str, Any]],
        answered: dict[int, list[dict[str, Any]]],
        *,
        window: int = PIPELINE_WINDOW,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        """Send ``requests`` of one action, up to ``window`` in flight; put each one's
        parts in ``answered`` under its index as it completes.

        API Gateway hands each message of a connection to its own integration
        call, concurrently, so a batch costs about its slowest request rather
        than the sum. Indexes already in ``answered`` are not sent again (a
        caller resuming after ``ConnectionLost`` keeps what arrived). An error
        frame raises ``FrameError`` once every request in flight has been
        answered, so no late answer is mistaken for a push; an error frame
        without an id (API Gateway's own) raises at once.
        """
        waiting = [i for i in range(len(requests)) if i not in answered]
        if self.check_requests:
            for index in waiting:
                check_request(action, requests[index])
        flight: dict[str, tuple[int, float, Parts]] = {}
        failure: FrameError | None = None
        while waiting or flight:
            while waiting and failure is None and len(flight) < max(1, window):
                index = waiting.pop(0)
                request_id = secrets.token_hex(8)
                self._send({**requests[index], "action": action, "id": request_id})
                flight[request_id] = (index, time.monotonic() + timeout, Parts())
            if not flight:
                break
            frame = self._receive(action, min(deadline for _, deadline, _ in flight.values()))
            answer_id = frame.get("id")
            if is_gateway_error(frame):
                # It names no request: one of those in flight failed in its integration.
                raise FrameError(action, "internal_error", "the server failed (API Gateway)")
            if frame.get("action") == "error" and answer_id is None:
                raise _frame_error(action, frame)
            if not isinstance(answer_id, str) or answer_id not in flight:
                self.pushes.append(frame)
                continue
            index, _, parts = flight[answer_id]
            if frame.get("action") == "error":
                del flight[answer_id]
                failure = failure or _frame_error(action, frame)
                continue
            try:
                complete = parts.add(frame)
            except PartError as exc:
                raise SessionError(f"server sent a bad {action} answer: {exc}") from None
            if complete is not None:
                del flight[answer_id]
                answered[index] = complete
        if failure is not None:
            raise failure

    def next_push(self, timeout: float) -> dict[str, Any] | None:
        """The next frame that answers no request (kept ones first), or None after ``timeout``."""
        if self.pushes:
            return self.pushes.popleft()
        try:
            raw = self._connection.recv(timeout=max(timeout, 0.0))
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        try:
            frame = json.loads(raw)
        except (TypeError, UnicodeDecodeError, json.JSONDecodeError):
            return {"action": "unparseable"}
        return frame if isinstance(frame, dict) else {"action": "unparseable"}

    def _send(self, frame: dict[str, Any]) -> None:
        # ensure_ascii (the default) makes one character one byte, so slicing counts bytes.
        data = json.dumps(frame, separators=(",", ":"))
        if len(data) > MAX_MESSAGE_BYTES:
            raise SessionError(
                f"{frame['action']} message is {len(data)} bytes, over the 128 KB limit"
            )
        try:
            if len(data) <= MAX_FRAME_BYTES:
                self._connection.send(data)
            else:
                step = MAX_FRAME_BYTES
                self._connection.send(data[i : i + step] for i in range(0, len(data), step))
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    def _receive(self, action: str, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            raw = self._connection.recv(timeout=remaining)
        except TimeoutError:
            raise SessionError(f"no answer to {action} in time") from None
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        try:
            frame = json.loads(raw)
        except (TypeError, UnicodeDecodeError, json.JSONDecodeError):
            return {"action": "unparseable"}
        return frame if isinstance(frame, dict) else {"action": "unparseable"}


def check_request(action: str, fields: Mapping[str, Any]) -> None:
    """Raise ``InvalidRequest`` unless ``{"action": action, "id", **fields}`` parses with
    the model the server parses that route with."""
    # pydantic and the models: on the first request, not when the SDK is imported.
    from sotto.frames.requests import request_model

    model = request_model(action)
    if model is None:
        raise InvalidRequest(action, ["action"])
    _validate(action, model, {**fields, "action": action, "id": "0"})


def check_body(route: str, model_name: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` if it parses with ``sotto.frames.requests.<model_name>``, the model the
    server parses that HTTP route's body with; else ``InvalidRequest`` (``route`` names it).

    By name: the models (and pydantic) load on the first call, not with the SDK.
    """
    from sotto.frames import requests

    model = getattr(requests, model_name)
    _validate(route, model, body)
    return body


def shaped(shape: type[T], action: str, frame: object) -> T:
    """An answer to ``action`` as its ``shape`` (``sotto.frames``), or ``MalformedFrame``
    naming the route and the fields; unknown fields are dropped."""
    # The shapes (and pydantic) load with the first answer, not with the SDK.
    from sotto.frames.shapes import ShapeError, parse

    try:
        return parse(shape, frame)
    except ShapeError as exc:
        raise MalformedFrame(action, exc.fields) from None


def _validate(what: str, model: Any, frame: Mapping[str, Any]) -> None:
    from pydantic import ValidationError

    try:
        model.model_validate(frame)
    except ValidationError as exc:
        names = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise InvalidRequest(what, names) from None


def _frame_error(action: str, frame: dict[str, Any]) -> FrameError:
    retry = frame.get("retry_after_s")
    return FrameError(
        action,
        str(frame.get("code") or "error"),
        str(frame.get("message") or "no message"),
        retry_after_s=float(retry) if isinstance(retry, int | float) else None,
        details=frame,
    )


def _closed(exc: ConnectionClosed) -> SessionError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = f" ({exc.rcvd.reason})" if exc.rcvd is not None and exc.rcvd.reason else ""
    if code == 1009:
        return SessionError("the server closed the connection: a message exceeded 128 KB")
    return ConnectionLost(code, f"the server closed the connection (code {code}){reason}")


def drain(connection: ClientConnection) -> None:
    """Drop what the server sent that nobody read, so the close is answered at once.

    websockets stops reading a socket once 16 frames wait unread (flow control),
    and a socket that is not read never sees the server's closing frame: with the
    pushes of a busy network unread, every command's exit waited out the whole
    close timeout (10 s). Emptying the queue once is not enough: the reader then
    takes the next 16 from the socket's buffer. What is dropped here is a courtesy
    copy; the next sync brings it (docs/api.md, "Pushes").
    """
    try:
        for _ in range(DRAIN_LIMIT):
            connection.recv(timeout=DRAIN_QUIET_S)
    except (TimeoutError, ConnectionClosed):
        pass
