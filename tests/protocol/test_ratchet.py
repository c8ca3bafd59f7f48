"""Sender chains: unique keys, forward secrecy, skipped-key window, rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sotto.protocol import errors
from sotto.protocol.ratchet import (
    MAX_CHAIN_AGE_MS,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    ChainKeyPayload,
    ReceiverChain,
    SenderChain,
)

from .helpers import NOW, drbg

MEMBERS = [("alice", "phone"), ("bob", "phone")]


def _pair(n: int = 0) -> tuple[SenderChain, ReceiverChain]:
    sender = SenderChain.create(MEMBERS, now=NOW, rng=drbg(f"chain{n}"))
    payload = ChainKeyPayload.parse(sender.payload().serialize())
    return sender, ReceiverChain.from_payload(payload, "alice", "phone")


def test_every_message_gets_a_unique_key():
    sender, _ = _pair()
    salt = bytes(16)
    keys = [sender.next_key(MEMBERS, now=NOW).keys(salt) for _ in range(200)]
    assert len({k.key for k in keys}) == 200
    assert len({k.nonce for k in keys}) == 200


def test_rolled_back_sender_never_reuses_key_and_nonce():
    """A restored backup replays the chain key; the per-message salt still makes new keys."""
    sender, _ = _pair()
    restored = SenderChain.parse(sender.serialize())
    first = sender.next_key(MEMBERS, now=NOW).keys(drbg("salt a")(16))
    again = restored.next_key(MEMBERS, now=NOW).keys(drbg("salt b")(16))
    assert first.key != again.key
    assert first.nonce != again.nonce


def test_message_key_refuses_a_salt_of_the_wrong_length():
    sender, _ = _pair()
    with pytest.raises(errors.MalformedMessage):
        sender.next_key(MEMBERS, now=NOW).keys(bytes(15))


def test_sender_forgets_used_chain_keys():
    sender, _ = _pair()
    before = sender.chain_key
    sender.next_key(MEMBERS, now=NOW)
    assert sender.chain_key != before
    assert sender.payload().iteration == 1


def test_receiver_derives_the_sender_keys():
    sender, receiver = _pair()
    for i in range(5):
        key = sender.next_key(MEMBERS, now=NOW)
        assert receiver.peek(i) == key
        receiver.commit(i)


def test_used_message_key_is_deleted():
    sender, receiver = _pair()
    sender.next_key(MEMBERS, now=NOW)
    receiver.commit(0)
    with pytest.raises(errors.MessageKeyUnavailable):
        receiver.peek(0)
    with pytest.raises(errors.MessageKeyUnavailable):
        receiver.commit(0)


@given(st.permutations(list(range(12))))
def test_receiver_accepts_any_delivery_order_within_window(order: list[int]):
    sender, receiver = _pair()
    keys = [sender.next_key(MEMBERS, now=NOW) for _ in range(12)]
    for i in order:
        assert receiver.peek(i) == keys[i]
        receiver.commit(i)
    assert not receiver.skipped


def test_receiver_refuses_jump_beyond_window():
    _, receiver = _pair()
    with pytest.raises(errors.TooManySkipped):
        receiver.peek(MAX_SKIP + 1)
    receiver.commit(MAX_SKIP)  # exactly the window is allowed
    assert len(receiver.skipped) == MAX_SKIP


def test_receiver_evicts_oldest_skipped_keys():
    _, receiver = _pair()
    position = 0
    while position < MAX_SKIPPED_KEYS + MAX_SKIP:
        position += MAX_SKIP
        receiver.commit(position)
    assert len(receiver.skipped) == MAX_SKIPPED_KEYS
    with pytest.raises(errors.MessageKeyUnavailable):
        receiver.peek(0)


def test_chain_rotates_after_max_messages():
    sender = SenderChain.create(MEMBERS, now=NOW, rng=drbg("n"), max_messages=3)
    for _ in range(3):
        sender.next_key(MEMBERS, now=NOW)
    with pytest.raises(errors.RotationRequired):
        sender.next_key(MEMBERS, now=NOW)


def test_chain_rotates_after_max_age():
    sender, _ = _pair()
    with pytest.raises(errors.RotationRequired):
        sender.next_key(MEMBERS, now=NOW + MAX_CHAIN_AGE_MS)


def test_chain_rotates_when_a_device_is_added_or_removed():
    sender, _ = _pair()
    with pytest.raises(errors.RotationRequired):
        sender.next_key([*MEMBERS, ("bob", "laptop")], now=NOW)
    with pytest.raises(errors.RotationRequired):
        sender.next_key(MEMBERS[:1], now=NOW)
    sender.next_key(list(reversed(MEMBERS)), now=NOW)  # order does not matter


def test_rotation_limits_can_only_be_tightened():
    with pytest.raises(errors.MalformedMessage):
        SenderChain.create(MEMBERS, now=NOW, max_messages=10**6)


def test_payload_parser_rejects_wrong_length():
    with pytest.raises(errors.MalformedMessage):
        ChainKeyPayload.parse(bytes(59))
