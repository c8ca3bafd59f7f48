"""A network's retention identity: made on the admin's machine, pinned by clients,
a recipient of every chain, enforced by the server, refused when substituted.

The officer's side is played by the test with the archive key through KMS,
as ``sotto records export`` does on the compliance officer's machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sotto.client import retention_admin
from sotto.client.api import AdminApi
from sotto.client.encoding import b64d, b64e
from sotto.client.errors import ApiError, FrameError, TrustError
from sotto.client.http import HttpClient
from sotto.client.retention import RetentionNotice, last_known, notice_text
from sotto.frames.answers_admin import RetentionAdminAnswer
from sotto.frames.shapes import parse
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.content import Text
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import RetentionSecrets, officer_user_id, open_device
from sotto.records.opening import ArchiveOpener
from sotto_server.dal.directory import DirectoryStore
from tests.audit.test_audit_log import _entries as audit_entries
from tests.support.people import Seeded, messenger_for, seed_person, server_of
from tests.support.stack import Stack, admin


def new_network(stack: Stack, name: str) -> str:
    return str(admin(stack, "POST", "/networks", {"name": name})["network_id"])


def api_and_kms(stack: Stack) -> tuple[AdminApi, retention_admin.ArchiveKms]:
    server = server_of(stack)
    kms = retention_admin.archive_kms(str(stack.log_path.parent), server, None)
    return AdminApi(server), kms


def mail(stack: Stack, device_id: str) -> list[dict[str, Any]]:
    return list(
        stack.client("dynamodb").query(
            TableName=stack.table("MessagesTable"),
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"MAIL#{device_id}"}},
        )["Items"]
    )


def officer_opener(stack: Stack, network: str) -> ArchiveOpener:
    """What the compliance officer's machine builds: every generation's key, unwrapped by KMS."""
    api, kms = api_and_kms(stack)
    shown = api.get_retention(network)
    assert shown["status"] != "off"
    officer = IdentityPublicKey.parse(b64d(shown["officer_identity"], "officer"))
    devices = []
    for generation in shown["generations"]:
        identity = retention_admin.served_identity(shown, generation)
        key = kms.unwrap(
            b64d(generation["wrapped_device_key"], "wrapped"),
            network,
            retention_admin.RETENTION_PURPOSE,
            generation["device_id"],
        )
        devices.append(open_device(identity, key))
    return ArchiveOpener(officer, devices)


def sender_of(stack: Stack, device_id: str) -> tuple[DeviceCertificate, IdentityPublicKey]:
    directory = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    device = directory.get_device(device_id)
    assert device is not None
    user = directory.get_user(device.user_id)
    assert user is not None
    return DeviceCertificate.parse(device.certificate), IdentityPublicKey.parse(user.identity_key)


def archived_texts(stack: Stack, network: str, cid: str, *retention_devices: str) -> list[str]:
    """Open the retention devices' distributions, then the conversation's envelopes."""
    opener = officer_opener(stack, network)
    for item in [m for device in retention_devices for m in mail(stack, device)]:
        if item["conversation_id"]["S"] != cid:
            continue
        certificate, identity = sender_of(stack, item["from_device"]["S"])
        opener.add_distribution(
            item["data"]["B"],
            sender_certificate=certificate,
            sender_identity=identity,
            at=int(item["server_time"]["N"]),
        )
    messages = stack.client("dynamodb").query(
        TableName=stack.table("MessagesTable"),
        KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MSG#"}},
    )["Items"]
    texts = []
    for item in messages:
        certificate, identity = sender_of(stack, item["sender_device"]["S"])
        opened = opener.open(
            item["envelope"]["B"],
            sender_certificate=certificate,
            sender_identity=identity,
            at=int(item["server_time"]["N"]),
        )
        if isinstance(opened.content, Text):
            texts.append(opened.content.text)
    return texts


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def enable(stack: Stack, network: str, years: int = 7) -> RetentionAdminAnswer:
    api, kms = api_and_kms(stack)
    return retention_admin.enable(api, kms, network, years)


def test_admin_enables_retention_and_only_kms_ciphertext_of_its_keys_is_stored(stack):
    network = new_network(stack, "Records")
    assert admin(stack, "GET", f"/networks/{network}/policy")["retention"] == {"required": False}
    shown = enable(stack, network, years=10)
    # The network's policy shows it: on exactly while retention is enabled.
    assert admin(stack, "GET", f"/networks/{network}/policy")["retention"] == {
        "required": True,
        "years": 10,
    }
    assert shown["status"] == "enabled"
    assert shown["years"] == 10
    assert shown["generation"] == 1
    assert shown["device_id"].startswith("rtn-")
    # The stored wrapped keys are KMS ciphertext bound to this network: the context must match.
    _api, kms = api_and_kms(stack)
    wrapped = b64d(shown["generations"][0]["wrapped_device_key"], "wrapped")
    with pytest.raises(retention_admin.RetentionAdminError):
        kms.unwrap(wrapped, "net-other", retention_admin.RETENTION_PURPOSE, shown["device_id"])
    identity = retention_admin.served_identity(shown)
    identity.verify(now=int(time.time() * 1000))
    opened = open_device(
        identity,
        kms.unwrap(wrapped, network, retention_admin.RETENTION_PURPOSE, shown["device_id"]),
    )
    # No byte of the private keys is in the directory item.
    raw = stack.client("dynamodb").get_item(
        TableName=stack.table("DirectoryTable"),
        Key={"pk": {"S": f"NET#{network}"}, "sk": {"S": "RETENTION"}},
    )["Item"]
    stored = b"".join(v.get("B", b"") or str(v).encode() for v in raw.values())
    assert opened.signing_key.private_bytes() not in stored
    pair, _ = opened.signed_prekeys[identity.prekey.prekey_id]
    assert pair.private_bytes() not in stored


def test_the_server_refuses_an_identity_that_does_not_chain_to_the_officer(stack):
    network = new_network(stack, "Broken chain")
    api, _kms = api_and_kms(stack)
    made = RetentionSecrets.create(network, "rtn-000000000001", now=int(time.time() * 1000))
    other = RetentionSecrets.create(network, "rtn-000000000002", now=int(time.time() * 1000))
    body = {
        "officer_identity": b64e(other.officer.public.serialize()),
        "certificate": b64e(made.device.certificate.serialize()),
        "prekey": b64e(made.device.current_signed_prekey().serialize()),
        "wrapped_device_key": "AAAA",
        "wrapped_officer_key": "AAAA",
    }
    with pytest.raises(ApiError, match="does not verify"):
        api.enable_retention(network, body)
    assert api.get_retention(network)["status"] == "off"


def room(stack: Stack, network: str, home: Path) -> tuple[Seeded, Seeded, str]:
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        cid = messenger.create_room("ops", [bob.user_id])
    return alice, bob, cid


def test_every_chain_reaches_the_retention_device_and_the_officer_reads_what_was_sent(stack, home):
    network = new_network(stack, "Archived room")
    alice, bob, cid = room(stack, network, home)
    shown = enable(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "first, on a chain made before retention")
        notice = messenger.retention()
    with messenger_for(stack, home, bob.devices[0]) as messenger:
        messenger.sync()
        direct = messenger.direct(alice.user_id)
        messenger.send(direct, Text("a direct one"))
    assert notice.enabled
    assert "Data Retention Turned On" in notice_text(notice)
    known = last_known(home / f"p-{alice.devices[0].device_id}")
    assert known is not None
    assert known.enabled
    assert known.network_id == network
    assert archived_texts(stack, network, cid, shown["device_id"]) == [
        "first, on a chain made before retention"
    ]
    assert archived_texts(stack, network, direct, shown["device_id"]) == ["a direct one"]


def test_the_server_refuses_a_send_whose_chain_skipped_the_retention_device(
    stack, home, monkeypatch
):
    network = new_network(stack, "No skipping")
    alice, _bob, cid = room(stack, network, home)
    shown = enable(stack, network)
    import sotto.client.messenger.core as core

    def blind(*args: Any, **kwargs: Any) -> Any:
        return None, RetentionNotice(network, False)

    monkeypatch.setattr(core, "fetch_retention", blind)  # a client that ignores retention
    with (
        messenger_for(stack, home, alice.devices[0]) as messenger,
        pytest.raises(FrameError) as refused,
    ):
        messenger.send(cid, Text("not archived"))
    assert refused.value.code == "stale_devices"
    assert shown["device_id"] in (refused.value.details or {}).get("missing", [])


def test_a_substituted_retention_officer_is_refused_and_gets_no_key(stack, home):
    network = new_network(stack, "Substitution")
    alice, _bob, cid = room(stack, network, home)
    enable(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "pins the officer")
    # The operator writes a retention identity of its own into the table.
    forged = RetentionSecrets.create(network, "rtn-operator0001", now=int(time.time() * 1000))
    identity = forged.identity(network)
    stack.client("dynamodb").update_item(
        TableName=stack.table("DirectoryTable"),
        Key={"pk": {"S": f"NET#{network}"}, "sk": {"S": "RETENTION"}},
        UpdateExpression="SET officer_identity = :o, certificate = :c, prekey = :p, device_id = :d",
        ExpressionAttributeValues={
            ":o": {"B": identity.officer.serialize()},
            ":c": {"B": identity.certificate.serialize()},
            ":p": {"B": identity.prekey.serialize()},
            ":d": {"S": identity.device_id},
        },
    )
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.engine(cid).request_rotation()
        with pytest.raises(TrustError) as refused:
            messenger.send_text("#ops", "must not reach the operator")
    assert refused.value.user_id == officer_user_id(network)
    assert "records officer" in str(refused.value)
    assert mail(stack, identity.device_id) == []


@pytest.fixture
def retention_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """The SDK's retention writes while the test runs: method, path's last segment, answer."""
    writes: list[tuple[str, str, dict[str, Any]]] = []
    call = HttpClient.call

    def record(
        self: HttpClient, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        answer = call(self, method, path, body)
        if method != "GET" and "/retention" in path:
            writes.append((method, path.rpartition("/")[2], json.loads(json.dumps(answer))))
        return answer

    monkeypatch.setattr(HttpClient, "call", record)
    return writes


def test_rotation_moves_every_new_chain_to_the_new_key_and_disable_stops_capture(
    stack, home, retention_writes
):
    network = new_network(stack, "Rotation")
    alice, _bob, cid = room(stack, network, home)
    first = enable(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "generation one")
    api, kms = api_and_kms(stack)
    rotated = retention_admin.rotate(api, kms, network)
    assert rotated["generation"] == 2
    assert rotated["device_id"] != first["device_id"]
    assert rotated["officer_identity"] == first["officer_identity"]
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "generation two")  # stale_devices, then a new chain
    assert archived_texts(stack, network, cid, first["device_id"], rotated["device_id"]) == [
        "generation one",
        "generation two",
    ]
    # The new generation's key alone opens only what was sent after the rotation.
    assert [m["conversation_id"]["S"] for m in mail(stack, rotated["device_id"])] == [cid]
    assert retention_admin.disable(api, network)["status"] == "disabled"
    # Enabling, showing (the wrapped keys), rotating and disabling are audited admin actions.
    audited = [e["event"] for e in audit_entries(stack, network) if e["event"].startswith("ret")]
    order = [e for e in audited if e != "retention.shown"]
    assert order == ["retention.enabled", "retention.rotated", "retention.disabled"]
    assert "retention.shown" in audited
    before = len(mail(stack, rotated["device_id"]))
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.engine(cid).request_rotation()
        messenger.send_text("#ops", "after disable")
        assert not messenger.retention().enabled
    assert len(mail(stack, rotated["device_id"])) == before
    # Each write answered exactly the identity's shape (sotto.frames.answers_admin).
    assert [(method, last) for method, last, _ in retention_writes] == [
        ("PUT", "retention"),
        ("POST", "rotate"),
        ("POST", "disable"),
    ]
    for _method, _last, answer in retention_writes:
        assert parse(RetentionAdminAnswer, answer) == answer


def test_the_retention_route_answers_only_for_the_callers_own_network(stack):
    from tests.support.stack import Socket, seed_device

    archived = new_network(stack, "Archived")
    enable(stack, archived)
    inside = seed_device(stack, network_id=archived)
    outside = seed_device(stack, network_id=new_network(stack, "Not archived"))
    with Socket(stack, inside) as socket:
        answer = socket.request("retention")
    assert answer["enabled"] is True
    assert answer["network_id"] == archived
    assert set(answer) >= {"officer_identity", "certificate", "prekey", "years"}
    assert "wrapped_officer_key" not in answer
    assert "wrapped_device_key" not in answer
    with Socket(stack, outside) as socket:
        answer = socket.request("retention")
    assert answer == {
        "action": "retention",
        "id": answer["id"],
        "network_id": outside.network_id,
        "enabled": False,
    }
