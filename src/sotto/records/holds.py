"""Legal holds: which committed segments a hold covers (pure), and placing them.

A hold names a user or a conversation, optionally a time window. It covers
every committed segment holding a record of the scope: for a conversation,
its records; for a user, the records of every conversation the user was ever
named in by its membership log, or sent in. A segment is held as a whole
(S3 legal holds are per object), so a hold may keep records outside the
scope too; it never keeps fewer. The archived copy of every file an envelope
in the scope names is held with it. Only the compliance role may place or
remove a legal hold (the archive bucket policy); a hold outlasts any
retention period until it is released.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sotto.protocol.archive import Segment, files_of
from sotto.protocol.errors import ProtocolError
from sotto.protocol.membership import Add, Create, MembershipOperation

__all__ = ["HoldScope", "files_in_scope", "segments_in_scope"]


@dataclass(frozen=True)
class HoldScope:
    user_id: str | None = None
    conversation_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if (self.user_id is None) == (self.conversation_id is None):
            raise ValueError("a hold names exactly one of a user or a conversation")


def _conversations_of(user_id: str, segments: Sequence[tuple[str, Segment]]) -> set[str]:
    found: set[str] = set()
    for _key, segment in segments:
        for record in segment.records:
            sender = record.get("sender") or {}
            if record.get("kind") != "membership" and sender.get("user_id") == user_id:
                found.add(str(record["conversation_id"]))
            if record.get("kind") == "membership":
                try:
                    change = MembershipOperation.parse(base64.b64decode(record["op"])).change
                except (ProtocolError, ValueError):
                    continue
                if isinstance(change, Create | Add) and any(
                    m.user_id == user_id for m in change.members
                ):
                    found.add(str(record["conversation_id"]))
    return found


def _in_scope(
    scope: HoldScope, segments: Sequence[tuple[str, Segment]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    conversations = (
        {scope.conversation_id}
        if scope.conversation_id is not None
        else _conversations_of(str(scope.user_id), segments)
    )
    for key, segment in segments:
        for record in segment.records:
            at = int(record.get("server_time") or 0)
            if record.get("conversation_id") not in conversations:
                continue
            if scope.start_ms is not None and at < scope.start_ms:
                continue
            if scope.end_ms is not None and at >= scope.end_ms:
                continue
            yield key, record


def segments_in_scope(scope: HoldScope, segments: Sequence[tuple[str, Segment]]) -> list[str]:
    """The object keys of the committed ``segments`` the hold covers, in chain order."""
    return list(dict.fromkeys(key for key, _record in _in_scope(scope, segments)))


def files_in_scope(scope: HoldScope, segments: Sequence[tuple[str, Segment]]) -> list[str]:
    """The archived file copies the envelopes in scope name."""
    keys = (
        str(entry["key"])
        for _key, record in _in_scope(scope, segments)
        for entry in files_of(record)
        if entry.get("key")
    )
    return list(dict.fromkeys(keys))
