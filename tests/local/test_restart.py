"""A local stack that survives a restart (issue 14, item 9).

By default ``sotto local up`` keeps its state in the data dir and comes back
on the same endpoints, so profiles keep working and nothing sent is lost;
``--fresh`` starts empty; an unreadable state file is refused with what to
do; the console is quiet unless ``--verbose``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sotto.cli import main
from sotto.local.state import STATE_FILE
from tests.support.stack import Stack, invite, running_stack

PASSPHRASE = "correct horse battery staple"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def banner(stack: Stack) -> str:
    """The start banner: printed just after endpoints.json is written."""
    deadline = time.monotonic() + 20
    while "Press Ctrl-C to stop." not in stack.log():
        assert time.monotonic() < deadline, stack.log()
        time.sleep(0.05)
    return stack.log()


def messages(capsys: pytest.CaptureFixture[str], profile: str) -> list[str]:
    lines = run(capsys, "listen", "--once", "--json", "--profile", profile).splitlines()
    return [m["text"] for m in map(json.loads, lines) if m["type"] == "message"]


def test_state_endpoints_and_profiles_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOTTO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SOTTO_PASSPHRASE", PASSPHRASE)
    data = tmp_path / "stack"
    data.mkdir()
    server = str(data)

    with running_stack(data, persist=True, verbose=False) as stack:
        before: Stack = stack
        for handle in ("ann", "ben"):
            code = invite(stack, handle=handle)["code"]
            run(capsys, "enroll", "--server", server, "--code", code, "--profile", handle)
        run(capsys, "send", "ben", "sent before the restart", "--profile", "ann")
    quiet = banner(before).splitlines()
    assert (data / STATE_FILE).exists()
    assert not [line for line in quiet if line.startswith("{")]  # no JSON log lines
    assert len(quiet) < 40, quiet

    with running_stack(data, persist=True) as again:
        assert again.endpoints["websocket"] == before.endpoints["websocket"]
        assert again.endpoints["http"] == before.endpoints["http"]
        assert again.endpoints["default_network"] == before.endpoints["default_network"]
        assert "state: restored from" in banner(again)
        assert messages(capsys, "ben") == ["sent before the restart"]
        run(capsys, "send", "ann", "and after it", "--profile", "ben")
        assert messages(capsys, "ann") == ["and after it"]

    with running_stack(data, "--fresh", persist=True) as fresh:
        assert "state: new" in banner(fresh)
        assert main(["send", "ben", "into the void", "--profile", "ann"]) != 0
        capsys.readouterr()


def test_an_unreadable_state_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(b"not a saved state")
    done = subprocess.run(
        [sys.executable, "-m", "sotto.cli", "local", "up", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot be read" in done.stderr
    assert "--fresh" in done.stderr
    assert "Traceback" not in done.stderr
