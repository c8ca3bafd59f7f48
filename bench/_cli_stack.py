"""A local stack in a child process (``sotto local up``), for benchmarks that run the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["cli_stack"]


@contextmanager
def cli_stack(env: dict[str, str], data_dir: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """Start the stack, yield its endpoints.json, stop it with Ctrl-C as a person would.

    ``extra``: more ``sotto local up`` options (``--rate-limit-scale 1000``).
    """
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sotto.cli",
            "local",
            "up",
            "--ephemeral",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "endpoints.json").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("local stack did not start")
            time.sleep(0.1)
        yield json.loads((data_dir / "endpoints.json").read_text())
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=60)
