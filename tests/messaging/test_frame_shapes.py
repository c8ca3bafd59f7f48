"""Both sides hold frames to the shared shapes (``sotto.frames``), over the real local stack.

Every frame the SDK sends during a room's life parses with the server's own
``parse_frame`` and its route's model; every answer and push it receives is
exactly of its shape in ``sotto.frames.answers`` (no field missing, none
extra), and so is every HTTP answer, public and admin, of its route's shape in
``sotto.frames.answers_http.HTTP_ANSWERS``. A malformed answer is a clear
``MalformedFrame``; a malformed push is dropped and a sync brings what it
announced.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast, get_args, get_type_hints

import pytest

from sotto.client.api import AdminApi, fetch_info
from sotto.client.encoding import b64e
from sotto.client.errors import MalformedFrame
from sotto.client.http import HttpClient
from sotto.client.server import ServerConfig
from sotto.client.session import Session
from sotto.frames import answers, answers_http
from sotto.frames.requests import request_model
from sotto.protocol.certificates import DeviceRevocation
from sotto_server.logic.requests import parse_frame
from tests.support.stack import Stack

from .conftest import (
    Team,
    enroll_person,
    link_second_device,
    open_messenger,
    texts,
    wait_for,
)


def _action(shape: type[Any]) -> str:
    (action,) = get_args(get_type_hints(shape)["action"])
    return str(action)


# The shape of each answer by its action (from the table in sotto.frames.answers: the
# membership routes all answer "conversation").
_ANSWER_SHAPES: dict[str, type[Any]] = {_action(s): s for s in answers.ANSWERS.values()}
# Each HTTP route ("METHOD path", sotto.frames.answers_http.HTTP_ANSWERS) as a pattern
# of the paths it serves: a {parameter} is one segment; the query is not matched.
_HTTP_ROUTES: dict[str, re.Pattern[str]] = {
    route: re.compile(
        re.sub(r"\\\{\w+\\\}", "[^/?]+", re.escape(route.partition(" ")[2])) + r"(\?.*)?"
    )
    for route in answers_http.HTTP_ANSWERS
}
# Routes not called here: retention's writes need the archive key; their answers are checked
# exactly in tests/records/test_retention_identity.py.
_NOT_CALLED = {
    "PUT /v1/admin/networks/{network_id}/retention",
    "POST /v1/admin/networks/{network_id}/retention/disable",
    "POST /v1/admin/networks/{network_id}/retention/rotate",
}


def _http_route(method: str, path: str) -> str:
    (route,) = [
        r
        for r, pattern in _HTTP_ROUTES.items()
        if r.startswith(f"{method} ") and pattern.fullmatch(path)
    ]
    return route


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every frame any Session sends, and every frame it receives, while the test runs."""
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    send, receive, next_push = Session._send, Session._receive, Session.next_push

    def record_send(self: Session, frame: dict[str, Any]) -> None:
        sent.append(json.loads(json.dumps(frame)))
        send(self, frame)

    def record_receive(self: Session, action: str, deadline: float) -> dict[str, Any]:
        frame = receive(self, action, deadline)
        received.append(json.loads(json.dumps(frame)))
        return frame

    def record_push(self: Session, timeout: float) -> dict[str, Any] | None:
        # Pushes kept while a request waited were recorded by _receive already.
        kept = bool(self.pushes)
        frame = next_push(self, timeout)
        if frame is not None and not kept:
            received.append(json.loads(json.dumps(frame)))
        return frame

    monkeypatch.setattr(Session, "_send", record_send)
    monkeypatch.setattr(Session, "_receive", record_receive)
    monkeypatch.setattr(Session, "next_push", record_push)
    return sent, received


@pytest.fixture
def http_wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Every HTTP answer's method, path and JSON body while the test runs."""
    bodies: list[tuple[str, str, dict[str, Any]]] = []
    call = HttpClient.call

    def record(
        self: HttpClient, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        answer = call(self, method, path, body)
        bodies.append((method, path, json.loads(json.dumps(answer))))
        return answer

    monkeypatch.setattr(HttpClient, "call", record)
    return bodies


def _exactly_of_their_shapes(received: list[dict[str, Any]]) -> set[str]:
    """What of ``received`` has a shape, each checked to be exactly of it (none extra)."""
    seen: set[str] = set()
    for frame in received:
        action = str(frame.get("action"))
        shape = answers.PUSHES.get(action) if "id" not in frame else _ANSWER_SHAPES.get(action)
        if shape is None:
            continue
        assert answers.parse(shape, frame) == frame, action
        seen.add(f"{action}{'' if 'id' in frame else ' push'}")
    return seen


def test_every_frame_of_a_rooms_life_is_of_its_shared_shape_on_both_sides(
    team: Team,
    wire: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    stack: Stack,
    server: ServerConfig,
    tmp_path: Path,
) -> None:
    sent, received = wire
    a1, a2 = team.alice.devices
    a1.read_policy()
    b1, _b2 = team.bob.devices
    # Someone alice has no pairwise session with yet (the team's earlier tests made
    # theirs): adding them fetches their bundle.
    handle = f"shapes-{secrets.token_hex(3)}"
    newcomer = enroll_person(stack, server, tmp_path, handle)
    c1 = open_messenger(tmp_path, handle)
    # GIVEN a room with a conversation in it, a member added, and everyone caught up
    cid = a1.create_room(f"shapes-{secrets.token_hex(3)}", [team.bob.user_id])
    for device in (a2, b1):
        device.sync()
    a1.send_text(cid, "shapes: one")
    assert texts(wait_for(b1, 1, cid) + b1.sync(), cid) == ["shapes: one"]
    b1.send_text(cid, "shapes: two")
    a1.add_members(cid, [newcomer])
    a1.send_text(cid, "shapes: three")
    assert texts(wait_for(c1, 1, cid) + c1.sync(), cid) == ["shapes: three"]
    for device in (a1, a2, b1):
        wait_for(device, 1, cid)
        device.sync()
    c1.close()

    # THEN every request parses with the server's own parser and its route's model
    assert sent
    for frame in sent:
        model = request_model(frame["action"])
        assert model is not None, frame["action"]
        parse_frame(model, json.dumps(frame))
    # AND every answer and push of a typed shape is exactly that shape
    seen = _exactly_of_their_shapes(received)
    # AND the flow covered the core routes and pushes
    assert {"sent", "sync", "acked", "distributed", "bundles", "policy"} <= seen
    assert {"message push", "mail push", "membership push"} <= seen


def test_a_malformed_sync_answer_is_a_clear_error_and_nothing_of_it_is_used(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    a1 = team.alice.devices[0]
    [c1] = team.carol.devices
    cid = a1.direct(team.carol.user_id)
    c1.sync()
    a1.send_text(cid, "shapes: despite a bad page")
    real = c1.session.request_parts

    def hostile(action: str, **fields: Any) -> list[dict[str, Any]]:
        parts = real(action, **fields)
        if action == "sync":
            parts[0]["through"] = {cid: "many"}  # not a seq
        return parts

    monkeypatch.setattr(c1.session, "request_parts", hostile)
    # WHEN the server's sync answer breaks its shape
    with pytest.raises(MalformedFrame) as raised:
        c1.sync()
    # THEN the error names the route and the field, and the message is not lost
    assert raised.value.action == "sync"
    assert raised.value.fields == (f"through.{cid}",)
    assert "malformed sync answer" in str(raised.value)
    monkeypatch.undo()
    assert texts(c1.sync(), cid) == ["shapes: despite a bad page"]


@pytest.mark.parametrize(
    "push",
    [
        {"action": "message", "conversation_id": "c", "seq": "1", "envelope": "AA"},
        {"action": "mail", "mail_id": 7},
        {"action": "membership", "conversation_id": "c", "users": "everyone"},
        {"action": "prekeys_low", "one_time_prekeys": True},
        {"action": "policy", "policy": []},
    ],
)
def test_a_malformed_push_is_dropped_and_a_sync_brings_what_it_announced(
    team: Team, push: dict[str, Any]
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = a1.direct(team.bob.user_id)
    b1.sync()
    policy = b1.policy
    text = f"shapes: after a bad {push['action']} push"
    a1.send_text(cid, text)
    # WHEN a malformed push arrives ahead of the real one
    cast(Session, b1.session).pushes.appendleft(push)
    events = wait_for(b1, 1, cid) + b1.sync()
    # THEN listening goes on: the message arrives once, the policy is the one it was
    assert texts(events, cid) == [text]
    assert b1.policy == policy


def test_every_other_route_answers_exactly_its_shared_shape_over_the_stack(
    team: Team,
    wire: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    http_wire: list[tuple[str, str, dict[str, Any]]],
    stack: Stack,
    server: ServerConfig,
    tmp_path: Path,
) -> None:
    _sent, received = wire
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    # GIVEN someone new, enrolled and with a second device linked, over the public HTTP API
    handle = f"routes-{secrets.token_hex(3)}"
    newcomer = enroll_person(stack, server, tmp_path, handle)
    link_second_device(server, tmp_path, handle, f"{handle}-2")
    fetch_info(server.http)
    c1, c2 = open_messenger(tmp_path, handle), open_messenger(tmp_path, f"{handle}-2")
    # WHEN a room lives through every membership route
    cid = a1.create_room(f"routes-{secrets.token_hex(3)}", [team.bob.user_id, newcomer])
    a1.set_role(cid, newcomer, "moderator")
    c1.sync()
    c1.leave(cid)
    a1.remove_members(cid, [team.bob.user_id])
    a1.add_members(cid, [team.bob.user_id])
    # AND people are looked up, listed and checked
    a1.lookup_user(handle)
    a1.conversations()
    a1.safety(newcomer)
    a1.retention()
    a1.file_policy()
    # AND a file goes up, comes down, and another is started and abandoned
    source = tmp_path / "shapes.bin"
    source.write_bytes(os.urandom(20_000))
    sent = a1.send_file(cid, source)
    out = tmp_path / "out"
    out.mkdir()
    assert a1.download(sent.message_id, out).read_bytes() == source.read_bytes()
    started = a1.session.request("file_upload_start", conversation_id=cid, size=1000)
    a1.session.request("file_upload_abort", object_id=started["object_id"])
    # AND the rest: a ping, prekeys, and the newcomer revoking their second device
    a1.session.request("ping", payload="shapes")
    c1.replenish_prekeys()
    c2.close()
    identity = c1.keys.identity
    assert identity is not None  # the enrolled device holds it
    revocation = DeviceRevocation.issue(
        identity, newcomer, c2.info.device_id, revoked_at=int(time.time() * 1000)
    )
    c1.session.request("revoke_device", revocation=b64e(revocation.serialize()))
    b1.sync()
    c1.close()
    # AND an administrator calls the admin routes: on a network of their own, and on the
    # newcomer (in a security group of their own: no one else's policy moves)
    api = AdminApi(server)
    network = api.create_network("shapes")["network_id"]
    api.list_networks()
    invited = api.invite(network, "invitee", ttl_s=3600)
    api.list_invites(network)
    api.reissue_invite(network, invited["user_id"])
    api.revoke_invite(network, invited["user_id"])
    api.bulk_invite(network, [{"row": 2, "handle": "bulk-one"}, {"row": 3, "handle": "Bad"}])
    api.list_users(network)
    api.get_retention(network)
    api.set_policy(network, {"max_expiry_s": 86400, "files_allowed": False})
    api.show_policy(network)
    api.audit(network)
    home = api.get_user(newcomer)["network_id"]
    group = f"shapes-{secrets.token_hex(3)}"
    api.create_group(home, group)
    api.add_group_members(home, group, [newcomer, "usr-nobody"])
    api.set_policy(home, {"max_devices": 100}, group=group)
    api.user_policy(newcomer)
    api.remove_group_members(home, group, [newcomer])
    api.get_device(c2.info.device_id)
    api.revoke_device(c2.info.device_id)  # revoked by the newcomer already: done again
    api.suspend_user(newcomer)
    api.reinstate_user(newcomer)

    # THEN every answer and push is exactly of its shape, and every route was answered
    seen = _exactly_of_their_shapes(received)
    assert {_action(shape) for shape in answers.ANSWERS.values()} <= seen
    assert "link_requested push" in seen
    # AND so is every HTTP answer, of one of its route's shapes
    routes = set()
    for method, path, body in http_wire:
        route = _http_route(method, path)
        exact = [s for s in answers_http.HTTP_ANSWERS[route] if _parses_as(s, body) == body]
        assert exact, (route, body)
        routes.add(route)
    assert routes == set(answers_http.HTTP_ANSWERS) - _NOT_CALLED


def _parses_as(shape: type[Any], body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        parsed: dict[str, Any] = answers.parse(shape, body)
    except answers.ShapeError:
        return None
    return parsed
