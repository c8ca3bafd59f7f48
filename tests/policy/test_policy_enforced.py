"""Network policy over the local stack: set by an administrator, enforced by the server,
pushed to online devices, read and applied by clients.

Each test works in a network of its own, so no policy reaches another suite.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sotto.cli import main
from sotto.client.errors import FrameError
from sotto.client.messenger import Messenger
from sotto.client.policy import PolicyError
from sotto.frames.requests import LinkApproveRequest
from sotto_server.dal.directory import DirectoryStore
from sotto_server.dal.guards import GuardsStore
from sotto_server.logic import key_directory
from sotto_server.logic.errors import ErrorCode, Refused
from sotto_server.logic.key_directory import Stores
from sotto_server.logic.principal import Principal
from tests.identity.test_links import certify, start_link
from tests.support.people import Seeded, messenger_for, seed_person
from tests.support.stack import Socket, Stack, admin, b64, http


@pytest.fixture
def network(stack: Stack) -> str:
    return str(
        admin(stack, "POST", "/networks", {"name": f"pol-{secrets.token_hex(3)}"})["network_id"]
    )


def _set(stack: Stack, network: str, group: str | None = None, **knobs: object) -> Any:
    path = (
        f"/networks/{network}/policy"
        if group is None
        else f"/networks/{network}/groups/{group}/policy"
    )
    return admin(stack, "PUT", path, knobs)


@pytest.fixture
def pair(
    stack: Stack, network: str, tmp_path: Path
) -> Iterator[tuple[Seeded, Seeded, Messenger, Messenger]]:
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    # Enforcement left to the server, so its refusal is what the test sees.
    raw = messenger_for(stack, tmp_path, alice.devices[0], enforce_policy=False)
    client = messenger_for(stack, tmp_path, bob.devices[0])
    raw.add_contact("bob", bob.user_id)
    client.add_contact("alice", alice.user_id)
    # Adding a contact shares it over a session (self_sync); each test starts on a new
    # one, which reads the policy before anything else, as a new command does.
    raw.disconnect()
    client.disconnect()
    try:
        yield alice, bob, raw, client
    finally:
        raw.close()
        client.close()


def test_server_refuses_an_expiry_over_the_network_limit_in_words(stack, network, pair) -> None:
    _alice, _bob, raw, _client = pair
    _set(stack, network, max_expiry_s=3600)
    with pytest.raises(FrameError) as refused:
        raw.send_text("bob", "too long", expires_s=7200)
    assert refused.value.code == "policy_violation"
    assert refused.value.message == "expiry 2h is over your network's limit of 1h"
    with pytest.raises(FrameError, match="a message that never expires is over your network's"):
        raw.send_text("bob", "forever")
    assert raw.send_text("bob", "within", expires_s=1800).seq is not None


def test_server_refuses_a_burn_over_the_limit(stack, network, pair) -> None:
    _alice, _bob, raw, _client = pair
    _set(stack, network, max_burn_s=600)
    with pytest.raises(FrameError, match=r"burn-on-read 1h is over your network's limit of 10m"):
        raw.send_text("bob", "burn", burn_s=3600)
    raw.send_text("bob", "short burn", burn_s=60)


def test_the_strictest_group_applies_and_is_named(stack, network, pair) -> None:
    alice, _bob, raw, client = pair
    _set(stack, network, max_expiry_s=86400)
    for name, limit in (("ops", 3600), ("wide", 7 * 86400)):
        admin(stack, "POST", f"/networks/{network}/groups", {"name": name})
        _set(stack, network, name, max_expiry_s=limit)
        admin(
            stack,
            "POST",
            f"/networks/{network}/groups/{name}/members",
            {"user_ids": [alice.user_id]},
        )
    effective = admin(stack, "GET", f"/users/{alice.user_id}/policy")
    assert effective["policy"]["max_expiry_s"] == 3600
    assert effective["sources"]["max_expiry_s"] == "ops"
    assert effective["groups"] == ["ops", "wide"]
    with pytest.raises(FrameError, match=r"^.*expiry 2h is over security group ops's limit of 1h$"):
        raw.send_text("bob", "two hours", expires_s=7200)
    # Bob is in no group: the network's day applies to him.
    client.send_text("alice", "two hours", expires_s=7200)
    # Out of ops, alice has the network's limit again.
    out = admin(
        stack,
        "POST",
        f"/networks/{network}/groups/ops/members/remove",
        {"user_ids": [alice.user_id]},
    )
    assert out["removed"] == [alice.user_id]
    raw.send_text("bob", "two hours now", expires_s=7200)
    shown = admin(stack, "GET", f"/networks/{network}/policy")
    assert shown["network"] == {"max_expiry_s": 86400}
    assert {g["name"]: g["members"] for g in shown["groups"]} == {
        "ops": [],
        "wide": [alice.user_id],
    }


def test_client_applies_the_policy_it_read_before_sending(stack, network, pair) -> None:
    _alice, _bob, _raw, client = pair
    _set(stack, network, max_expiry_s=3600)
    with pytest.raises(PolicyError, match=r"^expiry 1d is over your network's limit of 1h$"):
        client.send_text("alice", "a day", expires_s=86400)
    # Without an expiry, the client sends the longest the policy allows, and the server agrees.
    sent = client.send_text("alice", "no expiry given")
    assert sent.seq is not None
    stored = client.history("alice")[-1]
    assert 0 < stored.expires_at - stored.timestamp <= 3600 * 1000


def test_a_policy_change_is_pushed_to_online_devices(stack, network) -> None:
    person = seed_person(stack, network, prekeys=0)
    with Socket(stack, person.devices[0]) as socket:
        assert socket.request("policy")["policy"]["max_expiry_s"] is None
        answer = _set(stack, network, max_expiry_s=600, read_receipts="forced")
        assert answer["pushed"] >= 1
        pushed = socket.push("policy")
    assert pushed["policy"]["max_expiry_s"] == 600
    assert pushed["policy"]["read_receipts"] == "forced"
    assert pushed["user_id"] == person.user_id


def test_group_membership_change_is_pushed_too(stack, network) -> None:
    person = seed_person(stack, network, prekeys=0)
    admin(stack, "POST", f"/networks/{network}/groups", {"name": "field"})
    _set(stack, network, "field", location_allowed=False)
    with Socket(stack, person.devices[0]) as socket:
        admin(
            stack,
            "POST",
            f"/networks/{network}/groups/field/members",
            {"user_ids": [person.user_id]},
        )
        pushed = socket.push("policy")
    assert pushed["policy"]["location_allowed"] is False
    assert pushed["sources"]["location_allowed"] == "field"


def test_devices_per_user_is_enforced_at_link(stack, network) -> None:
    person = seed_person(stack, network, prekeys=0)
    _set(stack, network, max_devices=1)
    with Socket(stack, person.devices[0]) as socket:
        answer = socket.request("link_create")
    assert answer["code"] == "policy_violation"
    assert "your network's limit of 1 device per user (this user has 1)" in answer["message"]
    _set(stack, network, max_devices=None)
    with Socket(stack, person.devices[0]) as socket:
        assert socket.request("link_create")["action"] == "link_created"


def test_admin_policy_routes_validate_and_answer_errors(stack, network) -> None:
    status, answer = http(
        stack, "PUT", f"/v1/admin/networks/{network}/policy", {"max_expiry_s": 0}, signed=True
    )
    assert (status, answer["code"]) == (400, "bad_request")
    status, answer = http(
        stack, "PUT", f"/v1/admin/networks/{network}/policy", {"colour": "red"}, signed=True
    )
    assert (status, answer["code"]) == (400, "bad_request")
    status, answer = http(
        stack, "PUT", "/v1/admin/networks/net-nope/policy", {"max_devices": 2}, signed=True
    )
    assert (status, answer["code"]) == (404, "not_found")
    status, answer = http(
        stack,
        "PUT",
        f"/v1/admin/networks/{network}/groups/nope/policy",
        {"max_devices": 2},
        signed=True,
    )
    assert (status, answer["code"]) == (404, "not_found")
    admin(stack, "POST", f"/networks/{network}/groups", {"name": "dup"})
    status, answer = http(
        stack, "POST", f"/v1/admin/networks/{network}/groups", {"name": "dup"}, signed=True
    )
    assert (status, answer["code"]) == (409, "conflict")
    other = admin(stack, "POST", "/networks", {"name": "other"})["network_id"]
    stranger = seed_person(stack, other, prekeys=0)
    out = admin(
        stack, "POST", f"/networks/{network}/groups/dup/members", {"user_ids": [stranger.user_id]}
    )
    assert out["added"] == []
    assert out["refused"] == [
        {"user_id": stranger.user_id, "reason": "no such user in this network"}
    ]


def test_cli_policy_show_set_and_groups(stack, network, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("SOTTO_HOME", str(tmp_path / "home"))
    server = str(stack.log_path.parent)
    person = seed_person(stack, network, prekeys=0)

    def run(*args: str) -> str:
        code = main(["admin", "--server", server, *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return str(out)

    run("policy", "set", network, "--max-expiry", "1h", "--files", "no", "--max-file-size", "100M")
    run("group", "create", network, "ops")
    run(
        "policy",
        "set",
        network,
        "--group",
        "ops",
        "--max-burn",
        "10m",
        "--read-receipts",
        "disabled",
    )
    run("group", "add", network, "ops", person.user_id)
    shown = json.loads(run("--json", "policy", "show", network, "--user", person.user_id))
    assert shown["network"] == {
        "files_allowed": False,
        "max_expiry_s": 3600,
        "max_file_bytes": 100 * 1024**2,
    }
    assert shown["groups"][0]["members"] == [person.user_id]
    assert shown["user"]["policy"]["read_receipts"] == "disabled"
    assert shown["user"]["policy"]["max_burn_s"] == 600
    run("policy", "set", network, "--clear", "max-expiry")
    assert "max_expiry_s" not in json.loads(run("--json", "policy", "show", network))["network"]
    run("group", "remove", network, "ops", person.user_id)
    assert main(["admin", "--server", server, "policy", "set", network]) == 2


def test_a_listening_client_applies_a_pushed_policy_at_once(stack, network, pair) -> None:
    _alice, _bob, _raw, client = pair
    client.sync()
    assert client.policy.max_expiry_s is None
    _set(stack, network, max_expiry_s=600)
    deadline = time.monotonic() + 15
    while client.policy.max_expiry_s is None and time.monotonic() < deadline:
        client.poll(0.5)
    assert client.policy.max_expiry_s == 600
    with pytest.raises(PolicyError, match=r"^expiry 1h is over your network's limit of 10m$"):
        client.send_text("alice", "an hour", expires_s=3600)


def test_two_approvals_racing_cannot_both_pass_the_device_cap(stack, network) -> None:
    """max_devices 2 and one device: two links approved at once would both count one
    device. The second to commit finds the count moved and is refused; the cap holds."""
    person = seed_person(stack, network, prekeys=0)
    device = person.devices[0]
    _set(stack, network, max_devices=2)
    try:
        links = [start_link(stack, device) for _ in range(2)]
        for socket, *_ in links:
            socket.close()
        client = stack.client("dynamodb")
        table = stack.table("DirectoryTable")
        caller = Principal(device.device_id, device.user_id, device.network_id)

        def approve(directory: DirectoryStore, index: int) -> Any:
            _, created, new_id, new_key = links[index]
            certificate = b64(certify(device, new_id, new_key).serialize())
            request = LinkApproveRequest.model_validate(
                {
                    "action": "link_approve",
                    "id": f"r{index}",
                    "link_id": created["link_id"],
                    "certificate": certificate,
                }
            )
            stores = Stores(
                directory=directory, guards=GuardsStore(client, stack.table("GuardsTable"))
            )
            return key_directory.link_approve(stores, caller, request, int(time.time() * 1000))

        class Racing(DirectoryStore):
            """Counts the devices, then lets the other approval commit first."""

            raced = False

            def list_devices(self, user_id: str) -> Any:
                listed = super().list_devices(user_id)
                if not self.raced:
                    self.raced = True
                    approve(DirectoryStore(client, table), 1)
                return listed

        with pytest.raises(Refused) as refused:
            approve(Racing(client, table), 0)
        assert refused.value.code == ErrorCode.CONFLICT
        assert "approve it again" in refused.value.message
        active = [
            d
            for d in DirectoryStore(client, table).list_devices(device.user_id)
            if d[2] == "active"
        ]
        assert len(active) == 2
        with pytest.raises(Refused) as again:  # approved again, the cap now refuses it
            approve(DirectoryStore(client, table), 0)
        assert again.value.code == ErrorCode.POLICY
    finally:
        _set(stack, network, max_devices=None)
