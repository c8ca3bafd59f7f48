"""The committed vectors, rebuilt byte for byte from their inputs or opened and verified."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sotto.protocol import connect_token, errors
from sotto.protocol.attachments import Decryptor, Encryptor
from sotto.protocol.certificates import DeviceCertificate, DeviceRevocation, Revocations
from sotto.protocol.content import pad, parse_content, unpad
from sotto.protocol.conversation import Conversation, LocalDevice
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.distribution import KeyDistribution, open_key_distribution
from sotto.protocol.envelope import Envelope, EnvelopeHeader, open_envelope, verify_envelope
from sotto.protocol.keys import IdentityKeyPair, IdentityPublicKey, KemKeyPair, SigningKey
from sotto.protocol.keystore import KdfParams, open_keystore, seal_keystore
from sotto.protocol.membership import MembershipOperation, MembershipState, verify_log
from sotto.protocol.ratchet import ChainKeyPayload, ReceiverChain, membership_digest
from sotto.protocol.replay import ReplayGuard
from sotto.protocol.safety import IdentityTracker, safety_number
from sotto.protocol.sessions import PairwiseSessions

from . import generate_vectors

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_every_vector_file_is_committed():
    assert sorted(p.stem for p in VECTORS.glob("*.json")) == sorted(generate_vectors.build().keys())


def test_key_vectors():
    v = load("keys")
    identity = IdentityKeyPair.from_private_bytes(h(v["identity_private"]))
    assert identity.public.serialize().hex() == v["identity_public"]
    assert identity.public.fingerprint.hex() == v["identity_fingerprint"]
    signing = SigningKey.from_private_bytes(h(v["signing_private"]))
    assert signing.public.serialize().hex() == v["signing_public"]
    assert (
        KemKeyPair.from_private_bytes(h(v["kem_private"])).public.serialize().hex()
        == v["kem_public"]
    )
    # RFC 6979: the signature is reproduced exactly.
    assert signing.sign(v["signature_label"], h(v["signature_message"])).hex() == v["signature"]


def test_ratchet_vectors():
    v = load("ratchet")
    assert membership_digest([tuple(m) for m in v["members"]]).hex() == v["membership_digest"]
    payload = ChainKeyPayload.parse(h(v["payload"]))
    assert payload.chain_key.hex() == v["chain_key"]
    chain = ReceiverChain.from_payload(payload, "alice", "phone")
    for step in v["steps"]:
        key = chain.peek(step["iteration"])
        assert key.seed.hex() == step["seed"]
        keys = key.keys(h(step["salt"]))
        assert (keys.key.hex(), keys.nonce.hex(), keys.commitment.hex()) == (
            step["key"],
            step["nonce"],
            step["key_commitment"],
        )
        chain.commit(step["iteration"])
    assert chain.chain_key.hex() == v["next_chain_key"]


def test_key_distribution_vector_opens():
    v = load("key_distribution")
    chain = _open_vector_distribution(v, h(v["key_distribution"]), v["recipient_device_secrets"])
    expected = ChainKeyPayload.parse(h(v["expected_payload"]))
    assert (chain.chain_id, chain.chain_key) == (expected.chain_id, expected.chain_key)


def _open_vector_distribution(v: dict[str, Any], data: bytes, secrets: str) -> ReceiverChain:
    opened = open_key_distribution(
        data,
        DeviceSecrets.parse(h(secrets)),
        IdentityPublicKey.parse(h(v["recipient_identity_public"])),
        sender_certificate=DeviceCertificate.parse(h(v["sender_certificate"])),
        sender_identity=IdentityPublicKey.parse(h(v["sender_identity_public"])),
        now=v["now"],
        replay=ReplayGuard(),
        conversation_id=v["conversation_id"],
    )
    return opened.chain


def test_one_time_prekey_distribution_vector_opens_and_consumes_the_prekey():
    v = load("key_distribution")
    one_time = v["one_time"]
    recipient = DeviceSecrets.parse(h(one_time["recipient_device_secrets"]))
    assert one_time["prekey_id"] in recipient.one_time_prekeys
    chain = open_key_distribution(
        h(one_time["key_distribution"]),
        recipient,
        IdentityPublicKey.parse(h(v["recipient_identity_public"])),
        sender_certificate=DeviceCertificate.parse(h(v["sender_certificate"])),
        sender_identity=IdentityPublicKey.parse(h(v["sender_identity_public"])),
        now=v["now"],
        replay=ReplayGuard(),
    )
    assert chain.chain.chain_key == ChainKeyPayload.parse(h(v["expected_payload"])).chain_key
    assert one_time["prekey_id"] not in recipient.one_time_prekeys


def test_session_vectors_establish_a_session_and_open_over_it():
    v = load("key_distribution")
    session = v["session"]
    recipient = DeviceSecrets.parse(h(v["recipient_device_secrets"]))
    recipient_identity = IdentityPublicKey.parse(h(v["recipient_identity_public"]))
    sender_certificate = DeviceCertificate.parse(h(v["sender_certificate"]))
    sender_identity = IdentityPublicKey.parse(h(v["sender_identity_public"]))
    sessions = PairwiseSessions()

    def open_one(data: bytes) -> Any:
        return open_key_distribution(
            data, recipient, recipient_identity, sender_certificate=sender_certificate,
            sender_identity=sender_identity, now=v["now"], replay=ReplayGuard(), sessions=sessions,
        )  # fmt: skip

    established = open_one(h(session["establishing_distribution"]))
    assert established.session_id.hex() == session["session_id"]
    assert established.session_key.hex() == session["session_key"]
    sender = (sender_certificate.user_id, sender_certificate.device_id)
    sessions.install_receive(
        sender, sender_certificate.device_key.serialize(), sender_identity.fingerprint,
        established.session_id, established.session_key, now=v["now"],
    )  # fmt: skip
    expected = ChainKeyPayload.parse(h(v["expected_payload"]))
    for data in session["session_distributions"]:
        opened = open_one(h(data))
        assert opened.chain.chain_key == expected.chain_key
    # The spec's step formula, by hand: seed_0 = HMAC-SHA384(SK_0, 0x01)[0:32].
    seed = hmac.digest(h(session["session_key"]), b"\x01", hashlib.sha384)[:32]
    assert seed.hex() == session["step_seeds"][0]
    first = KeyDistribution.parse(h(session["session_distributions"][0]))
    material = HKDF(hashes.SHA384(), 44, salt=first.salt, info=b"sotto-v2 session-step\x00").derive(
        seed
    )
    payload = AESGCM(material[:32]).decrypt(material[32:], first.sealed, first.header())
    assert ChainKeyPayload.parse(payload).chain_key == expected.chain_key


def test_invalid_distribution_vectors_fail_with_their_code():
    v = load("key_distribution")
    assert len(v["invalid"]) >= 8
    for bad in v["invalid"]:
        with pytest.raises(errors.ProtocolError) as caught:
            _open_vector_distribution(v, h(bad["key_distribution"]), v["recipient_device_secrets"])
        assert caught.value.code == bad["error"], bad["description"]


def test_envelope_vectors_are_reproduced_byte_for_byte():
    v = load("envelope")
    signing = SigningKey.from_private_bytes(h(v["sender_signing_private"]))
    cert = DeviceCertificate.parse(h(v["sender_certificate"]))
    identity = IdentityPublicKey.parse(h(v["sender_identity_public"]))
    cert.verify(identity, now=v["now"])  # ML-DSA + ECDSA, committed (ML-DSA is randomized)
    assert cert.device_key == signing.public
    sender_chain = ReceiverChain.from_payload(
        ChainKeyPayload(h(v["chain_id"]), 0, h(v["chain_key"]), v["chain_created_at"]),
        cert.user_id,
        cert.device_id,
    )
    for item in v["envelopes"]:
        keys = sender_chain.peek(item["iteration"]).keys(h(item["salt"]))
        sender_chain.commit(item["iteration"])
        size_class, padded = pad(h(item["content"]))
        expires = item["expires_in_ms"]
        header = EnvelopeHeader(
            v["conversation_id"], cert.user_id, cert.device_id, h(item["message_id"]), v["now"],
            v["now"] + expires if expires else 0, item["burn_after_read_s"], size_class,
            h(v["chain_id"]), item["iteration"], h(item["salt"]), keys.commitment,
        )  # fmt: skip
        ciphertext = AESGCM(keys.key).encrypt(keys.nonce, padded, header.core())
        digest = hashlib.sha384(ciphertext).digest()
        signature = signing.sign("envelope", header.core() + digest)
        rebuilt = Envelope(header, digest, ciphertext, signature).serialize()
        assert rebuilt.hex() == item["envelope"]
        verify_envelope(rebuilt, sender_certificate=cert, sender_identity=identity, now=v["now"])


def test_envelope_vectors_open_and_invalid_ones_fail_with_their_code():
    v = load("envelope")
    cert = DeviceCertificate.parse(h(v["sender_certificate"]))
    identity = IdentityPublicKey.parse(h(v["sender_identity_public"]))
    payload = ChainKeyPayload(h(v["chain_id"]), 0, h(v["chain_key"]), v["chain_created_at"])
    chains = {payload.chain_id: ReceiverChain.from_payload(payload, cert.user_id, cert.device_id)}
    options: dict[str, Any] = {
        "conversation_id": v["conversation_id"],
        "sender_certificate": cert,
        "sender_identity": identity,
        "chains": chains,
        "now": v["now"],
    }
    for bad in v["invalid"]:
        with pytest.raises(errors.ProtocolError) as caught:
            open_envelope(h(bad["envelope"]), replay=ReplayGuard(), **options)
        assert caught.value.code == bad["error"], bad["description"]
    replay = ReplayGuard()
    for item in v["envelopes"]:
        opened = open_envelope(h(item["envelope"]), replay=replay, **options)
        assert opened.content.serialize().hex() == item["content"]


def test_attachment_vector():
    v = load("attachment")
    salt = h(v["salt"])
    enc = Encryptor(h(v["file_key"]), chunk_size=v["chunk_size"], rng=lambda n: salt[:n])
    stream = enc.update(h(v["plaintext"])) + enc.finalize()
    assert stream.hex() == v["stream"]
    assert enc.digest.hex() == v["digest"]
    dec = Decryptor(h(v["file_key"]))
    plain = dec.update(h(v["stream"])) + dec.finalize(expected_digest=h(v["digest"]))
    assert plain.hex() == v["plaintext"]


def test_invalid_attachment_vectors_fail_with_their_code():
    v = load("attachment")
    short = v["invalid"]
    dec = Decryptor(h(v["file_key"]))
    dec.update(h(short["stream"]))
    dec.finalize(expected_digest=h(short["digest"]), expected_size=short["plaintext_size"])
    for bad in short["cases"]:
        with pytest.raises(errors.ProtocolError) as caught:
            _decrypt(
                h(v["file_key"]), h(bad["stream"]), h(short["digest"]), short["plaintext_size"]
            )
        assert caught.value.code == bad["error"], bad["description"]


def _decrypt(key: bytes, stream: bytes, digest: bytes, size: int) -> bytes:
    dec = Decryptor(key)
    return dec.update(stream) + dec.finalize(expected_digest=digest, expected_size=size)


def test_invalid_keystore_vectors_fail_with_their_code():
    v = load("keystore")
    for bad in v["invalid"]:
        with pytest.raises(errors.KeystoreError) as caught:
            open_keystore(h(bad["keystore"]), bad["passphrase"] or v["passphrase"])
        assert caught.value.code == bad["error"], bad["description"]


def test_invalid_connect_token_vectors_fail_with_their_code():
    v = load("connect_token")
    key = SigningKey.from_private_bytes(h(v["signing_private"])).key.public_key()
    for bad in v["invalid"]:
        with pytest.raises(errors.TokenError) as caught:
            connect_token.verify(
                bad["token"], key, audience=bad.get("audience", v["audience"]),
                now=bad.get("now", v["now"]),
            )  # fmt: skip
        assert caught.value.code == bad["error"], bad["description"]


def test_content_vectors_parse_to_their_fields():
    for item in load("content")["contents"]:
        content = parse_content(h(item["content"]))
        assert content.serialize().hex() == item["content"], item["name"]
        assert generate_vectors._fields(content) == item["fields"], item["name"]
        assert pad(content.serialize())[0] == item["size_class"]


def test_revocation_vector_verifies_and_its_ecdsa_half_is_reproduced():
    v = load("revocation")
    identity = IdentityKeyPair.from_private_bytes(h(v["identity_private"]))
    assert identity.public.serialize().hex() == v["identity_public"]
    revocation = DeviceRevocation.parse(h(v["revocation"]))
    assert (revocation.user_id, revocation.device_id, revocation.revoked_at) == (
        v["user_id"], v["device_id"], v["revoked_at"],
    )  # fmt: skip
    assert revocation.tbs().hex() == v["tbs"]
    assert identity.sign("device-revocation", revocation.tbs())[0] == revocation.ecdsa_signature
    revocations = Revocations()
    revocations.add(revocation, identity.public)
    assert revocations.is_revoked("alice", "laptop")
    with pytest.raises(errors.BadCertificate):
        replace(revocation, revoked_at=v["revoked_at"] + 1).verify(identity.public)


def test_membership_log_vector_verifies_to_its_state():
    v = load("membership")
    identities = [IdentityPublicKey.parse(h(k)) for k in v["identities"]]
    ops = [h(op) for op in v["operations"]]
    assert [MembershipOperation.parse(op).hash.hex() for op in ops] == v["hashes"]
    state = verify_log(ops, identities, conversation_id=v["conversation_id"], now=v["now"])
    assert state.serialize().hex() == v["state"]
    assert MembershipState.parse(h(v["state"])) == state
    # Incrementally, one operation at a time, the same state.
    step = verify_log(ops[:1], identities, conversation_id=v["conversation_id"], now=v["now"])
    for op in ops[1:]:
        step = step.extend([op], identities, now=v["now"])
    assert step == state


def test_invalid_membership_log_vectors_fail_with_their_code():
    v = load("membership")
    identities = [IdentityPublicKey.parse(h(k)) for k in v["identities"]]
    for bad in v["invalid"]:
        with pytest.raises(errors.MembershipError) as caught:
            verify_log(
                [h(op) for op in bad["operations"]], identities,
                conversation_id=v["conversation_id"], now=v["now"],
            )  # fmt: skip
        assert caught.value.code == bad["error"], bad["description"]


def test_conversation_state_vector_parses_and_reserializes_exactly():
    v = load("conversation_state")
    local = LocalDevice(
        DeviceSecrets.parse(h(v["device_secrets"])),
        IdentityPublicKey.parse(h(v["identity_public"])),
        IdentityTracker.parse(h(v["tracker"])),
    )
    conversation = Conversation.parse(h(v["state"]), local)
    assert conversation.serialize().hex() == v["state"]
    assert conversation.sender_chain_id == h(v["sender_chain_id"])
    assert conversation.receiver_chain_ids(("bob", "phone")) == (h(v["receiver_chain_id"]),)
    assert conversation.membership is not None
    assert conversation.membership.head.hex() == v["membership_head"]


def test_safety_number_vector():
    v = load("safety_number")
    a = IdentityPublicKey.parse(h(v["identity_a"]))
    b = IdentityPublicKey.parse(h(v["identity_b"]))
    assert safety_number(v["user_a"], a, v["user_b"], b) == v["safety_number"]


def test_keystore_vector():
    v = load("keystore")
    params = KdfParams(v["memory_kib"], v["iterations"], v["lanes"])
    randomness = iter([h(v["salt"]), h(v["nonce"])])
    entries = {k: h(x) for k, x in v["entries"].items()}
    sealed = seal_keystore(entries, v["passphrase"], params=params, rng=lambda n: next(randomness))
    assert sealed.hex() == v["keystore"]
    assert open_keystore(h(v["keystore"]), v["passphrase"]) == entries


def test_connect_token_vector():
    v = load("connect_token")
    key = SigningKey.from_private_bytes(h(v["signing_private"]))
    token = connect_token.issue(
        v["device_id"], key.key, v["audience"], now=v["now"], nonce=h(v["nonce"])
    )
    assert token == v["token"]
    claims = connect_token.verify(token, key.key.public_key(), audience=v["audience"], now=v["now"])
    assert claims.device_id == v["device_id"]


def test_content_inside_envelope_vectors_parses():
    for item in load("envelope")["envelopes"]:
        content = parse_content(h(item["content"]))
        assert unpad(pad(content.serialize())[1]) == h(item["content"])


def test_hmac_step_matches_the_spec_formula():
    """The spec's ratchet and message-key formulas, computed with hmac and HKDF directly."""
    v = load("ratchet")
    step = v["steps"][0]
    seed = hmac.digest(h(v["chain_key"]), b"\x01", hashlib.sha384)[:32]
    assert seed.hex() == step["seed"]

    def hkdf(info: bytes, length: int) -> bytes:
        return HKDF(hashes.SHA384(), length, salt=h(step["salt"]), info=info).derive(seed)

    material = hkdf(b"sotto-v2 message-key\x00", 44)
    assert (material[:32].hex(), material[32:].hex()) == (step["key"], step["nonce"])
    assert hkdf(b"sotto-v2 key-commitment\x00", 32).hex() == step["key_commitment"]
