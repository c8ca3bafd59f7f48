"""How every answer shape is checked at run time: ``parse``, ``ShapeError``, ``strict``.

The shapes themselves are typed dicts in ``answers`` (the core routes),
``answers_conversations``, ``answers_devices``, ``answers_files``,
``answers_http`` and ``answers_admin``. The server only builds them, so nothing here imports
pydantic until a frame is first parsed (the SDK's side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["ShapeError", "parse", "strict"]

T = TypeVar("T")

# How pydantic checks every shape (pydantic.with_config, without importing pydantic
# here). Strict: an int is an int (not "3", not true); unknown fields are dropped,
# so a newer server may add some.
_SHAPE = {"strict": True, "extra": "ignore"}


def strict(*shapes: type[Any]) -> None:
    """Check ``shapes`` strictly, dropping unknown fields (every shape, nested ones too)."""
    for shape in shapes:
        shape.__pydantic_config__ = _SHAPE


class ShapeError(ValueError):
    """A frame that is not of its shape: ``fields`` names what is missing or mistyped."""

    def __init__(self, shape: str, fields: tuple[str, ...]) -> None:
        super().__init__(shape, fields)
        self.shape = shape
        self.fields = fields

    def __str__(self) -> str:
        return f"not a {self.shape} frame: bad field(s) {', '.join(self.fields)[:200]}"


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(shape: type[Any]) -> TypeAdapter[Any]:
    # Built on first use: the server, which only builds frames, never pays for it.
    adapter = _ADAPTERS.get(shape)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[shape] = TypeAdapter(shape)
    return adapter


def parse(shape: type[T], frame: object) -> T:
    """``frame`` as ``shape`` (unknown fields dropped), or ``ShapeError``."""
    from pydantic import ValidationError

    try:
        parsed: T = _adapter(shape).validate_python(frame)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "frame" for e in exc.errors()})
        raise ShapeError(shape.__name__, tuple(fields)) from None
    return parsed
