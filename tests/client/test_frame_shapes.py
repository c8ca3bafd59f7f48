"""``sotto.frames.requests`` and ``sotto.frames.answers``: one shape per route, both sides.

The SDK checks its requests with the models the server parses with, and parses
answers and pushes with the shapes the server builds them as.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, cast

import pytest

from sotto import topology
from sotto.client.api import AdminApi, PublicApi
from sotto.client.errors import InvalidRequest
from sotto.frames import answers, paginate_lists
from sotto.frames.requests import request_model, requests_by_action
from sotto_server.handlers import conversations, files, keys, messages

MAIL: dict[str, Any] = {
    "mail_id": "ab#01",
    "conversation_id": "c1",
    "kind": "distribution",
    "data": "AAAA",
    "from_device": "d1",
    "server_time": 1,
}
MESSAGE: dict[str, Any] = {"conversation_id": "c1", "seq": 3, "envelope": "AAAA", "server_time": 2}


def test_every_websocket_route_has_one_shared_request_model_and_the_server_uses_it() -> None:
    routes = {r.route_key for r in topology.WS_ROUTES if not r.route_key.startswith("$")}
    assert routes == set(requests_by_action())
    served = {}
    for handler in (conversations, files, keys, messages):
        for action, (model, _) in handler.routes().items():
            served[action] = model
    assert served  # the route tables' models are the shared ones themselves, not copies
    for action, model in served.items():
        assert request_model(action) is model, action


def test_an_unknown_action_has_no_model() -> None:
    assert request_model("no_such_route") is None


def test_sync_parts_as_the_server_paginates_them_parse_as_sync_parts() -> None:
    header: answers.SyncHeader = {
        "action": "sync",
        "id": "r1",
        "more": True,
        "through": {"c1": 3},
        "rosters": {"c1": 2},
        "resume": "token",
    }
    parts = paginate_lists(
        header, {"mail": [MAIL] * 300, "messages": [{**MESSAGE, "envelope": "A" * 4000}] * 40}
    )
    assert len(parts) > 1
    for part in parts:
        assert answers.parse(answers.SyncPart, part) == part


@pytest.mark.parametrize(
    ("shape", "frame", "bad"),
    [
        (answers.MessagePush, {**MESSAGE, "action": "message", "seq": "3"}, ("seq",)),
        (answers.MessagePush, {**MESSAGE, "action": "message", "seq": True}, ("seq",)),
        (answers.MailPush, {"action": "mail", **MAIL, "data": None}, ("data",)),
        (answers.MailPush, {"action": "message", **MAIL}, ("action",)),
        (answers.PrekeysLowPush, {"action": "prekeys_low"}, ("one_time_prekeys",)),
        (
            answers.SentAnswer,
            {"action": "sent", "id": "r"},
            ("conversation_id", "message_id", "server_time"),
        ),
        (
            answers.SyncPart,
            {
                "action": "sync",
                "id": "r",
                "more": False,
                "through": {},
                "rosters": {},
                "mail": [{**MAIL, "server_time": 1.5}],
                "messages": [],
            },
            ("mail.0.server_time",),
        ),
        (answers.BundlesPart, ["not", "an", "object"], ("frame",)),
    ],
)
def test_a_frame_off_its_shape_is_a_shape_error_naming_the_fields(
    shape: type[Any], frame: Any, bad: tuple[str, ...]
) -> None:
    with pytest.raises(answers.ShapeError) as raised:
        answers.parse(shape, frame)
    assert raised.value.fields == bad
    assert shape.__name__ in str(raised.value)


def test_fields_a_shape_does_not_name_are_dropped_for_a_newer_server() -> None:
    frame = {"action": "acked", "id": None, "later": 1}
    assert answers.parse(answers.AckedAnswer, frame) == {"action": "acked", "id": None}


def test_the_shapes_import_neither_pydantic_nor_the_models() -> None:
    # The server imports them for types only; parsing brings pydantic in when first used.
    code = "import sys, sotto.frames.answers; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Recorder:
    """Stands in for HttpClient: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def post(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.call("POST", path, {} if body is None else body)

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.sent.append((method, path, body))
        return {}


def _apis() -> tuple[PublicApi, AdminApi, _Recorder]:
    recorder = _Recorder()
    public, admin = PublicApi.__new__(PublicApi), AdminApi.__new__(AdminApi)
    public._http = admin._http = cast(Any, recorder)
    return public, admin, recorder


def test_the_http_api_sends_bodies_that_parse_with_the_servers_models() -> None:
    public, admin, recorder = _apis()
    code, key = "ABCD-EFGH-JKLM", "AAAA"
    public.enroll_lookup(code)
    public.enroll(code, identity_key=key, device_certificate=key, signed_prekey=key)
    public.link_request(code, device_id="d1", device_key=key)
    public.link_status(code)
    admin.create_network("Acme")
    admin.invite("n1", "alice", ttl_s=3600)
    admin.reissue_invite("n1", "u1", ttl_s=3600)
    admin.bulk_invite("n1", [{"row": 2, "handle": "bob"}])
    admin.set_policy("n1", {"max_expiry_s": 3600})
    admin.create_group("n1", "ops")
    admin.group_members("n1", "ops", ["u1"], add=True)
    admin.enable_retention("n1", {"years": 7})
    admin.rotate_retention(
        "n1",
        {"previous_generation": 1, "certificate": key, "prekey": key, "wrapped_device_key": key},
    )
    assert len(recorder.sent) == 13


@pytest.mark.parametrize(
    ("call", "bad"),
    [
        (lambda public, admin: public.enroll_lookup("short"), ("code",)),
        (lambda public, admin: admin.invite("n1", "Not A Handle"), ("handle",)),
        (lambda public, admin: admin.set_policy("n1", {"colour": "red"}), ("colour",)),
        (lambda public, admin: admin.group_members("n1", "ops", [], add=True), ("user_ids",)),
    ],
)
def test_the_http_api_refuses_an_invalid_body_before_sending_it(
    call: Any, bad: tuple[str, ...]
) -> None:
    public, admin, recorder = _apis()
    with pytest.raises(InvalidRequest) as raised:
        call(public, admin)
    assert raised.value.fields == bad
    assert recorder.sent == []
