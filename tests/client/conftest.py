"""Fixtures for the client tests: an isolated SOTTO_HOME, and the CLI run in-process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sotto.cli import main

PASSPHRASE = "correct horse battery"


@dataclass
class Result:
    code: int
    out: str
    err: str


RunCli = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SOTTO_HOME in a temporary directory, with the passphrase in the environment."""
    path = tmp_path / "sotto-home"
    monkeypatch.setenv("SOTTO_HOME", str(path))
    monkeypatch.setenv("SOTTO_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("SOTTO_PROFILE", raising=False)
    return path


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """``sotto ARGS`` in this process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
