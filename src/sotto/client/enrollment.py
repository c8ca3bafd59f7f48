"""Getting a device onto the network: enrollment with an invite, or linking a new device.

Both flows reserve the profile directory first (so a name clash never spends
a code), write the keystore before the server can know the device, and
publish prekeys last: a failure there leaves a working profile that
``sotto keys publish`` completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sotto.frames.answers_devices import DevicesPart
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.errors import MalformedMessage, ProtocolError
from sotto.protocol.keys import IdentityKeyPair, IdentityPublicKey, SigningKey

from .api import PublicApi
from .encoding import b64d, b64e
from .errors import ApiError, ClientError, FlowError, MalformedFrame, TransportError
from .fingerprints import device_key_fingerprint, identity_fingerprint, new_device_id
from .prekeys import ONE_TIME_TARGET, now_ms, publish_prekeys, unpublished_one_time
from .profile import DeviceKeys, Profile, ProfileInfo
from .server import ServerConfig
from .session import Session
from .ui import Ui

__all__ = ["LINK_TIMEOUT_S", "enroll", "link_device"]

# A link code lives 10 minutes on the server; waiting longer cannot succeed.
LINK_TIMEOUT_S = 600.0
LINK_POLL_S = 2.0


def _text(answer: Mapping[str, object], name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise ClientError(f"server answer lacks {name!r}")
    return value


def enroll(
    server: ServerConfig,
    code: str,
    profile_name: str,
    passphrase: str,
    *,
    ui: Ui,
    home: Path | None = None,
) -> ProfileInfo:
    """Redeem an invite: new identity and first device, registered in one server transaction."""
    api = PublicApi(server)
    with Profile.create(profile_name, home) as profile:
        invite = api.enroll_lookup(code)
        user_id, network_id = _text(invite, "user_id"), _text(invite, "network_id")
        handle = _text(invite, "handle")
        network_name = invite["network_name"] or None
        ui.show(f"Enrolling {handle} ({user_id}) in network {network_name or network_id}")

        now = now_ms()
        identity = IdentityKeyPair.generate()
        device = DeviceSecrets.create(identity, user_id, new_device_id(), now=now)
        device.new_one_time_prekeys(ONE_TIME_TARGET, now=now)
        info = ProfileInfo(
            server=server,
            network_id=network_id,
            network_name=network_name,
            user_id=user_id,
            device_id=device.device_id,
            handle=handle,
            created_at=now,
            holds_identity=True,
            identity_key=b64e(identity.public.serialize()),
        )
        # Written ahead: once the server has the device, losing these keys loses the account.
        profile.write_info(info)
        keys = DeviceKeys(device, identity)
        profile.save_keys(keys, passphrase)
        try:
            answer = api.enroll(
                code,
                identity_key=b64e(identity.public.serialize()),
                device_certificate=b64e(device.certificate.serialize()),
                signed_prekey=b64e(device.current_signed_prekey().serialize()),
            )
        except TransportError as exc:
            profile.keep = True  # the server may have enrolled us; do not throw the keys away
            raise FlowError(
                f"{exc}; the profile is kept at {profile.path} in case enrollment went through "
                f"(check with: sotto keys status --profile {profile_name})"
            ) from None
        if (answer["user_id"], answer["device_id"]) != (user_id, device.device_id):
            profile.keep = True
            raise FlowError("server enrolled a different user or device than was asked for")

    ui.show(f"Enrolled device {device.device_id}; identity {identity_fingerprint(identity.public)}")
    stored = _publish_initial(profile, server, keys, passphrase)
    ui.show(f"Published prekeys; the server holds {stored} one-time prekeys")
    return info


def link_device(
    server: ServerConfig,
    code: str,
    profile_name: str,
    passphrase: str,
    *,
    ui: Ui,
    home: Path | None = None,
    timeout_s: float = LINK_TIMEOUT_S,
    poll_s: float = LINK_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> ProfileInfo:
    """Run on the NEW device: ask to be linked, wait for an existing device to certify it."""
    api = PublicApi(server)
    with Profile.create(profile_name, home) as profile:
        signing_key = SigningKey.generate()
        device_id = new_device_id()
        request = api.link_request(
            code, device_id=device_id, device_key=b64e(signing_key.public.serialize())
        )
        user_id, network_id = _text(request, "user_id"), _text(request, "network_id")
        handle = _text(request, "handle")
        ui.show(
            f"Link requested for {handle} ({user_id}) as device {device_id}.\n"
            f"Device key fingerprint: {device_key_fingerprint(signing_key.public)}\n"
            "Check that the approving device shows the same fingerprint."
        )
        certificate = _wait_for_certificate(api, code, timeout_s, poll_s, sleep)
        _check_own_certificate(certificate, user_id, device_id, signing_key)

        with Session.open(server, device_id, signing_key) as session:
            identity = _learn_identity(session, user_id, certificate)
        now = now_ms()
        device = DeviceSecrets(user_id, device_id, signing_key, certificate)
        device.rotate_signed_prekey(now=now)
        device.new_one_time_prekeys(ONE_TIME_TARGET, now=now)
        info = ProfileInfo(
            server=server,
            network_id=network_id,
            user_id=user_id,
            device_id=device_id,
            handle=handle,
            created_at=now,
            holds_identity=False,
            identity_key=b64e(identity.serialize()),
        )
        profile.write_info(info)
        keys = DeviceKeys(device)
        profile.save_keys(keys, passphrase)

    ui.show(f"Linked device {device_id}; identity {identity_fingerprint(identity)}")
    stored = _publish_initial(profile, server, keys, passphrase, with_signed_prekey=True)
    ui.show(f"Published prekeys; the server holds {stored} one-time prekeys")
    return info


def _wait_for_certificate(
    api: PublicApi, code: str, timeout_s: float, poll_s: float, sleep: Callable[[float], None]
) -> DeviceCertificate:
    deadline = time.monotonic() + timeout_s
    while True:
        delay = poll_s
        try:
            status = api.link_status(code)
        except ApiError as exc:
            # Polling shares the per-IP enrollment limit: back off rather than fail.
            if exc.code != "rate_limited":
                raise
            delay = max(poll_s, exc.retry_after_s or poll_s)
        else:
            state = status["state"]
            if state == "approved":
                if "device_certificate" not in status:
                    raise MalformedFrame("link status", ["device_certificate"])
                raw = b64d(status["device_certificate"], "device certificate")
                try:
                    return DeviceCertificate.parse(raw)
                except MalformedMessage as exc:
                    raise FlowError(f"server sent a malformed device certificate: {exc}") from None
            if state not in ("open", "requested"):
                raise FlowError(f"link is {state!r}; ask for a new code")
        if time.monotonic() + delay > deadline:
            raise FlowError(f"no device approved the link within {timeout_s:g} s")
        sleep(delay)


def _check_own_certificate(
    certificate: DeviceCertificate, user_id: str, device_id: str, key: SigningKey
) -> None:
    if (certificate.user_id, certificate.device_id) != (user_id, device_id):
        raise FlowError("the approved certificate names another user or device")
    if certificate.device_key != key.public:
        raise FlowError("the approved certificate is for another device key; do not use this link")


def _learn_identity(
    session: Session, user_id: str, certificate: DeviceCertificate
) -> IdentityPublicKey:
    """The user's identity key, accepted only if it is the one that signed our certificate."""
    answer = session.request_as(DevicesPart, "list_devices", user_id=user_id)
    try:
        identity = IdentityPublicKey.parse(b64d(answer["identity_key"], "identity key"))
        certificate.verify(identity, now=now_ms())
    except ProtocolError as exc:
        raise FlowError(f"the approved certificate does not verify: {exc}") from None
    return identity


def _publish_initial(
    profile: Profile,
    server: ServerConfig,
    keys: DeviceKeys,
    passphrase: str,
    *,
    with_signed_prekey: bool = False,
) -> int | None:
    """Publish what enrollment made; then record the watermark (a second keystore write)."""
    device = keys.device
    try:
        with Session.open(server, device.device_id, device.signing_key) as session:
            published = publish_prekeys(
                session,
                signed=device.current_signed_prekey() if with_signed_prekey else None,
                one_time=unpublished_one_time(device, keys.published_through),
                through=keys.published_through,
            )
        keys.published_through = published.through
        profile.save_keys(keys, passphrase)
    except ClientError as exc:
        raise FlowError(
            f"the device is registered but publishing its prekeys failed ({exc}); "
            f"finish with: sotto keys publish --profile {profile.name}"
        ) from None
    return published.stored
