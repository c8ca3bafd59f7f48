"""Checks on identity material: enrollment, device links and prekeys.

The server verifies what it stores so that a careless or hostile client
cannot poison the directory; clients still verify every certificate
themselves against identities they trust (the server is not trusted).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate, PrekeyKind
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey, VerifyingKey

from ..dal.directory import DeviceRecord, Invite, UserRecord
from .errors import ErrorCode, Refused

__all__ = [
    "CheckedPrekeys",
    "check_device_certificate",
    "check_enrollment",
    "check_prekeys",
    "parse_device_certificate",
    "signing_key_der",
]


def _invalid(what: str, error: ProtocolError | None = None) -> Refused:
    detail = f" ({error.code})" if error is not None else ""
    return Refused(ErrorCode.INVALID_CERTIFICATE, f"{what} does not verify{detail}")


def signing_key_der(key: VerifyingKey) -> bytes:
    """The DER SPKI form the authorizer loads."""
    return key.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def parse_device_certificate(data: bytes) -> DeviceCertificate:
    try:
        return DeviceCertificate.parse(data)
    except ProtocolError as error:
        raise _invalid("device certificate", error) from None


def check_device_certificate(
    data: bytes, identity_key: bytes, *, user_id: str, now_ms: int
) -> DeviceCertificate:
    """Parse and verify a device certificate for ``user_id`` under ``identity_key``."""
    try:
        identity = IdentityPublicKey.parse(identity_key)
    except ProtocolError as error:
        raise _invalid("identity key", error) from None
    certificate = parse_device_certificate(data)
    if certificate.user_id != user_id:
        raise Refused(ErrorCode.INVALID_CERTIFICATE, "device certificate names another user")
    try:
        certificate.verify(identity, now=now_ms)
    except ProtocolError as error:
        raise _invalid("device certificate", error) from None
    return certificate


@dataclass(frozen=True)
class CheckedPrekeys:
    # (prekey_id, expires_at, wire bytes)
    signed: tuple[int, int, bytes] | None
    # (prekey_id, wire bytes)
    one_time: list[tuple[int, bytes]]


def check_prekeys(
    device: DeviceCertificate,
    signed: bytes | None,
    one_time: list[bytes],
    *,
    now_ms: int,
    request_id: str | None = None,
) -> CheckedPrekeys:
    """Every prekey must be the device's own, signed by its key, current and of its kind."""

    def verified(data: bytes, kind: int, what: str) -> PrekeyCertificate:
        try:
            prekey = PrekeyCertificate.parse(data)
            prekey.verify(device, now=now_ms)
        except ProtocolError as error:
            raise Refused(
                ErrorCode.INVALID_CERTIFICATE, f"{what} does not verify ({error.code})", request_id
            ) from None
        if prekey.kind != kind:
            raise Refused(ErrorCode.INVALID_CERTIFICATE, f"{what} is of the wrong kind", request_id)
        return prekey

    checked_signed = None
    if signed is not None:
        prekey = verified(signed, PrekeyKind.SIGNED, "signed prekey")
        checked_signed = (prekey.prekey_id, prekey.expires_at, signed)
    checked_one_time = []
    seen: set[int] = set()
    for index, data in enumerate(one_time):
        prekey = verified(data, PrekeyKind.ONE_TIME, f"one-time prekey {index}")
        if prekey.prekey_id in seen:
            raise Refused(ErrorCode.CONFLICT, "one-time prekey ids repeat", request_id)
        seen.add(prekey.prekey_id)
        checked_one_time.append((prekey.prekey_id, data))
    checked_one_time.sort()
    ids = [prekey_id for prekey_id, _ in checked_one_time]
    if ids and ids != list(range(ids[0], ids[0] + len(ids))):
        # The directory hands them out by counting up from the last one published.
        raise Refused(ErrorCode.BAD_REQUEST, "one-time prekey ids must be consecutive", request_id)
    return CheckedPrekeys(checked_signed, checked_one_time)


def check_enrollment(
    invite: Invite,
    identity_key: bytes,
    device_certificate: bytes,
    signed_prekey: bytes,
    *,
    now_ms: int,
) -> tuple[UserRecord, DeviceRecord, tuple[int, int, bytes]]:
    """The records an enrollment creates, once everything in it verifies."""
    certificate = check_device_certificate(
        device_certificate, identity_key, user_id=invite.user_id, now_ms=now_ms
    )
    prekeys = check_prekeys(certificate, signed_prekey, [], now_ms=now_ms)
    assert prekeys.signed is not None
    user = UserRecord(
        user_id=invite.user_id,
        network_id=invite.network_id,
        handle=invite.handle,
        status="active",
        identity_key=identity_key,
        created_at=now_ms,
    )
    device = DeviceRecord(
        device_id=certificate.device_id,
        user_id=invite.user_id,
        network_id=invite.network_id,
        signing_key=signing_key_der(certificate.device_key),
        status="active",
        created_at=now_ms,
        certificate=device_certificate,
    )
    return user, device, prekeys.signed
