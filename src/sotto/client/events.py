"""What a ``Messenger`` reports as it receives: messages, receipts, notices.

Each event has ``to_json()`` (the ``sotto listen --json`` line) and
``text_line()`` (the human lines: every string from the network sanitised,
a message's own line breaks shown as continuation lines). Ids are hex; times are epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .render import format_time
from .sanitize import sanitize, sanitize_block
from .store import StoredMessage

__all__ = ["Event", "MessageEvent", "NoticeEvent", "ReceiptEvent", "event_of"]


@dataclass(frozen=True)
class MessageEvent:
    conversation_id: str
    conversation: str  # what a person calls it: "#room", or the peer's handle or user id
    seq: int | None
    sender_user_id: str
    sender_device_id: str
    text: str
    message_id: str
    timestamp: int
    server_time: int | None
    expires_at: int  # 0 = never
    burn_after_read_s: int  # 0 = off
    outgoing: bool = False  # sent by another device of this user
    sender: str = ""  # what a person calls the sender: a contact, a handle; else the id
    # A file's name, size, media type and object id (never its key); a location's
    # coordinates, label and map link. ``text`` then describes them.
    attachment: dict[str, Any] | None = None
    location: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.attachment is not None:
            extra["file"] = self.attachment
        if self.location is not None:
            extra["location"] = self.location
        return extra | {
            "type": "message",
            "conversation_id": self.conversation_id,
            "conversation": self.conversation,
            "seq": self.seq,
            "sender": {
                "user_id": self.sender_user_id,
                "device_id": self.sender_device_id,
                "name": self.sender or self.sender_user_id,
            },
            "text": self.text,
            "message_id": self.message_id,
            "timestamp": self.timestamp,
            "server_time": self.server_time,
            "expires_at": self.expires_at or None,
            "burn_after_read_s": self.burn_after_read_s or None,
        }

    def text_line(self) -> str:
        when = format_time(self.server_time or self.timestamp)
        timers = []
        if self.expires_at:
            timers.append(f"expires {format_time(self.expires_at)}")
        if self.burn_after_read_s:
            timers.append(f"burns {self.burn_after_read_s}s after reading")
        extra = f"  [{', '.join(timers)}]" if timers else ""
        who = sanitize(self.sender or self.sender_user_id)
        first = f"[{when}] {sanitize(self.conversation)} <{who}> "
        return sanitize_block(self.text, first) + extra


@dataclass(frozen=True)
class ReceiptEvent:
    conversation_id: str
    conversation: str
    from_user_id: str
    from_device_id: str
    receipt: str  # delivered | read
    message_ids: tuple[str, ...]
    seqs: tuple[int, ...]  # the seqs of this user's messages it names, where known
    sender: str = ""  # what a person calls whoever sent the receipt

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "receipt",
            "conversation_id": self.conversation_id,
            "conversation": self.conversation,
            "from": {
                "user_id": self.from_user_id,
                "device_id": self.from_device_id,
                "name": self.sender or self.from_user_id,
            },
            "receipt": self.receipt,
            "message_ids": list(self.message_ids),
            "seqs": list(self.seqs),
        }

    def text_line(self) -> str:
        which = ", ".join(f"#{s}" for s in self.seqs) or f"{len(self.message_ids)} message(s)"
        who = sanitize(self.sender or self.from_user_id)
        return f"  {sanitize(self.conversation)}: {self.receipt} by {who} ({which})"


@dataclass(frozen=True)
class NoticeEvent:
    """Something a person should know: an identity change, a message that could not be read."""

    conversation_id: str | None
    code: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "notice",
            "conversation_id": self.conversation_id,
            "code": self.code,
            "detail": self.detail,
        }

    def text_line(self) -> str:
        where = f"{sanitize(self.conversation_id)}: " if self.conversation_id else ""
        return sanitize_block(self.detail, f"! {where}")


Event = MessageEvent | ReceiptEvent | NoticeEvent


def event_of(cid: str, name: str, message: StoredMessage, sender: str = "") -> MessageEvent:
    """A stored message as the event ``listen`` would have reported for it."""
    return MessageEvent(
        conversation_id=cid,
        conversation=name,
        seq=message.seq,
        sender_user_id=message.sender_user_id,
        sender_device_id=message.sender_device_id,
        text=message.text,
        message_id=message.message_id,
        timestamp=message.timestamp,
        server_time=message.server_time,
        expires_at=message.expires_at,
        burn_after_read_s=message.burn_after_read_s,
        outgoing=message.outgoing,
        sender=sender,
    )
