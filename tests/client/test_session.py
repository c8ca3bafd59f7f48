"""The WebSocket session's request/answer matching, driven by a scripted fake connection."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from typing import Any, cast

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Close
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from sotto.client.errors import FrameError, InvalidRequest, MalformedFrame, SessionError
from sotto.client.prekeys import prekey_status
from sotto.client.session import Session
from sotto.frames.answers_devices import DevicesPart


class FakeConnection:
    """Answers each sent frame with scripted frames, echoing the request's id."""

    def __init__(self, *scripts: list[dict[str, Any]]) -> None:
        self.scripts = deque(scripts)
        self.sent: list[dict[str, Any]] = []
        self.inbox: deque[str] = deque()
        self.closed = False

    def send(self, data: Any) -> None:
        if not isinstance(data, str):  # an iterable of fragments
            self.fragments = list(data)
            data = "".join(self.fragments)
        frame = json.loads(data)
        self.sent.append(frame)
        for answer in self.scripts.popleft():
            answer = {k: (frame["id"] if v == "$id" else v) for k, v in answer.items()}
            self.inbox.append(json.dumps(answer))

    def recv(self, timeout: float | None = None) -> str:
        if not self.inbox:
            raise TimeoutError
        item = self.inbox.popleft()
        if item == '"close"':
            raise ConnectionClosedError(Close(1008, "revoked"), None)
        return item

    def close(self) -> None:
        self.closed = True


def session(
    *scripts: list[dict[str, Any]], check_requests: bool = True
) -> tuple[Session, FakeConnection]:
    fake = FakeConnection(*scripts)
    return Session(cast(Any, fake), check_requests=check_requests), fake


def test_session_returns_the_answer_with_its_id_and_keeps_pushes() -> None:
    s, fake = session(
        [
            {"action": "prekeys_low", "one_time_prekeys": 3},
            {"action": "pong", "id": "someone-else"},
            {"action": "prekey_status", "id": "$id", "one_time_prekeys": 7},
        ]
    )
    answer = s.request("prekey_status")
    assert answer["one_time_prekeys"] == 7
    assert fake.sent[0]["action"] == "prekey_status"
    assert fake.sent[0]["id"]
    assert [p["action"] for p in s.pushes] == ["prekeys_low", "pong"]


def test_session_ids_are_fresh_per_request() -> None:
    s, fake = session([{"action": "pong", "id": "$id"}], [{"action": "pong", "id": "$id"}])
    s.request("ping")
    s.request("ping")
    assert fake.sent[0]["id"] != fake.sent[1]["id"]


def test_session_joins_bundle_parts_in_order_even_if_they_arrive_out_of_order() -> None:
    s, _ = session(
        [
            {
                "action": "bundles",
                "id": "$id",
                "user_id": "u",
                "part": 1,
                "final": True,
                "bundles": [{"device_id": "b"}],
            },
            {
                "action": "bundles",
                "id": "$id",
                "user_id": "u",
                "part": 0,
                "bundles": [{"device_id": "a"}],
            },
        ]
    )
    answer = s.request("fetch_bundles", devices=[{"user_id": "u", "device_id": "a"}])
    assert [b["device_id"] for b in answer["bundles"]] == ["a", "b"]
    assert "part" not in answer
    assert "final" not in answer


def test_session_raises_error_frames_with_code_and_retry_hint() -> None:
    s, _ = session(
        [
            {
                "action": "error",
                "id": "$id",
                "code": "rate_limited",
                "message": "slow down",
                "retry_after_s": 30,
            }
        ]
    )
    with pytest.raises(FrameError) as caught:
        s.request("fetch_bundles", devices=[{"user_id": "u", "device_id": "a"}])
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after_s == 30
    assert str(caught.value) == "fetch_bundles failed (rate_limited): slow down; retry in 30 s"


def test_session_treats_an_error_without_id_as_the_answer_to_its_request() -> None:
    s, _ = session([{"action": "error", "id": None, "code": "bad_json", "message": "not JSON"}])
    with pytest.raises(FrameError, match="bad_json"):
        s.request("ping")


def test_session_reports_a_closed_socket_plainly() -> None:
    s, fake = session([])
    fake.scripts.append([])
    fake.inbox.append('"close"')
    with pytest.raises(SessionError, match=r"closed the connection \(code 1008\) \(revoked\)"):
        s.request("ping")


def test_session_refuses_to_send_over_the_message_limit() -> None:
    # Unchecked: the model would refuse these prekeys first (InvalidRequest, below).
    s, fake = session(check_requests=False)
    with pytest.raises(SessionError, match="128 KB"):
        s.request("publish_prekeys", one_time_prekeys=["x" * 140_000])
    assert fake.sent == []


def test_session_sends_long_messages_in_frames_of_at_most_32_kb() -> None:
    s, fake = session([{"action": "prekeys_published", "id": "$id", "one_time_prekeys": 40}])
    s.request("publish_prekeys", one_time_prekeys=["x" * 2400] * 40)
    assert len(fake.fragments) > 1
    assert all(len(f.encode()) <= 32 * 1024 for f in fake.fragments)


def test_session_gives_up_when_no_answer_comes() -> None:
    s, _ = session([])
    with pytest.raises(SessionError, match="no answer to ping"):
        s.request("ping", timeout=0.1)


class PipelinedConnection:
    """Holds every request and answers the newest first (out of order) or the oldest."""

    def __init__(self, fail: set[int] | None = None, *, newest_first: bool = True) -> None:
        self.newest_first = newest_first
        self.sent: list[dict[str, Any]] = []
        self.held: list[dict[str, Any]] = []
        self.most_in_flight = 0
        self.fail = fail or set()

    def send(self, data: Any) -> None:
        frame = json.loads(data)
        self.sent.append(frame)
        self.held.append(frame)
        self.most_in_flight = max(self.most_in_flight, len(self.held))

    def recv(self, timeout: float | None = None) -> str:
        if not self.held:
            raise TimeoutError
        frame = self.held.pop(-1 if self.newest_first else 0)
        number = frame["n"]
        if number in self.fail:
            return json.dumps({"action": "error", "id": frame["id"], "code": "rate_limited"})
        return json.dumps({"action": "echo", "id": frame["id"], "n": number})

    def close(self) -> None:
        pass


def test_request_many_keeps_a_window_in_flight_and_answers_in_request_order() -> None:
    fake = PipelinedConnection()
    answered: dict[int, list[dict[str, Any]]] = {}
    Session(cast(Any, fake), check_requests=False).request_many(
        "echo", [{"n": n} for n in range(20)], answered, window=4
    )
    assert [answered[i][0]["n"] for i in range(20)] == list(range(20))
    assert fake.most_in_flight == 4
    assert len({f["id"] for f in fake.sent}) == 20


def test_request_many_skips_what_was_answered_before_a_reconnect() -> None:
    fake = PipelinedConnection()
    answered: dict[int, list[dict[str, Any]]] = {0: [{"n": 0}], 2: [{"n": 2}]}
    Session(cast(Any, fake), check_requests=False).request_many(
        "echo", [{"n": n} for n in range(4)], answered
    )
    assert sorted(f["n"] for f in fake.sent) == [1, 3]
    assert sorted(answered) == [0, 1, 2, 3]


def test_request_many_raises_an_error_once_the_requests_in_flight_are_answered() -> None:
    fake = PipelinedConnection(fail={1}, newest_first=False)
    s = Session(cast(Any, fake), check_requests=False)
    answered: dict[int, list[dict[str, Any]]] = {}
    with pytest.raises(FrameError) as raised:
        s.request_many("echo", [{"n": n} for n in range(10)], answered, window=3)
    assert raised.value.code == "rate_limited"
    # Nothing more is sent after the error; what was in flight was answered, not left as pushes.
    assert not fake.held
    assert not s.pushes
    assert [f["n"] for f in fake.sent] == [0, 1, 2, 3]
    assert 1 not in answered
    assert all(answered[i][0]["n"] == i for i in answered)


def test_request_many_raises_at_once_on_an_error_without_id() -> None:
    s, _ = session([{"action": "error", "message": "Internal server error"}], check_requests=False)
    with pytest.raises(FrameError):
        s.request_many("echo", [{"n": 0}], {})


def test_api_gateways_own_error_frame_fails_the_request_at_once() -> None:
    """``{"message": "Internal server error", ...}`` carries no action and no id (a Lambda
    failed): the request fails now with ``internal_error``, not after its 35 s timeout."""
    gateway = {"message": "Internal server error", "connectionId": "c1", "requestId": "q1"}
    s, _ = session([gateway])
    with pytest.raises(FrameError) as raised:
        s.request("sync")
    assert raised.value.code == "internal_error"
    assert not s.pushes


@pytest.mark.parametrize(
    ("action", "fields", "bad"),
    [
        # Not base64url: the server would answer bad_request naming the same field.
        ("send", {"conversation_id": "c1", "envelope": "not base64!"}, ("envelope",)),
        ("ack", {"mail": ["ab#01"], "cursors": {"c1": -1}}, ("cursors.c1",)),
        ("sync", {"resume": "t", "stray": 1}, ("stray",)),
        ("fetch_bundles", {"devices": []}, ("devices",)),
        ("no_such_route", {}, ("action",)),
    ],
)
def test_session_refuses_an_invalid_request_before_sending_it(
    action: str, fields: dict[str, Any], bad: tuple[str, ...]
) -> None:
    s, fake = session([{"action": "x", "id": "$id"}])
    with pytest.raises(InvalidRequest) as raised:
        s.request(action, **fields)
    assert raised.value.fields == bad
    assert action in str(raised.value)
    assert fake.sent == []


def test_request_many_sends_nothing_when_one_request_of_the_batch_is_invalid() -> None:
    fake = PipelinedConnection()
    valid = {"conversation_id": "c1", "chain_id": "A" * 22, "distributions": ["AAAA"]}
    with pytest.raises(InvalidRequest, match="distributions"):
        Session(cast(Any, fake)).request_many(
            "distribute", [valid, {**valid, "distributions": []}], {}
        )
    assert fake.sent == []


def test_request_as_parses_the_joined_answer_with_its_shape() -> None:
    device = {"device_id": "d1", "certificate": "AAAA", "status": "active"}
    header = {"action": "devices", "id": "$id", "user_id": "u1", "identity_key": "AAAA"}
    s, _fake = session(
        [
            {**header, "part": 1, "final": True, "devices": [device]},
            {**header, "part": 0, "final": False, "devices": [device], "later": 1},
        ]
    )
    answer = s.request_as(DevicesPart, "list_devices", user_id="u1")
    assert answer["devices"] == [device, device]
    assert "later" not in answer


@pytest.mark.parametrize(
    ("frame", "bad"),
    [
        (
            {"action": "prekey_status", "id": "$id"},
            ("one_time_prekeys", "signed_prekey_expires_at"),
        ),
        (
            {
                "action": "prekey_status",
                "id": "$id",
                "one_time_prekeys": "7",
                "signed_prekey_expires_at": None,
            },
            ("one_time_prekeys",),
        ),
        (
            {
                "action": "link_created",
                "id": "$id",
                "one_time_prekeys": 7,
                "signed_prekey_expires_at": None,
            },
            ("action",),
        ),
    ],
)
def test_an_answer_off_its_shape_is_malformed_frame_naming_the_route_and_fields(
    frame: dict[str, Any], bad: tuple[str, ...]
) -> None:
    s, _fake = session([frame])
    with pytest.raises(MalformedFrame) as raised:
        prekey_status(s)
    assert (raised.value.action, raised.value.fields) == ("prekey_status", bad)


def test_closing_with_many_unread_pushes_does_not_wait_out_the_close_timeout() -> None:
    # 200 pushes nobody read: websockets stops reading at 16, and before the
    # drain the close waited its full 10 s for a closing frame it never read.
    sent = threading.Event()

    def flood(server_side: ServerConnection) -> None:
        for n in range(200):
            server_side.send(json.dumps({"action": "message", "n": n}))
        sent.set()
        with contextlib.suppress(ConnectionClosed):
            for _ in server_side:
                pass

    with serve(flood, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.socket.getsockname()[:2]
        connection = connect(f"ws://{host}:{port}", close_timeout=10)
        s = Session(connection.__enter__())
        assert sent.wait(5)
        time.sleep(0.2)  # the client's queue fills and it stops reading
        started = time.monotonic()
        s.close()
        assert time.monotonic() - started < 5
        assert connection.protocol.state.name == "CLOSED"
        server.shutdown()
