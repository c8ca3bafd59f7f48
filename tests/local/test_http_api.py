"""The HTTP API served by the local stack: public routes and IAM-authorized admin routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.stack import CREDENTIALS


def request(
    url: str, *, signed: bool = False, method: str = "GET", access_key: str | None = None
) -> tuple[int, Any]:
    headers: dict[str, str] = {}
    if signed:
        aws = AWSRequest(method=method, url=url)
        credentials = Credentials(
            access_key or CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"]
        )
        SigV4Auth(credentials, "execute-api", CREDENTIALS["region_name"]).add_auth(aws)
        headers = dict(aws.headers.items())
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers, method=method)
        ) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_info_is_public(stack):
    status, body = request(f"{stack.endpoints['http']}/v1/info")
    assert status == 200
    assert body["service"] == "sotto"
    assert body["stage"] == "local"


def test_admin_route_without_sigv4_is_403(stack, device):
    status, body = request(f"{stack.endpoints['http']}/v1/admin/devices/{device.device_id}")
    assert status == 403
    assert body == {"message": "Forbidden"}


def test_admin_route_with_sigv4_returns_the_device(stack, device):
    url = f"{stack.endpoints['http']}/v1/admin/devices/{device.device_id}"
    status, body = request(url, signed=True)
    assert status == 200
    assert body["device_id"] == device.device_id
    assert body["status"] == "active"


def test_admin_route_refuses_an_iam_caller_not_named_as_admin(stack, device):
    # IAM would let any principal with execute-api:Invoke through; the handler
    # admits only the deployment's admin principals (locally: the local user).
    url = f"{stack.endpoints['http']}/v1/admin/devices/{device.device_id}"
    status, body = request(url, signed=True, access_key="AKIAOTHERPRINCIPAL00")
    assert status == 403
    assert body["code"] == "forbidden"
    assert "arn:" not in body["message"]
    assert "admin caller refused" in stack.log()


def test_admin_route_answers_404_for_unknown_device(stack):
    status, _ = request(f"{stack.endpoints['http']}/v1/admin/devices/dev-nobody", signed=True)
    assert status == 404


def test_admin_route_rejects_malformed_device_id(stack):
    status, body = request(f"{stack.endpoints['http']}/v1/admin/devices/a%20b", signed=True)
    assert status == 400
    assert "Traceback" not in json.dumps(body)


def test_unknown_http_route_is_404(stack):
    assert request(f"{stack.endpoints['http']}/v1/nothing-here")[0] == 404


def test_route_with_wrong_method_is_404(stack):
    assert request(f"{stack.endpoints['http']}/v1/info", method="DELETE")[0] == 404


REFUSED_ENROLL = {
    "code": "bad_request",
    "message": "invalid field(s): code, device_certificate, identity_key, signed_prekey",
}


def test_concurrent_requests_to_different_functions_keep_their_own_events(stack):
    """Powertools keeps the current event on a class shared by every resolver: in one
    process, an admin request and an enrollment running at once would swap bodies."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.stack import admin, http, next_loopback

    network = admin(stack, "POST", "/networks", {"name": "Concurrent"})["network_id"]

    def invite(index: int) -> str:
        answer = admin(stack, "POST", f"/networks/{network}/invites", {"handle": f"c{index}"})
        return "invite" if "code" in answer else str(answer)

    def enroll(_index: int) -> str:
        # Its own body always fails the same way; an invite's body would name "handle".
        status, answer = http(
            stack, "POST", "/v1/enroll", body={"code": "nope"}, source=next_loopback()
        )
        return "enroll" if (status, answer) == (400, REFUSED_ENROLL) else str(answer)

    with ThreadPoolExecutor(max_workers=8) as pool:
        invites = pool.map(invite, range(40))
        enrolls = pool.map(enroll, range(40))
        results = list(invites) + list(enrolls)
    assert results == ["invite"] * 40 + ["enroll"] * 40
