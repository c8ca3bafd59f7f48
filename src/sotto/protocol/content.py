"""What an envelope carries once decrypted, and the padding that hides its size.

Plaintext = ``content_type (u8) || body || 0x80 || 0x00*`` padded to one of
``SIZE_BUCKETS`` (ISO/IEC 7816-4 padding); the bucket's index is the header's
``size_class``. Unknown content types parse as ``UnknownContent`` so newer
senders can add types that older clients display as "unsupported".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from .errors import LimitExceeded, MalformedMessage
from .wire import ID_LENGTH, Reader, Writer, check_random_id

__all__ = [
    "MAX_PADDED_SIZE",
    "SIZE_BUCKETS",
    "CallSignal",
    "Content",
    "Control",
    "File",
    "Location",
    "Receipt",
    "Text",
    "UnknownContent",
    "pad",
    "parse_content",
    "size_class_for",
    "unpad",
]

SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536)
MAX_PADDED_SIZE = SIZE_BUCKETS[-1]
MAX_TEXT_BYTES = 60_000
MAX_RECEIPT_IDS = 256
MAX_CALL_PAYLOAD = 60_000
MAX_LOCATION_LABEL = 256


def size_class_for(length: int) -> int:
    """Smallest bucket holding ``length`` content bytes plus the 0x80 marker."""
    for index, bucket in enumerate(SIZE_BUCKETS):
        if length + 1 <= bucket:
            return index
    raise LimitExceeded("content", length, MAX_PADDED_SIZE - 1)


def pad(data: bytes) -> tuple[int, bytes]:
    size_class = size_class_for(len(data))
    return size_class, data + b"\x80" + bytes(SIZE_BUCKETS[size_class] - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    end = padded.rstrip(b"\x00")
    if not end or end[-1] != 0x80:
        raise MalformedMessage("content padding is invalid")
    return end[:-1]


class Content(ABC):
    """Base of content types; ``TYPE`` is the u8 on the wire."""

    TYPE: ClassVar[int] = 0

    @abstractmethod
    def body(self) -> bytes:
        """The type's fields, after the type byte."""

    def serialize(self) -> bytes:
        return bytes([self.TYPE]) + self.body()


@dataclass(frozen=True)
class Text(Content):
    TYPE: ClassVar[int] = 0x01
    text: str

    def __post_init__(self) -> None:
        if len(self.text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise LimitExceeded("text", len(self.text.encode("utf-8")), MAX_TEXT_BYTES)

    def body(self) -> bytes:
        return self.text.encode("utf-8")

    @classmethod
    def parse_body(cls, r: Reader) -> Text:
        return cls(r.rest_text())


@dataclass(frozen=True, repr=False)
class File(Content):
    """An attachment: the key to its encrypted stream travels inside the signed envelope."""

    TYPE: ClassVar[int] = 0x02
    object_id: str
    key: bytes
    digest: bytes  # attachments.Encryptor.digest: SHA-384 of the whole encrypted stream
    size: int
    name: str
    media_type: str

    def __post_init__(self) -> None:
        if len(self.key) != 32 or len(self.digest) != 48:
            raise MalformedMessage("file key is 32 bytes and digest 48")
        if not 0 <= self.size < 2**64:
            raise MalformedMessage("file size is u64")
        if not 0 < len(self.object_id.encode()) <= 255 or len(self.media_type.encode()) > 255:
            raise MalformedMessage("object id 1-255 bytes, media type at most 255")
        if len(self.name.encode("utf-8")) > 1024:
            raise LimitExceeded("file name", len(self.name.encode("utf-8")), 1024)

    def body(self) -> bytes:
        w = Writer().text8(self.object_id).raw(self.key).raw(self.digest).u64(self.size)
        return bytes(w.text16(self.name).text8(self.media_type))

    @classmethod
    def parse_body(cls, r: Reader) -> File:
        return cls(r.text8(), r.take(32), r.take(48), r.u64(), r.text16(), r.text8())

    def __repr__(self) -> str:
        return f"File(object_id={self.object_id!r}, size={self.size}, key=<secret>)"


@dataclass(frozen=True)
class Location(Content):
    """Degrees times 10^7 (about 1 cm), like most GNSS APIs; integers keep one encoding.

    ``label`` (a place name the sender typed, at most 256 UTF-8 bytes) is a
    trailing ``text16`` present only when non-empty, so a location without
    one keeps its one encoding.
    """

    TYPE: ClassVar[int] = 0x03
    latitude_e7: int
    longitude_e7: int
    accuracy_m: int
    captured_at: int
    label: str = ""

    def __post_init__(self) -> None:
        if not -900_000_000 <= self.latitude_e7 <= 900_000_000:
            raise MalformedMessage("latitude out of range")
        if not -1_800_000_000 <= self.longitude_e7 <= 1_800_000_000:
            raise MalformedMessage("longitude out of range")
        if not 0 <= self.accuracy_m < 2**32 or not 0 <= self.captured_at < 2**64:
            raise MalformedMessage("accuracy is u32 metres and captured_at u64 ms")
        if len(self.label.encode("utf-8")) > MAX_LOCATION_LABEL:
            raise LimitExceeded("location label", len(self.label.encode()), MAX_LOCATION_LABEL)

    def body(self) -> bytes:
        w = Writer().i32(self.latitude_e7).i32(self.longitude_e7)
        w.u32(self.accuracy_m).u64(self.captured_at)
        return bytes(w.text16(self.label) if self.label else w)

    @classmethod
    def parse_body(cls, r: Reader) -> Location:
        fields = (r.i32(), r.i32(), r.u32(), r.u64())
        if r.position == r.length:
            return cls(*fields)
        label = r.text16()
        if not label:
            raise MalformedMessage("an empty location label is omitted, not encoded")
        return cls(*fields, label=label)


@dataclass(frozen=True)
class Receipt(Content):
    DELIVERED: ClassVar[int] = 1
    READ: ClassVar[int] = 2
    TYPE: ClassVar[int] = 0x04
    kind: int
    message_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.kind not in (self.DELIVERED, self.READ):
            raise MalformedMessage(f"unknown receipt kind {self.kind}")
        if not 0 < len(self.message_ids) <= MAX_RECEIPT_IDS:
            raise MalformedMessage(f"a receipt names 1-{MAX_RECEIPT_IDS} messages")
        for message_id in self.message_ids:
            check_random_id(message_id, "message id")

    def body(self) -> bytes:
        w = Writer().u8(self.kind).u16(len(self.message_ids))
        for message_id in self.message_ids:
            w.raw(message_id)
        return bytes(w)

    @classmethod
    def parse_body(cls, r: Reader) -> Receipt:
        kind, count = r.u8(), r.u16()
        return cls(kind, tuple(r.take(ID_LENGTH) for _ in range(count)))


@dataclass(frozen=True)
class Control(Content):
    """Conversation control (membership change, chain rotation notice, delete, ...).

    ``REDISTRIBUTE``: the sender asks one device to send its current chain
    again (it lost its state, or a session): ``text8 user_id || text8
    device_id || session_id(16)`` of the device asked (docs/protocol.md §16).
    ``ROOM_PROFILE``: a room's name and topic (``protocol.room``).
    ``DEVICE_SYNC``: contacts and room labels among one user's devices, only
    in that user's self conversation (``protocol.device_sync``).
    """

    MEMBERSHIP_CHANGED: ClassVar[int] = 1
    CHAIN_ROTATED: ClassVar[int] = 2
    DELETE_MESSAGE: ClassVar[int] = 3
    REDISTRIBUTE: ClassVar[int] = 4
    ROOM_PROFILE: ClassVar[int] = 5
    DEVICE_SYNC: ClassVar[int] = 6
    TYPE: ClassVar[int] = 0x05
    kind: int
    payload: bytes

    def __post_init__(self) -> None:
        if not 0 < self.kind < 256:
            raise MalformedMessage("control kind is u8, non-zero")
        if len(self.payload) > MAX_TEXT_BYTES:
            raise LimitExceeded("control payload", len(self.payload), MAX_TEXT_BYTES)

    def body(self) -> bytes:
        return bytes(Writer().u8(self.kind).var16(self.payload))

    @classmethod
    def parse_body(cls, r: Reader) -> Control:
        return cls(r.u8(), r.var16())


@dataclass(frozen=True)
class CallSignal(Content):
    """End-to-end encrypted call signalling: SDP offers/answers and ICE candidates."""

    OFFER: ClassVar[int] = 1
    ANSWER: ClassVar[int] = 2
    ICE_CANDIDATE: ClassVar[int] = 3
    HANGUP: ClassVar[int] = 4
    TYPE: ClassVar[int] = 0x06
    call_id: bytes
    kind: int
    payload: str

    def __post_init__(self) -> None:
        check_random_id(self.call_id, "call id")
        if self.kind not in (self.OFFER, self.ANSWER, self.ICE_CANDIDATE, self.HANGUP):
            raise MalformedMessage(f"unknown call signal kind {self.kind}")
        if len(self.payload.encode("utf-8")) > MAX_CALL_PAYLOAD:
            raise LimitExceeded("call payload", len(self.payload.encode()), MAX_CALL_PAYLOAD)

    def body(self) -> bytes:
        return bytes(Writer().raw(self.call_id).u8(self.kind).text16(self.payload))

    @classmethod
    def parse_body(cls, r: Reader) -> CallSignal:
        return cls(r.take(ID_LENGTH), r.u8(), r.text16())


@dataclass(frozen=True)
class UnknownContent(Content):
    """A content type this version does not know; kept verbatim."""

    type_code: int
    raw: bytes

    def body(self) -> bytes:
        return self.raw

    def serialize(self) -> bytes:
        return bytes([self.type_code]) + self.raw


_TYPES: dict[int, type[Text | File | Location | Receipt | Control | CallSignal]] = {
    cls.TYPE: cls for cls in (Text, File, Location, Receipt, Control, CallSignal)
}


def parse_content(data: bytes) -> Content:
    if not data:
        raise MalformedMessage("content is empty")
    cls = _TYPES.get(data[0])
    if cls is None:
        return UnknownContent(data[0], data[1:])
    r = Reader(data[1:], f"content type 0x{data[0]:02x}")
    content = cls.parse_body(r)
    r.done()
    return content
