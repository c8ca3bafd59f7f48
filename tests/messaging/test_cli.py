"""The messaging commands of the ``sotto`` CLI, run in-process against the local stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotto.cli import main
from tests.support.stack import Stack, invite

from .conftest import PASSPHRASE


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def enroll_profiles(
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    handles: dict[str, str],
) -> dict[str, str]:
    """Each profile (key) invited with its handle (value) and enrolled: profile -> user id."""
    monkeypatch.setenv("SOTTO_HOME", str(home))
    monkeypatch.setenv("SOTTO_PASSPHRASE", PASSPHRASE)
    server = str(stack.log_path.parent)
    users = {}
    for profile, handle in handles.items():
        code = invite(stack, handle=handle)["code"]
        run(capsys, "enroll", "--server", server, "--code", code, "--profile", profile)
        answer = run(capsys, "whoami", "--profile", profile, "--json")
        users[profile] = json.loads(answer)["user_id"]
    return users


def test_cli_send_listen_conversations_room_and_verify(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    users = enroll_profiles(
        stack, capsys, monkeypatch, tmp_path / "home", {n: n for n in ("dave", "erin")}
    )
    run(capsys, "contacts", "add", "erin", users["erin"], "--profile", "dave")

    out = run(capsys, "send", "erin", "hello erin", "--expires", "1h", "--profile", "dave")
    assert out.startswith("sent #1 to erin")
    lines = run(capsys, "listen", "--once", "--json", "--profile", "erin").splitlines()
    [message] = [m for m in map(json.loads, lines) if m["type"] == "message"]
    assert message["text"] == "hello erin"
    assert message["sender"]["user_id"] == users["dave"]
    assert message["seq"] == 1
    assert message["expires_at"] > message["server_time"]
    assert run(capsys, "listen", "--once", "--json", "--profile", "erin").strip() == ""

    run(capsys, "room", "create", "ops", users["erin"], "--profile", "dave")
    run(capsys, "send", "#ops", "room hello", "--burn", "1m", "--profile", "dave")
    shown = run(capsys, "listen", "--once", "--profile", "erin")
    assert "room hello" in shown
    assert "burns 60s after reading" in shown
    listed = json.loads(run(capsys, "conversations", "--json", "--profile", "dave"))
    assert {row["name"] for row in listed} == {"erin", "#ops"}
    receipts = run(capsys, "listen", "--once", "--json", "--profile", "dave").splitlines()
    assert any(json.loads(line)["type"] == "receipt" for line in receipts)

    first = run(capsys, "verify", users["erin"], "--profile", "dave")
    number = next(
        line.split(None, 1)[1] for line in first.splitlines() if line.startswith("safety")
    )
    assert "not verified" in first
    theirs = run(capsys, "verify", users["dave"], "--profile", "erin")
    assert number in theirs  # both sides see the same safety number
    confirmed = run(capsys, "verify", "erin", "--confirm", "--profile", "dave")
    assert "status  verified" in confirmed
    listed = json.loads(run(capsys, "contacts", "remove", "erin", "--json", "--profile", "dave"))
    assert listed == []  # and the self conversation it was shared in is no chat:
    listed = json.loads(run(capsys, "conversations", "--json", "--profile", "dave"))
    assert {row["name"] for row in listed} == {"erin", "#ops"}


def test_cli_room_moderation(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = ("gwen", "hank", "iris")
    handles = {n: f"{n}-{tmp_path.name[-6:]}".lower() for n in names}
    users = enroll_profiles(stack, capsys, monkeypatch, tmp_path / "home", handles)
    run(capsys, "room", "create", "crew", users["hank"], users["iris"], "--profile", "gwen")
    out = run(
        capsys,
        "room",
        "rename",
        "#crew",
        "Night shift",
        "--topic",
        "handover at 6",
        "--profile",
        "gwen",
    )
    assert "Night shift" in out
    run(capsys, "room", "promote", "#crew", users["hank"], "--profile", "gwen")
    members = json.loads(run(capsys, "room", "members", "#crew", "--json", "--profile", "gwen"))
    roles = {m["user_id"]: m["role"] for m in members}
    assert roles == {
        users["gwen"]: "moderator",
        users["hank"]: "moderator",
        users["iris"]: "member",
    }
    shown = run(capsys, "listen", "--once", "--profile", "iris")
    assert "named the room Night shift (topic: handover at 6)" in shown
    # Iris knows the room by its shared name, without a local label.
    run(capsys, "send", "#Night shift", "hello all", "--profile", "iris")
    assert "hello all" in run(capsys, "listen", "--once", "--profile", "hank")
    run(capsys, "room", "remove", "#Night shift", users["iris"], "--profile", "hank")
    run(capsys, "send", "#crew", "after iris", "--profile", "gwen")
    assert "after iris" not in run(capsys, "listen", "--once", "--profile", "iris")
    assert "after iris" in run(capsys, "listen", "--once", "--profile", "hank")
    run(capsys, "room", "demote", "#Night shift", users["gwen"], "--profile", "hank")
    out = run(capsys, "room", "leave", "#crew", "--profile", "gwen")
    assert out.strip() == "left #crew"


def test_commands_work_beside_a_running_listener(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A person keeps `listen` open all day: send, verify, contacts, conversations beside it."""
    import os
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    monkeypatch.setenv("SOTTO_HOME", str(home))
    monkeypatch.setenv("SOTTO_PASSPHRASE", PASSPHRASE)
    server = str(stack.log_path.parent)
    users = {}
    suffix = tmp_path.name[-6:]
    for name in ("kim", "lee"):
        code = invite(stack, handle=f"{name}-{suffix}")["code"]
        run(capsys, "enroll", "--server", server, "--code", code, "--profile", name)
        users[name] = json.loads(run(capsys, "whoami", "--profile", name, "--json"))["user_id"]
    env = {**os.environ, "SOTTO_HOME": str(home), "SOTTO_PASSPHRASE": PASSPHRASE}
    listener = subprocess.Popen(
        [sys.executable, "-m", "sotto.cli", "listen", "--json", "--profile", "lee"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(3)  # it has synced and waits for pushes
        run(capsys, "contacts", "add", "kim", users["kim"], "--profile", "lee")
        run(capsys, "send", "kim", "from lee beside the listener", "--profile", "lee")
        assert "kim" in run(capsys, "contacts", "--profile", "lee")
        assert run(capsys, "conversations", "--json", "--profile", "lee")
        assert "safety" in run(capsys, "verify", users["kim"], "--profile", "lee")
        run(capsys, "send", users["lee"], "to the listener", "--profile", "kim")
        deadline = time.monotonic() + 30
        seen = []
        assert listener.stdout is not None
        while time.monotonic() < deadline:
            line = listener.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event["type"] == "message":
                seen.append(event["text"])
            if "to the listener" in seen:
                break
        assert "to the listener" in seen
    finally:
        listener.terminate()
        listener.wait(timeout=20)
    # The profile is whole afterwards: kim got lee's message, nothing shows twice.
    assert "from lee beside the listener" in run(capsys, "listen", "--once", "--profile", "kim")
    assert "to the listener" not in run(capsys, "listen", "--once", "--profile", "lee")


def test_a_hostile_message_reaches_the_screen_inert_and_json_exact(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    users = enroll_profiles(
        stack, capsys, monkeypatch, tmp_path / "home", {n: n for n in ("mallory", "victim")}
    )
    hostile = "\x1b[2J\x1b]0;pwned\x07ok\r\n[2026-12-01 10:00:00 UTC] <usr-boss> \x9b31m\u202eevil"
    run(capsys, "send", users["victim"], hostile, "--profile", "mallory")
    shown = run(capsys, "listen", "--once", "--profile", "victim")
    assert not [c for c in shown if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]
    assert "\u202e" not in shown
    first, forged = [line for line in shown.splitlines() if "ok" in line or "usr-boss" in line]
    assert first.endswith("\\x1b[2J\\x1b]0;pwned\\x07ok")
    assert forged.startswith("   | [2026-12-01")  # a continuation, not a line from usr-boss
    run(capsys, "send", users["victim"], hostile, "--profile", "mallory")
    lines = run(capsys, "listen", "--once", "--json", "--profile", "victim").splitlines()
    [message] = [m for m in map(json.loads, lines) if m["type"] == "message"]
    assert message["text"] == hostile


def test_people_by_handle_without_contacts(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"gwen": f"gwen-{tmp_path.name[-6:]}", "hal": f"hal-{tmp_path.name[-6:]}"}
    names = {
        k: "".join(c for c in v.lower() if c.isalnum() or c in "-._") for k, v in names.items()
    }
    ids = enroll_profiles(stack, capsys, monkeypatch, tmp_path / "home", names)

    out = run(capsys, "send", names["hal"], "found you by handle", "--profile", "gwen")
    assert out.startswith(f"sent #1 to {names['hal']}")
    shown = run(capsys, "listen", "--once", "--profile", "hal")
    assert f"<{names['gwen']}> found you by handle" in shown  # a name, not a usr- id
    assert ids["gwen"] not in shown
    out = run(capsys, "send", names["gwen"], "and back", "--profile", "hal")  # no contacts either
    assert out.startswith("sent #")
    listed = json.loads(run(capsys, "conversations", "--json", "--profile", "gwen"))
    assert [row["name"] for row in listed] == [names["hal"]]
    assert main(["send", "nobody-at-all", "hi", "--profile", "gwen"]) == 1
    assert "no user 'nobody-at-all' in this network" in capsys.readouterr().err


def test_cli_sends_files_and_locations_and_saves_them_verified(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    users = enroll_profiles(
        stack, capsys, monkeypatch, tmp_path / "home", {n: n for n in ("fay", "gus")}
    )
    source = tmp_path / "plan.pdf"
    source.write_bytes(b"%PDF-1.7 " + bytes(range(256)) * 400)

    sent = json.loads(
        run(
            capsys,
            "send",
            users["gus"],
            "see attached",
            "--file",
            str(source),
            "--json",
            "--profile",
            "fay",
        )
    )
    run(capsys, "send", users["gus"], "--location", "48.8584,2.2945", "--label", "Tower",
        "--profile", "fay")  # fmt: skip
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "plan.pdf").write_bytes(b"already here")
    lines = run(capsys, "listen", "--once", "--json", "--download", str(downloads),
                "--profile", "gus").splitlines()  # fmt: skip
    events = [json.loads(line) for line in lines]
    [file_message] = [e for e in events if e.get("file")]
    assert file_message["message_id"] == sent["message_id"]
    assert file_message["file"]["name"] == "plan.pdf"
    assert "key" not in file_message["file"]
    assert next(e["text"] for e in events if e["type"] == "message" and "file" not in e) == (
        "see attached"
    )
    [place] = [e for e in events if e.get("location")]
    assert place["location"]["label"] == "Tower"
    assert "openstreetmap.org" in place["location"]["map"]
    assert (downloads / "plan.pdf").read_bytes() == b"already here"
    assert (downloads / "plan (2).pdf").read_bytes() == source.read_bytes()

    out = tmp_path / "again.pdf"
    run(capsys, "files", "get", sent["message_id"], "--out", str(out), "--profile", "gus")
    assert out.read_bytes() == source.read_bytes()
    assert main(["files", "get", sent["message_id"], "--out", str(out), "--profile", "gus"]) != 0
    assert out.read_bytes() == source.read_bytes()  # never overwritten
