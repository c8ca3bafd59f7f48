"""HPKE pairwise sealing: the info binds sender, recipient, device, prekey and message."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from sotto.protocol import errors
from sotto.protocol.keys import KemKeyPair
from sotto.protocol.pairwise import HPKE_OVERHEAD, PairwiseContext, open_sealed, seal

from .helpers import drbg, flip

CONTEXT = PairwiseContext(
    purpose="key-distribution",
    conversation_id="room-1",
    sender_user_id="alice",
    sender_identity=b"\x01" * 32,
    sender_device_id="phone",
    recipient_user_id="bob",
    recipient_identity=b"\x02" * 32,
    recipient_device_id="laptop",
    prekey_kind=1,
    prekey_id=7,
    message_id=b"\x03" * 16,
)
KEY = KemKeyPair.generate(drbg("pairwise"))


def test_recipient_opens_sealed_payload():
    sealed = seal(CONTEXT, b"chain key", KEY.public)
    assert len(sealed) == HPKE_OVERHEAD + len(b"chain key")
    assert open_sealed(CONTEXT, sealed, KEY) == b"chain key"


def _changed(name: str) -> PairwiseContext:
    value = getattr(CONTEXT, name)
    changed: object
    if isinstance(value, bytes):
        changed = flip(value, 0)
    elif isinstance(value, int):
        changed = value + 1
    else:
        changed = value + "x"
    return replace(CONTEXT, **{name: changed})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [f.name for f in fields(PairwiseContext)])
def test_any_info_field_change_fails_to_open(name: str):
    sealed = seal(CONTEXT, b"secret", KEY.public)
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(_changed(name), sealed, KEY)


def test_wrong_recipient_key_fails_to_open():
    sealed = seal(CONTEXT, b"secret", KEY.public)
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(CONTEXT, sealed, KemKeyPair.generate(drbg("other")))


@pytest.mark.parametrize("where", [0, 1600, 1664, 1665, -1])
def test_tampered_or_truncated_seal_fails_opaquely(where: int):
    sealed = seal(CONTEXT, b"secret", KEY.public)
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(CONTEXT, flip(sealed, where), KEY)
    with pytest.raises(errors.DecryptionFailed):
        open_sealed(CONTEXT, sealed[:100], KEY)
