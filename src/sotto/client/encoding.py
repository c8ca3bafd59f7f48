"""base64url without padding: how docs/api.md carries keys and certificates in JSON."""

from __future__ import annotations

import base64
import binascii
import re

from .errors import ClientError

__all__ = ["b64d", "b64e"]

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: object, what: str) -> bytes:
    """Decode a field the server sent; a malformed one is the server's fault, said plainly."""
    if not isinstance(text, str) or not _B64URL.match(text):
        raise ClientError(f"server sent a malformed {what} (not base64url)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ClientError(f"server sent a malformed {what} (not base64url)") from None
