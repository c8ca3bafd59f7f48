"""Every screen tells people retention is on: ``send``, ``listen`` and ``whoami`` (CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotto.cli import main
from tests.records.test_retention_identity import enable, new_network
from tests.support.stack import Stack, invite

PASSPHRASE = "correct horse battery"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_send_listen_and_whoami_say_data_retention_is_on(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("SOTTO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SOTTO_PASSPHRASE", PASSPHRASE)
    server = str(stack.log_path.parent)
    network = new_network(stack, "Told")
    users = {}
    for name in ("fay", "gus"):
        code = invite(stack, network_id=network, handle=name)["code"]
        run(capsys, "enroll", "--server", server, "--code", code, "--profile", name)
        users[name] = json.loads(run(capsys, "whoami", "--profile", name, "--json"))["user_id"]
    assert "Data retention: not known yet" in run(capsys, "whoami", "--profile", "fay")
    run(capsys, "contacts", "add", "gus", users["gus"], "--profile", "fay")
    assert "Data Retention" not in run(capsys, "send", "gus", "before", "--profile", "fay")
    enable(stack, network, years=10)
    sent = run(capsys, "send", "gus", "after", "--profile", "fay")
    assert "Data Retention Turned On" in sent
    assert "10 year(s)" in sent
    listened = run(capsys, "listen", "--once", "--profile", "gus")
    assert listened.splitlines()[0].startswith("Data Retention Turned On")
    assert "after" in listened
    lines = [
        json.loads(line)
        for line in run(capsys, "listen", "--once", "--json", "--profile", "gus").splitlines()
    ]
    assert lines[0]["type"] == "retention"
    assert lines[0]["enabled"] is True
    assert "Data Retention Turned On" in run(capsys, "whoami", "--profile", "fay")
