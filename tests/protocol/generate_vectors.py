"""Write tests/protocol/vectors/*.json: ``python -m tests.protocol.generate_vectors``.

Deterministic parts (ECDSA is RFC 6979, AES-GCM and HMAC are deterministic)
are reproduced byte for byte by test_vectors.py from the inputs in each file.
ML-DSA signatures and HPKE encapsulations are randomized: for those the files
carry the private keys and the ciphertexts, and the test verifies or opens them.
All byte strings are lowercase hex.
"""

from __future__ import annotations

import json
from pathlib import Path

from sotto.protocol import connect_token
from sotto.protocol.attachments import Encryptor
from sotto.protocol.content import Location, Text
from sotto.protocol.distribution import seal_key_distribution
from sotto.protocol.envelope import Envelope, seal_envelope
from sotto.protocol.keys import IdentityKeyPair, KemKeyPair, SigningKey
from sotto.protocol.keystore import KdfParams, seal_keystore
from sotto.protocol.ratchet import ReceiverChain, SenderChain, membership_digest
from sotto.protocol.safety import safety_number

from .helpers import DAY, NOW, drbg, make_party

VECTORS = Path(__file__).parent / "vectors"
CONV = "room-1"


def keys() -> dict[str, object]:
    rng = drbg("vectors/keys")
    identity, signing, kem = (
        IdentityKeyPair.generate(rng),
        SigningKey.generate(rng),
        KemKeyPair.generate(rng),
    )
    return {
        "identity_private": identity.private_bytes().hex(),
        "identity_public": identity.public.serialize().hex(),
        "identity_fingerprint": identity.public.fingerprint.hex(),
        "signing_private": signing.private_bytes().hex(),
        "signing_public": signing.public.serialize().hex(),
        "kem_private": kem.private_bytes().hex(),
        "kem_public": kem.public.serialize().hex(),
        "signature_label": "envelope",
        "signature_message": b"sotto".hex(),
        "signature": signing.sign("envelope", b"sotto").hex(),
    }


def ratchet() -> dict[str, object]:
    members = [("alice", "phone"), ("bob", "laptop"), ("bob", "phone")]
    chain = SenderChain.create(members, now=NOW, rng=drbg("vectors/ratchet"))
    start = chain.payload()
    steps = [chain.next_key(members, now=NOW) for _ in range(5)]
    salts = [drbg(f"vectors/ratchet/salt/{k.iteration}")(16) for k in steps]
    return {
        "members": [list(m) for m in members],
        "membership_digest": membership_digest(members).hex(),
        "chain_key": start.chain_key.hex(),
        "payload": start.serialize().hex(),
        "steps": [
            {
                "iteration": k.iteration,
                "seed": k.seed.hex(),
                "salt": salt.hex(),
                "key": k.keys(salt).key.hex(),
                "nonce": k.keys(salt).nonce.hex(),
                "key_commitment": k.keys(salt).commitment.hex(),
            }
            for k, salt in zip(steps, salts, strict=True)
        ],
        "next_chain_key": chain.chain_key.hex(),
    }


def chain_state() -> dict[str, object]:
    """Persisted chains: a sender after 3 messages, its receiver after 0 and 3 (1, 2 skipped)."""
    members = [("alice", "phone"), ("bob", "phone")]
    chain = SenderChain.create(members, now=NOW, rng=drbg("vectors/chain-state"), max_messages=500)
    receiver = ReceiverChain.from_payload(chain.payload(), "alice", "phone")
    keys = [chain.next_key(members, now=NOW) for _ in range(4)]
    for iteration in (0, 3):
        receiver.commit(iteration)
    return {
        "chain_id": chain.chain_id.hex(),
        "sender_chain": chain.serialize().hex(),
        "sender_iteration": chain.iteration,
        "receiver_chain": receiver.serialize().hex(),
        "receiver_next_iteration": receiver.next_iteration,
        "skipped": [{"iteration": k.iteration, "seed": k.seed.hex()} for k in keys[1:3]],
        "used": [{"iteration": k.iteration, "seed": k.seed.hex()} for k in (keys[0], keys[3])],
    }


def messaging() -> tuple[dict[str, object], dict[str, object]]:
    alice, bob = make_party("alice"), make_party("bob")
    members = [alice.address, bob.address]
    chain = SenderChain.create(members, now=NOW, rng=drbg("vectors/chain"))
    payload = chain.payload()
    kd = seal_key_distribution(
        alice.device,
        chain,
        conversation_id=CONV,
        recipient_certificate=bob.certificate,
        recipient_identity=bob.identity_public,
        recipient_prekey=bob.prekey(),
        now=NOW,
        rng=drbg("vectors/kd"),
    )
    common = {
        "now": NOW,
        "conversation_id": CONV,
        "sender_identity_public": alice.identity_public.serialize().hex(),
        "sender_certificate": alice.certificate.serialize().hex(),
        "sender_signing_private": alice.device.signing_key.private_bytes().hex(),
    }
    distribution = {
        **common,
        "recipient_identity_public": bob.identity_public.serialize().hex(),
        "recipient_device_secrets": bob.device.serialize().hex(),
        "key_distribution": kd.hex(),
        "expected_payload": payload.serialize().hex(),
    }
    envelopes = []
    for content, options in (
        (Text("hello, bob"), {}),
        (
            Location(515_007_000, -1_276_000, 12, NOW),
            {"expires_in_ms": DAY, "burn_after_read_s": 30},
        ),
    ):
        key_iteration = chain.iteration
        data = seal_envelope(
            alice.device,
            chain,
            members,
            content,
            conversation_id=CONV,
            now=NOW,
            rng=drbg(f"vectors/envelope/{key_iteration}"),
            **options,  # type: ignore[arg-type]
        )
        envelopes.append(
            {
                "content": content.serialize().hex(),
                "message_id": Envelope.parse(data).header.message_id.hex(),
                "salt": Envelope.parse(data).header.salt.hex(),
                "iteration": key_iteration,
                "expires_in_ms": options.get("expires_in_ms", 0),
                "burn_after_read_s": options.get("burn_after_read_s", 0),
                "envelope": data.hex(),
            }
        )
    first = bytes.fromhex(str(envelopes[0]["envelope"]))
    invalid = [
        {
            "description": "suite id changed",
            "envelope": (first[:1] + b"\x00\x02" + first[3:]).hex(),
            "error": "suite_downgrade",
        },
        {
            "description": "version 1 (v2 receivers refuse it)",
            "envelope": (b"\x01" + first[1:]).hex(),
            "error": "unsupported_version",
        },
        {
            "description": "last signature byte flipped",
            "envelope": (first[:-1] + bytes([first[-1] ^ 1])).hex(),
            "error": "bad_signature",
        },
        {"description": "trailing byte", "envelope": (first + b"\x00").hex(), "error": "malformed"},
    ]
    envelope_vectors = {
        **common,
        "chain_id": payload.chain_id.hex(),
        "chain_key": payload.chain_key.hex(),
        "chain_created_at": payload.created_at,
        "envelopes": envelopes,
        "invalid": invalid,
    }
    return distribution, envelope_vectors


def attachment() -> dict[str, object]:
    plaintext = drbg("vectors/attachment/plaintext")(10_000)
    key = drbg("vectors/attachment/key")(32)
    enc = Encryptor(key, chunk_size=4096, rng=drbg("vectors/attachment/salt"))
    stream = enc.update(plaintext) + enc.finalize()
    return {
        "file_key": key.hex(),
        "chunk_size": 4096,
        "salt": stream[8:40].hex(),
        "plaintext": plaintext.hex(),
        "stream": stream.hex(),
        "digest": enc.digest.hex(),
    }


def safety() -> dict[str, object]:
    a = IdentityKeyPair.generate(drbg("vectors/safety/a")).public
    b = IdentityKeyPair.generate(drbg("vectors/safety/b")).public
    return {
        "user_a": "alice",
        "identity_a": a.serialize().hex(),
        "user_b": "bob",
        "identity_b": b.serialize().hex(),
        "safety_number": safety_number("alice", a, "bob", b),
    }


def keystore() -> dict[str, object]:
    params = KdfParams(memory_kib=KdfParams.MIN_MEMORY_KIB, iterations=2, lanes=1)
    entries = {"device": b"device secrets".hex(), "identity": b"identity secrets".hex()}
    sealed = seal_keystore(
        {k: bytes.fromhex(v) for k, v in entries.items()},
        "correct horse battery staple",
        params=params,
        rng=drbg("vectors/keystore"),
    )
    return {
        "passphrase": "correct horse battery staple",
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "lanes": params.lanes,
        "salt": sealed[13:29].hex(),
        "nonce": sealed[29:41].hex(),
        "entries": entries,
        "keystore": sealed.hex(),
    }


def token() -> dict[str, object]:
    key = SigningKey.generate(drbg("vectors/token"))
    nonce = drbg("vectors/token/nonce")(16)
    issued = connect_token.issue("phone-1", key.key, "abc123/prod", now=NOW // 1000, nonce=nonce)
    return {
        "signing_private": key.private_bytes().hex(),
        "signing_public": key.public.serialize().hex(),
        "device_id": "phone-1",
        "audience": "abc123/prod",
        "now": NOW // 1000,
        "nonce": nonce.hex(),
        "token": issued,
    }


def build() -> dict[str, dict[str, object]]:
    distribution, envelopes = messaging()
    return {
        "keys": keys(),
        "ratchet": ratchet(),
        "chain_state": chain_state(),
        "key_distribution": distribution,
        "envelope": envelopes,
        "attachment": attachment(),
        "safety_number": safety(),
        "keystore": keystore(),
        "connect_token": token(),
    }


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    for name, data in build().items():
        (VECTORS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {VECTORS / name}.json")


if __name__ == "__main__":
    main()
