"""Cold start: the import cost of every Lambda handler module, bounded for WebSocket ones.

Each import runs in a fresh interpreter (as a new Lambda execution
environment would), alternating with a bare ``import boto3`` so both see
the same machine load; the table gives the medians and the median of the
paired ratios, since absolute times on a noisy machine mean little.

Every WebSocket function (the routes' and the $connect authorizer) must stay
within ``BOUND`` x ``import boto3``: like Powertools' own import-time test
(``tests/performance/test_high_level_imports.py``), the run fails loudly
above it. What a handler defers to its first frame (its route table: frame
models and domain logic) is shown in its own column, so the deferral is
never mistaken for a saving.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from sotto import topology

ROUNDS = 7
BOUND = 1.3
_PROBE = (
    "import time, sys; t = time.perf_counter(); import {module}; {then}"
    "sys.stdout.write(str(time.perf_counter() - t))"
)
# A handler with a route table builds it on its first frame.
_FIRST_FRAME = "getattr({module}, 'routes', lambda: None)(); "


class ColdStartTooSlow(AssertionError):
    """A WebSocket handler's import costs more than BOUND x ``import boto3``."""


def _seconds(module: str, then: str = "") -> float:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, then=then)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def measure(module: str, then: str = "") -> tuple[float, float, float]:
    """(median seconds, median boto3 seconds, median paired ratio)."""
    own, base, ratios = [], [], []
    for _ in range(ROUNDS):
        b = _seconds("boto3")
        m = _seconds(module, then)
        own.append(m)
        base.append(b)
        ratios.append(m / b)
    return statistics.median(own), statistics.median(base), statistics.median(ratios)


def websocket_functions() -> set[str]:
    return {route.function for route in topology.WS_ROUTES} | {topology.WS_AUTHORIZER}


def main() -> None:
    bounded = websocket_functions()
    print(f"\nHandler import cost (median of {ROUNDS} fresh interpreters, paired with boto3)")
    print(f"{'module':<40} {'ms':>7} {'x boto3':>8} {'1st frame ms':>13} {'bound':>6}")
    too_slow = []
    for spec in topology.FUNCTIONS:
        seconds, baseline, ratio = measure(spec.module)
        first, _, _ = measure(spec.module, _FIRST_FRAME.format(module=spec.module))
        bound = f"{BOUND:.1f}" if spec.name in bounded else "-"
        print(
            f"{spec.module:<40} {seconds * 1000:7.1f} {ratio:8.2f} {first * 1000:13.1f} {bound:>6}"
        )
        if spec.name in bounded and ratio > BOUND:
            too_slow.append(f"{spec.module}: {ratio:.2f}x boto3 ({baseline * 1000:.0f} ms)")
    if too_slow:
        raise ColdStartTooSlow(f"import above {BOUND}x boto3: " + "; ".join(too_slow))


if __name__ == "__main__":
    main()
