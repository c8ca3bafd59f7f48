"""Persisted sender and receiver chains: vectors, round trips, continuation, strict parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sotto.protocol import errors
from sotto.protocol.ratchet import (
    MAX_SKIPPED_KEYS,
    MessageKey,
    ReceiverChain,
    SenderChain,
)
from sotto.protocol.wire import SUITE_ID

from .helpers import NOW, drbg

MEMBERS = [("alice", "phone"), ("bob", "phone")]
VECTORS = Path(__file__).parent / "vectors"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "chain_state.json").read_text())
    return data


def new_chain(seed: str = "s") -> SenderChain:
    return SenderChain.create(MEMBERS, now=NOW, rng=drbg(seed))


def test_chain_state_vector_parses_and_reserializes_exactly():
    v = load()
    sender = SenderChain.parse(bytes.fromhex(v["sender_chain"]))
    assert sender.serialize().hex() == v["sender_chain"]
    assert (sender.chain_id.hex(), sender.iteration) == (v["chain_id"], v["sender_iteration"])
    assert sender.max_messages == 500
    receiver = ReceiverChain.parse(bytes.fromhex(v["receiver_chain"]))
    assert receiver.serialize().hex() == v["receiver_chain"]
    assert receiver.next_iteration == v["receiver_next_iteration"]
    for item in v["skipped"]:
        assert receiver.peek(item["iteration"]).seed.hex() == item["seed"]
    # Forward secrecy: no seed of a message already used is in either state.
    for item in v["used"]:
        for state in (v["sender_chain"], v["receiver_chain"]):
            assert item["seed"] not in state
        with pytest.raises(errors.MessageKeyUnavailable):
            receiver.peek(item["iteration"])
    # The sender's next key is the receiver's next key.
    next_key = sender.next_key(MEMBERS, now=NOW)
    assert receiver.peek(next_key.iteration).seed == next_key.seed


def test_chain_state_vector_is_reproduced():
    from . import generate_vectors

    assert generate_vectors.chain_state() == load()


@given(st.integers(0, 40), st.integers(0, 40))
def test_sender_state_parsed_midway_continues_identically(before: int, after: int):
    straight, paused = new_chain(), new_chain()
    expected = [straight.next_key(MEMBERS, now=NOW) for _ in range(before + after)]
    got = [paused.next_key(MEMBERS, now=NOW) for _ in range(before)]
    data = paused.serialize()
    resumed = SenderChain.parse(data)
    assert resumed.serialize() == data
    got += [resumed.next_key(MEMBERS, now=NOW) for _ in range(after)]
    assert [(k.iteration, k.seed) for k in got] == [(k.iteration, k.seed) for k in expected]
    assert resumed.serialize() == straight.serialize()
    # Nothing in the state derives an already used key.
    for key in got:
        assert key.seed not in resumed.serialize()


def _receiver_keys(order: list[int], cut: int) -> tuple[list[MessageKey | str], bytes, bytes]:
    sender = new_chain()
    straight = ReceiverChain.from_payload(sender.payload(), "alice", "phone")
    paused = ReceiverChain.from_payload(sender.payload(), "alice", "phone")

    def take(chain: ReceiverChain, iteration: int) -> MessageKey | str:
        try:
            key = chain.peek(iteration)
        except errors.ProtocolError as exc:
            return exc.code
        chain.commit(iteration)
        return key

    expected = [take(straight, i) for i in order]
    got = [take(paused, i) for i in order[:cut]]
    data = paused.serialize()
    resumed = ReceiverChain.parse(data)
    assert resumed.serialize() == data
    got += [take(resumed, i) for i in order[cut:]]
    assert got == expected
    return got, resumed.serialize(), straight.serialize()


@given(st.lists(st.integers(0, 120), max_size=30), st.data())
def test_receiver_state_parsed_midway_continues_identically(order: list[int], data: st.DataObject):
    cut = data.draw(st.integers(0, len(order)))
    got, resumed, straight = _receiver_keys(order, cut)
    assert resumed == straight
    for key in got:
        if isinstance(key, MessageKey):
            assert key.seed not in resumed  # used keys are gone from the state


def test_receiver_state_keeps_the_skipped_window_bounded():
    sender = new_chain()
    receiver = ReceiverChain.from_payload(sender.payload(), "alice", "phone")
    for iteration in (256, 512, 768):
        receiver.commit(iteration)
    assert len(receiver.skipped) == MAX_SKIPPED_KEYS
    again = ReceiverChain.parse(receiver.serialize())
    assert list(again.skipped) == list(receiver.skipped)  # oldest first: eviction order kept
    again.commit(999)
    receiver.commit(999)
    assert again.serialize() == receiver.serialize()


def test_sender_state_rejects_bad_encodings():
    chain = new_chain()
    for _ in range(3):
        chain.next_key(MEMBERS, now=NOW)
    data = chain.serialize()
    cases = {
        "trailing": data + b"\x00",
        "truncated": data[:-1],
        "suite": data[:1] + (SUITE_ID + 1).to_bytes(2, "big") + data[3:],
        "type": data[:3] + b"\x33" + data[4:],
        "iteration beyond limit": data[:52] + (1001).to_bytes(4, "big") + data[56:],
        "zero max messages": data[:-12] + bytes(4) + data[-8:],
        "loosened max age": data[:-8] + (2**40).to_bytes(8, "big"),
    }
    expected = {"suite": "suite_downgrade"}
    for name, bad in cases.items():
        with pytest.raises(errors.MalformedMessage) as caught:
            SenderChain.parse(bad)
        assert caught.value.code == expected.get(name, "malformed"), name


def test_receiver_state_rejects_bad_encodings():
    sender = new_chain()
    receiver = ReceiverChain.from_payload(sender.payload(), "alice", "phone")
    receiver.commit(2)  # skipped 0 and 1
    data = receiver.serialize()
    header = 4 + 1 + 5 + 1 + 5 + 16 + 32  # prefix, ids, chain id, chain key
    first = header + 4 + 8 + 2  # the first skipped entry
    second = first + 4 + 32  # u32 iteration + seed(32) per entry
    cases = {
        "trailing": data + b"\x00",
        "truncated": data[:-1],
        "bad identifier": data[:5] + b"al ce" + data[10:],
        "next iteration beyond any chain": data[:header] + (1001).to_bytes(4, "big")
        + data[header + 4 :],
        "skipped not ascending": data[:second] + (0).to_bytes(4, "big") + data[second + 4 :],
        "skipped at or after next": data[:second] + (3).to_bytes(4, "big") + data[second + 4 :],
        "too many skipped": data[: first - 2] + (MAX_SKIPPED_KEYS + 1).to_bytes(2, "big")
        + data[first:],
    }  # fmt: skip
    for name, bad in cases.items():
        with pytest.raises(errors.MalformedMessage) as caught:
            ReceiverChain.parse(bad)
        assert caught.value.code == "malformed", name


def test_reprs_hide_secrets():
    chain = new_chain()
    receiver = ReceiverChain.parse(
        ReceiverChain.from_payload(chain.payload(), "alice", "phone").serialize()
    )
    assert chain.chain_key.hex() not in repr(SenderChain.parse(chain.serialize()))
    assert "secret" in repr(receiver)
