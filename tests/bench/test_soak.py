"""The soak harness (bench/soak.py, issue 14 item 11) at a size the suite can afford.

Five devices and forty messages, with every fault kind surely injected at least
once (sockets dropped, answers lost, pushes lost, crashes at every point,
members added and devices linked mid-run), at the deployment's default rate
limits: every count the harness keeps must be zero. The full size runs from ``make bench``.
"""

from __future__ import annotations

import pytest

from bench.soak import CRASH_POINTS, SoakConfig, run


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [14, 15])
def test_a_small_soak_with_every_fault_loses_nothing(seed: int) -> None:
    config = SoakConfig(devices=5, messages=40, seed=seed, adds=1, links=1, every_fault=True)
    assert config.rate_limit_scale == 1.0
    result = run(config)
    result.print()
    injected = set(result.faults)
    assert {f"crash: {point}" for point in CRASH_POINTS} <= injected
    assert any(kind.startswith("push lost") for kind in injected)
    assert "answer lost (socket closed)" in injected
    assert {"socket dropped", "member added mid-run", "device linked mid-run"} <= injected
    assert result.deliveries > 50
    assert (
        result.lost,
        result.duplicated,
        result.out_of_order,
        result.never_stored,
        result.never_handed_out,
        result.unexpected,
    ) == (0, 0, 0, 0, 0, 0), result.examples
