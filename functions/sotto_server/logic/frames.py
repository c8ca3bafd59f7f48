"""The JSON frames the server sends on the WebSocket.

Every refusal is an error frame (documented in docs/api.md)::

    {"action": "error", "code": CODE, "message": TEXT, "id": REQUEST_ID | null}

plus ``retry_after_s`` for ``rate_limited``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from sotto import frames

from .errors import ErrorCode, Refused

__all__ = ["b64", "encode", "error_frame", "refusal_frame"]


def encode(frame: Mapping[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    """Binary fields on the wire: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def error_frame(code: ErrorCode, message: str, request_id: str | None = None) -> bytes:
    return encode(frames.error_frame(code.value, message, request_id))


def refusal_frame(refusal: Refused) -> bytes:
    details: dict[str, Any] = dict(refusal.details)
    if refusal.retry_after_s is not None:
        details["retry_after_s"] = refusal.retry_after_s
    return encode(
        frames.error_frame(refusal.code.value, refusal.message, refusal.request_id, details)
    )
