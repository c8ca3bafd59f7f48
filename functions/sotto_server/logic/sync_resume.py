"""The continuation of a paged ``sync``: where the last page stopped (docs/api.md).

A sync that does not fit one page answers ``more: true`` and a ``resume``
token; the next ``sync`` names it and carries on from where the page
stopped, instead of reading every conversation's head and the device's
cursors again. The token is the plan the first page made: the next
conversations still to read, each from the seq it stopped at up to the head
it had then, and whether mail was left.

The token is client state, and so hostile. It is not signed: nothing in it
is trusted for authorization. Every page the server reads from a token first
reads the caller's membership of the conversations it is about to page
(``MEMBER#<user_id>`` items, one batched read), skips those the user is no
longer in, and starts none before the user joined. What the token can still
steer is only how a device wastes its own reads. A token that does not parse,
or names another device, is refused as ``bad_request``; one older than
``RESUME_TTL_MS`` is not an error: the page is planned afresh from the
cursors, which is always safe.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ErrorCode, Refused

__all__ = [
    "MAX_TOKEN_CHARS",
    "RESUME_TTL_MS",
    "RESUME_WINDOW",
    "Entry",
    "Resume",
    "decode",
    "encode",
]

# Conversations a token carries: one batched read of their memberships. A
# device with more conversations to page is planned again when these are read.
RESUME_WINDOW = 100
# A client follows ``more`` at once; a token older than this is replanned.
RESUME_TTL_MS = 10 * 60 * 1000
# A window of the longest ids, base64url-encoded, fits with room to spare.
MAX_TOKEN_CHARS = 16_384
_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_SEQ = 2**40
_MAX_TIME = 2**53  # ms
_INVALID = "the resume token is not valid: sync again without it"


@dataclass(frozen=True)
class Entry:
    """A conversation still to page: messages after ``start`` up to ``head``.

    ``head`` and ``roster_version`` are the conversation's as the first page
    read them together: a resumed page reads no further than ``head``, so the
    roster version it reports is never older than the messages it serves.
    Messages stored after the plan reach the device by push and by its next
    sync.
    """

    conversation_id: str
    start: int
    head: int
    roster_version: int


@dataclass(frozen=True)
class Resume:
    """What a page leaves for the next: mail still waiting, conversations still to read,
    and whether more conversations wait beyond the window (then the next page plans
    again once the window is read)."""

    mail_more: bool
    entries: tuple[Entry, ...]
    rest: bool
    issued_at: int = 0


def encode(resume: Resume, device_id: str, now_ms: int) -> str:
    body = {
        "v": _VERSION,
        "d": device_id,
        "t": now_ms,
        "m": resume.mail_more,
        "r": resume.rest,
        "c": [[e.conversation_id, e.start, e.head, e.roster_version] for e in resume.entries],
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _seq(value: Any, bound: int = _MAX_SEQ) -> int:
    # bool is an int to Python; a token's numbers are never booleans.
    if type(value) is not int or not 0 <= value < bound:
        raise ValueError("not a number in range")
    return value


def _entry(value: Any) -> Entry:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("not an entry")
    cid, start, head, roster = value
    if not isinstance(cid, str) or not _ID.match(cid):
        raise ValueError("not a conversation id")
    entry = Entry(cid, _seq(start), _seq(head), _seq(roster))
    if entry.start >= entry.head:
        raise ValueError("nothing to read")
    return entry


def decode(token: str, device_id: str, now_ms: int, request_id: str | None) -> Resume | None:
    """The token's plan; None if it expired (plan again); Refused(bad_request) if it is not
    a token this server issued to this device. Never raises anything else."""
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown version")
        owner, issued, mail_more, rest, listed = (
            body.get("d"),
            _seq(body.get("t"), _MAX_TIME),
            body.get("m"),
            body.get("r"),
            body.get("c"),
        )
        if not isinstance(mail_more, bool) or not isinstance(rest, bool):
            raise ValueError("not a flag")
        if not isinstance(listed, list) or len(listed) > RESUME_WINDOW:
            raise ValueError("not a window")
        entries = tuple(_entry(item) for item in listed)
        if len({e.conversation_id for e in entries}) != len(entries):
            raise ValueError("a conversation twice")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        # json.JSONDecodeError is a ValueError; a deeply nested array a RecursionError.
        raise Refused(ErrorCode.BAD_REQUEST, _INVALID, request_id) from None
    if owner != device_id:
        raise Refused(
            ErrorCode.BAD_REQUEST,
            "the resume token was issued to another device: sync again without it",
            request_id,
        )
    if not now_ms - RESUME_TTL_MS <= issued <= now_ms + 60_000:
        return None
    return Resume(mail_more, entries, rest, issued)
