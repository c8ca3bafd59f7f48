"""A profile's sealed state on disk: one key derivation per command, one file per part.

The passphrase-sealed keystore (``sotto.keystore``, Argon2id) holds only
what needs the passphrase: a random 256-bit **data key** and, on a device
that has it, the identity private key. Everything else is sealed under the
data key with AES-256-GCM, one file per part, so a command derives a key
once and rewrites only what it changed::

    <profile>/keystore           passphrase -> {"data_key", "identity"?}
    <profile>/state/<name>       version(1) || nonce(12) || AES-256-GCM(data key, nonce,
                                 data, aad = "sotto-vault-v1" 0x00 name)

The name is in the AAD, so a file cannot be swapped for another (one
conversation's state for another's). Files are written atomically (temp
file, fsync, rename). Several processes may use a profile at once (a
``listen`` beside a ``send``): they change state under ``lock()``, an
exclusive ``flock`` held for one operation, never while waiting for the
network, and each re-reads (``changed``) what another process wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sotto import keystore
from sotto.protocol.errors import CorruptKeystore
from sotto.protocol.keystore import DEFAULT_KDF, KdfParams

__all__ = ["DATA_KEY_ENTRY", "IDENTITY_ENTRY", "Vault"]

DATA_KEY_ENTRY = "data_key"
IDENTITY_ENTRY = "identity"
_VERSION = 1
_AAD = b"sotto-vault-v1\x00"
_NONCE = 12


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Vault:
    """The unlocked state of one profile: its data key and the files sealed under it."""

    def __init__(self, root: Path, data_key: bytes, identity: bytes | None) -> None:
        if len(data_key) != 32:
            raise CorruptKeystore("the keystore's data key is damaged")
        self.root = root
        self.identity_private = identity
        self._data_key = data_key
        self._aead = AESGCM(data_key)
        self._state = root / "state"
        self._seen: dict[str, tuple[int, int, int] | None] = {}
        self._lock_file: IO[bytes] | None = None
        self._lock_depth = 0

    # -- the keystore --------------------------------------------------------------

    @classmethod
    def new(cls, root: Path, *, identity: bytes | None) -> Vault:
        """A vault with a fresh data key; ``seal`` writes its keystore (after its files)."""
        return cls(root, secrets.token_bytes(32), identity)

    def seal(self, passphrase: str, *, params: KdfParams = DEFAULT_KDF) -> None:
        """Write the keystore: the data key (and identity) under the passphrase."""
        entries = {DATA_KEY_ENTRY: self._data_key}
        if self.identity_private is not None:
            entries[IDENTITY_ENTRY] = self.identity_private
        keystore.save(self.root / "keystore", entries, passphrase, params=params)

    @classmethod
    def unlock(cls, root: Path, passphrase: str) -> tuple[Vault | None, dict[str, bytes]]:
        """Open the keystore (one key derivation): the vault, and the keystore's entries.

        ``None`` for a keystore of the earlier single-file format (no data
        key): the caller moves it into a ``new`` vault, files first, keystore last.
        """
        entries = keystore.load(root / "keystore", passphrase)
        if DATA_KEY_ENTRY not in entries:
            return None, entries
        return cls(root, entries[DATA_KEY_ENTRY], entries.get(IDENTITY_ENTRY)), entries

    # -- sealed files ------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad vault file name {name!r}")
        return self._state / name

    def _stat(self, path: Path) -> tuple[int, int, int] | None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def read(self, name: str) -> bytes | None:
        """A sealed file's contents, or None if there is none."""
        path = self._path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self._seen[name] = None
            return None
        self._seen[name] = self._stat(path)
        if len(raw) < 1 + _NONCE + 16 or raw[0] != _VERSION:
            raise CorruptKeystore(f"state file {name} is damaged")
        try:
            return self._aead.decrypt(raw[1 : 1 + _NONCE], raw[1 + _NONCE :], _AAD + name.encode())
        except InvalidTag:
            raise CorruptKeystore(f"state file {name} is damaged or not this profile's") from None

    def write(self, name: str, data: bytes) -> None:
        """Seal and replace a file atomically (a crash leaves the old or the new one)."""
        path = self._path(name)
        self._state.mkdir(mode=0o700, exist_ok=True)
        nonce = secrets.token_bytes(_NONCE)
        sealed = bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, data, _AAD + name.encode())
        temp = path.with_name(f".{name}.{os.getpid()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(sealed)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(self._state)
        self._seen[name] = self._stat(path)

    def remove(self, name: str) -> None:
        """Delete a sealed file (gone already is fine)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))
        self._seen[name] = None

    def names(self, prefix: str) -> list[str]:
        if not self._state.is_dir():
            return []
        return sorted(
            p.name for p in self._state.iterdir() if p.name.startswith(prefix) and p.is_file()
        )

    def changed(self, name: str) -> bool:
        """Whether the file differs from what this process last read or wrote."""
        return self._stat(self._path(name)) != self._seen.get(name, ())

    # -- the profile's lock ------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes for one operation; re-entrant within this one."""
        if self._lock_depth == 0:
            handle = open(  # noqa: SIM115 (held until the outermost block ends)
                os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600), "r+b"
            )
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._lock_file = handle
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_file is not None:
                self._lock_file.close()  # closing releases the flock
                self._lock_file = None
