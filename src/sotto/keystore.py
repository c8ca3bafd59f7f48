"""The keystore file: sealed device secrets on disk, mode 0600, replaced atomically.

The format and its cryptography live in ``sotto.protocol.keystore`` (pure);
this module is the only part that touches the file system.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from sotto.protocol.errors import CorruptKeystore, KeystoreError
from sotto.protocol.keystore import DEFAULT_KDF, KdfParams, open_keystore, seal_keystore

__all__ = ["MAX_KEYSTORE_BYTES", "load", "save"]

MAX_KEYSTORE_BYTES = 64 * 1024 * 1024


def save(
    path: str | os.PathLike[str],
    entries: Mapping[str, bytes],
    passphrase: str,
    *,
    params: KdfParams = DEFAULT_KDF,
) -> None:
    """Seal and write: temp file (0600, O_EXCL) in the same directory, fsync, rename, fsync dir.

    A crash leaves either the old file or the new one, never a torn mix.
    """
    target = Path(path)
    data = seal_keystore(entries, passphrase, params=params)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike[str], passphrase: str) -> dict[str, bytes]:
    """Entries, or ``WrongPassphrase`` / ``CorruptKeystore`` / ``KeystoreError`` with a sentence."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {os.fspath(path)}") from None
    except OSError as exc:
        raise KeystoreError(f"cannot open keystore: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise KeystoreError(
                f"keystore permissions are {stat.S_IMODE(info.st_mode):04o}; run chmod 600"
            )
        if info.st_size > MAX_KEYSTORE_BYTES:
            raise CorruptKeystore("keystore is larger than any Sotto keystore")
        data = handle.read(MAX_KEYSTORE_BYTES + 1)
    return open_keystore(data, passphrase)
