"""The client against the real local stack over real sockets: admin, enroll, keys, devices,
linking a second device, bundles, suspension and revocation.

Every step goes through ``sotto.cli.main`` (in-process) except the approving
device in the link test, which runs as its own process so both sides of the
link really run concurrently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sotto.client.devices import connect
from sotto.client.profile import Profile
from tests.support.stack import Stack

from .conftest import PASSPHRASE, RunCli


@pytest.fixture
def server(stack: Stack) -> str:
    """The local stack's data dir, as a person passes it to --server."""
    return str(stack.log_path.parent)


def ok(result: Any) -> Any:
    assert result.code == 0, result.err
    return result


def ok_json(result: Any) -> Any:
    return json.loads(ok(result).out)


def new_network(run_cli: RunCli, server: str) -> str:
    answer = ok_json(run_cli("admin", "--server", server, "--json", "network", "create", "E2E"))
    return str(answer["network_id"])


def invite(run_cli: RunCli, server: str, network_id: str, handle: str) -> dict[str, Any]:
    args = ("admin", "--server", server, "--json", "invite", network_id, handle, "--ttl", "1h")
    answer: dict[str, Any] = ok_json(run_cli(*args))
    return answer


def enroll(run_cli: RunCli, server: str, network_id: str, handle: str) -> dict[str, Any]:
    code = invite(run_cli, server, network_id, handle)["code"]
    ok(run_cli("enroll", "--server", server, "--code", code, "--profile", handle))
    whoami: dict[str, Any] = ok_json(run_cli("whoami", "--profile", handle, "--json"))
    return whoami


def start_approver(profile: str) -> tuple[subprocess.Popen[str], str]:
    """``sotto device add --yes`` in its own process; returns it and the link code it shows."""
    argv = [sys.executable, "-m", "sotto.cli", "device", "add", "--profile", profile, "--yes"]
    process = subprocess.Popen(
        [*argv, "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Link code: "):
            return process, line.removeprefix("Link code: ").strip()
    process.wait(timeout=10)
    assert process.stderr is not None
    raise AssertionError(f"approver exited {process.returncode}: {process.stderr.read()}")


def test_enroll_link_and_revoke_a_second_device(
    stack: Stack, server: str, home: Path, run_cli: RunCli
) -> None:
    # GIVEN an administrator's network and alice enrolled with an invite
    network_id = new_network(run_cli, server)
    alice = enroll(run_cli, server, network_id, "alice")
    assert alice["holds_identity_key"] is True

    # THEN her first device has its prekeys on the server and verifies
    status = ok_json(run_cli("keys", "status", "--profile", "alice", "--json"))
    assert status["server"]["one_time_prekeys"] == 100
    assert status["server"]["signed_prekey_expires_at"] is not None
    listing = ok_json(run_cli("devices", "--profile", "alice", "--json"))
    assert listing["trust"] == "own"
    assert [(d["device_id"], d["verified"]) for d in listing["devices"]] == [
        (alice["device_id"], True)
    ]

    # WHEN her existing device approves a new one while the new one asks to be linked
    approver, code = start_approver("alice")
    try:
        linked = ok(
            run_cli(
                "link",
                "--server",
                server,
                "--code",
                code,
                "--profile",
                "laptop",
                "--timeout",
                "60",
            )
        )
        out, err = approver.communicate(timeout=60)
    finally:
        if approver.poll() is None:
            approver.kill()
    assert approver.returncode == 0, err

    # THEN both sides showed the same device-key fingerprint, and both devices verify
    laptop = ok_json(run_cli("whoami", "--profile", "laptop", "--json"))
    assert laptop["user_id"] == alice["user_id"]
    assert laptop["holds_identity_key"] is False
    assert laptop["identity_fingerprint"] == alice["identity_fingerprint"]
    shown = [line for line in linked.out.splitlines() if "fingerprint" in line]
    assert shown
    assert shown[0] in out
    listing = ok_json(run_cli("devices", "--profile", "laptop", "--json"))
    devices = {d["device_id"]: d for d in listing["devices"]}
    assert set(devices) == {alice["device_id"], laptop["device_id"]}
    assert all(d["verified"] and d["status"] == "active" for d in devices.values())
    status = ok_json(run_cli("keys", "status", "--profile", "laptop", "--json"))
    assert status["server"]["one_time_prekeys"] == 100

    # WHEN the administrator revokes the laptop
    revoked = ok_json(run_cli("admin", "--server", server, "--json", "revoke", laptop["device_id"]))
    assert revoked["status"] == "revoked"

    # THEN the laptop can no longer connect, and alice's first device still can
    refused = run_cli("keys", "status", "--profile", "laptop")
    assert refused.code == 1
    assert "refused the connection (403)" in refused.err
    listing = ok_json(run_cli("devices", "--profile", "alice", "--json"))
    assert {d["device_id"]: d["status"] for d in listing["devices"]} == {
        alice["device_id"]: "active",
        laptop["device_id"]: "revoked",
    }


def test_invite_code_is_single_use_and_a_failed_enroll_leaves_no_profile(
    server: str, home: Path, run_cli: RunCli
) -> None:
    network_id = new_network(run_cli, server)
    code = invite(run_cli, server, network_id, "carol")["code"]
    ok(run_cli("enroll", "--server", server, "--code", code, "--profile", "carol"))

    again = run_cli("enroll", "--server", server, "--code", code, "--profile", "carol2")

    assert again.code == 1
    assert "404 not_found" in again.err
    assert not (home / "carol2").exists()


def test_link_with_an_unknown_code_fails_cleanly(server: str, home: Path, run_cli: RunCli) -> None:
    result = run_cli(
        "link", "--server", server, "--code", "AAAA-BBBB-CCCC-DDDD-EEEE", "--profile", "x"
    )
    assert result.code == 1
    assert "not_found" in result.err
    assert not (home / "x").exists()


def test_admin_human_output_shows_the_invite_code_once_with_the_next_command(
    server: str, home: Path, run_cli: RunCli
) -> None:
    network_id = new_network(run_cli, server)
    result = ok(run_cli("admin", "--server", server, "invite", network_id, "dave"))
    code = next(line.split()[1] for line in result.out.splitlines() if line.startswith("code"))
    assert f"sotto enroll --server {server} --code {code} --profile dave" in result.out
    ok(run_cli("enroll", "--server", server, "--code", code, "--profile", "dave"))
    users = ok(run_cli("admin", "--server", server, "users", network_id))
    assert "dave" in users.out


def test_another_users_devices_are_unverified_until_safety_numbers_match(
    server: str, home: Path, run_cli: RunCli
) -> None:
    network_id = new_network(run_cli, server)
    erin = enroll(run_cli, server, network_id, "erin")
    enroll(run_cli, server, network_id, "frank")

    listing = ok_json(run_cli("devices", erin["user_id"], "--profile", "frank", "--json"))

    assert listing["trust"] == "unverified"
    assert len(listing["safety_number"].split()) == 12
    assert [d["verified"] for d in listing["devices"]] == [True]


def test_fetched_bundles_consume_prekeys_and_keys_publish_tops_them_up(
    server: str, home: Path, run_cli: RunCli
) -> None:
    # GIVEN gina's device with 100 one-time prekeys, and hal in the same network
    network_id = new_network(run_cli, server)
    gina = enroll(run_cli, server, network_id, "gina")
    enroll(run_cli, server, network_id, "hal")

    # WHEN hal fetches gina's bundles (the SDK, as messaging will)
    profile = Profile.open("hal")
    with connect(profile.read_info(), profile.load_keys(PASSPHRASE)) as session:
        answer = session.request(
            "fetch_bundles", devices=[{"user_id": gina["user_id"], "device_id": gina["device_id"]}]
        )
    assert [b["device_id"] for b in answer["bundles"]] == [gina["device_id"]]
    assert answer["bundles"][0]["kind"] == "one_time"

    # THEN gina's device sees one fewer and publishing restores the target
    status = ok_json(run_cli("keys", "status", "--profile", "gina", "--json"))
    assert status["server"]["one_time_prekeys"] == 99
    published = ok_json(run_cli("keys", "publish", "--profile", "gina", "--json"))
    assert published["published_one_time"] == 1
    assert published["server"]["one_time_prekeys"] == 100


def test_suspended_user_cannot_connect_until_reinstated(
    server: str, home: Path, run_cli: RunCli
) -> None:
    network_id = new_network(run_cli, server)
    ivy = enroll(run_cli, server, network_id, "ivy")

    ok(run_cli("admin", "--server", server, "suspend", ivy["user_id"]))
    refused = run_cli("keys", "status", "--profile", "ivy")
    ok(run_cli("admin", "--server", server, "reinstate", ivy["user_id"]))

    assert refused.code == 1
    assert "403" in refused.err
    ok(run_cli("keys", "status", "--profile", "ivy"))
