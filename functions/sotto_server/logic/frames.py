"""The JSON frames the server sends on the WebSocket, and the error codes.

Every refusal is an error frame (documented in docs/protocol.md)::

    {"action": "error", "code": CODE, "message": TEXT, "id": REQUEST_ID | null}

``message`` is written for people and never carries internals (no stack
traces, table names or exception text from AWS).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

__all__ = ["ErrorCode", "encode", "error_frame"]


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"  # the frame is not a JSON object (or not text)
    UNKNOWN_ACTION = "unknown_action"  # no route for the frame's "action"
    BAD_REQUEST = "bad_request"  # the action's fields are missing or invalid
    INTERNAL = "internal_error"  # our fault; retry later


def encode(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


def error_frame(code: ErrorCode, message: str, request_id: str | None = None) -> bytes:
    return encode({"action": "error", "code": code.value, "message": message, "id": request_id})
