"""The server's side of the request models: parse a frame or body, or refuse it.

The models themselves are shared with the SDK: ``sotto.frames.requests``,
imported from there by the handlers and the logic. A frame that does not
parse is ``Refused`` with ``bad_json`` or ``bad_request`` and the names of
the fields that broke.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ErrorCode, Refused

__all__ = ["load_object", "parse_body", "parse_frame", "request_id_of"]

M = TypeVar("M", bound=BaseModel)


def load_object(body: str | None) -> dict[str, Any]:
    """The body as a JSON object, or Refused(bad_json)."""
    if body is None:
        raise Refused(ErrorCode.BAD_JSON, "frames must be JSON objects sent as text")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers past Python's digit limit.
        raise Refused(ErrorCode.BAD_JSON, "not valid JSON") from None
    if not isinstance(value, dict):
        raise Refused(ErrorCode.BAD_JSON, "must be a JSON object")
    return value


def request_id_of(frame: dict[str, Any]) -> str | None:
    """The client's request id, echoed in answers when it is well formed."""
    value = frame.get("id")
    # Printable ASCII without spaces, at most 64: the RequestId pattern, checked cheaply.
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
        return value if " " not in value else None
    return None


def parse_body(model: type[M], body: dict[str, Any], request_id: str | None = None) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        raise Refused(
            ErrorCode.BAD_REQUEST, f"invalid field(s): {', '.join(fields)[:200]}", request_id
        ) from None


def parse_frame(model: type[M], body: str | None) -> M:
    frame = load_object(body)
    return parse_body(model, frame, request_id_of(frame))
