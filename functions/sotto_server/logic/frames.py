"""The JSON frames the server sends on the WebSocket.

Every refusal is an error frame (documented in docs/api.md)::

    {"action": "error", "code": CODE, "message": TEXT, "id": REQUEST_ID | null}

plus ``retry_after_s`` for ``rate_limited``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .errors import ErrorCode, Refused

__all__ = ["b64", "encode", "error_frame", "refusal_frame"]


def encode(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    """Binary fields on the wire: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def error_frame(code: ErrorCode, message: str, request_id: str | None = None) -> bytes:
    return encode({"action": "error", "code": code.value, "message": message, "id": request_id})


def refusal_frame(refusal: Refused) -> bytes:
    frame: dict[str, Any] = {
        "action": "error",
        "code": refusal.code.value,
        "message": refusal.message,
        "id": refusal.request_id,
    }
    if refusal.retry_after_s is not None:
        frame["retry_after_s"] = refusal.retry_after_s
    return encode({**refusal.details, **frame})
