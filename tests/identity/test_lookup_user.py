"""Finding people by handle (issue 14, item 6): same network only, rate limited, typed.

At the deployment's defaults (``default_stack``): 60 lookups per device in
ten minutes, enough for a person and too few to walk a directory.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from sotto.client.encoding import b64e
from sotto_server.logic.limits import LIMITS
from tests.support.stack import Socket, Stack, admin, invite, seed_device


@pytest.fixture(scope="module")
def people(default_stack: Stack) -> dict[str, Any]:
    home = str(admin(default_stack, "POST", "/networks", {"name": "Lookup"})["network_id"])
    away = str(admin(default_stack, "POST", "/networks", {"name": "Elsewhere"})["network_id"])
    return {
        "alice": seed_device(default_stack, network_id=home),
        "bob": seed_device(default_stack, network_id=home),
        "carol": seed_device(default_stack, network_id=away),
        "home": home,
    }


def test_a_handle_names_a_user_and_their_identity_key(default_stack, people):
    alice, bob = people["alice"], people["bob"]
    with Socket(default_stack, alice) as socket:
        answer = socket.request("lookup_user", handle=bob.handle)
        back = socket.request("lookup_user", user_id=bob.user_id)
    assert answer["action"] == "user"
    assert answer["user_id"] == bob.user_id
    assert answer["handle"] == bob.handle
    assert answer["identity_key"] == b64e(bob.identity.public.serialize())
    assert back["handle"] == bob.handle


@pytest.mark.parametrize(
    "fields",
    [
        {"handle": "nobody-here"},
        {"user_id": "usr-0000000000000000"},
    ],
    ids=["unknown handle", "unknown user id"],
)
def test_unknown_people_are_not_found(default_stack, people, fields):
    with Socket(default_stack, people["alice"]) as socket:
        assert socket.request("lookup_user", **fields)["code"] == "not_found"


def test_another_networks_user_and_an_unenrolled_invite_look_like_nobody(default_stack, people):
    carol = people["carol"]
    pending = invite(default_stack, people["home"], "not-yet-enrolled")
    with Socket(default_stack, people["alice"]) as socket:
        assert socket.request("lookup_user", handle=carol.handle)["code"] == "not_found"
        assert socket.request("lookup_user", user_id=carol.user_id)["code"] == "not_found"
        assert socket.request("lookup_user", handle="not-yet-enrolled")["code"] == "not_found"
        assert socket.request("lookup_user", user_id=pending["user_id"])["code"] == "not_found"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"handle": "bob", "user_id": "usr-0000000000000000"},
        {"handle": "Bob\x1b[2J"},
        {"handle": "x" * 33},
        {"handle": 7},
    ],
    ids=["neither", "both", "escape", "too long", "not text"],
)
def test_bad_lookups_are_refused_by_name(default_stack, people, fields):
    with Socket(default_stack, people["alice"]) as socket:
        answer = socket.request("lookup_user", **fields)
    assert answer["code"] == "bad_request"
    assert "Traceback" not in str(answer)


def test_lookups_are_limited_per_device_at_the_defaults(default_stack, people):
    limit = LIMITS["lookup_device"]
    device = seed_device(default_stack, network_id=people["home"])
    with Socket(default_stack, device) as socket:
        for _ in range(3):  # stay inside one fixed window
            start = int(time.time()) // limit.window_s
            codes = [
                socket.request("lookup_user", handle=people["bob"].handle).get("code", "ok")
                for _ in range(limit.limit + 1)
            ]
            if int(time.time()) // limit.window_s == start:
                break
    assert codes[: limit.limit] == ["ok"] * limit.limit
    assert codes[limit.limit] == "rate_limited"
