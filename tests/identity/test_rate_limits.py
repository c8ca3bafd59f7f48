"""Rate limits, on a stack with the limits as deployed scaled down by ten."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.stack import Socket, Stack, http, running_stack, seed_device


@pytest.fixture(scope="module")
def tight_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Scale 0.1: 2 enrollment requests per IP per minute, 6 bundle fetches per device per minute.
    with running_stack(tmp_path_factory.mktemp("tight"), rate_limit_scale=0.1) as running:
        yield running


@pytest.fixture(scope="module")
def pair(tight_stack):
    """Two enrolled devices: the two enrollments this IP may make in a fresh window."""
    return seed_device(tight_stack), seed_device(tight_stack)


def within_one_window(attempt: Callable[[], list[Any]], window_s: int = 60) -> list[Any]:
    """Run ``attempt`` until it starts and ends in one fixed window (boundaries reset counts)."""
    for _ in range(3):
        start = int(time.time()) // window_s
        results = attempt()
        if int(time.time()) // window_s == start:
            return results
    raise AssertionError("could not stay within one rate window")


def test_enrollment_requests_are_limited_per_ip(tight_stack, pair):
    body = {"code": "ABCD-EFGH-JKMN-PQRS-TVWX"}

    def attempt() -> list[Any]:
        return [http(tight_stack, "POST", "/v1/enroll/lookup", body) for _ in range(3)]

    results = within_one_window(attempt)
    statuses = [status for status, _ in results]
    assert 429 in statuses
    limited = next(answer for status, answer in results if status == 429)
    assert limited["code"] == "rate_limited"
    assert 0 < limited["retry_after_s"] <= 60


def test_bundle_fetches_are_limited_per_device_in_bundles(tight_stack, pair):
    """Scale 0.1: 500 bundles per device per 10 minutes; a 100-device request counts 100."""
    owner, fetcher = pair
    devices = [{"user_id": owner.user_id, "device_id": f"dev-absent-{i}"} for i in range(99)]
    devices.append({"user_id": owner.user_id, "device_id": owner.device_id})
    with Socket(tight_stack, fetcher) as socket:

        def attempt() -> list[Any]:
            return [socket.answers("fetch_bundles", devices=devices)[0] for _ in range(6)]

        answers = within_one_window(attempt, window_s=600)
    codes = [a.get("code", a["action"]) for a in answers]
    assert codes[:5] == ["bundles"] * 5
    assert codes[5] == "rate_limited"
    assert codes[0] == "bundles"
    assert all("retry_after_s" in a for a in answers if a.get("code") == "rate_limited")


def test_sends_are_limited_per_device_inside_the_message_transaction(tight_stack):
    """Scale 0.1: 30 sends per device per minute; the 31st stores nothing."""
    from tests.conversations.peers import Peer
    from tests.support.logs import create_fields

    alice = Peer.open(tight_stack, seed_device(tight_stack), prekeys=0)
    try:
        fields = create_fields(alice.socket, alice.device, [])
        cid = alice.socket.request("create_conversation", **fields)["conversation"][
            "conversation_id"
        ]
        alice.join(cid)

        def attempt() -> list[Any]:
            return [alice.send(cid, f"n{i}") for i in range(31)]

        answers = within_one_window(attempt)
    finally:
        alice.close()
    codes = [a.get("code", a["action"]) for a in answers]
    assert codes.count("sent") == 30
    assert codes[-1] == "rate_limited"
    assert 0 < answers[-1]["retry_after_s"] <= 60


def test_the_documented_limits_are_the_enforced_ones():
    from pathlib import Path

    from sotto_server.logic.limits import docs_table

    api = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    assert docs_table() in api
