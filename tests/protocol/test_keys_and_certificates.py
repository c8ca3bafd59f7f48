"""Keys, device/prekey certificates and revocations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sotto.protocol import errors
from sotto.protocol.certificates import (
    DeviceCertificate,
    DeviceRevocation,
    PrekeyCertificate,
    PrekeyKind,
    Revocations,
)
from sotto.protocol.device import (
    ONE_TIME_PREKEY_VALIDITY_MS,
    SIGNED_PREKEY_GRACE_MS,
    SIGNED_PREKEY_ROTATION_MS,
    SIGNED_PREKEY_VALIDITY_MS,
    DeviceSecrets,
)
from sotto.protocol.keys import (
    IdentityKeyPair,
    IdentityPublicKey,
    KemKeyPair,
    KemPublicKey,
    SigningKey,
    VerifyingKey,
)

from .helpers import DAY, NOW, Party, drbg, flip


def test_keys_are_reproducible_from_injected_randomness():
    assert IdentityKeyPair.generate(drbg("s")).public == IdentityKeyPair.generate(drbg("s")).public
    assert KemKeyPair.generate(drbg("k")).public == KemKeyPair.generate(drbg("k")).public
    assert SigningKey.generate(drbg("a")).public != SigningKey.generate(drbg("b")).public


def test_private_keys_round_trip_through_bytes():
    identity = IdentityKeyPair.generate(drbg("i"))
    assert IdentityKeyPair.from_private_bytes(identity.private_bytes()).public == identity.public
    kem = KemKeyPair.generate(drbg("k"))
    assert KemKeyPair.from_private_bytes(kem.private_bytes()).public == kem.public
    public = IdentityPublicKey.parse(identity.public.serialize())
    assert public.fingerprint == identity.public.fingerprint
    assert KemPublicKey.parse(kem.public.serialize()) == kem.public


def test_public_key_parsers_reject_garbage():
    with pytest.raises(errors.MalformedMessage):
        VerifyingKey.parse(b"\x04" + bytes(96))  # not on the curve
    with pytest.raises(errors.MalformedMessage):
        IdentityPublicKey.parse(bytes(10))
    with pytest.raises(errors.MalformedMessage):
        KemPublicKey.parse(bytes(1665))


def test_signature_for_one_label_does_not_verify_under_another():
    key = SigningKey.generate(drbg("x"))
    signature = key.sign("envelope", b"data")
    assert key.public.verify("envelope", b"data", signature)
    assert not key.public.verify("key-distribution", b"data", signature)


def test_device_certificate_needs_both_signatures(alice: Party):
    cert = alice.certificate
    cert.verify(alice.identity_public, now=NOW)
    for broken in (
        replace(cert, ecdsa_signature=flip(cert.ecdsa_signature, 50)),
        replace(cert, mldsa_signature=flip(cert.mldsa_signature, 100)),
    ):
        with pytest.raises(errors.BadCertificate):
            broken.verify(alice.identity_public, now=NOW)


def test_device_certificate_binds_every_field(alice: Party):
    cert = alice.certificate
    with pytest.raises(errors.BadCertificate):
        replace(cert, device_id="laptop").verify(alice.identity_public, now=NOW)
    with pytest.raises(errors.BadCertificate):
        replace(cert, expires_at=cert.expires_at + 1).verify(alice.identity_public, now=NOW)


def test_device_certificate_rejected_outside_validity(alice: Party):
    cert = alice.certificate
    with pytest.raises(errors.CertificateExpired):
        cert.verify(alice.identity_public, now=cert.expires_at)
    with pytest.raises(errors.CertificateExpired):
        cert.verify(alice.identity_public, now=cert.issued_at - 1)


def test_revocation_must_be_signed_by_the_identity(alice: Party, bob: Party):
    revocation = DeviceRevocation.issue(bob.identity, "alice", "phone", revoked_at=NOW)
    with pytest.raises(errors.BadCertificate):
        Revocations().add(revocation, alice.identity_public)
    good = DeviceRevocation.issue(alice.identity, "alice", "phone", revoked_at=NOW)
    revocations = Revocations()
    revocations.add(good, alice.identity_public)
    with pytest.raises(errors.DeviceRevoked):
        alice.certificate.verify(alice.identity_public, now=NOW, revocations=revocations)


def test_prekey_certificate_verifies_and_detects_tamper(alice: Party):
    prekey = PrekeyCertificate.parse(alice.prekey().serialize())
    prekey.verify(alice.certificate, now=NOW)
    with pytest.raises(errors.BadCertificate):
        replace(prekey, prekey_id=prekey.prekey_id + 1).verify(alice.certificate, now=NOW)
    with pytest.raises(errors.CertificateExpired):
        prekey.verify(alice.certificate, now=prekey.expires_at)


def test_signed_prekey_rotates_and_keeps_the_previous_until_its_grace_ends(alice: Party):
    first = alice.prekey()
    later = first.created_at + SIGNED_PREKEY_ROTATION_MS
    assert alice.device.signed_prekey_due(now=later)
    second = alice.device.rotate_signed_prekey(now=later, rng=drbg("r"))
    assert second.prekey_id != first.prekey_id
    alice.device.prune(now=first.expires_at)  # senders may no longer use it...
    assert alice.device.prekey(PrekeyKind.SIGNED, first.prekey_id)  # ...mail in flight opens
    alice.device.prune(now=first.expires_at + SIGNED_PREKEY_GRACE_MS)
    with pytest.raises(errors.PrekeyError):
        alice.device.prekey(PrekeyKind.SIGNED, first.prekey_id)


def test_signed_prekey_private_key_lives_at_most_nine_days(alice: Party):
    """Forward secrecy of distributions sealed to it ends when it is deleted (§6.1)."""
    first = alice.prekey()
    assert first.expires_at - first.created_at == SIGNED_PREKEY_VALIDITY_MS == 7 * DAY
    lifetime = SIGNED_PREKEY_VALIDITY_MS + SIGNED_PREKEY_GRACE_MS
    alice.device.rotate_signed_prekey(now=first.created_at + lifetime, rng=drbg("r"))
    assert first.prekey_id not in alice.device.signed_prekeys
    assert lifetime == 9 * DAY


def test_one_time_prekeys_wait_longer_than_signed_ones_because_nothing_used_them(alice: Party):
    [otk] = alice.device.new_one_time_prekeys(1, now=NOW, rng=drbg("o"))
    assert otk.expires_at - otk.created_at == ONE_TIME_PREKEY_VALIDITY_MS
    alice.device.prune(now=otk.expires_at)
    assert otk.prekey_id not in alice.device.one_time_prekeys


def test_device_secrets_round_trip(alice: Party):
    alice.device.new_one_time_prekeys(3, now=NOW, rng=drbg("o"))
    restored = DeviceSecrets.parse(alice.device.serialize())
    assert restored.serialize() == alice.device.serialize()
    assert sorted(restored.one_time_prekeys) == sorted(alice.device.one_time_prekeys)


def test_certificate_construction_rejects_invalid_fields(alice: Party):
    with pytest.raises(errors.MalformedMessage):
        replace(alice.certificate, user_id="has space")
    with pytest.raises(errors.MalformedMessage):
        replace(alice.certificate, expires_at=alice.certificate.issued_at + 400 * DAY)
    with pytest.raises(errors.MalformedMessage):
        DeviceCertificate.parse(alice.certificate.serialize()[:-1])


def test_device_secrets_parser_checks_what_the_spec_says(alice: Party, bob: Party):
    alice.device.new_one_time_prekeys(2, now=NOW, rng=drbg("o"))
    good = alice.device.serialize()
    swapped = DeviceSecrets(
        alice.device.user_id,
        alice.device.device_id,
        alice.device.signing_key,
        alice.device.certificate,
        signed_prekeys=dict(alice.device.one_time_prekeys),  # one-time prekeys as signed ones
        one_time_prekeys={},
        next_prekey_id=alice.device.next_prekey_id,
    ).serialize()
    stale_counter = DeviceSecrets(
        alice.device.user_id,
        alice.device.device_id,
        alice.device.signing_key,
        alice.device.certificate,
        signed_prekeys=dict(alice.device.signed_prekeys),
        next_prekey_id=1,  # below the ids in use
    ).serialize()
    foreign_certificate = DeviceSecrets(
        alice.device.user_id, "laptop", alice.device.signing_key, alice.device.certificate
    ).serialize()
    assert DeviceSecrets.parse(good).serialize() == good
    for bad in (swapped, stale_counter, foreign_certificate, good + b"\x00"):
        with pytest.raises(errors.MalformedMessage):
            DeviceSecrets.parse(bad)


def test_certificate_signature_check_is_cached_only_for_the_same_value(alice: Party):
    cert = DeviceCertificate.parse(alice.certificate.serialize())
    cert.verify(alice.identity_public, now=NOW)
    cert.verify(alice.identity_public, now=NOW)  # the cached answer
    altered = replace(cert, expires_at=cert.expires_at - 1)  # a new value: checked again
    with pytest.raises(errors.BadCertificate):
        altered.verify(alice.identity_public, now=NOW)
    with pytest.raises(errors.CertificateExpired):  # the window is checked every time
        cert.verify(alice.identity_public, now=cert.expires_at)
    assert cert == alice.certificate  # the cache is not part of the value
