"""Every error the protocol library raises.

Class tree::

    ProtocolError            root: catch this to catch everything below
    └── TokenError           a connect token is malformed, forged, stale or misaddressed

Each error carries a machine ``code`` (stable, documented in docs/protocol.md)
that servers put in error frames; ``str()`` gives a sentence for people.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "TokenError"]


class ProtocolError(Exception):
    """Root of the protocol library's errors."""

    code = "protocol_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


class TokenError(ProtocolError):
    """A connect token failed to parse or verify; ``code`` says which rule broke."""

    code = "bad_token"

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail)
        self.code = code
