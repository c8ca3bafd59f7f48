"""The canonical binary encoding every Sotto wire type is built from.

All integers are big-endian and unsigned. Variable-length fields carry a
length prefix of a fixed width (``u8``/``u16``/``u32``). Every structure starts
with ``version (u8) || suite (u16) || type (u8)`` and a parser must consume the
input exactly: trailing bytes are an error, so each value has one encoding and
"what is signed" is exactly "what is on the wire".

Identifiers (user, device, conversation) are 1-64 bytes of ``[A-Za-z0-9_-]``
so they are safe in URLs, DynamoDB keys and logs; message and chain ids are
16 random bytes.
"""

from __future__ import annotations

import re
import struct

from .errors import LimitExceeded, MalformedMessage, SuiteDowngrade, UnsupportedVersion

__all__ = [
    "ID_LENGTH",
    "SUITE_ID",
    "SUITE_NAME",
    "VERSION",
    "MessageType",
    "Reader",
    "Writer",
    "check_identifier",
    "check_identifiers",
    "check_random_id",
    "domain",
    "parse_prefix",
]

VERSION = 2
# One suite in v2: HPKE(ML-KEM-1024+P-384, HKDF-SHA384, AES-256-GCM), ECDSA
# P-384/SHA-384 device signatures, ECDSA P-384 + ML-DSA-87 identity signatures,
# AES-256-GCM content and attachments, HMAC-SHA384 chain ratchet.
SUITE_ID = 0x0001
SUITE_NAME = "SOTTO-V2-MLKEM1024P384-HKDFSHA384-AES256GCM-P384-MLDSA87"
ID_LENGTH = 16
_IDENTIFIER = re.compile(rb"[A-Za-z0-9_-]{1,64}")


class MessageType:
    """The type byte of every top-level structure (one namespace, never reused)."""

    DEVICE_CERTIFICATE = 0x01
    PREKEY_CERTIFICATE = 0x02
    DEVICE_REVOCATION = 0x03
    KEY_DISTRIBUTION = 0x10
    ENVELOPE = 0x11
    MEMBERSHIP_OPERATION = 0x12
    ATTACHMENT = 0x20
    KEYSTORE = 0x30
    DEVICE_SECRETS = 0x31
    SENDER_CHAIN_STATE = 0x32
    RECEIVER_CHAIN_STATE = 0x33
    CONVERSATION_STATE = 0x34
    MEMBERSHIP_STATE = 0x35
    SESSIONS = 0x36


def domain(label: str) -> bytes:
    """Signature domain prefix: no Sotto signature is valid under another label."""
    return b"sotto-v2 " + label.encode("ascii") + b"\x00"


def check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value.encode("utf-8")):
        raise MalformedMessage(f"{what} must be 1-64 characters of [A-Za-z0-9_-]")
    return value


def check_identifiers(*named: tuple[str, str]) -> None:
    """``check_identifier`` over (value, what) pairs."""
    for value, what in named:
        check_identifier(value, what)


def check_random_id(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != ID_LENGTH:
        raise MalformedMessage(f"{what} must be {ID_LENGTH} bytes")
    return value


class Writer:
    """Appends canonical fields; ``bytes(writer)`` is the encoding."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(struct.pack(">B", value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(struct.pack(">H", value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(struct.pack(">Q", value))
        return self

    def i32(self, value: int) -> Writer:
        self._parts.append(struct.pack(">i", value))
        return self

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def var8(self, value: bytes) -> Writer:
        return self._var(value, 1, 0xFF)

    def var16(self, value: bytes) -> Writer:
        return self._var(value, 2, 0xFFFF)

    def var32(self, value: bytes) -> Writer:
        return self._var(value, 4, 0xFFFFFFFF)

    def text8(self, value: str) -> Writer:
        return self.var8(value.encode("utf-8"))

    def text16(self, value: str) -> Writer:
        return self.var16(value.encode("utf-8"))

    def _var(self, value: bytes, width: int, limit: int) -> Writer:
        if len(value) > limit:
            raise LimitExceeded("length-prefixed field", len(value), limit)
        self._parts.append(len(value).to_bytes(width, "big"))
        self._parts.append(value)
        return self

    def prefix(self, message_type: int) -> Writer:
        return self.u8(VERSION).u16(SUITE_ID).u8(message_type)

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Consumes canonical fields; every short read is ``MalformedMessage``."""

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedMessage(f"{what} must be bytes")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def position(self) -> int:
        return self._pos

    @property
    def length(self) -> int:
        return len(self._data)

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedMessage(f"{self._what} is truncated")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def i32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def var8(self) -> bytes:
        return self.take(self.u8())

    def var16(self) -> bytes:
        return self.take(self.u16())

    def var32(self) -> bytes:
        return self.take(self.u32())

    def text8(self) -> str:
        return self._decode(self.var8())

    def text16(self) -> str:
        return self._decode(self.var16())

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._pos)

    def rest_text(self) -> str:
        return self._decode(self.rest())

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage(f"{self._what} has invalid UTF-8") from None

    def done(self) -> None:
        if self._pos != len(self._data):
            raise MalformedMessage(f"{self._what} has {len(self._data) - self._pos} trailing bytes")


def parse_prefix(reader: Reader, message_type: int, required_suite: int = SUITE_ID) -> None:
    """Check ``version || suite || type`` before anything else is parsed.

    The suite is compared with the receiver's requirement, not negotiated: a
    v2 receiver treats any other suite id as a downgrade attempt.
    """
    version = reader.u8()
    if version != VERSION:
        raise UnsupportedVersion(f"version {version}, expected {VERSION}")
    suite = reader.u16()
    if suite != required_suite:
        raise SuiteDowngrade(f"suite 0x{suite:04x}, required 0x{required_suite:04x}")
    kind = reader.u8()
    if kind != message_type:
        raise MalformedMessage(f"type 0x{kind:02x}, expected 0x{message_type:02x}")
