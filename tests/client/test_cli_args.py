"""Command-line errors: usage mistakes exit 2 with argparse's message, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sotto.cli import parse_duration

from .conftest import RunCli


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("nonsense",),
        ("admin", "network", "list"),  # --server is required
        ("admin", "--server", "x", "invite", "net-1"),  # HANDLE missing
        ("admin", "--server", "x", "invite", "net-1", "bob", "--ttl", "soon"),
        ("enroll", "--server", "x"),  # --code missing
        ("keys",),
        ("device", "add", "--profile", "alice", "--timeout", "long"),
        ("local", "up", "--port", "70000"),
    ],
)
def test_cli_usage_errors_exit_2(run_cli: RunCli, home: Path, args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.code == 2
    assert "Traceback" not in result.err


def test_cli_bad_profile_name_is_a_usage_error(run_cli: RunCli, home: Path) -> None:
    result = run_cli("whoami", "--profile", "../etc")
    assert result.code == 2
    assert "profile name" in result.err


def test_cli_help_exits_0(run_cli: RunCli) -> None:
    result = run_cli("admin", "--help")
    assert result.code == 0
    assert "invite" in result.out


def test_cli_unreachable_server_is_one_line_exit_1(run_cli: RunCli, home: Path) -> None:
    result = run_cli("admin", "--server", "http://127.0.0.1:9", "network", "list")
    assert result.code == 1
    assert result.err.startswith("sotto: cannot reach http://127.0.0.1:9")


def test_cli_enroll_into_an_existing_profile_is_refused_before_any_request(
    run_cli: RunCli, home: Path, tmp_path: Path
) -> None:
    (home / "alice").mkdir(parents=True)
    (tmp_path / "endpoints.json").write_text(
        '{"websocket": "ws://127.0.0.1:9", "http": "http://127.0.0.1:9",'
        ' "api_id": "a", "stage": "s"}'
    )
    result = run_cli("enroll", "--server", str(tmp_path), "--code", "X", "--profile", "alice")
    assert result.code == 1
    assert "already exists" in result.err


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)]
)
def test_durations_are_read_in_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "1w", "1.5h", "m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
