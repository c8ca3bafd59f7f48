"""Every error the client raises; each carries a sentence fit for a person.

Class tree (``exit_code`` is what the CLI returns)::

    ClientError                 [1] root: catch this to catch everything
    ├── UsageError              [2] the command line itself is wrong
    ├── ProfileError            [1] no such profile, profile exists, unreadable profile.json
    ├── PassphraseError         [1] no passphrase available, or the two entries differ
    ├── ServerResolutionError   [1] --server names nothing usable
    ├── TransportError          [1] the server could not be reached (DNS, refused, timeout)
    ├── ApiError                [1] the HTTP API answered an error (status, code, message)
    ├── InvalidRequest          [1] an outgoing frame breaks its route's model (a client bug)
    ├── SessionError            [1] the WebSocket session failed
    │   ├── ConnectRefused      [1] the upgrade was refused (401/403)
    │   ├── ConnectionLost      [1] the socket closed under a request (reconnect and retry)
    │   ├── MalformedFrame      [1] an answer breaks its shape (sotto.frames.answers)
    │   └── FrameError          [1] an error frame answered a request (code, message, details)
    ├── FlowError               [1] a multi-step flow cannot go on (timeout, declined, mismatch)
    └── MessagingError          [1] a conversation cannot be used as asked (unknown room, busy)
        └── TrustError          [1] an identity key changed: never trusted silently

Keystore errors (wrong passphrase, corrupt keystore) come from
``sotto.protocol.errors.KeystoreError`` unchanged: they already say what broke.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "ApiError",
    "ClientError",
    "ConnectRefused",
    "ConnectionLost",
    "FlowError",
    "FrameError",
    "InvalidRequest",
    "MalformedFrame",
    "MessagingError",
    "PassphraseError",
    "ProfileError",
    "ServerResolutionError",
    "ServerUnreachable",
    "SessionError",
    "TransportError",
    "TrustError",
    "UsageError",
]


class ClientError(Exception):
    """Root of the client's errors."""

    exit_code: ClassVar[int] = 1


class UsageError(ClientError):
    exit_code: ClassVar[int] = 2


class ProfileError(ClientError):
    pass


class PassphraseError(ClientError):
    pass


class ServerResolutionError(ClientError):
    pass


class TransportError(ClientError):
    pass


class ApiError(ClientError):
    """An HTTP API error answer: ``{"code", "message"}`` and its status."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        text = f"server refused ({self.status} {self.code}): {self.message}"
        if self.retry_after_s is not None:
            text += f"; retry in {self.retry_after_s:g} s"
        return text


class InvalidRequest(ClientError):
    """A frame this client was about to send fails its route's model (``sotto.frames.requests``).

    Raised before anything is sent: it is a bug in the caller, which the server
    would only have answered with ``bad_request``.
    """

    def __init__(self, action: str, fields: Sequence[str]) -> None:
        super().__init__(action, tuple(fields))
        self.action = action
        self.fields = tuple(fields)

    def __str__(self) -> str:
        names = ", ".join(self.fields) or "action"
        return f"refusing to send an invalid {self.action} request: bad field(s) {names}"


class SessionError(ClientError):
    pass


class ServerUnreachable(SessionError):
    """No connection could be opened (network down, server stopped): try again later."""


class ConnectRefused(SessionError):
    """The WebSocket upgrade was answered with ``status`` instead of 101."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        if self.status == 401:
            return "server refused the connection (401): it did not accept the device token"
        if self.status == 403:
            return (
                "server refused the connection (403): this device is unknown or revoked, "
                "its user is suspended, or this machine's clock is off by more than 5 minutes"
            )
        return f"server refused the connection ({self.status})"


class ConnectionLost(SessionError):
    """The connection closed (network, idle or 2 h limit, server restart): reconnect."""

    def __init__(self, code: int | None, text: str) -> None:
        super().__init__(text)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


class MalformedFrame(SessionError):
    """The server answered with a frame that is not of its route's shape (a missing or
    mistyped field): nothing of it was used."""

    def __init__(self, action: str, fields: Sequence[str]) -> None:
        super().__init__(action, tuple(fields))
        self.action = action
        self.fields = tuple(fields)

    def __str__(self) -> str:
        names = ", ".join(self.fields)[:200] or "frame"
        return f"the server sent a malformed {self.action} answer: bad field(s) {names}"


class FrameError(SessionError):
    """An ``{"action": "error"}`` frame answered a request."""

    def __init__(
        self,
        action: str,
        code: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(action, code, message)
        self.action = action
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        # The whole error frame: some codes carry data (stale_devices: missing, extra).
        self.details: Mapping[str, Any] = details or {}

    def __str__(self) -> str:
        text = f"{self.action} failed ({self.code}): {self.message}"
        if self.retry_after_s is not None:
            text += f"; retry in {self.retry_after_s:g} s"
        return text


class FlowError(ClientError):
    pass


class MessagingError(ClientError):
    pass


class TrustError(MessagingError):
    """A peer's identity key differs from the one this device recorded for them."""

    def __init__(self, user_id: str, label: str | None = None) -> None:
        super().__init__(user_id)
        self.user_id = user_id
        self.label = label

    def __str__(self) -> str:
        who = f"{self.label} ({self.user_id})" if self.label else self.user_id
        return (
            f"the identity key of {who} CHANGED since this device first saw it; nothing was "
            f"sent. Compare safety numbers: sotto verify {self.user_id} (then --accept-change)"
        )
