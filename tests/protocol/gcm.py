"""AES-GCM internals for attack tests: GHASH over GF(2^128) and the tag-collision solve.

GCM is not key-committing: given two keys, one ciphertext block can be chosen
so that the tag is valid under both (Dodis et al., "Fast Message Franking",
CRYPTO 2018; Albertini et al., USENIX Security 2022). Only what the tests
need: 12-byte nonces, whole 16-byte blocks.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_R = 0xE1 << 120
_ONE = 1 << 127  # GCM's bit order: x^0 is the most significant bit


def _mul(x: int, y: int) -> int:
    z, v = 0, x
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _pow(x: int, e: int) -> int:
    result = _ONE
    while e:
        if e & 1:
            result = _mul(result, x)
        x = _mul(x, x)
        e >>= 1
    return result


def _aes(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _blocks(data: bytes) -> list[int]:
    padded = data.ljust(-(-len(data) // 16) * 16, b"\0")
    return [int.from_bytes(padded[i : i + 16], "big") for i in range(0, len(padded), 16)]


class Gcm:
    """One key and nonce: keystream, GHASH and tag exactly as AES-GCM computes them."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        assert len(nonce) == 12
        self.key, self.nonce = key, nonce
        self.h = int.from_bytes(_aes(key, bytes(16)), "big")

    def counter_block(self, i: int) -> bytes:
        """E_K(J0 + i): i = 0 masks the tag, i >= 1 is keystream block i - 1."""
        return _aes(self.key, self.nonce + (1 + i).to_bytes(4, "big"))

    def keystream(self, length: int) -> bytes:
        return b"".join(self.counter_block(1 + i) for i in range(length // 16))

    def tag(self, aad: bytes, ciphertext: bytes) -> int:
        lengths = len(aad) * 8 << 64 | len(ciphertext) * 8
        x = 0
        for block in [*_blocks(aad), *_blocks(ciphertext), lengths]:
            x = _mul(x ^ block, self.h)
        return x ^ int.from_bytes(self.counter_block(0), "big")


def colliding_ciphertext(a: Gcm, b: Gcm, aad: bytes, wanted: bytes, free_block: int) -> bytes:
    """``ciphertext || tag`` that decrypts to ``wanted`` under ``a`` (except ``free_block``,
    which is spent to make the tag) and is accepted under ``b`` too."""
    assert len(wanted) % 16 == 0
    ciphertext = bytearray(x ^ y for x, y in zip(wanted, a.keystream(len(wanted)), strict=True))
    ciphertext[free_block * 16 : free_block * 16 + 16] = bytes(16)
    delta = a.tag(aad, bytes(ciphertext)) ^ b.tag(aad, bytes(ciphertext))
    total = len(_blocks(aad)) + len(wanted) // 16 + 1
    exponent = total - (len(_blocks(aad)) + free_block)
    coefficient = _pow(a.h, exponent) ^ _pow(b.h, exponent)
    solved = _mul(delta, _pow(coefficient, 2**128 - 2))  # delta / coefficient
    ciphertext[free_block * 16 : free_block * 16 + 16] = solved.to_bytes(16, "big")
    tag = a.tag(aad, bytes(ciphertext))
    assert tag == b.tag(aad, bytes(ciphertext))
    return bytes(ciphertext) + tag.to_bytes(16, "big")


def same_tag_ciphertext(a: Gcm, aad: bytes, sealed: bytes, block_a: int, block_b: int) -> bytes:
    """Another ``ciphertext || tag`` with the same tag under ``a``'s key: a key holder's forgery.

    GHASH is linear, so changing ciphertext block ``block_a`` by any delta and
    ``block_b`` by delta * H^(e_a - e_b) leaves the tag unchanged.
    """
    ciphertext, tag = bytearray(sealed[:-16]), sealed[-16:]
    total = len(_blocks(aad)) + len(ciphertext) // 16 + 1
    e_a, e_b = (total - len(_blocks(aad)) - block for block in (block_a, block_b))
    delta_a = 0xA5 << 120
    delta_b = _mul(delta_a, _pow(a.h, e_a - e_b))
    for block, delta in ((block_a, delta_a), (block_b, delta_b)):
        old = int.from_bytes(ciphertext[block * 16 : block * 16 + 16], "big")
        ciphertext[block * 16 : block * 16 + 16] = (old ^ delta).to_bytes(16, "big")
    assert a.tag(aad, bytes(ciphertext)).to_bytes(16, "big") == tag
    return bytes(ciphertext) + tag
