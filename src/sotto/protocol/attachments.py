"""Streaming chunked AEAD for attachments of any size, in constant memory.

Wire (docs/protocol.md §8)::

    header = prefix(0x20) || chunk_size(u32) || salt(32)                 40 bytes
    frame  = index(u64) || AES-256-GCM(k, nonce(index, final), chunk, aad = header)
    stream = header || frame_0 || ... || frame_n                        frame_n is final
    digest = SHA-384(stream)

    k      = HKDF-SHA384(ikm = file key, salt = salt,
                         info = "sotto-v1 attachment\\0" || header), 32 bytes
    nonce  = 0x000000 || index(u64) || final(u8: 1 on the last chunk, else 0)

Every chunk but the last holds exactly ``chunk_size`` bytes and is sealed
as non-final; the last holds 0..chunk_size-1 bytes and is sealed as final
(a stream whose length is a multiple of the chunk size ends with an empty
final chunk). So a full-size frame is never final and a short one always is,
and neither side needs to look ahead. Reordering or dropping a chunk changes
the index the decryptor expects (``AttachmentOutOfOrder``); cutting the
stream removes the final chunk (``AttachmentTruncated``); any other change
fails the tag (``AttachmentTampered``). The salt gives every stream its own
key even if a file key were ever reused, so nonces never repeat under a key.

``digest`` is SHA-384 over the whole stream, computed as it is written and
read (memory stays O(chunk)). It travels in the signed File content, so the
stream is bound to the message: the GCM tags alone are not enough, because
everyone who holds the file key (every member) can build another stream with
the same tags. Being key-less, it also lets anyone check a stored object.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import (
    AttachmentOutOfOrder,
    AttachmentTampered,
    AttachmentTruncated,
    LimitExceeded,
    MalformedMessage,
)
from .keys import Random, system_random
from .wire import MessageType, Reader, Writer, domain, parse_prefix

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HEADER_LENGTH",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "Decryptor",
    "Encryptor",
    "encrypted_size",
]

HEADER_LENGTH = 4 + 4 + 32
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNKS = 2**32
TAG = 16
INDEX = 8


def encrypted_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    chunks = plaintext_size // chunk_size + 1
    return HEADER_LENGTH + plaintext_size + chunks * (INDEX + TAG)


def _nonce(index: int, final: bool) -> bytes:
    return b"\x00\x00\x00" + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _stream_key(file_key: bytes, header: bytes) -> AESGCM:
    if len(file_key) != 32:
        raise MalformedMessage("file key must be 32 bytes")
    salt = header[-32:]
    hkdf = HKDF(hashes.SHA384(), 32, salt=salt, info=domain("attachment") + header)
    return AESGCM(hkdf.derive(file_key))


Bytes = bytes | bytearray | memoryview


class Encryptor:
    """Feed plaintext with ``update``; ``finalize`` returns the last frame.

    Memory is at most one chunk of buffered plaintext plus the output of the
    current call, whatever the file size. Full chunks are sealed straight
    from the caller's buffer into the output (no intermediate copies).
    """

    def __init__(
        self,
        file_key: bytes,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        rng: Random = system_random,
    ) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise LimitExceeded("chunk size", chunk_size, MAX_CHUNK_SIZE)
        self.header = bytes(Writer().prefix(MessageType.ATTACHMENT).u32(chunk_size).raw(rng(32)))
        self._aead = _stream_key(file_key, self.header)
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._hash = hashlib.sha384(self.header)
        self._finished = False
        self._header_sent = False
        self.plaintext_size = 0

    def _seal_into(self, out: bytearray, offset: int, chunk: Bytes, final: bool) -> int:
        if self._index >= MAX_CHUNKS:
            raise LimitExceeded("attachment chunks", self._index, MAX_CHUNKS)
        out[offset : offset + INDEX] = self._index.to_bytes(INDEX, "big")
        start = offset + INDEX
        written = self._aead.encrypt_into(
            _nonce(self._index, final),
            chunk,
            self.header,
            memoryview(out)[start : start + len(chunk) + TAG],
        )
        self._hash.update(memoryview(out)[offset : start + written])
        self._index += 1
        return INDEX + written

    def update(self, data: Bytes) -> bytearray:
        """The header (first call only) and every frame ``data`` completes."""
        if self._finished:
            raise MalformedMessage("encryptor already finalized")
        view = memoryview(data).cast("B")
        self.plaintext_size += len(view)
        pending = len(self._buffer) + len(view)
        frames = pending // self._chunk_size
        head = b"" if self._header_sent else self.header
        self._header_sent = True
        out = bytearray(len(head) + frames * (INDEX + self._chunk_size + TAG))
        out[: len(head)] = head
        offset = len(head)
        if self._buffer and frames:
            take = self._chunk_size - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            offset += self._seal_into(out, offset, self._buffer, final=False)
            self._buffer = bytearray()
        while len(view) >= self._chunk_size:
            offset += self._seal_into(out, offset, view[: self._chunk_size], final=False)
            view = view[self._chunk_size :]
        self._buffer += view
        return out

    def finalize(self) -> bytearray:
        if self._finished:
            raise MalformedMessage("encryptor already finalized")
        self._finished = True
        head = b"" if self._header_sent else self.header
        self._header_sent = True
        out = bytearray(len(head) + INDEX + len(self._buffer) + TAG)
        out[: len(head)] = head
        self._seal_into(out, len(head), self._buffer, final=True)
        self._buffer = bytearray()
        return out

    @property
    def digest(self) -> bytes:
        if not self._finished:
            raise MalformedMessage("digest is known only after finalize")
        return self._hash.digest()


class Decryptor:
    """Feed ciphertext with ``update`` (any split); ``finalize`` checks the stream ended."""

    def __init__(self, file_key: bytes) -> None:
        self._file_key = file_key
        self._aead: AESGCM | None = None
        self._header = b""
        self._buffer = bytearray()
        self._index = 0
        self._frame_size = 0
        self._hash = hashlib.sha384()
        self._finished = False
        self.plaintext_size = 0

    def _start(self) -> None:
        header = bytes(self._buffer[:HEADER_LENGTH])
        r = Reader(header, "attachment header")
        parse_prefix(r, MessageType.ATTACHMENT)
        chunk_size = r.u32()
        r.take(32)
        r.done()
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise MalformedMessage(f"chunk size {chunk_size} out of range")
        self._header = header
        self._aead = _stream_key(self._file_key, header)
        self._frame_size = INDEX + chunk_size + TAG
        self._hash.update(header)
        del self._buffer[:HEADER_LENGTH]

    def _open(self, frame: Bytes, final: bool) -> bytes:
        assert self._aead is not None
        index = int.from_bytes(frame[:INDEX], "big")
        if index != self._index:
            raise AttachmentOutOfOrder(f"chunk {index} where chunk {self._index} was expected")
        try:
            plain = self._aead.decrypt(_nonce(index, final), frame[INDEX:], self._header)
        except InvalidTag:
            raise AttachmentTampered(f"chunk {index} does not authenticate") from None
        self._hash.update(frame)
        self._index += 1
        self.plaintext_size += len(plain)
        return plain

    def update(self, data: Bytes) -> bytes:
        if self._finished:
            raise MalformedMessage("decryptor already finalized")
        view = memoryview(data).cast("B")
        if self._aead is None:
            self._buffer += view
            if len(self._buffer) < HEADER_LENGTH:
                return b""
            self._start()
            view, self._buffer = memoryview(bytes(self._buffer)), bytearray()
        out = []
        if self._buffer:
            take = min(len(view), self._frame_size - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < self._frame_size:
                return b""
            # A full-size frame is never the final one.
            out.append(self._open(self._buffer, final=False))
            self._buffer = bytearray()
        while len(view) >= self._frame_size:
            out.append(self._open(view[: self._frame_size], final=False))
            view = view[self._frame_size :]
        self._buffer += view
        return b"".join(out)

    def finalize(
        self, *, expected_digest: bytes | None = None, expected_size: int | None = None
    ) -> bytes:
        """The last chunk's plaintext; raises unless the stream ended with its final chunk."""
        if self._finished:
            raise MalformedMessage("decryptor already finalized")
        self._finished = True
        frame = bytes(self._buffer)
        self._buffer = bytearray()
        if self._aead is None or len(frame) < INDEX + TAG:
            # Cut at a frame boundary (or before any frame): the final chunk is missing.
            raise AttachmentTruncated("stream ends before its final chunk")
        try:
            plain = self._open(frame, final=True)
        except AttachmentTampered:
            seen = self.plaintext_size + len(frame) - INDEX - TAG
            if expected_size is not None and seen < expected_size:
                raise AttachmentTruncated(f"stream holds {seen} of {expected_size} bytes") from None
            raise
        if expected_size is not None and expected_size != self.plaintext_size:
            raise AttachmentTampered(f"{self.plaintext_size} bytes, expected {expected_size}")
        if expected_digest is not None and not hmac.compare_digest(
            expected_digest, self._hash.digest()
        ):
            raise AttachmentTampered("stream digest differs from the one in the message")
        return plain

    @property
    def digest(self) -> bytes:
        return self._hash.digest()
