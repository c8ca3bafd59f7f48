"""The soak harness (bench/soak.py) at a tiny size: every fault kind, nothing lost or repeated.

It runs against the suite's local stack; every fault kind (socket dropped,
answer lost, push lost, a crash at each of the four points, a member added,
a device linked) happens at least once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.soak import CRASH_POINTS, SoakConfig, run
from tests.support.stack import Stack

TINY = SoakConfig(
    devices=5,
    messages=40,
    seed=14,
    adds=1,
    links=1,
    every_fault=True,  # each kind armed once on some device, besides the random ones
)


def test_a_tiny_soak_loses_repeats_and_reorders_nothing(stack: Stack, tmp_path: Path):
    result = run(replace(TINY, home=tmp_path), stack.log_path.parent / "endpoints.json")
    result.print()

    kinds = set(result.faults)
    for kind in (
        "socket dropped",
        "answer lost (socket closed)",
        "member added mid-run",
        "device linked mid-run",
        *(f"crash: {point}" for point in CRASH_POINTS),
    ):
        assert kind in kinds, f"no {kind!r} was injected: {dict(result.faults)}"
    assert any(kind.startswith("push lost") for kind in kinds), dict(result.faults)
    assert result.messages == TINY.messages - result.refused
    assert result.deliveries > TINY.messages
    assert (result.lost, result.duplicated, result.out_of_order) == (0, 0, 0), result.examples
    assert result.never_stored == 0, result.examples
    assert result.never_handed_out == 0, result.examples
    assert result.left_in_outbox == 0
