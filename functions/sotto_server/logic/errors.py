"""Refusals: the one exception domain logic raises, and its documented codes.

A refusal becomes an error frame on the WebSocket or a JSON error with an
HTTP status on the HTTP API (docs/api.md lists every code). Messages are for
people and never carry internals.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorCode", "Refused"]


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"  # the frame is not a JSON object (or not text)
    UNKNOWN_ACTION = "unknown_action"  # no route for the frame's "action"
    BAD_REQUEST = "bad_request"  # the action's fields are missing or invalid
    INVALID_CERTIFICATE = "invalid_certificate"  # a certificate or prekey does not verify
    NOT_FOUND = "not_found"  # no such thing in the caller's network
    FORBIDDEN = "forbidden"  # the caller may not do this
    CONFLICT = "conflict"  # collides with existing state
    RATE_LIMITED = "rate_limited"  # too many requests; retry later
    INVALID_ENVELOPE = "invalid_envelope"  # an envelope fails the server's checks
    STALE_DEVICES = "stale_devices"  # the sender's chain did not reach exactly the roster
    ROLLED_BACK = "rolled_back"  # the device sent at this chain position before: old state
    INVALID_OPERATION = "invalid_operation"  # a membership operation fails verification
    TOO_LARGE = "too_large"  # over the network's file size limit
    GONE = "gone"  # the message expired or burnt: its file is no longer served
    INCOMPLETE_UPLOAD = "incomplete_upload"  # parts missing, mis-sized or not the client's
    REVOKED = "revoked"  # the calling device was revoked: the socket is closed next
    SUSPENDED = "suspended"  # the calling user is suspended: the socket is closed next
    POLICY = "policy_violation"  # over a limit of the network's or a security group's policy
    INTERNAL = "internal_error"  # our fault; retry later

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.UNKNOWN_ACTION: 404,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_CERTIFICATE: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INVALID_ENVELOPE: 400,
    ErrorCode.STALE_DEVICES: 409,
    ErrorCode.ROLLED_BACK: 409,
    ErrorCode.INVALID_OPERATION: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.GONE: 410,
    ErrorCode.INCOMPLETE_UPLOAD: 409,
    ErrorCode.REVOKED: 403,
    ErrorCode.SUSPENDED: 403,
    ErrorCode.POLICY: 403,
    ErrorCode.INTERNAL: 500,
}


class Refused(Exception):
    """The request is refused; ``code`` and ``message`` go back to the caller."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        request_id: str | None = None,
        *,
        retry_after_s: int | None = None,
        details: dict[str, object] | None = None,
        log_detail: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        # Extra fields of the error frame (e.g. missing/extra devices).
        self.details = details or {}
        # For the server's log only: which rule refused, where the answer is
        # deliberately uniform (unknown, used and expired codes look alike).
        self.log_detail = log_detail
