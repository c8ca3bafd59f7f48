"""Key distribution and envelopes, end to end in memory: round trips and every tamper case."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sotto.protocol import errors
from sotto.protocol.certificates import DeviceCertificate, DeviceRevocation, Revocations
from sotto.protocol.content import SIZE_BUCKETS, File, Text
from sotto.protocol.distribution import (
    KeyDistribution,
    open_key_distribution,
    seal_key_distribution,
)
from sotto.protocol.envelope import (
    Envelope,
    ExpiryPolicy,
    open_envelope,
    seal_envelope,
    verify_envelope,
)
from sotto.protocol.ratchet import ReceiverChain, SenderChain
from sotto.protocol.wire import SUITE_ID

from .helpers import DAY, NOW, Party, add_device, drbg, flip, make_party

CONV = "room-1"


class Conversation:
    """Alice sends to the other parties; each has its chains and replay guard."""

    def __init__(self, sender: Party, others: list[Party], *, seed: str = "chain") -> None:
        self.sender = sender
        self.others = others
        self.members = [sender.address, *(p.address for p in others)]
        self.chain = SenderChain.create(self.members, now=NOW, rng=drbg(seed))
        self.receivers: dict[str, dict[bytes, ReceiverChain]] = {}
        for party in others:
            kd = self.distribute(party)
            chain = open_key_distribution(
                kd,
                party.device,
                party.identity_public,
                sender_certificate=sender.certificate,
                sender_identity=sender.identity_public,
                now=NOW,
                replay=party.replay,
                conversation_id=CONV,
            ).chain
            self.receivers[party.user_id + "/" + party.device.device_id] = {chain.chain_id: chain}

    def distribute(self, party: Party, **kwargs: object) -> bytes:
        return seal_key_distribution(
            self.sender.device,
            self.chain,
            conversation_id=CONV,
            recipient_certificate=party.certificate,
            recipient_identity=party.identity_public,
            recipient_prekey=party.prekey(),
            now=NOW,
            **kwargs,  # type: ignore[arg-type]
        )

    def send(self, text: str = "hello", **kwargs: object) -> bytes:
        return seal_envelope(
            self.sender.device,
            self.chain,
            self.members,
            Text(text),
            conversation_id=CONV,
            now=NOW,
            rng=drbg(text + str(self.chain.iteration)),
            **kwargs,  # type: ignore[arg-type]
        )

    def receive(self, party: Party, data: bytes, **kwargs: object) -> object:
        options: dict[str, object] = {
            "conversation_id": CONV,
            "sender_certificate": self.sender.certificate,
            "sender_identity": self.sender.identity_public,
            "chains": self.receivers[party.user_id + "/" + party.device.device_id],
            "replay": party.replay,
            "now": NOW,
        }
        options.update(kwargs)
        return open_envelope(data, **options)  # type: ignore[arg-type]


@pytest.fixture
def pair(alice: Party, bob: Party) -> Conversation:
    return Conversation(alice, [bob])


# ---- round trips -------------------------------------------------------------------


def test_recipient_opens_one_to_one_message(pair: Conversation, bob: Party):
    opened = pair.receive(bob, pair.send("hi bob"))
    assert opened.content == Text("hi bob")  # type: ignore[attr-defined]
    assert opened.header.sender_user_id == "alice"  # type: ignore[attr-defined]


def test_every_member_device_opens_the_same_room_message(alice: Party):
    others = [make_party(f"user{i}") for i in range(4)]
    others.append(add_device(others[0], "laptop"))
    room = Conversation(alice, others)
    data = room.send("to everyone")
    for party in others:
        assert room.receive(party, data).content == Text("to everyone")  # type: ignore[attr-defined]


def test_room_message_size_does_not_depend_on_room_size(alice: Party):
    small = Conversation(alice, [make_party("u1")], seed="s")
    big = Conversation(alice, [make_party(f"v{i}") for i in range(6)], seed="b")
    assert len(small.send("same text")) == len(big.send("same text"))


def test_sender_pads_content_to_size_buckets(pair: Conversation):
    lengths = {len(pair.send("x" * n)) - len(pair.send("")) for n in (1, 10, 200)}
    assert lengths == {0}  # all fit the smallest bucket: no length leak within a bucket
    big = Envelope.parse(pair.send("y" * 3000))
    assert len(big.ciphertext) == SIZE_BUCKETS[2] + 16


def test_receiver_opens_out_of_order_messages(pair: Conversation, bob: Party):
    first, second, third = pair.send("1"), pair.send("2"), pair.send("3")
    assert pair.receive(bob, third).content == Text("3")  # type: ignore[attr-defined]
    assert pair.receive(bob, first).content == Text("1")  # type: ignore[attr-defined]
    assert pair.receive(bob, second).content == Text("2")  # type: ignore[attr-defined]


def test_server_verifies_envelope_without_keys(pair: Conversation):
    envelope = verify_envelope(
        pair.send("server sees only ciphertext"),
        sender_certificate=pair.sender.certificate,
        sender_identity=pair.sender.identity_public,
        now=NOW,
    )
    assert envelope.header.conversation_id == CONV


def test_file_content_round_trips_inside_envelope(pair: Conversation, alice: Party, bob: Party):
    file = File("obj-1", bytes(32), bytes(48), 12345, "report.pdf", "application/pdf")
    data = seal_envelope(
        alice.device, pair.chain, pair.members, file, conversation_id=CONV, now=NOW
    )
    assert pair.receive(bob, data).content == file  # type: ignore[attr-defined]


def test_one_time_prekey_opens_once_and_is_deleted(alice: Party, bob: Party):
    [otk] = bob.device.new_one_time_prekeys(1, now=NOW, rng=drbg("otk"))
    chain = SenderChain.create([alice.address, bob.address], now=NOW, rng=drbg("c"))
    kd = seal_key_distribution(
        alice.device,
        chain,
        conversation_id=CONV,
        recipient_certificate=bob.certificate,
        recipient_identity=bob.identity_public,
        recipient_prekey=otk,
        now=NOW,
    )
    opened = open_key_distribution(
        kd,
        bob.device,
        bob.identity_public,
        sender_certificate=alice.certificate,
        sender_identity=alice.identity_public,
        now=NOW,
        replay=bob.replay,
    )
    assert opened.chain.chain_key == chain.chain_key
    assert otk.prekey_id not in bob.device.one_time_prekeys
    with pytest.raises(errors.PrekeyError):
        bob.device.prekey(otk.kind, otk.prekey_id)


# ---- envelope tamper cases: each its own error ----------------------------------


def _offsets(data: bytes) -> dict[str, int]:
    env = Envelope.parse(data)
    core = len(env.header.core())
    return {
        "timestamp": core - 16 - 4 - 1 - 4 - 8 - 8,  # first byte of timestamp
        "digest": core,
        "ciphertext": core + 48 + 4,
        "signature": len(data) - 10,
    }


class _CountingAESGCM:
    """Stands in for AESGCM in envelope.py and counts decryptions."""

    decrypts = 0

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._aead.encrypt(nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        type(self).decrypts += 1
        return self._aead.decrypt(nonce, data, associated_data)


@pytest.mark.parametrize("field", ["timestamp", "digest", "signature"])
def test_receiver_never_decrypts_an_envelope_whose_signature_fails(
    pair: Conversation, bob: Party, monkeypatch: pytest.MonkeyPatch, field: str
):
    """Decrypt after verify: a changed header field, digest or signature is bad_signature,
    and the AEAD never runs on it (no validity oracle); the key stays usable."""
    monkeypatch.setattr("sotto.protocol.envelope.AESGCM", _CountingAESGCM)
    monkeypatch.setattr(_CountingAESGCM, "decrypts", 0)
    data = pair.send()
    offset = _offsets(data)[field] + (7 if field == "timestamp" else 0)
    with pytest.raises(errors.BadSignature):
        pair.receive(bob, flip(data, offset))
    assert _CountingAESGCM.decrypts == 0
    assert pair.receive(bob, data).content == Text("hello")  # type: ignore[attr-defined]
    assert _CountingAESGCM.decrypts == 1


def test_server_and_receiver_name_the_same_rule_for_a_tampered_header(
    pair: Conversation, bob: Party
):
    """The verification layer is one: what the server reports, the receiver reports."""
    tampered = flip(pair.send(), 40)
    with pytest.raises(errors.BadSignature):
        pair.receive(bob, tampered)
    with pytest.raises(errors.BadSignature):
        verify_envelope(
            tampered,
            sender_certificate=pair.sender.certificate,
            sender_identity=pair.sender.identity_public,
            now=NOW,
        )


def test_receiver_rejects_tampered_ciphertext(pair: Conversation, bob: Party):
    data = pair.send()
    with pytest.raises(errors.CiphertextTampered):
        pair.receive(bob, flip(data, _offsets(data)["ciphertext"] + 5))


def test_server_rejects_tampered_ciphertext(pair: Conversation):
    data = pair.send()
    with pytest.raises(errors.CiphertextTampered):
        verify_envelope(
            flip(data, _offsets(data)["ciphertext"]),
            sender_certificate=pair.sender.certificate,
            sender_identity=pair.sender.identity_public,
            now=NOW,
        )


def test_receiver_rejects_tampered_signature(pair: Conversation, bob: Party):
    data = pair.send()
    with pytest.raises(errors.BadSignature):
        pair.receive(bob, flip(data, _offsets(data)["signature"]))


def test_receiver_rejects_suite_downgrade(pair: Conversation, bob: Party):
    data = bytearray(pair.send())
    assert int.from_bytes(data[1:3], "big") == SUITE_ID
    data[1:3] = (0x0000).to_bytes(2, "big")
    with pytest.raises(errors.SuiteDowngrade):
        pair.receive(bob, bytes(data))


def test_receiver_rejects_unknown_version(pair: Conversation, bob: Party):
    with pytest.raises(errors.UnsupportedVersion):
        pair.receive(bob, b"\x01" + pair.send()[1:])  # a version 1 envelope


def test_receiver_rejects_replayed_message_id(pair: Conversation, bob: Party):
    data = pair.send()
    pair.receive(bob, data)
    with pytest.raises(errors.ReplayedMessage):
        pair.receive(bob, data)


def test_receiver_rejects_message_for_another_conversation(pair: Conversation, bob: Party):
    with pytest.raises(errors.WrongConversation):
        pair.receive(bob, pair.send(), conversation_id="room-2")


def test_receiver_rejects_expired_certificate(pair: Conversation, bob: Party):
    data = pair.send()
    with pytest.raises(errors.CertificateExpired):
        pair.receive(bob, data, now=pair.sender.certificate.expires_at)


def test_receiver_rejects_revoked_device(pair: Conversation, alice: Party, bob: Party):
    revocations = Revocations()
    revocation = DeviceRevocation.issue(alice.identity, "alice", "phone", revoked_at=NOW)
    revocations.add(DeviceRevocation.parse(revocation.serialize()), alice.identity_public)
    with pytest.raises(errors.DeviceRevoked):
        pair.receive(bob, pair.send(), revocations=revocations)


def test_receiver_rejects_sender_not_matching_certificate(pair: Conversation, bob: Party):
    mallory = make_party("mallory")
    with pytest.raises(errors.SenderMismatch):
        pair.receive(
            bob,
            pair.send(),
            sender_certificate=mallory.certificate,
            sender_identity=mallory.identity_public,
        )


def test_receiver_rejects_certificate_from_untrusted_identity(pair: Conversation, bob: Party):
    impostor = make_party("alice", seed="another alice identity")
    with pytest.raises(errors.BadCertificate):
        pair.receive(bob, pair.send(), sender_identity=impostor.identity_public)


def test_receiver_rejects_expired_message(pair: Conversation, bob: Party):
    data = pair.send(expires_in_ms=60_000)
    with pytest.raises(errors.MessageExpired):
        pair.receive(bob, data, now=NOW + 60_000)


def test_sender_cannot_exceed_expiry_policy(pair: Conversation):
    with pytest.raises(errors.LimitExceeded):
        pair.send(burn_after_read_s=10, policy=ExpiryPolicy(max_burn_after_read_s=5))


def test_burn_on_read_never_outlives_expiry(pair: Conversation):
    header = Envelope.parse(pair.send(expires_in_ms=60_000, burn_after_read_s=3600)).header
    assert header.delete_at(first_read_at=None) == NOW + 60_000
    assert header.delete_at(first_read_at=NOW + 1000) == NOW + 60_000
    short = Envelope.parse(pair.send("b", expires_in_ms=DAY, burn_after_read_s=10)).header
    assert short.delete_at(first_read_at=NOW + 1000) == NOW + 11_000


def test_receiver_without_chain_reports_unknown_chain(pair: Conversation, carol: Party):
    pair.receivers["carol/phone"] = {}
    with pytest.raises(errors.UnknownChain):
        pair.receive(carol, pair.send())


def test_member_cannot_send_as_another_member(alice: Party, bob: Party, carol: Party):
    """Carol holds Alice's chain key but cannot sign as Alice's device."""
    room = Conversation(alice, [bob, carol])
    genuine = Envelope.parse(room.send())
    forged_sig = carol.device.signing_key.sign("envelope", genuine.signed_bytes())
    forged = replace(genuine, signature=forged_sig).serialize()
    with pytest.raises(errors.BadSignature):
        room.receive(bob, forged)


def test_failed_open_does_not_consume_the_message_key(pair: Conversation, bob: Party):
    data = pair.send()
    with pytest.raises(errors.CiphertextTampered):
        pair.receive(bob, flip(data, _offsets(data)["ciphertext"]))
    assert pair.receive(bob, data).content == Text("hello")  # type: ignore[attr-defined]


def test_envelope_parse_rejects_trailing_bytes(pair: Conversation):
    with pytest.raises(errors.MalformedMessage):
        Envelope.parse(pair.send() + b"\x00")


# ---- key distribution tamper cases ------------------------------------------------


def _open_kd(data: bytes, party: Party, sender: Party, **kwargs: object) -> ReceiverChain:
    options: dict[str, object] = {
        "sender_certificate": sender.certificate,
        "sender_identity": sender.identity_public,
        "now": NOW,
        "replay": party.replay,
    }
    options.update(kwargs)
    return open_key_distribution(data, party.device, party.identity_public, **options).chain  # type: ignore[arg-type]


def test_key_distribution_for_another_device_is_wrong_recipient(
    pair: Conversation, bob: Party, carol: Party
):
    with pytest.raises(errors.WrongRecipient):
        _open_kd(pair.distribute(bob), carol, pair.sender)


def test_key_distribution_replay_is_rejected(pair: Conversation, bob: Party):
    kd = pair.distribute(bob)
    _open_kd(kd, bob, pair.sender)
    with pytest.raises(errors.ReplayedMessage):
        _open_kd(kd, bob, pair.sender)


def test_key_distribution_with_tampered_signature_is_rejected(pair: Conversation, bob: Party):
    kd = pair.distribute(bob)
    with pytest.raises(errors.BadSignature):
        _open_kd(flip(kd, len(kd) - 5), bob, pair.sender)


def test_key_distribution_suite_downgrade_is_rejected(pair: Conversation, bob: Party):
    kd = pair.distribute(bob)
    with pytest.raises(errors.SuiteDowngrade):
        _open_kd(kd[:1] + b"\x00\x02" + kd[3:], bob, pair.sender)


def test_chain_key_resigned_by_another_member_does_not_open(alice: Party, bob: Party, carol: Party):
    """HPKE info binds the sender: Carol cannot pass Alice's sealed chain key off as hers."""
    room = Conversation(alice, [bob, carol])
    genuine = KeyDistribution.parse(room.distribute(bob))
    stolen = replace(genuine, sender_user_id="carol")
    resigned = replace(
        stolen, signature=carol.device.signing_key.sign("key-distribution", stolen.body())
    )
    with pytest.raises(errors.DecryptionFailed):
        _open_kd(resigned.serialize(), bob, carol)


def test_key_distribution_to_revoked_recipient_is_refused(alice: Party, bob: Party):
    revocations = Revocations()
    revocations.revoke("bob", "phone")
    chain = SenderChain.create([alice.address, bob.address], now=NOW, rng=drbg("x"))
    with pytest.raises(errors.DeviceRevoked):
        seal_key_distribution(
            alice.device,
            chain,
            conversation_id=CONV,
            recipient_certificate=bob.certificate,
            recipient_identity=bob.identity_public,
            recipient_prekey=bob.prekey(),
            now=NOW,
            revocations=revocations,
        )


def test_membership_change_forces_a_new_chain(pair: Conversation, carol: Party):
    pair.members.append(carol.address)
    with pytest.raises(errors.RotationRequired):
        pair.send()


def test_device_certificate_round_trips(alice: Party):
    cert = DeviceCertificate.parse(alice.certificate.serialize())
    assert cert == alice.certificate
    cert.verify(alice.identity_public, now=NOW)
