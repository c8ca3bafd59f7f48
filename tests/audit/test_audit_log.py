"""The audit log over the local stack: every event type with its actor, the chain,
sealing into the archive, EventBridge, and ``audit --verify`` catching edits and gaps."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from sotto.cli import main
from sotto.local.event_bus import EVENTS_FILE, read_events
from sotto.local.events import LOCAL_ADMIN_ARN
from sotto.protocol.certificates import DeviceRevocation
from sotto.protocol.keys import SigningKey
from tests.identity.test_links import certify
from tests.support.people import add_device, seed_person
from tests.support.stack import Socket, Stack, admin, b64, http, invite, next_loopback, run_schedule


def _entries(stack: Stack, network: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = admin(stack, "GET", f"/networks/{network}/audit?after={after}")
        found += [
            {"seq": e["seq"], "hash": e["hash"], **json.loads(e["body"])} for e in page["entries"]
        ]
        after = page["next_after"]
    return found


def _garbage_enrollment(stack: Stack, code: str) -> tuple[int, Any]:
    return http(
        stack,
        "POST",
        "/v1/enroll",
        source=next_loopback(),
        body={
            "code": code,
            "identity_key": "AAAA",
            "device_certificate": "AAAA",
            "signed_prekey": "AAAA",
        },
    )


@pytest.fixture(scope="module")
def history(stack: Stack) -> dict[str, Any]:
    """One network through every kind of event the server records."""
    network = admin(stack, "POST", "/networks", {"name": f"audit-{secrets.token_hex(3)}"})[
        "network_id"
    ]
    person = seed_person(stack, network, prekeys=0)  # invite.created, enrollment.succeeded
    user = person.user_id
    admin(stack, "POST", f"/users/{user}/suspend")
    admin(stack, "POST", f"/users/{user}/reinstate")
    admin(stack, "PUT", f"/networks/{network}/policy", {"max_devices": 5})
    admin(stack, "POST", f"/networks/{network}/groups", {"name": "ops"})
    admin(stack, "PUT", f"/networks/{network}/groups/ops/policy", {"calls_allowed": False})
    admin(stack, "POST", f"/networks/{network}/groups/ops/members", {"user_ids": [user]})
    admin(stack, "POST", f"/networks/{network}/groups/ops/members/remove", {"user_ids": [user]})
    pending = invite(stack, network, f"p{secrets.token_hex(3)}")
    admin(stack, "POST", f"/networks/{network}/invites/{pending['user_id']}/reissue", {})
    admin(stack, "POST", f"/networks/{network}/invites/{pending['user_id']}/revoke")
    locked = invite(stack, network, f"l{secrets.token_hex(3)}")
    for _ in range(5):
        assert _garbage_enrollment(stack, locked["code"])[0] in (400,)
    # A device of the user's own revoked with the identity's signature, over the socket.
    spare = add_device(stack, person)
    first = person.devices[0]
    assert first.identity is not None
    revocation = DeviceRevocation.issue(
        first.identity, user, spare.device_id, revoked_at=int(time.time() * 1000)
    )
    with Socket(stack, first) as socket:
        answer = socket.request("revoke_device", revocation=b64(revocation.serialize()))
        assert answer["action"] == "device_revoked", answer
        # A new device linked: link.requested (anonymous), link.approved (the device).
        link = socket.request("link_create")
        new_key, new_id = SigningKey.generate(), f"dev-{secrets.token_hex(6)}"
        status, _ = http(
            stack,
            "POST",
            "/v1/link/requests",
            {
                "code": link["code"],
                "device_id": new_id,
                "device_key": b64(new_key.public.serialize()),
            },
            source=next_loopback(),
        )
        assert status == 200
        approved = socket.request(
            "link_approve",
            link_id=link["link_id"],
            certificate=b64(certify(first, new_id, new_key).serialize()),
        )
        assert approved["action"] == "link_approved", approved
    admin(stack, "POST", f"/devices/{first.device_id}/revoke")
    return {"network": network, "user": user, "first": first, "spare": spare, "pending": pending}


def test_every_event_type_is_recorded_with_its_actor(stack: Stack, history: dict[str, Any]) -> None:
    entries = _entries(stack, history["network"])
    kinds = {(e["event"], e["actor"]["kind"]) for e in entries}
    for event in (
        "network.created",
        "invite.created",
        "user.suspended",
        "user.reinstated",
        "policy.set",
        "group.created",
        "group.policy_set",
        "group.member_added",
        "group.member_removed",
        "invite.reissued",
        "invite.revoked",
        "device.revoked",
    ):
        assert (event, "iam") in kinds, event
    for event in ("enrollment.succeeded", "enrollment.failed", "invite.locked", "link.requested"):
        assert (event, "anonymous") in kinds, event
    assert ("device.revoked", "device") in kinds
    assert ("link.approved", "device") in kinds
    admin_entries = [e for e in entries if e["actor"]["kind"] == "iam"]
    assert {e["actor"]["id"] for e in admin_entries} == {LOCAL_ADMIN_ARN}
    own = next(
        e for e in entries if e["event"] == "device.revoked" and e["actor"]["kind"] == "device"
    )
    assert own["actor"] == {
        "kind": "device",
        "id": history["first"].device_id,
        "user_id": history["user"],
    }
    assert own["subject"]["device_id"] == history["spare"].device_id
    failed = [e for e in entries if e["event"] == "enrollment.failed"]
    assert [e["detail"]["failed_attempts"] for e in failed] == [1, 2, 3, 4, 5]
    assert all(e["outcome"] == "refused" for e in failed)
    assert all(e["network_id"] == history["network"] for e in entries)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    # Nothing secret: no invite code is ever in the log.
    assert history["pending"]["code"] not in json.dumps(entries)


def test_every_entry_is_published_to_eventbridge(stack: Stack, history: dict[str, Any]) -> None:
    published = read_events(stack.log_path.parent / EVENTS_FILE)
    mine = [json.loads(e["Detail"]) for e in published if history["network"] in e["Detail"]]
    assert {e["Source"] for e in published} == {"sotto"}
    assert all(
        e["EventBusName"] == stack.endpoints["resources"]["buses"]["AuditBus"] for e in published
    )
    hashes = {e["hash"] for e in _entries(stack, history["network"])}
    assert {d["hash"] for d in mine} == hashes


def _verify(capsys: pytest.CaptureFixture[str], stack: Stack, network: str) -> tuple[int, str, str]:
    code = main(["admin", "--server", str(stack.log_path.parent), "audit", network, "--verify"])
    out, err = capsys.readouterr()
    return code, out, err


def test_sealed_log_verifies_then_an_edit_and_a_removal_are_caught(
    stack: Stack, history: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    network = history["network"]
    sealed = run_schedule(stack, "audit_sealer")["sealed"]
    assert any(s["network_id"] == network for s in sealed)
    code, out, err = _verify(capsys, stack, network)
    assert code == 0, err
    assert "verified:" in out
    assert "sealed segments match" in out
    # Entries after the seal are in the chain but not yet in a segment: still fine.
    admin(stack, "POST", f"/users/{history['user']}/suspend")
    assert _verify(capsys, stack, network)[0] == 0

    dynamodb, table = stack.client("dynamodb"), stack.table("AuditTable")
    key = {"pk": {"S": f"NET#{network}"}, "sk": {"S": f"E#{3:012d}"}}
    original = dynamodb.get_item(TableName=table, Key=key)["Item"]
    edited = original["body"]["S"].replace('"outcome":"success"', '"outcome":"refused"')
    assert edited != original["body"]["S"]
    dynamodb.put_item(TableName=table, Item={**original, "body": {"S": edited}})
    code, _out, err = _verify(capsys, stack, network)
    assert code == 1
    assert "edit: entry 3 does not hash to its recorded hash" in err
    assert "edit: entry 3 differs from its sealed copy" in err

    dynamodb.put_item(TableName=table, Item=original)
    assert _verify(capsys, stack, network)[0] == 0
    fifth = {**key, "sk": {"S": f"E#{5:012d}"}}
    removed = dynamodb.get_item(TableName=table, Key=fifth)["Item"]
    dynamodb.delete_item(TableName=table, Key=fifth)
    code, _out, err = _verify(capsys, stack, network)
    assert code == 1
    assert "gap: entries 5..5 are missing" in err
    assert "gap: sealed entry 5 was removed from the log" in err
    dynamodb.put_item(TableName=table, Item=removed)
    assert _verify(capsys, stack, network)[0] == 0


def test_audit_listing_since_and_json(
    stack: Stack, history: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    server = str(stack.log_path.parent)
    assert main(["admin", "--server", server, "--json", "audit", history["network"]]) == 0
    listed = json.loads(capsys.readouterr().out)["entries"]
    assert listed[0]["event"] == "network.created"
    assert main(["admin", "--server", server, "audit", history["network"], "--since", "1s"]) == 0
    assert "network.created" not in capsys.readouterr().out
    status, answer = http(stack, "GET", "/v1/admin/networks/net-none/audit", signed=True)
    assert (status, answer["code"]) == (404, "not_found")


def test_concurrent_writers_never_fork_the_chain(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    network = admin(stack, "POST", "/networks", {"name": "race"})["network_id"]
    admin(stack, "POST", f"/networks/{network}/groups", {"name": "g"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: invite(stack, network, f"race{i}"), range(16)))
    entries = _entries(stack, network)
    assert [e["seq"] for e in entries] == list(range(1, 19))
    assert len({e["prev"] for e in entries}) == len(entries)


def test_verify_without_the_archive_does_not_claim_the_segments(
    stack: Stack, history: dict[str, Any]
) -> None:
    from sotto.client.api import AdminApi
    from sotto.client.audit import read_log, verify_log
    from tests.support.people import server_of

    report = verify_log(read_log(AdminApi(server_of(stack)), history["network"]), None)
    assert report.problems == [
        "sealed segments not checked: name the archive bucket (--archive-bucket)"
    ]
