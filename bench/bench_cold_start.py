"""Cold start: the import cost of every Lambda handler module, bounded for WebSocket ones.

Each import runs in a fresh interpreter (as a new Lambda execution
environment would), alternating with a bare ``import boto3``. What is timed
is the interpreter's CPU time for the import (``time.process_time``): an
import is CPU-bound work, and CPU time, unlike wall time, does not grow
when other processes share the machine. The ratio compares the fastest of
each (as ``timeit`` advises); the table also gives the medians.

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

ROUNDS = 9
BOUND = 1.3
_PROBE = (
    "import time, sys; t = time.process_time(); import {module}; {then}"
    "sys.stdout.write(str(time.process_time() - t))"
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
    """(median seconds, median boto3 seconds, fastest over fastest boto3)."""
    own, base = [], []
    for _ in range(ROUNDS):
        base.append(_seconds("boto3"))
        own.append(_seconds(module, then))
    return statistics.median(own), statistics.median(base), min(own) / min(base)


def websocket_functions() -> set[str]:
    return {route.function for route in topology.WS_ROUTES} | {topology.WS_AUTHORIZER}


def main() -> None:
    bounded = websocket_functions()
    print(f"\nHandler import cost ({ROUNDS} fresh interpreters each, alternating with boto3)")
    print(f"{'module':<40} {'CPU ms':>10} {'x boto3':>8} {'1st frame ms':>13} {'bound':>6}")
    too_slow = []
    for spec in topology.FUNCTIONS:
        seconds, baseline, ratio = measure(spec.module)
        first, _, _ = measure(spec.module, _FIRST_FRAME.format(module=spec.module))
        bound = f"{BOUND:.1f}" if spec.name in bounded else "-"
        print(
            f"{spec.module:<40} {seconds * 1000:10.1f} {ratio:8.2f} {first * 1000:13.1f} {bound:>6}"
        )
        if spec.name in bounded and ratio > BOUND:
            too_slow.append(f"{spec.module}: {ratio:.2f}x boto3 ({baseline * 1000:.0f} ms)")
    if too_slow:
        raise ColdStartTooSlow(f"import above {BOUND}x boto3: " + "; ".join(too_slow))


if __name__ == "__main__":
    main()
