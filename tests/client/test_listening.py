"""``sotto listen`` rides out a server that goes away (issue 14, item 8)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from sotto.client.errors import ConnectionLost, FrameError, ServerUnreachable
from sotto.client.events import Event, NoticeEvent
from sotto.client.listening import Backoff, follow


class FlakyServer:
    """Polls answer from a script: events, or a failure to raise."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.calls: list[str] = []
        self.disconnects = 0

    def _next(self, call: str) -> list[Event]:
        self.calls.append(call)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, list)
        return step

    def sync(self, *, read: bool = False) -> list[Event]:
        return self._next("sync")

    def poll(self, timeout: float, *, read: bool = False) -> list[Event]:
        return self._next("poll")

    def disconnect(self) -> None:
        self.disconnects += 1


def notice(text: str) -> NoticeEvent:
    return NoticeEvent(None, "x", text)


def test_backoff_doubles_to_its_ceiling_with_bounded_jitter_and_resets() -> None:
    backoff = Backoff(jitter=lambda: 0.0)
    assert [backoff.delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.delay() == 1
    assert 1.0 <= Backoff(jitter=lambda: 1.0).delay() <= 1.2


def test_a_lost_server_is_said_once_waited_out_and_followed_by_a_sync() -> None:
    server = FlakyServer(
        [
            [notice("before")],
            ConnectionLost(1006, "gone"),
            ServerUnreachable("cannot connect"),
            ServerUnreachable("cannot connect"),
            [notice("missed meanwhile")],
            [notice("live again")],
        ]
    )
    shown: list[str] = []
    said: list[str] = []
    slept: list[float] = []

    def show(events: Iterable[Event]) -> None:
        shown.extend(e.detail for e in events if isinstance(e, NoticeEvent))

    follow(
        server,
        show,
        said.append,
        sleep=slept.append,
        stop=lambda: not server.script,
    )
    assert shown == ["before", "missed meanwhile", "live again"]
    assert server.calls == ["poll", "poll", "sync", "sync", "sync", "poll"]
    assert said == ["connection lost (gone); reconnecting", "reconnected"]
    assert len(slept) == 3
    assert slept[0] < slept[1] < slept[2]
    assert server.disconnects == 3


def test_other_errors_end_the_listener() -> None:
    server = FlakyServer([ValueError("a bug is not a network problem")])
    with pytest.raises(ValueError, match="not a network problem"):
        follow(server, lambda events: None, lambda text: None, sleep=lambda s: None)


def test_a_server_that_cannot_answer_now_is_waited_out_as_long_as_it_asks() -> None:
    server = FlakyServer(
        [
            FrameError("sync", "rate_limited", "too many requests", retry_after_s=40),
            FrameError("sync", "internal_error", "retry later"),
            [notice("caught up")],
            [notice("live")],
        ]
    )
    shown: list[str] = []
    said: list[str] = []
    slept: list[float] = []
    follow(
        server,
        lambda events: shown.extend(e.detail for e in events if isinstance(e, NoticeEvent)),
        said.append,
        sleep=slept.append,
        stop=lambda: not server.script,
    )
    assert shown == ["caught up", "live"]
    assert server.calls == ["poll", "sync", "sync", "poll"]
    assert said == [
        "the server cannot answer now (rate_limited); trying again",
        "the server is answering again",
    ]
    assert slept[0] >= 40  # what the server asked for, not the first backoff step
    assert 2 <= slept[1] <= 2.4


def test_a_refusal_for_good_ends_the_listener() -> None:
    server = FlakyServer([FrameError("sync", "revoked", "this device has been revoked")])
    with pytest.raises(FrameError, match="revoked"):
        follow(server, lambda events: None, lambda text: None, sleep=lambda s: None)
