"""Enrollment with invite codes: single use, race-safe, every certificate checked."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from sotto_server.dal.directory import DirectoryStore, Invite
from sotto_server.logic.codes import hash_code, new_code
from tests.support.stack import Stack, admin, b64, http, invite


def enrollment_body(code: str, user_id: str, *, identity: IdentityKeyPair | None = None):
    identity = identity or IdentityKeyPair.generate()
    device = DeviceSecrets.create(
        identity, user_id, f"dev-{secrets.token_hex(6)}", now=int(time.time() * 1000)
    )
    body = {
        "code": code,
        "identity_key": b64(identity.public.serialize()),
        "device_certificate": b64(device.certificate.serialize()),
        "signed_prekey": b64(device.current_signed_prekey().serialize()),
    }
    return body, device


def user_exists(stack: Stack, user_id: str) -> bool:
    return http(stack, "GET", f"/v1/admin/users/{user_id}", signed=True)[0] == 200


def test_lookup_names_the_invited_user_without_using_the_code(stack):
    invited = invite(stack, handle=f"look-{secrets.token_hex(3)}")
    for _ in range(2):
        status, answer = http(stack, "POST", "/v1/enroll/lookup", {"code": invited["code"]})
        assert status == 200
        assert answer["user_id"] == invited["user_id"]
        assert answer["handle"] == invited["handle"]
        assert answer["network_name"] == "Local"


def test_code_is_accepted_in_any_case_and_grouping(stack):
    invited = invite(stack)
    sloppy = invited["code"].replace("-", " ").lower()
    assert http(stack, "POST", "/v1/enroll/lookup", {"code": sloppy})[0] == 200


def test_enrollment_creates_user_and_device_once(stack):
    invited = invite(stack)
    body, device = enrollment_body(invited["code"], invited["user_id"])
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert status == 200
    assert answer == {
        "network_id": invited["network_id"],
        "user_id": invited["user_id"],
        "device_id": device.device_id,
    }
    user = admin(stack, "GET", f"/users/{invited['user_id']}")
    assert [d["device_id"] for d in user["devices"]] == [device.device_id]

    again, _ = enrollment_body(invited["code"], invited["user_id"])
    status, answer = http(stack, "POST", "/v1/enroll", again)
    assert status == 404
    assert answer["code"] == "not_found"


def test_racing_enrollments_with_one_code_let_exactly_one_win(stack):
    invited = invite(stack)
    bodies = [enrollment_body(invited["code"], invited["user_id"])[0] for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda b: http(stack, "POST", "/v1/enroll", b)[0], bodies))
    assert statuses == [200] + [404] * 7
    user = admin(stack, "GET", f"/users/{invited['user_id']}")
    assert len(user["devices"]) == 1


def test_unknown_code_is_404(stack):
    body, _ = enrollment_body("ABCD-EFGH-JKMN-PQRS-TVWX", "usr-nobody")
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (404, "not_found")


def test_expired_invite_is_404(stack):
    # Invites live at least a minute through the admin API; write one that has
    # already lapsed straight into the table (TTL has not removed it yet).
    code = new_code()
    network_id = stack.endpoints["default_network"]["network_id"]
    now = int(time.time() * 1000)
    lapsed = Invite(
        hash_code(code),
        network_id,
        f"usr-{secrets.token_hex(4)}",
        f"late-{secrets.token_hex(3)}",
        created_at=now - 120_000,
        expires_at=now - 1,
        used=False,
    )
    store = DirectoryStore(stack.client("dynamodb"), stack.table("DirectoryTable"))
    store.create_invite(lapsed, ttl_expires_at=now // 1000 + 3600)
    body, _ = enrollment_body(code, lapsed.user_id)
    assert http(stack, "POST", "/v1/enroll/lookup", {"code": code})[0] == 404
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (404, "not_found")
    assert not user_exists(stack, lapsed.user_id)


def test_certificate_for_another_user_is_refused_and_nothing_written(stack):
    invited = invite(stack)
    body, _ = enrollment_body(invited["code"], "usr-someone-else")
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (400, "invalid_certificate")
    assert not user_exists(stack, invited["user_id"])
    # The code was not used up by the refused attempt.
    assert http(stack, "POST", "/v1/enroll/lookup", {"code": invited["code"]})[0] == 200


def test_certificate_signed_by_another_identity_is_refused(stack):
    invited = invite(stack)
    body, _ = enrollment_body(invited["code"], invited["user_id"])
    other = IdentityKeyPair.generate()
    body["identity_key"] = b64(other.public.serialize())
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (400, "invalid_certificate")
    assert not user_exists(stack, invited["user_id"])


def test_tampered_certificate_signature_is_refused(stack):
    invited = invite(stack)
    body, device = enrollment_body(invited["code"], invited["user_id"])
    cert = device.certificate
    forged = replace(
        cert, mldsa_signature=bytes([cert.mldsa_signature[0] ^ 1]) + cert.mldsa_signature[1:]
    )
    body["device_certificate"] = b64(forged.serialize())
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (400, "invalid_certificate")
    assert not user_exists(stack, invited["user_id"])


def test_signed_prekey_of_another_device_is_refused(stack):
    invited = invite(stack)
    body, _ = enrollment_body(invited["code"], invited["user_id"])
    _, other = enrollment_body(invited["code"], invited["user_id"])
    body["signed_prekey"] = b64(other.current_signed_prekey().serialize())
    status, answer = http(stack, "POST", "/v1/enroll", body)
    assert (status, answer["code"]) == (400, "invalid_certificate")
    assert not user_exists(stack, invited["user_id"])


def test_invite_names_a_unique_handle_per_network(stack):
    handle = f"dup-{secrets.token_hex(3)}"
    invite(stack, handle=handle)
    network_id = stack.endpoints["default_network"]["network_id"]
    status, answer = http(
        stack,
        "POST",
        f"/v1/admin/networks/{network_id}/invites",
        {"handle": handle},
        signed=True,
    )
    assert (status, answer["code"]) == (409, "conflict")


def test_invite_into_unknown_network_is_404(stack):
    status, _ = http(
        stack, "POST", "/v1/admin/networks/net-nope/invites", {"handle": "x"}, signed=True
    )
    assert status == 404
