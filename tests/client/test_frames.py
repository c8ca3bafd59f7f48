"""``sotto.frames``: the multi-part contract, as the server splits and the SDK joins it."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotto.frames import MAX_ANSWER_BYTES, PartError, Parts, error_frame, join_parts, paginate_lists

entry = st.fixed_dictionaries(
    {"id": st.text(max_size=20), "data": st.text(max_size=3000)},
    optional={"n": st.integers(), "flag": st.booleans()},
)
answers = st.dictionaries(
    st.sampled_from(["bundles", "unavailable", "devices", "members"]),
    st.lists(entry, max_size=120),
    min_size=1,
)


@settings(max_examples=60, deadline=None)
@given(answers, st.randoms(use_true_random=False))
def test_parts_in_any_order_join_to_the_answer_and_each_stays_under_the_limit(
    lists: dict[str, list[dict[str, Any]]], shuffle: random.Random
) -> None:
    header = {"action": "bundles", "id": "r1", "user_id": "usr-1"}
    parts = paginate_lists(header, lists)
    for part in parts:
        # The server sends UTF-8 (ensure_ascii=False): never larger than the estimate.
        assert len(json.dumps(part, ensure_ascii=False).encode()) <= MAX_ANSWER_BYTES
        assert set(lists) <= set(part)  # every list name in every part
    assert [p["part"] for p in parts] == list(range(len(parts)))
    assert [p["final"] for p in parts] == [False] * (len(parts) - 1) + [True]
    arriving = list(parts)
    shuffle.shuffle(arriving)
    assembler = Parts()
    results = [assembler.add(p) for p in arriving]
    assert all(r is None for r in results[:-1])
    complete = results[-1]
    assert complete is not None
    assert join_parts(complete) == {**header, **lists}


def test_a_large_answer_is_split() -> None:
    lists = {"devices": [{"certificate": "x" * 7000} for _ in range(40)]}
    parts = paginate_lists({"action": "devices", "id": None}, lists)
    assert len(parts) == 3
    assert join_parts(parts)["devices"] == lists["devices"]


def test_a_plain_frame_is_a_whole_answer() -> None:
    assert Parts().add({"action": "pong", "id": "r"}) == [{"action": "pong", "id": "r"}]


@pytest.mark.parametrize("number", [-1, "0", 1.5, True, None])
def test_a_bad_part_number_is_refused(number: object) -> None:
    with pytest.raises(PartError, match="bad part number"):
        Parts().add({"action": "sync", "part": number, "final": True})


def test_a_repeated_part_is_refused() -> None:
    parts = Parts()
    assert parts.add({"action": "sync", "part": 1, "final": True}) is None
    with pytest.raises(PartError, match="came twice"):
        parts.add({"action": "sync", "part": 1, "final": True})


def test_an_error_frame_keeps_its_four_fields_whatever_the_details() -> None:
    frame = error_frame("stale_devices", "refresh", "r1", {"missing": ["d1"], "code": "forged"})
    assert frame == {
        "action": "error",
        "code": "stale_devices",
        "message": "refresh",
        "id": "r1",
        "missing": ["d1"],
    }
    assert error_frame("bad_json", "not JSON", None)["id"] is None
