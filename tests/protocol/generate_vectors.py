"""Write tests/protocol/vectors/*.json: ``python -m tests.protocol.generate_vectors``.

Deterministic parts (ECDSA is RFC 6979, AES-GCM and HMAC are deterministic)
are reproduced byte for byte by test_vectors.py from the inputs in each file.
ML-DSA signatures and HPKE encapsulations are randomized: for those the files
carry the private keys and the ciphertexts, and the test verifies or opens them.
All byte strings are lowercase hex.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

from sotto.protocol import connect_token
from sotto.protocol.attachments import Encryptor
from sotto.protocol.certificates import DeviceRevocation
from sotto.protocol.content import (
    CallSignal,
    Content,
    Control,
    File,
    Location,
    Receipt,
    Text,
    UnknownContent,
    pad,
)
from sotto.protocol.conversation import Conversation, LocalDevice, Member
from sotto.protocol.device_sync import DeviceSync, SyncEntry
from sotto.protocol.distribution import (
    KeyDistribution,
    seal_key_distribution,
    seal_session_distribution,
)
from sotto.protocol.envelope import Envelope, seal_envelope
from sotto.protocol.keys import IdentityKeyPair, KemKeyPair, SigningKey
from sotto.protocol.keystore import KdfParams, seal_keystore
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    MembershipOperation,
    MembershipState,
    Rebind,
    Remove,
    Role,
    SetRole,
    sign_operation,
    verify_log,
)
from sotto.protocol.ratchet import ReceiverChain, SenderChain, chain_step, membership_digest
from sotto.protocol.safety import IdentityTracker, safety_number
from sotto.protocol.sessions import PairwiseSessions

from .helpers import DAY, NOW, Party, drbg, make_party

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
    secrets_before = bob.device.serialize()
    [one_time] = bob.device.new_one_time_prekeys(1, now=NOW - DAY, rng=drbg("vectors/otk"))
    kd_one_time = seal_key_distribution(
        alice.device,
        chain,
        conversation_id=CONV,
        recipient_certificate=bob.certificate,
        recipient_identity=bob.identity_public,
        recipient_prekey=one_time,
        now=NOW,
        rng=drbg("vectors/kd-one-time"),
    )
    distribution = {
        **common,
        "recipient_identity_public": bob.identity_public.serialize().hex(),
        "recipient_device_secrets": secrets_before.hex(),
        "key_distribution": kd.hex(),
        "expected_payload": payload.serialize().hex(),
        "one_time": {
            "recipient_device_secrets": bob.device.serialize().hex(),
            "prekey_id": one_time.prekey_id,
            "key_distribution": kd_one_time.hex(),
        },
        "invalid": _invalid_distributions(kd, alice),
        "session": _session_vector(alice, bob, chain),
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
        {
            "description": "header field (timestamp) altered, not re-signed",
            "envelope": _flip(first, 45).hex(),  # a timestamp byte (ids room-1, alice, phone)
            "error": "bad_signature",
        },
        {
            "description": "ciphertext altered (signature and digest intact)",
            "envelope": _flip(first, len(first) - 150).hex(),
            "error": "ciphertext_tampered",
        },
        {
            "description": "key commitment altered and re-signed by the sender",
            "envelope": _resigned_envelope(first, alice, key_commitment=bytes(32)).hex(),
            "error": "key_commitment_mismatch",
        },
        {
            "description": "salt altered and re-signed by the sender",
            "envelope": _resigned_envelope(first, alice, salt=bytes(16)).hex(),
            "error": "key_commitment_mismatch",
        },
        {
            "description": "unknown chain id, re-signed by the sender",
            "envelope": _resigned_envelope(first, alice, chain_id=bytes(16)).hex(),
            "error": "unknown_chain",
        },
        {
            "description": "for another conversation",
            "envelope": _resigned_envelope(first, alice, conversation_id="room-2").hex(),
            "error": "wrong_conversation",
        },
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


def _session_vector(alice: Party, bob: Party, chain: SenderChain) -> dict[str, object]:
    """A prekey distribution that establishes a session (§16), then two over it."""
    rng = drbg("vectors/session")
    offered = PairwiseSessions.new_send_session(
        bob.address,
        bob.certificate.device_key.serialize(),
        bob.identity_public.fingerprint,
        now=NOW,
        rng=rng,
    )
    establish = seal_key_distribution(
        alice.device, chain, conversation_id=CONV, recipient_certificate=bob.certificate,
        recipient_identity=bob.identity_public, recipient_prekey=bob.prekey(), now=NOW,
        rng=rng, session=offered,
    )  # fmt: skip
    steps, session = [], offered
    for _ in range(2):
        data, session = seal_session_distribution(
            alice.device, chain, session, conversation_id="room-2", now=NOW, rng=rng
        )
        steps.append(data)
    return {
        "session_id": offered.session_id.hex(),
        "session_key": offered.chain_key.hex(),
        "establishing_distribution": establish.hex(),
        "session_distributions": [d.hex() for d in steps],
        "step_seeds": [chain_step(offered.chain_key)[0].hex()],
    }


def _resigned_envelope(data: bytes, sender: Party, **changes: object) -> bytes:
    envelope = Envelope.parse(data)
    header = replace(envelope.header, **changes)  # type: ignore[arg-type]
    signed = replace(envelope, header=header)
    signature = sender.device.signing_key.sign("envelope", signed.signed_bytes())
    return replace(signed, signature=signature).serialize()


def _resigned_distribution(kd: bytes, sender: Party, **changes: object) -> bytes:
    parsed = replace(KeyDistribution.parse(kd), **changes)  # type: ignore[arg-type]
    signature = sender.device.signing_key.sign("key-distribution", parsed.body())
    return replace(parsed, signature=signature).serialize()


def _invalid_distributions(kd: bytes, sender: Party) -> list[dict[str, str]]:
    sealed = KeyDistribution.parse(kd).sealed
    cases = [
        ("suite id changed", kd[:1] + b"\x00\x02" + kd[3:], "suite_downgrade"),
        ("version 1", b"\x01" + kd[1:], "unsupported_version"),
        ("trailing byte", kd + b"\x00", "malformed"),
        ("last signature byte flipped", kd[:-1] + bytes([kd[-1] ^ 1]), "bad_signature"),
        ("timestamp altered, not re-signed", _flip(kd, 52), "bad_signature"),
        (
            "addressed to another device (re-signed)",
            _resigned_distribution(kd, sender, recipient_device_id="laptop"),
            "wrong_recipient",
        ),
        (
            "moved to another conversation (re-signed)",
            _resigned_distribution(kd, sender, conversation_id="room-2"),
            "wrong_conversation",
        ),
        (
            "sealed chain key altered (re-signed)",
            _resigned_distribution(kd, sender, sealed=_flip(sealed, len(sealed) - 1)),
            "decryption_failed",
        ),
        (
            "sealed to a prekey the recipient does not hold (re-signed)",
            _resigned_distribution(kd, sender, prekey_id=999),
            "prekey_unavailable",
        ),
    ]
    return [{"description": d, "key_distribution": x.hex(), "error": e} for d, x, e in cases]


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


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
        "invalid": _invalid_streams(key),
    }


def _invalid_streams(key: bytes) -> dict[str, object]:
    """A small stream (two full chunks and a final one) and what each change gives."""
    plaintext = drbg("vectors/attachment/short")(2 * 4096 + 100)
    enc = Encryptor(key, chunk_size=4096, rng=drbg("vectors/attachment/short-salt"))
    stream = bytes(enc.update(plaintext) + enc.finalize())
    frame = 8 + 4096 + 16
    head, f0, f1, last = (
        stream[:40],
        stream[40 : 40 + frame],
        stream[40 + frame : 40 + 2 * frame],
        stream[40 + 2 * frame :],
    )
    bad_size = stream[:4] + (100).to_bytes(4, "big") + stream[8:]
    cases = [
        ("chunks 0 and 1 swapped", head + f1 + f0 + last, "attachment_out_of_order"),
        ("chunk 1 dropped", head + f0 + last, "attachment_out_of_order"),
        ("chunk 0 duplicated", head + f0 + f0 + f1 + last, "attachment_out_of_order"),
        ("final chunk cut off", head + f0 + f1, "attachment_truncated"),
        ("cut inside the final chunk", stream[:-60], "attachment_truncated"),
        ("a ciphertext byte flipped", _flip(stream, 100), "attachment_tampered"),
        ("a salt byte flipped", _flip(stream, 39), "attachment_tampered"),
        ("one byte after the final chunk", stream + b"\x00", "attachment_tampered"),
        ("chunk size 100 in the header", bad_size, "malformed"),
    ]
    return {
        "plaintext_size": len(plaintext),
        "stream": stream.hex(),
        "digest": enc.digest.hex(),
        "cases": [{"description": d, "stream": x.hex(), "error": e} for d, x, e in cases],
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
    header = 4 + 4 + 4 + 1
    out_of_range = sealed[:4] + (1024).to_bytes(4, "big") + sealed[8:]
    invalid = [
        ("another passphrase", sealed, "wrong horse battery staple", "wrong_passphrase"),
        ("a salt byte flipped", _flip(sealed, header), None, "wrong_passphrase"),
        ("the check value flipped", _flip(sealed, header + 16 + 12), None, "wrong_passphrase"),
        ("an iterations byte changed", _flip(sealed, 11), None, "wrong_passphrase"),
        ("a body byte flipped", _flip(sealed, len(sealed) - 1), None, "corrupt_keystore"),
        ("memory 1 MiB, under the floor", out_of_range, None, "corrupt_keystore"),
        ("truncated", sealed[:-1], None, "corrupt_keystore"),
        ("not a keystore", b"sotto", None, "corrupt_keystore"),
    ]
    return {
        "passphrase": "correct horse battery staple",
        "invalid": [
            {"description": d, "keystore": x.hex(), "passphrase": pw, "error": e}
            for d, x, pw, e in invalid
        ],
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
    claims_b64, signature_b64 = issued.split(".")
    other_key = SigningKey.generate(drbg("vectors/token/other"))
    forged = connect_token.issue(
        "phone-1", other_key.key, "abc123/prod", now=NOW // 1000, nonce=nonce
    )
    loose = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "v": 1,
                    "dev": "phone-1",
                    "ts": NOW // 1000,
                    "nonce": nonce.hex(),
                    "aud": "abc123/prod",
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    v2 = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(claims_b64 + "==").replace(b'"v":1', b'"v":2')
        )
        .rstrip(b"=")
        .decode()
    )
    invalid: list[dict[str, object]] = [
        {"description": "signed by another key", "token": forged, "error": "bad_signature"},
        {
            "description": "signature byte changed",
            "token": f"{claims_b64}.{_b64_flip(signature_b64)}",
            "error": "bad_signature",
        },
        {
            "description": "another audience",
            "token": issued,
            "error": "wrong_audience",
            "audience": "abc123/dev",
        },
        {
            "description": "301 s later",
            "token": issued,
            "error": "stale_token",
            "now": NOW // 1000 + 301,
        },
        {
            "description": "claims not canonical",
            "token": f"{loose}.{signature_b64}",
            "error": "bad_token",
        },
        {
            "description": "base64 padding",
            "token": f"{claims_b64}=.{signature_b64}",
            "error": "bad_token",
        },
        {"description": "three parts", "token": f"{issued}.x", "error": "bad_token"},
        {
            "description": "version 2",
            "token": f"{v2}.{signature_b64}",
            "error": "unsupported_version",
        },
        {"description": "too long", "token": "a" * 1025, "error": "bad_token"},
    ]
    return {
        "invalid": invalid,
        "signing_private": key.private_bytes().hex(),
        "signing_public": key.public.serialize().hex(),
        "device_id": "phone-1",
        "audience": "abc123/prod",
        "now": NOW // 1000,
        "nonce": nonce.hex(),
        "token": issued,
    }


def _b64_flip(text: str) -> str:
    """Change one base64url character in the middle (a different, still valid encoding)."""
    i = len(text) // 2
    return text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]


def content() -> dict[str, object]:
    """Every content type's encoding (§7): what each parses to."""
    message_id, call_id = drbg("vectors/content/m")(16), drbg("vectors/content/c")(16)
    items: list[tuple[str, Content]] = [
        ("text", Text("hello, bob")),
        (
            "file",
            File(
                "obj-1",
                drbg("vectors/content/k")(32),
                drbg("vectors/content/d")(48),
                12345,
                "report.pdf",
                "application/pdf",
            ),
        ),
        ("location", Location(515_007_000, -1_276_000, 12, NOW)),
        ("location with label", Location(515_007_000, -1_276_000, 12, NOW, "Wharf 3, gate B")),
        ("receipt", Receipt(Receipt.READ, (message_id, call_id))),
        ("control", Control(Control.DELETE_MESSAGE, message_id)),
        (
            "device sync",
            DeviceSync.of(
                [
                    SyncEntry(SyncEntry.CONTACT, "bob", "usr-b0b", NOW),
                    SyncEntry(SyncEntry.CONTACT, "carol", "", NOW + 1),
                    SyncEntry(SyncEntry.LABEL, "room-0123456789abcdef01234567", "ops", NOW + 2),
                ]
            ).to_control(),
        ),
        ("call_signal", CallSignal(call_id, CallSignal.OFFER, "v=0\r\no=- 0 0 IN IP4 0.0.0.0")),
        ("unknown type 0x7f", UnknownContent(0x7F, b"future")),
    ]
    return {
        "contents": [
            {
                "name": name,
                "content": item.serialize().hex(),
                "size_class": pad(item.serialize())[0],
                "fields": _fields(item),
            }
            for name, item in items
        ]
    }


def _fields(item: Content) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in vars(item).items():
        if isinstance(value, bytes):
            out[key] = value.hex()
        elif isinstance(value, tuple):
            out[key] = [v.hex() for v in value]
        else:
            out[key] = value
    return out


def revocation() -> dict[str, object]:
    rng = drbg("vectors/revocation")
    identity = IdentityKeyPair.generate(rng)
    revoked = DeviceRevocation.issue(identity, "alice", "laptop", revoked_at=NOW)
    return {
        "identity_private": identity.private_bytes().hex(),
        "identity_public": identity.public.serialize().hex(),
        "user_id": "alice",
        "device_id": "laptop",
        "revoked_at": NOW,
        "tbs": revoked.tbs().hex(),
        "revocation": revoked.serialize().hex(),
    }


def _op(signer: Party, state: MembershipState | None, change: Change, at: int) -> bytes:
    return sign_operation(
        signer.device, signer.identity_public, state, change, now=at, conversation_id=CONV
    )


def _unchecked_op(signer: Party, state: MembershipState, change: Change, at: int) -> bytes:
    """What a hostile client sends: signed, but not checked against the rules first."""
    op = MembershipOperation(
        state.conversation_id, state.seq + 1, state.head, at, signer.device.certificate, change,
        bytes(96),
    )  # fmt: skip
    signature = signer.device.signing_key.sign("membership", op.body())
    return replace(op, signature=signature).serialize()


def membership() -> dict[str, object]:
    """A room's log from its creation (§15), the state it verifies to, and broken logs."""
    alice, bob, carol, dave = (make_party(u) for u in ("alice", "bob", "carol", "dave"))
    bob2 = make_party("bob", "laptop", seed="vectors/bob reinstalled")
    everyone = [alice, bob, carol, dave, bob2]
    keys = [p.identity_public for p in everyone]

    def entry(party: Party, role: int = Role.MEMBER) -> MemberEntry:
        return MemberEntry.of(party.user_id, party.identity_public, role)

    steps: list[tuple[Party, Change]] = [
        (alice, Create(ConversationKind.ROOM, (entry(alice, Role.MODERATOR), entry(bob)))),
        (alice, Add((entry(carol), entry(dave)))),
        (alice, SetRole("bob", Role.MODERATOR)),
        (bob, Remove(("dave",))),
        (bob2, Rebind(bob2.identity_public.fingerprint)),
        (carol, Leave()),
    ]
    ops: list[bytes] = []
    state: MembershipState | None = None
    at = NOW
    for signer, change in steps:
        at += 1000
        ops.append(_op(signer, state, change, at))
        state = verify_log(ops, keys, conversation_id=CONV, now=at)
    assert state is not None
    base = verify_log(ops[:3], keys, conversation_id=CONV, now=at)
    fork = _op(alice, base, Remove(("carol",)), at)
    after_add = verify_log(ops[:2], keys, conversation_id=CONV, now=at)
    by_member = _unchecked_op(carol, after_add, Add((entry(bob2),)), at)
    self_promotion = _unchecked_op(carol, base, SetRole("carol", Role.MODERATOR), at)
    broken = [
        ("empty log", [], "log_truncated"),
        ("starts after its creation", ops[1:], "log_truncated"),
        ("signature byte flipped", [ops[0], _flip(ops[1], len(ops[1]) - 3)], "membership_forged"),
        (
            "operations 1 and 2 swapped",
            [ops[0], ops[2], ops[1], *ops[3:]],
            "operation_out_of_order",
        ),
        ("operation 2 missing", [ops[0], ops[1], *ops[3:]], "operation_out_of_order"),
        ("operation 1 replayed at the end", [*ops, ops[1]], "operation_replayed"),
        ("a fork at 3 followed by the log's 4", [*ops[:3], fork, *ops[4:]], "log_forked"),
        ("a member adds", [*ops[:2], by_member], "not_moderator"),
        ("a member promotes itself", [*ops[:3], self_promotion], "self_promotion"),
    ]
    return {
        "conversation_id": CONV,
        "now": at,
        "identities": [k.serialize().hex() for k in keys],
        "operations": [op.hex() for op in ops],
        "hashes": [MembershipOperation.parse(op).hash.hex() for op in ops],
        "state": state.serialize().hex(),
        "invalid": [
            {"description": d, "operations": [o.hex() for o in x], "error": e} for d, x, e in broken
        ],
    }


def conversation_state() -> dict[str, object]:
    """Alice's engine state (0x34) after a verified log, one send and one receipt from Bob."""
    alice, bob = make_party("alice"), make_party("bob")
    create = Create(
        ConversationKind.ROOM,
        (MemberEntry.of("alice", alice.identity_public, Role.MODERATOR),
         MemberEntry.of("bob", bob.identity_public)),
    )  # fmt: skip
    log = [_op(alice, None, create, NOW)]
    engines = {}
    for party in (alice, bob):
        local = LocalDevice(party.device, party.identity_public, IdentityTracker())
        engine = Conversation(CONV, local, rng=drbg(f"vectors/conv/{party.user_id}"))
        others = [Member(p.certificate, p.identity_public) for p in (alice, bob) if p is not party]
        engine.update_membership(log, others, now=NOW)
        engines[party.user_id] = engine
    sent = engines["alice"].prepare_send(
        Text("hello"), now=NOW, prekeys={bob.address: bob.prekey()}
    )
    engines["bob"].receive_distribution(sent.distributions[0].data, now=NOW)
    engines["bob"].receive_envelope(sent.envelope, now=NOW)
    reply = engines["bob"].prepare_send(
        Text("hi alice"), now=NOW, prekeys={alice.address: alice.prekey()}
    )
    engines["alice"].receive_distribution(reply.distributions[0].data, now=NOW)
    engines["alice"].receive_envelope(reply.envelope, now=NOW)
    local = engines["alice"].local
    return {
        "conversation_id": CONV,
        "device_secrets": local.secrets.serialize().hex(),
        "identity_public": local.identity.serialize().hex(),
        "tracker": local.tracker.serialize().hex(),
        "state": engines["alice"].serialize().hex(),
        "sender_chain_id": sent.header.chain_id.hex(),
        "receiver_chain_id": reply.header.chain_id.hex(),
        "membership_head": engines["alice"].membership.head.hex(),  # type: ignore[union-attr]
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
        "content": content(),
        "revocation": revocation(),
        "membership": membership(),
        "conversation_state": conversation_state(),
    }


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    for name, data in build().items():
        (VECTORS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {VECTORS / name}.json")


if __name__ == "__main__":
    main()
