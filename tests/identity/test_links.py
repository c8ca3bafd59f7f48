"""Adding a device: opened by an existing device, requested by the new one, approved."""

from __future__ import annotations

import secrets
import time

from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.device import DEVICE_CERT_VALIDITY_MS
from sotto.protocol.keys import SigningKey
from tests.support.stack import SeededDevice, Socket, b64, http, seed_device, unb64


def certify(existing: SeededDevice, device_id: str, key: SigningKey) -> DeviceCertificate:
    assert existing.identity is not None
    now = int(time.time() * 1000)
    return DeviceCertificate.issue(
        existing.identity,
        existing.user_id,
        device_id,
        key.public,
        issued_at=now,
        expires_at=now + DEVICE_CERT_VALIDITY_MS,
    )


def start_link(stack, existing: SeededDevice):
    """The existing device opens a link; a new device requests it."""
    socket = Socket(stack, existing)
    created = socket.request("link_create")
    new_key = SigningKey.generate()
    new_id = f"dev-{secrets.token_hex(6)}"
    status, answer = http(
        stack,
        "POST",
        "/v1/link/requests",
        {
            "code": created["code"],
            "device_id": new_id,
            "device_key": b64(new_key.public.serialize()),
        },
    )
    assert status == 200, answer
    return socket, created, new_id, new_key


def test_linked_device_gets_its_certificate_and_can_connect(stack, device):
    socket, created, new_id, new_key = start_link(stack, device)
    with socket:
        assert socket.push("link_requested")["link_id"] == created["link_id"]
        pending = socket.request("link_pending", link_id=created["link_id"])
        assert pending["state"] == "requested"
        assert unb64(pending["device_key"]) == new_key.public.serialize()
        certificate = certify(device, new_id, new_key)
        approved = socket.request(
            "link_approve", link_id=created["link_id"], certificate=b64(certificate.serialize())
        )
        assert approved["action"] == "link_approved"
        listed = socket.request("list_devices", user_id=device.user_id)
    assert {d["device_id"] for d in listed["devices"]} == {device.device_id, new_id}
    status, answer = http(stack, "POST", "/v1/link/status", {"code": created["code"]})
    assert status == 200
    assert answer["state"] == "approved"
    assert unb64(answer["device_certificate"]) == certificate.serialize()
    linked = SeededDevice(new_id, device.user_id, device.network_id, new_key.key)
    with Socket(stack, linked) as new_socket:
        assert new_socket.request("ping")["action"] == "pong"


def test_certificate_for_another_key_than_requested_is_refused(stack, device):
    socket, created, new_id, _ = start_link(stack, device)
    with socket:
        impostor = certify(device, new_id, SigningKey.generate())
        answer = socket.request(
            "link_approve", link_id=created["link_id"], certificate=b64(impostor.serialize())
        )
        assert answer["code"] == "invalid_certificate"
        assert socket.request("link_pending", link_id=created["link_id"])["state"] == "requested"


def test_another_user_cannot_see_or_approve_a_link(stack, device):
    socket, created, new_id, new_key = start_link(stack, device)
    socket.close()
    stranger = seed_device(stack)
    with Socket(stack, stranger) as other:
        assert other.request("link_pending", link_id=created["link_id"])["code"] == "not_found"
        certificate = certify(stranger, new_id, new_key)
        answer = other.request(
            "link_approve", link_id=created["link_id"], certificate=b64(certificate.serialize())
        )
        assert answer["code"] == "not_found"


def test_link_code_is_single_use(stack, device):
    socket, created, _, _ = start_link(stack, device)
    socket.close()
    status, answer = http(
        stack,
        "POST",
        "/v1/link/requests",
        {
            "code": created["code"],
            "device_id": f"dev-{secrets.token_hex(6)}",
            "device_key": b64(SigningKey.generate().public.serialize()),
        },
    )
    assert (status, answer["code"]) == (404, "not_found")


def test_approving_twice_is_a_conflict(stack, device):
    socket, created, new_id, new_key = start_link(stack, device)
    with socket:
        certificate = b64(certify(device, new_id, new_key).serialize())
        socket.request("link_approve", link_id=created["link_id"], certificate=certificate)
        again = socket.request("link_approve", link_id=created["link_id"], certificate=certificate)
    assert again["code"] == "conflict"
