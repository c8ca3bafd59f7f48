"""Cold start: the import cost of every Lambda handler module.

Each import runs in a fresh interpreter (as a new Lambda execution
environment would), several times; the table gives the median and its ratio
to ``import boto3`` measured in the same run, since absolute times on a noisy
machine mean little.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from sotto import topology

ROUNDS = 5
_PROBE = (
    "import time, sys; t = time.perf_counter(); import {module}; "
    "sys.stdout.write(str(time.perf_counter() - t))"
)


def import_seconds(module: str) -> float:
    samples = []
    for _ in range(ROUNDS):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(float(out.stdout))
    return statistics.median(samples)


def main() -> None:
    baseline = import_seconds("boto3")
    print(f"\nHandler import cost (median of {ROUNDS} fresh interpreters)")
    print(f"{'module':<42} {'ms':>8} {'x boto3':>8}")
    print(f"{'boto3 (baseline)':<42} {baseline * 1000:8.1f} {1.0:8.2f}")
    for spec in topology.FUNCTIONS:
        seconds = import_seconds(spec.module)
        print(f"{spec.module:<42} {seconds * 1000:8.1f} {seconds / baseline:8.2f}")


if __name__ == "__main__":
    main()
