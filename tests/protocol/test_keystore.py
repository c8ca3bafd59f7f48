"""Keystore: passphrase sealing, errors people can read, 0600 and atomic files."""

from __future__ import annotations

import os
import stat

import pytest

from sotto import keystore
from sotto.protocol import errors
from sotto.protocol.keystore import KdfParams, open_keystore, seal_keystore

from .helpers import drbg, flip

FAST = KdfParams(memory_kib=KdfParams.MIN_MEMORY_KIB, iterations=2, lanes=1)
ENTRIES = {"device": b"secret device bytes", "identity": b"\x00" * 80}
PASS = "correct horse battery staple"


def test_keystore_round_trips():
    sealed = seal_keystore(ENTRIES, PASS, params=FAST, rng=drbg("ks"))
    assert open_keystore(sealed, PASS) == ENTRIES


def test_wrong_passphrase_is_named():
    sealed = seal_keystore(ENTRIES, PASS, params=FAST)
    with pytest.raises(errors.WrongPassphrase) as caught:
        open_keystore(sealed, PASS + "!")
    assert str(caught.value) == "wrong_passphrase: wrong passphrase"


@pytest.mark.parametrize("damage", ["ciphertext", "truncate", "garbage", "params", "empty"])
def test_corruption_is_named(damage: str):
    sealed = seal_keystore(ENTRIES, PASS, params=FAST)
    broken = {
        "ciphertext": flip(sealed, len(sealed) - 3),
        "truncate": sealed[:-5],
        "garbage": b"not a keystore at all",
        "params": flip(sealed, 7),  # memory_kib + 1: another KDF output, so the check fails
        "empty": b"",
    }[damage]
    with pytest.raises((errors.CorruptKeystore, errors.WrongPassphrase)) as caught:
        open_keystore(broken, PASS)
    expected = errors.WrongPassphrase if damage == "params" else errors.CorruptKeystore
    assert type(caught.value) is expected


def test_kdf_parameters_below_the_floor_are_refused():
    with pytest.raises(errors.MalformedMessage):
        KdfParams(memory_kib=1024, iterations=1, lanes=1)
    sealed = bytearray(seal_keystore(ENTRIES, PASS, params=FAST))
    sealed[4:8] = (1024).to_bytes(4, "big")  # memory_kib lowered in the file
    with pytest.raises(errors.CorruptKeystore):
        open_keystore(bytes(sealed), PASS)


def test_short_passphrase_is_refused():
    with pytest.raises(errors.KeystoreError):
        seal_keystore(ENTRIES, "short", params=FAST)


def test_file_is_0600_and_replaced_atomically(tmp_path):
    path = tmp_path / "keys.sotto"
    keystore.save(path, ENTRIES, PASS, params=FAST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keystore.save(path, {"device": b"new"}, PASS, params=FAST)
    assert keystore.load(path, PASS) == {"device": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.sotto"]  # no temp left


def test_loading_refuses_world_readable_file(tmp_path):
    path = tmp_path / "keys.sotto"
    keystore.save(path, ENTRIES, PASS, params=FAST)
    os.chmod(path, 0o644)
    with pytest.raises(errors.KeystoreError, match="chmod 600"):
        keystore.load(path, PASS)


def test_missing_file_is_a_sentence_not_a_traceback(tmp_path):
    with pytest.raises(errors.KeystoreError, match="no keystore"):
        keystore.load(tmp_path / "absent", PASS)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keys.sotto"
    keystore.save(path, ENTRIES, PASS, params=FAST)

    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        keystore.save(path, {"device": b"new"}, PASS, params=FAST)
    assert keystore.load(path, PASS) == ENTRIES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.sotto"]
