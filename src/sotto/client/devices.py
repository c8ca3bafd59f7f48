"""What an enrolled device does with its keys: approve a link, list and verify devices,
keep its prekeys stocked.

Certificates from the server are verified here against an identity key the
client trusts: for the profile's own user, the identity key stored at
enrollment; for anyone else, the server's answer is only a first sighting
until the people compare safety numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sotto.frames.answers_devices import (
    DeviceItem,
    DevicesPart,
    LinkApprovedAnswer,
    LinkCreatedAnswer,
    LinkPendingAnswer,
)
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.device import DEVICE_CERT_VALIDITY_MS
from sotto.protocol.errors import MalformedMessage, ProtocolError
from sotto.protocol.keys import IdentityPublicKey, VerifyingKey
from sotto.protocol.safety import safety_number

from .encoding import b64d, b64e
from .errors import ClientError, FlowError
from .fingerprints import device_key_fingerprint, identity_fingerprint
from .prekeys import PrekeyStatus, now_ms, plan_replenish, prekey_status, publish_prekeys
from .profile import DeviceKeys, Profile, ProfileInfo
from .session import Session
from .ui import Ui

__all__ = [
    "DeviceEntry",
    "DeviceListing",
    "KeysReport",
    "approve_link",
    "connect",
    "keys_publish",
    "keys_status",
    "list_devices",
]

LINK_POLL_S = 1.0


def connect(info: ProfileInfo, keys: DeviceKeys) -> Session:
    return Session.open(info.server, info.device_id, keys.device.signing_key)


# -- linking -------------------------------------------------------------------------


def approve_link(
    info: ProfileInfo,
    keys: DeviceKeys,
    *,
    ui: Ui,
    assume_yes: bool = False,
    timeout_s: float | None = None,
    poll_s: float = LINK_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run on a device holding the identity key: open a link, certify the device that claims it."""
    identity = keys.identity
    if identity is None:
        raise FlowError(
            "this device does not hold the identity key; approve from the device that enrolled"
        )
    with connect(info, keys) as session:
        created = session.request_as(LinkCreatedAnswer, "link_create")
        link_id, code, expires_at = created["link_id"], created["code"], created["expires_at"]
        ui.show(
            f"Link code: {code}\n"
            "On the new device run:\n"
            f"  sotto link --server {info.server.http} --code {code} --profile NAME\n"
            "Waiting for the new device..."
        )
        # The code dies at expires_at; --timeout can only shorten the wait.
        wait_s = (expires_at - now_ms()) / 1000
        if timeout_s is not None:
            wait_s = min(wait_s, timeout_s)
        requested = _wait_for_request(session, link_id, wait_s, poll_s, sleep)
        device_id, device_key = _requested_device(requested)
        ui.show(
            f"Device {device_id} asks to join as {info.handle} ({info.user_id}).\n"
            f"Device key fingerprint: {device_key_fingerprint(device_key)}"
        )
        if not assume_yes and not ui.confirm("Is this the fingerprint the new device shows?"):
            raise FlowError("link not approved; the code expires unused")
        now = now_ms()
        certificate = DeviceCertificate.issue(
            identity,
            info.user_id,
            device_id,
            device_key,
            issued_at=now,
            expires_at=now + DEVICE_CERT_VALIDITY_MS,
        )
        session.request_as(
            LinkApprovedAnswer,
            "link_approve",
            link_id=link_id,
            certificate=b64e(certificate.serialize()),
        )
    ui.show(f"Approved device {device_id}")
    return device_id


def _wait_for_request(
    session: Session,
    link_id: str,
    wait_s: float,
    poll_s: float,
    sleep: Callable[[float], None],
) -> LinkPendingAnswer:
    deadline = time.monotonic() + wait_s
    while True:
        pending = session.request_as(LinkPendingAnswer, "link_pending", link_id=link_id)
        state = pending["state"]
        if state == "requested":
            return pending
        if state != "open":
            raise FlowError(f"link is {state!r}; start again with a new code")
        if time.monotonic() + poll_s > deadline:
            raise FlowError("no new device asked to link before the code expired")
        sleep(poll_s)


def _requested_device(pending: LinkPendingAnswer) -> tuple[str, VerifyingKey]:
    device_id = pending.get("device_id")
    if device_id is None or "device_key" not in pending:
        raise ClientError("server sent a link request without a device id and key")
    try:
        return device_id, VerifyingKey.parse(b64d(pending.get("device_key"), "device key"))
    except MalformedMessage as exc:
        raise FlowError(f"the requested device key is not a valid key: {exc}") from None


# -- the device list -----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceEntry:
    device_id: str
    status: str  # as the server says: active | revoked
    verified: bool
    problem: str | None
    key_fingerprint: str | None
    expires_at: int | None


@dataclass(frozen=True)
class DeviceListing:
    user_id: str
    identity_fingerprint: str
    # own (matches this profile), changed (does NOT match), or unverified (another user)
    trust: str
    safety_number: str | None
    devices: list[DeviceEntry]


def list_devices(info: ProfileInfo, keys: DeviceKeys, user_id: str) -> DeviceListing:
    with connect(info, keys) as session:
        answer = session.request_as(DevicesPart, "list_devices", user_id=user_id)
    try:
        presented = IdentityPublicKey.parse(b64d(answer["identity_key"], "identity key"))
    except MalformedMessage as exc:
        raise ClientError(f"server sent a malformed identity key: {exc}") from None
    own = info.identity_public()
    number = None
    if user_id == info.user_id and own is not None:
        # Our own identity is known: the server's copy must equal it, and ours is what we trust.
        trust = "own" if presented == own else "changed"
        trusted = own
    else:
        trust, trusted = "unverified", presented
        if own is not None:
            number = safety_number(info.user_id, own, user_id, presented)
    entries = [_verify_entry(item, user_id, trusted) for item in answer["devices"]]
    return DeviceListing(user_id, identity_fingerprint(presented), trust, number, entries)


def _verify_entry(item: DeviceItem, user_id: str, identity: IdentityPublicKey) -> DeviceEntry:
    device_id, status = item["device_id"], item["status"]
    try:
        cert = DeviceCertificate.parse(b64d(item["certificate"], "device certificate"))
        if (cert.user_id, cert.device_id) != (user_id, device_id):
            raise FlowError("certificate names another user or device")
        cert.verify(identity, now=now_ms())
    except (ProtocolError, ClientError) as exc:
        return DeviceEntry(device_id, status, False, str(exc), None, None)
    return DeviceEntry(
        device_id, status, True, None, device_key_fingerprint(cert.device_key), cert.expires_at
    )


# -- prekeys -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeysReport:
    server: PrekeyStatus
    local_one_time: int
    signed_prekey_created_at: int | None
    signed_prekey_due: bool
    published_one_time: int = 0
    rotated_signed: bool = False


def keys_status(info: ProfileInfo, keys: DeviceKeys) -> KeysReport:
    with connect(info, keys) as session:
        status = prekey_status(session)
    return _report(keys, status)


def keys_publish(
    profile: Profile, info: ProfileInfo, keys: DeviceKeys, passphrase: str, *, rotate: bool = False
) -> KeysReport:
    """Top up one-time prekeys to the target and rotate the signed prekey when due."""
    with connect(info, keys) as session:
        status = prekey_status(session)
        signed, one_time = plan_replenish(
            keys.device, status, through=keys.published_through, now=now_ms(), rotate=rotate
        )
        stored: int | None = status.one_time_prekeys
        if signed is not None or one_time:
            profile.save_keys(keys, passphrase)  # private halves on disk before publishing
            published = publish_prekeys(
                session, signed=signed, one_time=one_time, through=keys.published_through
            )
            stored, keys.published_through = published.stored, published.through
            profile.save_keys(keys, passphrase)
        after = prekey_status(session) if signed is not None else None
    server = after or PrekeyStatus(
        stored if stored is not None else status.one_time_prekeys, status.signed_prekey_expires_at
    )
    report = _report(keys, server)
    return KeysReport(
        report.server,
        report.local_one_time,
        report.signed_prekey_created_at,
        report.signed_prekey_due,
        published_one_time=len(one_time),
        rotated_signed=signed is not None,
    )


def _report(keys: DeviceKeys, status: PrekeyStatus) -> KeysReport:
    device, now = keys.device, now_ms()
    current: PrekeyCertificate | None = (
        device.current_signed_prekey() if device.signed_prekeys else None
    )
    return KeysReport(
        server=status,
        local_one_time=len(device.one_time_prekeys),
        signed_prekey_created_at=None if current is None else current.created_at,
        signed_prekey_due=current is None or device.signed_prekey_due(now=now),
    )
