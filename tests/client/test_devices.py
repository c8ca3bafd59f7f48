"""Approving a link on the existing device, driven by a scripted session (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from sotto.client import devices
from sotto.client.devices import approve_link
from sotto.client.encoding import b64d, b64e
from sotto.client.errors import FlowError
from sotto.client.fingerprints import device_key_fingerprint
from sotto.client.profile import DeviceKeys
from sotto.client.session import Session
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.keys import SigningKey

from .helpers import make_profile
from .test_session import FakeConnection


class ScriptedUi:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.lines: list[str] = []
        self.questions: list[str] = []

    def show(self, text: str) -> None:
        self.lines.append(text)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


@pytest.fixture
def new_device_key() -> SigningKey:
    return SigningKey.generate()


def script(new_key: SigningKey) -> FakeConnection:
    return FakeConnection(
        [
            {
                "action": "link_created",
                "id": "$id",
                "link_id": "l1",
                "code": "ABCD",
                "expires_at": 2**50,
            }
        ],
        [{"action": "link_pending", "id": "$id", "link_id": "l1", "state": "open"}],
        [
            {
                "action": "link_pending",
                "id": "$id",
                "link_id": "l1",
                "state": "requested",
                "device_id": "dev-new",
                "device_key": b64e(new_key.public.serialize()),
            }
        ],
        [{"action": "link_approved", "id": "$id", "device_id": "dev-new"}],
    )


def wire(monkeypatch: pytest.MonkeyPatch, fake: FakeConnection) -> None:
    monkeypatch.setattr(devices, "connect", lambda info, keys: Session(cast(Any, fake)))


def test_approval_certifies_exactly_the_requested_key_under_the_identity(
    home: Path, monkeypatch: pytest.MonkeyPatch, new_device_key: SigningKey
) -> None:
    _, info, keys = make_profile(home)
    fake = script(new_device_key)
    wire(monkeypatch, fake)
    ui = ScriptedUi(answer=True)

    assert approve_link(info, keys, ui=ui, sleep=lambda _: None) == "dev-new"

    assert any(device_key_fingerprint(new_device_key.public) in line for line in ui.lines)
    assert any("ABCD" in line for line in ui.lines)
    approve = fake.sent[-1]
    assert approve["action"] == "link_approve"
    certificate = DeviceCertificate.parse(b64d(approve["certificate"], "certificate"))
    assert keys.identity is not None
    certificate.verify(keys.identity.public, now=certificate.issued_at)
    assert (certificate.user_id, certificate.device_id) == (info.user_id, "dev-new")
    assert certificate.device_key == new_device_key.public


def test_declined_fingerprint_approves_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, new_device_key: SigningKey
) -> None:
    _, info, keys = make_profile(home)
    fake = script(new_device_key)
    wire(monkeypatch, fake)

    with pytest.raises(FlowError, match="not approved"):
        approve_link(info, keys, ui=ScriptedUi(answer=False), sleep=lambda _: None)

    assert [f["action"] for f in fake.sent] == ["link_create", "link_pending", "link_pending"]


def test_device_without_the_identity_key_cannot_approve(home: Path) -> None:
    _, info, keys = make_profile(home)
    with pytest.raises(FlowError, match="identity key"):
        approve_link(info, DeviceKeys(keys.device), ui=ScriptedUi(answer=True))
