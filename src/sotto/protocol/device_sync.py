"""A user's contacts and room labels, kept in step across that user's own devices.

Carried as ``Control`` content of kind ``DEVICE_SYNC`` (docs/protocol.md,
content types) in the user's *self* conversation (``membership.SELF``, id
``self_conversation_id``): an ordinary encrypted, signed envelope whose only
recipients are the user's other devices, so the server never reads a
contact's name or a room's label. The payload is::

    u8  version (1) || u16 n || entry*n
    entry = u8 op || u64 timestamp || text8 key || text8 value

    op 1 contact    key: the contact name      value: its user id
    op 2 uncontact  key: the contact name      value: empty (the contact was removed)
    op 3 label      key: a conversation id     value: the room's label on the user's devices
    op 4 unlabel    key: a conversation id     value: empty (the label was cleared)

``timestamp`` is when the change was made (ms, on the device that made it);
a message holds each (contact name | conversation id) at most once, entries
sorted by (op class, key). Receivers keep, per key, the entry with the
newest ``(timestamp, value)`` (``client.self_sync`` holds that rule), so any
number of devices converge whatever order messages arrive in, and a full
snapshot can be sent again at any time without undoing a newer change.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import ClassVar

from .content import Control
from .errors import MalformedMessage, UnsupportedVersion
from .wire import Reader, Writer, check_identifier

__all__ = [
    "DEVICE_SYNC",
    "MAX_ENTRIES",
    "MAX_NAME",
    "DeviceSync",
    "SyncEntry",
    "check_name",
]

DEVICE_SYNC = Control.DEVICE_SYNC
SYNC_VERSION = 1
MAX_NAME = 64  # UTF-8 bytes of a contact name or a room label
# Entries per message: at most about 150 bytes each, well inside one 64 KiB content.
MAX_ENTRIES = 300


def check_name(value: str, what: str) -> str:
    """A contact name or room label: 1-64 UTF-8 bytes, not blank, no control characters."""
    size = len(value.encode("utf-8"))
    if not value.strip() or size > MAX_NAME:
        raise MalformedMessage(f"a {what} is 1-{MAX_NAME} UTF-8 bytes, not blank")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise MalformedMessage(f"a {what} has a control character")
    return value


@dataclass(frozen=True)
class SyncEntry:
    """One key's state as of ``timestamp``: ``value`` empty means removed (or cleared)."""

    CONTACT: ClassVar[str] = "contact"
    LABEL: ClassVar[str] = "label"

    kind: str  # CONTACT | LABEL
    key: str  # the contact name | the conversation id
    value: str  # the user id | the label; "" = removed
    timestamp: int

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp < 2**64:
            raise MalformedMessage("a sync entry's timestamp is u64 ms")
        if self.kind == self.CONTACT:
            check_name(self.key, "contact name")
            if self.value:
                check_identifier(self.value, "contact user id")
        elif self.kind == self.LABEL:
            check_identifier(self.key, "labelled conversation id")
            if self.value:
                check_name(self.value, "room label")
        else:
            raise MalformedMessage(f"unknown sync entry kind {self.kind!r}")

    @property
    def op(self) -> int:
        base = 1 if self.kind == self.CONTACT else 3
        return base if self.value else base + 1

    @property
    def slot(self) -> tuple[str, str]:
        return (self.kind, self.key)

    def write(self, w: Writer) -> None:
        w.u8(self.op).u64(self.timestamp).text8(self.key).text8(self.value)

    @classmethod
    def read(cls, r: Reader) -> SyncEntry:
        op, timestamp, key, value = r.u8(), r.u64(), r.text8(), r.text8()
        if op not in (1, 2, 3, 4):
            raise MalformedMessage(f"unknown device sync operation {op}")
        if (op in (2, 4)) != (value == ""):
            raise MalformedMessage("a set names a value, a removal none")
        return cls(cls.CONTACT if op <= 2 else cls.LABEL, key, value, timestamp)


@dataclass(frozen=True)
class DeviceSync:
    entries: tuple[SyncEntry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_ENTRIES:
            raise MalformedMessage(f"a device sync message holds at most {MAX_ENTRIES} entries")
        slots = [e.slot for e in self.entries]
        if slots != sorted(set(slots)):
            raise MalformedMessage("device sync entries are sorted by (kind, key) and unique")

    @classmethod
    def of(cls, entries: list[SyncEntry]) -> DeviceSync:
        return cls(tuple(sorted(entries, key=lambda e: e.slot)))

    def to_control(self) -> Control:
        w = Writer().u8(SYNC_VERSION).u16(len(self.entries))
        for entry in self.entries:
            entry.write(w)
        return Control(DEVICE_SYNC, bytes(w))

    @classmethod
    def from_control(cls, control: Control) -> DeviceSync:
        if control.kind != DEVICE_SYNC:
            raise MalformedMessage(f"control kind {control.kind} is not a device sync")
        r = Reader(control.payload, "device sync")
        version = r.u8()
        if version != SYNC_VERSION:
            raise UnsupportedVersion(f"device sync version {version}")
        entries = tuple(SyncEntry.read(r) for _ in range(r.u16()))
        r.done()
        return cls(entries)
