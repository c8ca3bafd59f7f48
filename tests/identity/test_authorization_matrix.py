"""Who may do what: every route against every kind of caller.

Connection-level callers (revoked, suspended, forged, replayed, expired, wrong
audience) never get a socket, so no route is reachable; for the callers that
do (own device, another user, another network), each route that names a
target is tried against each target.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from sotto import topology
from sotto.protocol.certificates import DeviceRevocation
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    Remove,
    Role,
    SetRole,
    direct_conversation_id,
)
from tests.support.logs import create_fields, direct_fields, log_state, sign
from tests.support.stack import SeededDevice, Socket, admin, b64, http, seed_device


def upgrade(stack, headers) -> int:
    try:
        with connect(stack.websocket, additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.fixture(scope="module")
def world(stack):
    """Alice and Bob in one network, Carol in another; Alice has prekeys and a link."""
    other_network = admin(stack, "POST", "/networks", {"name": "Elsewhere"})["network_id"]
    alice, bob = seed_device(stack), seed_device(stack)
    carol = seed_device(stack, network_id=other_network)
    with Socket(stack, alice) as socket:
        from tests.support.stack import publish_prekeys

        publish_prekeys(socket, 10, signed=True)
        link_id = socket.request("link_create")["link_id"]
        dave = seed_device(stack)
        conversation = socket.request(
            "create_conversation", **direct_fields(socket, alice, dave.user_id)
        )
        room = socket.request("create_conversation", **create_fields(socket, alice, [dave.user_id]))
        cid = conversation["conversation"]["conversation_id"]
        rid = room["conversation"]["conversation_id"]
        spare = socket.request(
            "create_conversation", **create_fields(socket, alice, [dave.user_id])
        )
        sid = spare["conversation"]["conversation_id"]
        states = {
            "conversation": log_state(socket, cid),
            "room": log_state(socket, rid),
            "spare": log_state(socket, sid),
        }
    return {
        "states": states,
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "dave": dave,
        "link_id": link_id,
        "conversation_id": cid,
        "room_id": rid,
        "spare_id": sid,  # a room a matrix row changes
    }


def replayed_headers(stack, device: SeededDevice) -> dict[str, str]:
    headers = device.headers(stack.audience)
    assert upgrade(stack, headers) == 101
    return headers


CONNECTION_CASES: dict[str, Any] = {
    "revoked device": lambda stack, w: seed_device(stack, status="revoked").headers(stack.audience),
    "forged signature": lambda stack, w: SeededDevice(
        w["alice"].device_id, "u", "n", seed_device(stack).key
    ).headers(stack.audience),
    "replayed token": lambda stack, w: replayed_headers(stack, w["alice"]),
    "expired token": lambda stack, w: w["alice"].headers(
        stack.audience, now=int(time.time()) - 400
    ),
    "wrong audience": lambda stack, w: w["alice"].headers("otherapi/local"),
}


@pytest.mark.parametrize("case", sorted(CONNECTION_CASES))
def test_refused_callers_reach_no_route(stack, world, case):
    assert upgrade(stack, CONNECTION_CASES[case](stack, world)) == 403


def test_suspended_user_reaches_no_route(stack):
    device = seed_device(stack)
    admin(stack, "POST", f"/users/{device.user_id}/suspend")
    assert upgrade(stack, device.headers(stack.audience)) == 403


# (route, caller, target) -> expected answer action or error code.
TARGETED = [
    ("fetch_bundles", "alice", "alice", "bundles"),
    ("fetch_bundles", "bob", "alice", "bundles"),
    ("fetch_bundles", "carol", "alice", "unavailable: unknown"),  # across networks
    ("list_devices", "alice", "alice", "devices"),
    ("list_devices", "bob", "alice", "devices"),
    ("list_devices", "carol", "alice", "not_found"),
    ("link_pending", "alice", "link", "link_pending"),
    ("link_pending", "bob", "link", "not_found"),
    ("link_pending", "carol", "link", "not_found"),
    ("conversation_devices", "dave", "conversation", "conversation_devices"),
    ("conversation_devices", "bob", "conversation", "not_found"),
    ("conversation_devices", "carol", "conversation", "not_found"),
    ("add_members", "alice", "conversation", "forbidden"),  # direct: nobody adds
    ("add_members", "bob", "conversation", "not_found"),
    ("send", "bob", "conversation", "not_found"),
    ("send", "carol", "conversation", "not_found"),
    ("distribute", "bob", "conversation", "not_found"),
    ("create_conversation", "carol", "alice", "not_found"),  # across networks
    ("create_conversation", "bob", "alice", "conversation"),
    ("remove_members", "dave", "room", "forbidden"),  # a member, not a moderator
    ("remove_members", "bob", "room", "not_found"),
    ("remove_members", "carol", "room", "not_found"),
    ("remove_members", "alice", "conversation", "forbidden"),  # direct
    ("set_role", "dave", "room", "forbidden"),
    ("set_role", "bob", "room", "not_found"),
    ("set_role", "carol", "room", "not_found"),
    ("leave", "bob", "room", "not_found"),
    ("leave", "carol", "room", "not_found"),
    ("leave", "alice", "conversation", "forbidden"),  # a direct conversation is its two
    ("leave", "dave", "spare", "left"),  # anyone may leave
    ("membership_log", "dave", "room", "membership_log"),
    ("membership_log", "dave", "conversation", "membership_log"),
    ("membership_log", "bob", "room", "not_found"),
    ("membership_log", "carol", "conversation", "not_found"),
    ("identities", "bob", "alice", "found"),
    ("identities", "carol", "alice", "unknown"),  # across networks: not even its key
    ("lookup_user", "bob", "alice", "user"),
    ("lookup_user", "alice", "alice", "user"),
    ("lookup_user", "carol", "alice", "not_found"),  # across networks: as if unknown
    ("lookup_user", "carol", "handle of alice", "not_found"),
    # Only the user's own identity revokes its devices.
    ("revoke_device", "bob", "alice", "forbidden"),
    ("revoke_device", "carol", "alice", "forbidden"),
]


def _op(w: dict[str, Any], caller: str, target: str, change: Change) -> dict[str, Any]:
    """An operation signed by the caller after the target's log (read by its creator)."""
    state = w["states"].get(target, w["states"]["room"])
    return {"op": b64(sign(w[caller], state, change))}


def _direct(w: dict[str, Any], caller: str, target: str) -> dict[str, Any]:
    """The caller's signed creation of its direct conversation with the target."""
    me, other = w[caller], w[target]
    cid = direct_conversation_id(me.user_id, other.user_id)
    entries = sorted(
        (MemberEntry.of(d.user_id, d.identity.public) for d in (me, other)),
        key=lambda e: e.user_id,
    )
    op = sign(me, None, Create(ConversationKind.DIRECT, tuple(entries)), cid=cid)
    return {"conversation_id": cid, "op": b64(op)}


# Each: (world, caller, target) -> the route's fields beyond its target.
FIELDS: dict[str, Any] = {
    "add_members": lambda w, c, t: _op(
        w, c, t, Add((MemberEntry.of(w["bob"].user_id, w["bob"].identity.public),))
    ),
    "send": lambda w, c, t: {"envelope": "AAAA"},
    "distribute": lambda w, c, t: {"chain_id": "A" * 22, "distributions": ["AAAA"]},
    "create_conversation": _direct,
    "remove_members": lambda w, c, t: _op(w, c, t, Remove((w["alice"].user_id,))),
    "set_role": lambda w, c, t: _op(w, c, t, SetRole(w["dave"].user_id, Role.MODERATOR)),
    "leave": lambda w, c, t: _op(w, c, t, Leave()),
    "membership_log": lambda w, c, t: {"after": -1},
    "identities": lambda w, c, t: {"user_ids": [w[t].user_id]},
    # The caller signs, with its own identity, a revocation of the target's device.
    "revoke_device": lambda w, c, t: {
        "revocation": b64(
            DeviceRevocation.issue(
                w[c].identity, w[t].user_id, w[t].device_id, revoked_at=int(time.time() * 1000)
            ).serialize()
        )
    },
}


def outcome(answer: dict[str, Any]) -> str:
    """A bundle fetch names each device it could not serve; other routes answer or refuse."""
    if answer["action"] == "bundles" and not answer["bundles"]:
        (unavailable,) = answer["unavailable"]
        return f"unavailable: {unavailable['reason']}"
    if answer["action"] == "identities":
        return "found" if answer["identities"] else "unknown"
    return str(answer.get("code", answer["action"]))


@pytest.mark.parametrize(("route", "caller", "target", "expected"), TARGETED)
def test_targeted_route_matrix(stack, world, route, caller, target, expected):
    fields: dict[str, Any]
    if target == "link":
        fields = {"link_id": world["link_id"]}
    elif target == "conversation":
        fields = {"conversation_id": world["conversation_id"]}
    elif target in ("room", "spare"):
        fields = {"conversation_id": world[f"{target}_id"]}
    elif route in ("create_conversation", "identities", "revoke_device"):
        fields = {}
    elif target == "handle of alice":
        fields = {"handle": world["alice"].handle}
    elif route == "fetch_bundles":
        fields = {
            "devices": [{"user_id": world[target].user_id, "device_id": world[target].device_id}]
        }
    else:
        fields = {"user_id": world[target].user_id}
    if route in FIELDS:
        fields.update(FIELDS[route](world, caller, target))
    with Socket(stack, world[caller]) as socket:
        answer = socket.answers(route, **fields)[0]
    assert outcome(answer) == expected


@pytest.mark.parametrize("caller", ["bob", "carol"])
def test_nobody_approves_a_link_of_another_user(stack, world, caller):
    with Socket(stack, world[caller]) as socket:
        answer = socket.request("link_approve", link_id=world["link_id"], certificate="AAAA")
    assert answer["code"] == "not_found"


def test_prekeys_of_another_device_cannot_be_published(stack, world):
    alice = world["alice"]
    assert alice.secrets is not None
    prekey = alice.secrets.new_one_time_prekeys(1, now=int(time.time() * 1000))[0]
    with Socket(stack, world["bob"]) as socket:
        answer = socket.request("publish_prekeys", one_time_prekeys=[b64(prekey.serialize())])
    assert answer["code"] == "invalid_certificate"


@pytest.mark.parametrize(
    "route", [r for r in topology.HTTP_ROUTES if r.iam], ids=lambda r: f"{r.method} {r.path}"
)
def test_admin_routes_refuse_unsigned_requests(stack, route):
    path = route.path.replace("{network_id}", "net-x").replace("{user_id}", "usr-x")
    path = path.replace("{device_id}", "dev-x").replace("{group}", "g")
    status, answer = http(stack, route.method, path, {} if route.method == "POST" else None)
    assert (status, answer) == (403, {"message": "Forbidden"})


def test_every_ws_route_is_in_the_matrix_or_own_device_only():
    covered = {route for route, *_ in TARGETED} | {
        "link_approve",
        "publish_prekeys",
        "prekey_status",  # acts on the caller's own device only
        "link_create",  # acts on the caller's own user only
        "ping",
        "list_conversations",  # the caller's own conversations only
        "sync",  # the caller's own device only
        "ack",  # the caller's own cursors and mail only
        "policy",  # the caller's own effective policy only
        "retention",  # the caller's own network only (test_retention_identity.py)
    }
    named = {r.route_key for r in topology.WS_ROUTES if not r.route_key.startswith("$")}
    assert named <= covered, named - covered
