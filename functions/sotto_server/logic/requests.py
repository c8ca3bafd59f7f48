"""Typed models of the frames clients send, one per action.

Every model forbids unknown fields and bounds every string, so a frame that
parses is one the logic can trust in shape (not in meaning).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .frames import ErrorCode

__all__ = ["FrameError", "PingRequest", "load_object", "parse_frame", "request_id_of"]

RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
]


class FrameError(Exception):
    """The frame was refused; ``code`` and ``message`` go into the error frame."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PingRequest(_Request):
    action: Literal["ping"]
    id: RequestId | None = None
    # Echoed back so a client can measure round trips with its own clock.
    payload: Annotated[str, Field(max_length=256)] | None = None


M = TypeVar("M", bound=_Request)


def load_object(body: str | None) -> dict[str, Any]:
    """The frame as a JSON object, or FrameError(bad_json)."""
    if body is None:
        raise FrameError(ErrorCode.BAD_JSON, "frames must be JSON objects sent as text")
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        raise FrameError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.BAD_JSON, "frame must be a JSON object")
    return value


def request_id_of(frame: dict[str, Any]) -> str | None:
    """The client's request id, echoed in answers when it is well formed."""
    value = frame.get("id")
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return None


def parse_frame(model: type[M], body: str | None) -> M:
    frame = load_object(body)
    try:
        return model.model_validate(frame)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "frame" for err in exc.errors()})
        raise FrameError(
            ErrorCode.BAD_REQUEST,
            f"invalid field(s): {', '.join(fields)}",
            request_id_of(frame),
        ) from None
