"""Streaming attachment encryption: round trips, reorder, truncation, tamper, memory."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from sotto.protocol import errors
from sotto.protocol.attachments import (
    HEADER_LENGTH,
    MIN_CHUNK_SIZE,
    Decryptor,
    Encryptor,
    encrypted_size,
)

from .gcm import Gcm, same_tag_ciphertext
from .helpers import drbg, flip

KEY = bytes(range(32))
CHUNK = MIN_CHUNK_SIZE
FRAME = 8 + CHUNK + 16


def encrypt(data: bytes, pieces: int = 1) -> tuple[bytes, bytes]:
    enc = Encryptor(KEY, chunk_size=CHUNK, rng=drbg("salt"))
    step = max(1, len(data) // pieces)
    out = b"".join(enc.update(data[i : i + step]) for i in range(0, len(data), step))
    out += enc.finalize()
    return out, enc.digest


def decrypt(stream: bytes, step: int = 1000, **kwargs: object) -> bytes:
    dec = Decryptor(KEY)
    out = b"".join(dec.update(stream[i : i + step]) for i in range(0, len(stream), step))
    return out + dec.finalize(**kwargs)  # type: ignore[arg-type]


@given(
    size=st.sampled_from([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17]),
    pieces=st.integers(1, 7),
    step=st.integers(1, 3 * FRAME),
)
def test_any_size_and_any_split_round_trips(size: int, pieces: int, step: int):
    data = drbg(str(size))(size)
    stream, digest = encrypt(data, pieces)
    assert len(stream) == encrypted_size(size, CHUNK)
    assert decrypt(stream, step, expected_digest=digest, expected_size=size) == data


def test_reordered_chunks_are_detected():
    stream, _ = encrypt(bytes(3 * CHUNK + 5))
    frames = [stream[HEADER_LENGTH + i * FRAME : HEADER_LENGTH + (i + 1) * FRAME] for i in range(3)]
    swapped = stream[:HEADER_LENGTH] + frames[1] + frames[0] + stream[HEADER_LENGTH + 2 * FRAME :]
    with pytest.raises(errors.AttachmentOutOfOrder):
        decrypt(swapped)


def test_dropped_middle_chunk_is_detected():
    stream, _ = encrypt(bytes(3 * CHUNK + 5))
    dropped = stream[: HEADER_LENGTH + FRAME] + stream[HEADER_LENGTH + 2 * FRAME :]
    with pytest.raises(errors.AttachmentOutOfOrder):
        decrypt(dropped)


def test_truncation_at_a_chunk_boundary_is_detected():
    stream, _ = encrypt(bytes(3 * CHUNK + 5))
    with pytest.raises(errors.AttachmentTruncated):
        decrypt(stream[: HEADER_LENGTH + 2 * FRAME])


def test_truncation_inside_a_chunk_is_detected_with_expected_size():
    stream, _ = encrypt(bytes(3 * CHUNK + 5))
    with pytest.raises(errors.AttachmentTruncated):
        decrypt(stream[: HEADER_LENGTH + 2 * FRAME + 100], expected_size=3 * CHUNK + 5)


def test_empty_or_header_only_stream_is_truncated():
    stream, _ = encrypt(b"abc")
    with pytest.raises(errors.AttachmentTruncated):
        decrypt(stream[:HEADER_LENGTH])
    with pytest.raises(errors.AttachmentTruncated):
        decrypt(b"")


def test_modified_chunk_is_tampered():
    stream, _ = encrypt(bytes(2 * CHUNK))
    with pytest.raises(errors.AttachmentTampered):
        decrypt(flip(stream, HEADER_LENGTH + 20))


def test_modified_header_is_tampered():
    stream, _ = encrypt(bytes(100))
    with pytest.raises(errors.AttachmentTampered):
        decrypt(flip(stream, HEADER_LENGTH - 1))  # a salt byte: another stream key


def test_appended_data_is_tampered():
    stream, _ = encrypt(bytes(100))
    with pytest.raises((errors.AttachmentTampered, errors.AttachmentOutOfOrder)):
        decrypt(stream + stream[HEADER_LENGTH:])


def test_wrong_key_fails():
    stream, _ = encrypt(bytes(100))
    dec = Decryptor(bytes(32))
    dec.update(stream)
    with pytest.raises(errors.AttachmentTampered):
        dec.finalize()


def test_digest_mismatch_is_tampered():
    stream, digest = encrypt(bytes(100))
    with pytest.raises(errors.AttachmentTampered):
        decrypt(stream, expected_digest=flip(digest, 0))


def test_key_holder_cannot_substitute_a_stream_with_the_same_tags():
    """Issue 8 item 3: any member knows the file key and could rewrite the S3 object.

    The forged stream's frames carry the original GCM tags (GHASH is linear, so
    a key holder can change ciphertext blocks without changing a tag): every
    chunk still authenticates, so only a digest over the ciphertext catches it.
    """
    stream, digest = encrypt(bytes(2 * CHUNK + 10))
    header = stream[:HEADER_LENGTH]
    stream_key = HKDF(
        hashes.SHA384(), 32, salt=header[-32:], info=b"sotto-v2 attachment\x00" + header
    ).derive(KEY)
    frame = stream[HEADER_LENGTH : HEADER_LENGTH + FRAME]
    nonce = bytes(3) + (0).to_bytes(8, "big") + b"\x00"  # chunk 0, not final
    forged_frame = frame[:8] + same_tag_ciphertext(Gcm(stream_key, nonce), header, frame[8:], 3, 9)
    forged = header + forged_frame + stream[HEADER_LENGTH + FRAME :]
    assert forged != stream
    dec = Decryptor(KEY)
    substituted = dec.update(forged)  # every chunk authenticates
    assert substituted != bytes(len(substituted))
    with pytest.raises(errors.AttachmentTampered):
        dec.finalize(expected_digest=digest, expected_size=2 * CHUNK + 10)


def test_digest_is_sha384_of_the_whole_stream():
    """Anyone can check a stored object against the signed digest without the key."""
    stream, digest = encrypt(bytes(3 * CHUNK + 7), pieces=5)
    assert digest == hashlib.sha384(stream).digest()


def test_memory_stays_bounded_by_one_chunk():
    enc = Encryptor(KEY, chunk_size=CHUNK, rng=drbg("m"))
    dec = Decryptor(KEY)
    for i in range(50):
        dec.update(enc.update(bytes(CHUNK // 3 + i)))
        assert len(enc._buffer) <= CHUNK
        assert len(dec._buffer) <= FRAME + CHUNK
    dec.update(enc.finalize())
    dec.finalize()


def test_chunk_size_limits_are_enforced():
    with pytest.raises(errors.LimitExceeded):
        Encryptor(KEY, chunk_size=100)
