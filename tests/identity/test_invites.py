"""Admin completeness over the local stack: pending invites listed, revoked and reissued,
bulk invites from a CSV, the invite lockout (at default limits), and a user's own
devices revoking one of theirs with an identity signature."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from sotto.cli import main
from sotto.protocol.certificates import DeviceRevocation
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from tests.support.people import add_device, seed_person
from tests.support.stack import Socket, Stack, admin, b64, http, invite, next_loopback


def _network(stack: Stack) -> str:
    return str(
        admin(stack, "POST", "/networks", {"name": f"inv-{secrets.token_hex(3)}"})["network_id"]
    )


def _enroll(stack: Stack, code: str, user_id: str, *, garbage: bool = False) -> tuple[int, Any]:
    identity = IdentityKeyPair.generate()
    device = DeviceSecrets.create(
        identity, user_id, f"dev-{secrets.token_hex(6)}", now=int(time.time() * 1000)
    )
    body = {
        "code": code,
        "identity_key": b64(identity.public.serialize()),
        "device_certificate": b64(device.certificate.serialize()),
        "signed_prekey": b64(device.current_signed_prekey().serialize()),
    }
    if garbage:
        # A real identity key, but a certificate from another identity: it does not verify.
        other = DeviceSecrets.create(
            IdentityKeyPair.generate(), user_id, "dev-x", now=int(time.time() * 1000)
        )
        body["device_certificate"] = b64(other.certificate.serialize())
    return http(stack, "POST", "/v1/enroll", body, source=next_loopback())


def test_pending_invites_are_listed_revoked_and_reissued(stack: Stack) -> None:
    network = _network(stack)
    first, second = invite(stack, network, "ana"), invite(stack, network, "ben")
    listed = admin(stack, "GET", f"/networks/{network}/invites")["invites"]
    assert [(i["handle"], i["state"]) for i in listed] == [("ana", "pending"), ("ben", "pending")]
    assert all("code" not in i for i in listed)

    admin(stack, "POST", f"/networks/{network}/invites/{first['user_id']}/revoke")
    assert (
        http(stack, "POST", "/v1/enroll/lookup", {"code": first["code"]}, source=next_loopback())[0]
        == 404
    )
    assert [
        i["handle"] for i in admin(stack, "GET", f"/networks/{network}/invites")["invites"]
    ] == ["ben"]
    # The handle is free again.
    invite(stack, network, "ana")

    again = admin(
        stack, "POST", f"/networks/{network}/invites/{second['user_id']}/reissue", {"ttl_s": 3600}
    )
    assert (again["user_id"], again["handle"]) == (second["user_id"], "ben")
    assert again["code"] != second["code"]
    assert _enroll(stack, second["code"], second["user_id"])[0] == 404
    status, answer = _enroll(stack, again["code"], second["user_id"])
    assert status == 200, answer
    assert answer["user_id"] == second["user_id"]
    assert "ben" not in [
        i["handle"] for i in admin(stack, "GET", f"/networks/{network}/invites")["invites"]
    ]
    status, answer = http(
        stack,
        "POST",
        f"/v1/admin/networks/{network}/invites/{second['user_id']}/revoke",
        signed=True,
    )
    assert (status, answer["code"]) == (404, "not_found")


def test_an_invite_locks_after_failed_enrollments_without_burning_the_network(
    default_stack: Stack,
) -> None:
    stack = default_stack
    network = _network(stack)
    target = invite(stack, network)
    for attempt in range(5):
        status, answer = _enroll(stack, target["code"], target["user_id"], garbage=True)
        assert (status, answer["code"]) == (400, "invalid_certificate"), attempt
    status, answer = _enroll(stack, target["code"], target["user_id"])
    assert (status, answer["code"]) == (403, "forbidden")
    assert "locked" in answer["message"]
    assert admin(stack, "GET", f"/networks/{network}/invites")["invites"][0]["state"] == "locked"
    # The failures were never counted against the network's enrollment budget.
    guards = stack.client("dynamodb").scan(TableName=stack.table("GuardsTable"))["Items"]
    assert not [g for g in guards if g["pk"]["S"].startswith(f"RATE#enroll_network#{network}#")]
    # A reissued code works.
    again = admin(stack, "POST", f"/networks/{network}/invites/{target['user_id']}/reissue", {})
    assert _enroll(stack, again["code"], target["user_id"])[0] == 200
    counted = stack.client("dynamodb").scan(TableName=stack.table("GuardsTable"))["Items"]
    assert [g for g in counted if g["pk"]["S"].startswith(f"RATE#enroll_network#{network}#")]


def test_bulk_invite_of_500_users_from_a_csv(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = _network(stack)
    admin(stack, "POST", f"/networks/{network}/groups", {"name": "field"})
    admin(stack, "PUT", f"/networks/{network}/groups/field/policy", {"location_allowed": False})
    lines = ["handle,display name,group"]
    lines += [f"user{i:03d},User {i},{'field' if i % 2 else ''}" for i in range(500)]
    lines += ["Bad Handle,,", "user001,Again,", "user999,Nobody,nogroup"]
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    code = main(
        [
            "admin",
            "--server",
            str(stack.log_path.parent),
            "--json",
            "invite-bulk",
            network,
            str(path),
        ]
    )
    out, err = capsys.readouterr()
    elapsed = time.monotonic() - started
    assert code == 0, err
    report = json.loads(out)
    assert (report["rows"], report["invited"], report["refused_rows"]) == (503, 500, 3)
    refused = {r["row"]: r["reason"] for r in report["refused"]}
    assert refused == {
        502: "a handle is 1-32 of a-z 0-9 . _ -",
        503: "handle 'user001' is taken",
        504: "no security group 'nogroup' in this network",
    }
    print(f"bulk invite of 500: {elapsed:.1f} s")
    made = {r["handle"]: r for r in report["created"]}
    pending = admin(stack, "GET", f"/networks/{network}/invites")["invites"]
    assert len(pending) == 500
    # A user invited into a group is in it once enrolled, and its policy follows.
    one = made["user001"]
    assert one["groups"] == ["field"]
    assert _enroll(stack, one["code"], one["user_id"])[0] == 200
    effective = admin(stack, "GET", f"/users/{one['user_id']}/policy")
    assert effective["groups"] == ["field"]
    assert effective["policy"]["location_allowed"] is False
    shown = admin(stack, "GET", f"/networks/{network}/policy")
    assert shown["groups"][0]["members"] == [one["user_id"]]


def test_cli_lists_revokes_and_reissues_invites(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    network = _network(stack)
    pending = invite(stack, network, "cli")
    server = str(stack.log_path.parent)

    def run(*args: str) -> Any:
        assert main(["admin", "--server", server, "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)

    assert [i["handle"] for i in run("invites", network)["invites"]] == ["cli"]
    assert run("invite-reissue", network, pending["user_id"], "--ttl", "1h")["handle"] == "cli"
    assert run("invite-revoke", network, pending["user_id"])["revoked"] is True
    assert run("invites", network)["invites"] == []


def _revocation(signer: Any, user_id: str, device_id: str, *, at: int | None = None) -> str:
    when = int(time.time() * 1000) if at is None else at
    return b64(DeviceRevocation.issue(signer, user_id, device_id, revoked_at=when).serialize())


def test_a_user_revokes_its_own_lost_device_and_it_is_cut_off(stack: Stack) -> None:
    network = _network(stack)
    person = seed_person(stack, network, prekeys=0)
    first = person.devices[0]
    lost = add_device(stack, person)
    assert first.identity is not None
    with Socket(stack, lost) as lost_socket, Socket(stack, first) as socket:
        assert lost_socket.request("ping")["action"] == "pong"
        answer = socket.request(
            "revoke_device", revocation=_revocation(first.identity, person.user_id, lost.device_id)
        )
        assert answer == {
            "action": "device_revoked",
            "id": answer["id"],
            "device_id": lost.device_id,
        }

        def ping_until_closed() -> None:
            for _ in range(5):
                lost_socket.request("ping")

        with pytest.raises(ConnectionClosed):
            ping_until_closed()
    assert admin(stack, "GET", f"/devices/{lost.device_id}")["status"] == "revoked"


def test_revocations_must_be_the_users_own_fresh_and_identity_signed(stack: Stack) -> None:
    network = _network(stack)
    alice, bob = seed_person(stack, network, prekeys=0), seed_person(stack, network, prekeys=0)
    a, b = alice.devices[0], bob.devices[0]
    assert a.identity is not None
    assert b.identity is not None
    with Socket(stack, b) as socket:
        # Bob signs a revocation of Alice's device with his own identity: not his device.
        answer = socket.request(
            "revoke_device", revocation=_revocation(b.identity, a.user_id, a.device_id)
        )
        assert (answer["code"], answer["message"]) == (
            "forbidden",
            "a revocation may name only your own devices",
        )
        # A key that is not Bob's identity does not verify.
        forged = _revocation(IdentityKeyPair.generate(), b.user_id, b.device_id)
        assert socket.request("revoke_device", revocation=forged)["code"] == "invalid_certificate"
        stale = _revocation(
            b.identity, b.user_id, b.device_id, at=int(time.time() * 1000) - 3600_000
        )
        assert socket.request("revoke_device", revocation=stale)["code"] == "bad_request"
        unknown = _revocation(b.identity, b.user_id, "dev-nonexistent")
        assert socket.request("revoke_device", revocation=unknown)["code"] == "not_found"
    assert admin(stack, "GET", f"/devices/{a.device_id}")["status"] == "active"
