"""Key commitment: one signed envelope cannot open to different content for different members.

The attack (issue 8, item 2): a sender gives Bob and Carol different chain
keys under one chain id, then builds one ciphertext whose AES-GCM tag is
valid under both message keys (GCM is not key-committing). Without a
commitment Bob and Carol each accept the signed envelope and see different
content; v1 fell to it after a few hundred tries. With the signed key
commitment, Carol's chain key does not derive the committed key and the
envelope is refused before the AEAD runs.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sotto.protocol import errors
from sotto.protocol.content import Control, pad
from sotto.protocol.envelope import Envelope, EnvelopeHeader, open_envelope
from sotto.protocol.ratchet import ChainKeyPayload, MessageKey, ReceiverChain, SealingKeys
from sotto.protocol.replay import ReplayGuard

from .gcm import Gcm, colliding_ciphertext
from .helpers import NOW, Party

CONV = "room-1"
CHAIN_ID = bytes(16)


def _chain(chain_key: bytes) -> ReceiverChain:
    return ReceiverChain.from_payload(
        ChainKeyPayload(CHAIN_ID, 0, chain_key, NOW), "alice", "phone"
    )


def _seed(chain_key: bytes) -> bytes:
    return _chain(chain_key).peek(0).seed


def _equivocating_envelope(alice: Party) -> tuple[bytes, bytes, bytes, SealingKeys]:
    """Alice's envelope, valid AES-GCM under Bob's and under Carol's (different) message keys,
    whose plaintext under Carol's key is also well-padded content of another type."""
    # Bob sees a "delete message" control; one block of its payload is spent on the tag.
    _, wanted = pad(Control(Control.DELETE_MESSAGE, b"\x11" * 28).serialize())
    chain_key_bob = b"B" * 32
    salt = bytes(range(16))
    keys_bob = MessageKey(CHAIN_ID, 0, _seed(chain_key_bob)).keys(salt)
    for attempt in itertools.count():
        chain_key_carol = hashlib.sha256(b"carol %d" % attempt).digest()
        keys_carol = MessageKey(CHAIN_ID, 0, _seed(chain_key_carol)).keys(salt)
        header = EnvelopeHeader(
            CONV, "alice", "phone", bytes(16), NOW, 0, 0, 0, CHAIN_ID, 0, salt, keys_bob.commitment
        )
        sealed = colliding_ciphertext(
            Gcm(keys_bob.key, keys_bob.nonce), Gcm(keys_carol.key, keys_carol.nonce),
            header.core(), wanted, free_block=1,
        )  # fmt: skip
        carol_sees = AESGCM(keys_carol.key).decrypt(keys_carol.nonce, sealed, header.core())
        if carol_sees.rstrip(b"\0")[-1:] == b"\x80" and carol_sees[0] not in range(1, 7):
            break  # about 1 in 256 tries: Carol's plaintext is valid (unknown-type) content
    digest = hashlib.sha384(sealed).digest()
    signature = alice.device.signing_key.sign("envelope", header.core() + digest)
    envelope = Envelope(header, digest, sealed, signature).serialize()
    return envelope, chain_key_bob, chain_key_carol, keys_carol


def _open(data: bytes, alice: Party, chain_key: bytes) -> object:
    return open_envelope(
        data,
        conversation_id=CONV,
        sender_certificate=alice.certificate,
        sender_identity=alice.identity_public,
        chains={CHAIN_ID: _chain(chain_key)},
        replay=ReplayGuard(),
        now=NOW,
    ).content


def test_receiver_refuses_envelope_committed_to_another_members_key(alice: Party):
    envelope, chain_key_bob, chain_key_carol, keys_carol = _equivocating_envelope(alice)
    sealed = Envelope.parse(envelope)
    # The AEAD alone would accept it under Carol's key: the tags collide.
    AESGCM(keys_carol.key).decrypt(keys_carol.nonce, sealed.ciphertext, sealed.header.core())
    bob_sees = _open(envelope, alice, chain_key_bob)
    assert isinstance(bob_sees, Control)
    assert bob_sees.kind == Control.DELETE_MESSAGE
    with pytest.raises(errors.KeyCommitmentMismatch):
        _open(envelope, alice, chain_key_carol)


def test_commitment_binds_seed_and_salt():
    seed = bytes(32)
    one = MessageKey(CHAIN_ID, 0, seed).keys(bytes(16))
    other_salt = MessageKey(CHAIN_ID, 0, seed).keys(b"\x01" + bytes(15))
    other_seed = MessageKey(CHAIN_ID, 0, b"\x01" + bytes(31)).keys(bytes(16))
    assert len({one.commitment, other_salt.commitment, other_seed.commitment}) == 3
    assert len({one.key, other_salt.key, other_seed.key}) == 3
    assert len({one.nonce, other_salt.nonce, other_seed.nonce}) == 3
