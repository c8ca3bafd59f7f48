"""The keystore format: named device secrets sealed under a passphrase (pure, no I/O).

Wire (docs/protocol.md §10)::

    header = prefix(0x30) || memory_kib(u32) || iterations(u32) || lanes(u8)
             || salt(16) || nonce(12) || check(16)
    file   = header || var32(AES-256-GCM(k_enc, nonce, entries, aad = header))

    k_enc || check_key = Argon2id(NFC(passphrase), salt, m, t, p, length = 64)
    check = check_key[0:16]
    entries = u16 count || (text8 name || var32 value)*     names sorted, unique

The KDF parameters sit in the authenticated header, so they cannot be
lowered without the tag failing; the parser also refuses parameters outside
[floor, ceiling] before running the KDF, so a crafted file can neither
weaken nor exhaust. ``check`` lets us say "wrong passphrase" apart from
"corrupt keystore": it tells an attacker nothing the tag would not.
"""

from __future__ import annotations

import hmac
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .errors import CorruptKeystore, KeystoreError, MalformedMessage, WrongPassphrase
from .keys import Random, system_random
from .wire import MessageType, Reader, Writer, check_identifier, parse_prefix

__all__ = [
    "DEFAULT_KDF",
    "MIN_PASSPHRASE_LENGTH",
    "KdfParams",
    "open_keystore",
    "seal_keystore",
]

MIN_PASSPHRASE_LENGTH = 8


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters; the defaults are RFC 9106 §4's second recommendation."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    # Floor: OWASP's Argon2id minimum (19 MiB, t=2); ceiling: what a phone can afford.
    MIN_MEMORY_KIB = 19 * 1024
    MAX_MEMORY_KIB = 1024 * 1024
    MIN_ITERATIONS = 2
    MAX_ITERATIONS = 16
    MAX_LANES = 16

    def __post_init__(self) -> None:
        if not (
            self.MIN_MEMORY_KIB <= self.memory_kib <= self.MAX_MEMORY_KIB
            and self.MIN_ITERATIONS <= self.iterations <= self.MAX_ITERATIONS
            and 1 <= self.lanes <= self.MAX_LANES
        ):
            raise MalformedMessage("Argon2id parameters outside the accepted range")


DEFAULT_KDF = KdfParams()


def _derive(passphrase: str, salt: bytes, params: KdfParams) -> tuple[bytes, bytes]:
    kdf = Argon2id(
        salt=salt,
        length=64,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    # NFC so the same passphrase typed on two keyboards gives the same key.
    out = kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))
    return out[:32], out[32:48]


def _encode_entries(entries: Mapping[str, bytes]) -> bytes:
    w = Writer().u16(len(entries))
    for name in sorted(entries):
        w.text8(check_identifier(name, "keystore entry name")).var32(entries[name])
    return bytes(w)


def _decode_entries(data: bytes) -> dict[str, bytes]:
    r = Reader(data, "keystore entries")
    entries: dict[str, bytes] = {}
    for _ in range(r.u16()):
        name, value = check_identifier(r.text8(), "entry name"), r.var32()
        if entries and name <= max(entries):
            raise MalformedMessage("keystore entries are not sorted and unique")
        entries[name] = value
    r.done()
    return entries


def seal_keystore(
    entries: Mapping[str, bytes],
    passphrase: str,
    *,
    params: KdfParams = DEFAULT_KDF,
    rng: Random = system_random,
) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise KeystoreError(f"passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
    salt, nonce = rng(16), rng(12)
    enc_key, check = _derive(passphrase, salt, params)
    w = Writer().prefix(MessageType.KEYSTORE)
    w.u32(params.memory_kib).u32(params.iterations).u8(params.lanes)
    header = bytes(w.raw(salt).raw(nonce).raw(check))
    ciphertext = AESGCM(enc_key).encrypt(nonce, _encode_entries(entries), header)
    return header + bytes(Writer().var32(ciphertext))


def open_keystore(data: bytes, passphrase: str) -> dict[str, bytes]:
    """Entries, or ``WrongPassphrase`` / ``CorruptKeystore`` (never a parsing traceback)."""
    try:
        r = Reader(data, "keystore")
        parse_prefix(r, MessageType.KEYSTORE)
        params = KdfParams(r.u32(), r.u32(), r.u8())
        salt, nonce, check = r.take(16), r.take(12), r.take(16)
        header_length = r.position
        ciphertext = r.var32()
        r.done()
    except MalformedMessage as exc:
        raise CorruptKeystore(f"corrupt keystore: {exc.detail}") from None
    enc_key, expected = _derive(passphrase, salt, params)
    if not hmac.compare_digest(check, expected):
        raise WrongPassphrase()
    try:
        plaintext = AESGCM(enc_key).decrypt(nonce, ciphertext, bytes(data[:header_length]))
        return _decode_entries(plaintext)
    except (InvalidTag, MalformedMessage):
        raise CorruptKeystore() from None
