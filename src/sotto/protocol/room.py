"""A room's name and topic, shared end-to-end among its members (the server never sees them).

Carried as ``Control`` content of kind ``ROOM_PROFILE`` (docs/protocol.md,
content types): an ordinary encrypted, signed envelope of the room, so only
members read it and every member can tell who set it. The payload is::

    text8  name     1-64 UTF-8 bytes, no control characters
    text16 topic    0-512 UTF-8 bytes, no control characters but newline

Receivers keep the newest profile by envelope timestamp.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .content import Control
from .errors import MalformedMessage
from .wire import Reader, Writer

__all__ = ["MAX_ROOM_NAME", "MAX_ROOM_TOPIC", "ROOM_PROFILE", "RoomProfile"]

ROOM_PROFILE = Control.ROOM_PROFILE
MAX_ROOM_NAME = 64
MAX_ROOM_TOPIC = 512


def _check_text(value: str, what: str, max_bytes: int, *, newlines: bool) -> None:
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise MalformedMessage(f"room {what} is {size} bytes, at most {max_bytes}")
    for char in value:
        if char == "\n" and newlines:
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise MalformedMessage(f"room {what} has a control character")


@dataclass(frozen=True)
class RoomProfile:
    name: str
    topic: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise MalformedMessage("a room name is not empty")
        _check_text(self.name, "name", MAX_ROOM_NAME, newlines=False)
        _check_text(self.topic, "topic", MAX_ROOM_TOPIC, newlines=True)

    def to_control(self) -> Control:
        return Control(ROOM_PROFILE, bytes(Writer().text8(self.name).text16(self.topic)))

    @classmethod
    def from_control(cls, control: Control) -> RoomProfile:
        if control.kind != ROOM_PROFILE:
            raise MalformedMessage(f"control kind {control.kind} is not a room profile")
        reader = Reader(control.payload, "room profile")
        profile = cls(reader.text8(), reader.text16())
        reader.done()
        return profile
