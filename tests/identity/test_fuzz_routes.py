"""Hypothesis throws malformed bodies at every identity route, WebSocket and HTTP.

Each gets a documented answer; a refused request writes nothing to the
directory; nothing makes a handler fail.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sotto import topology
from tests.support.stack import CREDENTIALS, Socket, Stack, http, seed_device

DOCUMENTED = {
    "bad_json",
    "unknown_action",
    "bad_request",
    "invalid_certificate",
    "not_found",
    "forbidden",
    "conflict",
    "rate_limited",
    "invalid_envelope",
    "stale_devices",
    "revoked",
    "suspended",
}
NAMED_ROUTES = sorted(r.route_key for r in topology.WS_ROUTES if not r.route_key.startswith("$"))
FIELDS = [
    "id", "user_id", "link_id", "certificate", "signed_prekey", "one_time_prekeys",
    "code", "identity_key", "device_certificate", "device_id", "device_key", "name",
    "handle", "ttl_s", "kind", "members", "conversation_id", "user_ids", "chain_id",
    "distributions", "envelope", "to_user", "cursors", "mail", "read", "devices", "role",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.text(alphabet="ABCDEFGHJKMNPQRSTVWXYZ0123456789-_abc", min_size=0, max_size=300),
    st.just("A" * 9_000),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), values, max_size=5)


def directory_size(stack: Stack) -> int:
    """Items in the directory and messages tables (guards count requests, so are left out).

    moto counts a table's items when asked (DynamoDB itself refreshes ``ItemCount``
    every few hours): as exact as a scan, without reading the suite's thousands of
    items twice per example.
    """
    dynamodb = stack.client("dynamodb")
    return sum(
        int(dynamodb.describe_table(TableName=stack.table(table))["Table"]["ItemCount"])
        for table in ("DirectoryTable", "MessagesTable")
    )


@pytest.fixture(scope="module")
def socket(stack: Stack) -> Iterator[Socket]:
    with Socket(stack, seed_device(stack)) as connected:
        yield connected


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(NAMED_ROUTES), body=bodies)
def test_ws_routes_answer_malformed_frames_with_documented_errors(stack, socket, route, body):
    before = directory_size(stack)
    answer = socket.answers(route, **{k: v for k, v in body.items() if k != "id"})[0]
    if answer["action"] == "error":
        assert answer["code"] in DOCUMENTED, answer
        assert "Traceback" not in answer["message"]
        assert directory_size(stack) == before
    else:
        assert answer["action"] != "error"


HTTP_ROUTES = [r for r in topology.HTTP_ROUTES if r.method == "POST"]


@settings(max_examples=80, deadline=None)
@given(
    route=st.sampled_from(HTTP_ROUTES),
    body=st.one_of(bodies.map(json.dumps), st.text(max_size=100), st.just("{" * 5000)),
)
def test_http_routes_answer_malformed_bodies_with_documented_errors(stack, route, body):
    path = route.path.replace("{network_id}", stack.endpoints["default_network"]["network_id"])
    path = path.replace("{user_id}", "usr-fuzz").replace("{device_id}", "dev-fuzz")
    before = directory_size(stack)
    status, answer = http_raw(stack, path, body, signed=route.iam)
    if status >= 400:
        assert status < 500, answer
        assert answer["code"] in DOCUMENTED, answer
        assert directory_size(stack) == before


def http_raw(stack: Stack, path: str, body: str, *, signed: bool) -> tuple[int, Any]:
    """POST a raw (possibly non-JSON) body."""
    url = f"{stack.endpoints['http']}{path}"
    headers = {"Content-Type": "application/json"}
    if signed:
        request = AWSRequest(method="POST", url=url, data=body.encode(), headers=headers)
        SigV4Auth(
            Credentials(CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"]),
            "execute-api",
            CREDENTIALS["region_name"],
        ).add_auth(request)
        headers = dict(request.headers.items())
    call = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_http_unknown_route_and_wrong_method(stack):
    assert http(stack, "GET", "/v1/enroll")[0] == 404
