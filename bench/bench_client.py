"""The CLI as a person runs it: a warm ``sotto send`` next to ``sotto whoami``, same run.

A local stack (``sotto local up``, default rate limits) runs in a child
process; two profiles are enrolled through the CLI with the default keystore
KDF. Each command runs ROUNDS times as a fresh process (as a person types
it), alternating, after one warm-up send: the ratio of the medians is what
issue 14 bounds (a warm send at most 2.5x a whoami). ``whoami`` opens the
profile and its keystore (one key derivation); ``send`` also connects,
prepares, and waits for the server's answer. The number of key derivations
a send makes is counted in-process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._cli_stack import cli_stack
from ._report import table

ROUNDS = int(os.environ.get("SOTTO_BENCH_CLIENT_ROUNDS", "7"))
BOUND = 2.5
PASSPHRASE = "bench passphrase, long enough"


def _cli(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "sotto.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sotto {' '.join(args)} failed: {out.stderr}")
    return time.perf_counter() - started, out.stdout


def _derivations(env: dict[str, str], *args: str) -> int:
    """How many Argon2id derivations one command makes (counted in a child)."""
    probe = (
        "import sys; from cryptography.hazmat.primitives.kdf.argon2 import Argon2id as A\n"
        "n = [0]; d = A.derive\n"
        "def c(self, data): n[0] += 1; return d(self, data)\n"
        "A.derive = c\n"
        "from sotto.cli import main\n"
        f"code = main({list(args)!r})\n"
        "sys.stderr.write(f'derivations={n[0]}')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    return int(out.stderr.rsplit("derivations=", 1)[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "SOTTO_HOME": str(root / "home"),
            "SOTTO_PASSPHRASE": PASSPHRASE,
        }
        stack_dir = root / "stack"
        with cli_stack(env, stack_dir) as endpoints:
            network = endpoints["default_network"]
            server = str(stack_dir)
            for name in ("ann", "ben"):
                _, out = _cli(env, "admin", "--server", server, "--json", "invite",
                              network["network_id"], name)  # fmt: skip
                code = json.loads(out)["code"]
                _cli(env, "enroll", "--server", server, "--code", code, "--profile", name)
            _, out = _cli(env, "whoami", "--profile", "ben", "--json")
            ben = json.loads(out)["user_id"]
            _cli(env, "send", ben, "warm-up", "--profile", "ann")
            whoami, send = [], []
            for round_ in range(ROUNDS):
                whoami.append(_cli(env, "whoami", "--profile", "ann")[0])
                send.append(_cli(env, "send", ben, f"round {round_}", "--profile", "ann")[0])
            derivations = _derivations(env, "send", ben, "counted", "--profile", "ann")
    ratio = statistics.median(send) / statistics.median(whoami)
    table(
        f"A warm CLI send next to whoami ({ROUNDS} rounds each, alternating, one run)",
        ["command", "median s", "min s", "max s"],
        [
            ["sotto whoami", statistics.median(whoami), min(whoami), max(whoami)],
            ["sotto send (warm)", statistics.median(send), min(send), max(send)],
        ],
    )
    verdict = "within" if ratio <= BOUND else "OVER"
    print(
        f"   send / whoami = {ratio:.2f} ({verdict} the {BOUND}x bound); key derivations in one"
        f" send: {derivations}"
    )


if __name__ == "__main__":
    main()
