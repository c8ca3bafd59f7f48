"""``sotto records export`` on the officer's machine: the package holds exactly what the
users' clients displayed (text, sender, every addressee, time, conversation) and
nothing else, in RSMF 2.0 and EML/MBOX with NARA's CSV; ``verify-package`` re-checks it.

Scenario: a room whose members change (Carol joins, then leaves), a direct
conversation, a second device of Alice's, an expiring and a burn-on-read message,
a file, and a restored keystore: Bob's profile is put back from a copy taken
before he last sent (a device restored from backup), and he sends again.
"""

from __future__ import annotations

import email
import io
import json
import mailbox
import secrets
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sotto.cli import main
from sotto.client.events import MessageEvent
from sotto.protocol.content import Text
from sotto.protocol.conversation import MessageTimers
from tests.records.archive_support import wait_archived
from tests.records.test_retention_identity import enable, new_network
from tests.support.people import add_device, messenger_for, seed_person
from tests.support.stack import Stack


def shown(events: list[Any]) -> dict[str, tuple[str, str, str, int | None]]:
    return {
        e.message_id: (e.text, e.sender_user_id, e.conversation_id, e.server_time)
        for e in events
        if isinstance(e, MessageEvent)
    }


@pytest.fixture(scope="module")
def scenario(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("export-home")
    network = new_network(stack, "Exported")
    enable(stack, network)
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    alice_phone = add_device(stack, alice)
    displayed: dict[str, tuple[str, str, str, int | None]] = {}
    addressees: dict[str, set[str]] = {}
    with messenger_for(stack, home, alice.devices[0]) as a:
        room = a.create_room("ops", [bob.user_id])
        sent = a.send(room, Text("room, before carol"))
        addressees[sent.message_id] = {bob.user_id}
        a.add_members("#ops", [carol.user_id])
        sent = a.send(room, Text("carol is here"))
        addressees[sent.message_id] = {bob.user_id, carol.user_id}
        attachment = home / "minutes.pdf"
        attachment.write_bytes(secrets.token_bytes(70_000))
        sent = a.send_file(room, attachment)
        addressees[sent.message_id] = {bob.user_id, carol.user_id}
    with messenger_for(stack, home, carol.devices[0]) as c:
        displayed |= shown(c.sync(read=True))
        c.leave(room)
    with messenger_for(stack, home, bob.devices[0]) as b:
        displayed |= shown(b.sync(read=True))
        direct = b.direct(alice.user_id)
    backup = home / "bob-backup"
    profile = home / f"p-{bob.devices[0].device_id}"
    shutil.copytree(profile, backup)
    with messenger_for(stack, home, bob.devices[0]) as b:
        sent = b.send(
            direct, Text("expiring, direct"), timers=MessageTimers(expires_in_ms=3_600_000)
        )
        addressees[sent.message_id] = {alice.user_id}
    # Bob's device is restored from the backup: it has forgotten that it sent.
    shutil.rmtree(profile)
    shutil.copytree(backup, profile)
    with messenger_for(stack, home, bob.devices[0]) as b:
        sent = b.send(direct, Text("sent from the restored keystore"))
        addressees[sent.message_id] = {alice.user_id}
        # What Bob's own screen shows of it. Alice's devices cannot open it: the restored
        # device reused a pairwise-session step (a new chain here, so no chain position
        # repeats and the server has nothing to refuse); they ask again, and are told
        # (protocol §16.4). The archive's copy came by HPKE: the record is what was sent.
        (mine,) = [m for m in b.history(direct) if m.message_id == sent.message_id]
        displayed[mine.message_id] = (mine.text, mine.sender_user_id, direct, mine.server_time)
    with messenger_for(stack, home, alice_phone) as phone:
        displayed |= shown(phone.sync(read=True))
        sent = phone.send(
            room, Text("burn after reading"), timers=MessageTimers(burn_after_read_s=30)
        )
        addressees[sent.message_id] = {bob.user_id}  # carol left
    with messenger_for(stack, home, bob.devices[0]) as b:
        displayed |= shown(b.sync(read=True))
    with messenger_for(stack, home, alice.devices[0]) as a:
        displayed |= shown(a.sync(read=True))
    wait_archived(stack, network, "envelope", len(addressees))
    return {
        "attachment": attachment.read_bytes(),
        "network": network,
        "displayed": displayed,
        "addressees": addressees,
        "room": room,
        "direct": direct,
        "carol": carol.user_id,
    }


def export(stack: Stack, scenario: dict[str, Any], out: Path, fmt: str, *extra: str) -> int:
    return main(
        [
            "records",
            "--server",
            str(stack.log_path.parent),
            "export",
            scenario["network"],
            "--format",
            fmt,
            "--out",
            str(out),
            *extra,
        ]
    )


def csv_rows(out: Path) -> list[dict[str, str]]:
    lines = (out / "metadata.csv").read_text().splitlines()
    header = lines[0].split("|")
    return [dict(zip(header, line.split("|"), strict=True)) for line in lines[1:]]


def test_the_eml_export_holds_exactly_what_clients_displayed(stack, scenario, tmp_path):
    out = tmp_path / "eml"
    assert export(stack, scenario, out, "eml") == 0
    rows = {row["message_id"]: row for row in csv_rows(out)}
    displayed = scenario["displayed"]
    assert set(rows) == set(displayed)  # nothing more, nothing less
    messages = {}
    for path in (out / "mbox").glob("*.mbox"):
        for message in mailbox.mbox(str(path)):
            mid = message["Message-ID"].strip("<>").split("@")[0]
            messages[mid] = message
    for mid, (text, sender, cid, server_time) in displayed.items():
        row = rows[mid]
        assert (row["sender"], row["conversation_id"]) == (sender, cid)
        assert set(row["addressees"].split(";")) == scenario["addressees"][mid]
        (body,) = [p for p in messages[mid].walk() if p.get_content_type() == "text/plain"]
        assert body.get_payload(decode=True) == text.encode()
        assert email.utils.parsedate_to_datetime(messages[mid]["Date"]).timestamp() == int(
            server_time / 1000
        )
    (with_file,) = [m for m in messages.values() if m.is_multipart()]
    (part,) = [p for p in with_file.walk() if p.get_content_disposition() == "attachment"]
    assert part.get_payload(decode=True) == scenario["attachment"]
    assert str(part.get_filename()).endswith("minutes.pdf")
    report = json.loads((out / "verification_report.json").read_text())
    assert report["problems"] == []
    assert report["signatures_checked"] >= len(displayed)
    (listed,) = report["attachments"]
    assert listed["name"] == "minutes.pdf"
    assert main(["records", "verify-package", str(out)]) == 0


def test_the_rsmf_export_is_rsmf_2_and_filters_by_user_and_conversation(stack, scenario, tmp_path):
    out = tmp_path / "rsmf"
    assert export(stack, scenario, out, "rsmf", "--user", scenario["carol"]) == 0
    (path,) = (out / "rsmf").glob("*.rsmf")  # carol: the room only, one day
    wrapper = email.message_from_bytes(path.read_bytes())
    assert wrapper["X-RSMF-Version"] == "2.0.0"
    # Carol was addressed only while she was a member: a message and a file.
    assert wrapper["X-RSMF-EventCount"] == "2"
    assert wrapper["X-RSMF-AttachmentCount"] == "1"
    (attachment,) = [p for p in wrapper.walk() if p.get_filename() == "rsmf.zip"]
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    bundle = zipfile.ZipFile(io.BytesIO(payload))
    manifest = json.loads(bundle.read("rsmf_manifest.json"))
    assert manifest["conversations"][0]["type"] == "channel"
    texts = [event["body"] for event in manifest["events"]]
    assert texts[0] == "carol is here"
    assert texts[1].startswith("[file] minutes.pdf")
    (entry,) = manifest["events"][1]["attachments"]
    assert (entry["display"], entry["size"]) == ("minutes.pdf", len(scenario["attachment"]))
    assert bundle.read(entry["id"]) == scenario["attachment"]
    assert {p["id"] for p in manifest["participants"]} >= {scenario["carol"]}
    assert_rsmf_2_manifest(manifest, set(bundle.namelist()))
    assert main(["records", "verify-package", str(out)]) == 0


def assert_rsmf_2_manifest(manifest: dict[str, Any], members: set[str]) -> None:
    """What RSMF 2.0.0's manifest schema requires, and the validator's reference checks:
    every id an event names exists, every attachment is a file at the zip's root."""
    assert manifest["version"] == "2.0.0"
    assert {"participants", "conversations", "events"} <= set(manifest)
    people = {p["id"] for p in manifest["participants"]}
    conversations = {c["id"] for c in manifest["conversations"]}
    assert manifest["eventcollectionid"] in conversations
    for conversation in manifest["conversations"]:
        assert conversation["platform"]
        assert conversation["type"] in ("direct", "channel")
        assert set(conversation["participants"]) <= people
    for event in manifest["events"]:
        assert event["type"] == "message"
        assert event["participant"] in people
        assert event["conversation"] in conversations
        assert event["timestamp"].endswith("Z")
        for attachment in event["attachments"]:
            assert attachment["id"] in members
            assert "/" not in attachment["id"]
            assert isinstance(attachment["size"], int)


def test_verify_package_names_an_altered_or_added_file(stack, scenario, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert export(stack, scenario, out, "eml", "--conversation", scenario["direct"]) == 0
    csv = out / "metadata.csv"
    assert len(csv_rows(out)) == 2  # the direct conversation: before and after the restore
    csv.write_text(csv.read_text().replace("direct", "room"))
    (out / "extra.txt").write_text("planted")
    capsys.readouterr()
    assert main(["records", "--json", "verify-package", str(out)]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert "metadata.csv: altered (SHA-256 differs)" in problems
    assert "extra.txt: not in SHA256SUMS" in problems


def test_legal_holds_cover_the_segments_of_a_conversation_and_release_removes_them(
    stack, scenario, capsys
):
    from sotto.client.server import from_endpoints
    from sotto.records.archive_store import archive_store
    from tests.records.archive_support import segments

    server = from_endpoints(stack.log_path.parent / "endpoints.json")
    store = archive_store(str(stack.log_path.parent), server, None, None)
    args = ["records", "--server", str(stack.log_path.parent)]
    assert main([*args, "hold", scenario["network"], "--conversation", scenario["direct"]]) == 0
    held = {key for key, _ in segments(stack, scenario["network"]) if store.legal_hold(key)}
    with_direct = {
        key
        for key, segment in segments(stack, scenario["network"])
        if any(r["conversation_id"] == scenario["direct"] for r in segment.records)
    }
    assert held == with_direct
    assert held  # the direct conversation's message and log are archived
    assert main([*args, "release", scenario["network"], "--conversation", scenario["direct"]]) == 0
    assert not any(store.legal_hold(key) for key in held)
    # The room's file copy is held with its segments.
    capsys.readouterr()
    assert (
        main([*args, "--json", "hold", scenario["network"], "--conversation", scenario["room"]])
        == 0
    )
    (file_copy,) = json.loads(capsys.readouterr().out)["files"]
    assert store.legal_hold(file_copy)
    assert main([*args, "release", scenario["network"], "--conversation", scenario["room"]]) == 0
    assert not store.legal_hold(file_copy)


def test_extend_locks_holds_every_object_for_the_networks_whole_retention(stack, scenario, capsys):
    """The archiver's objects take the stage's default lock (a day here, GOVERNANCE);
    ``extend-locks`` moves each out to its segment's creation plus seven years."""
    from sotto.client.server import from_endpoints
    from sotto.records.archive_store import archive_store
    from sotto.records.locks import required_until
    from tests.records.archive_support import segments

    network = scenario["network"]
    args = ["records", "--server", str(stack.log_path.parent)]
    capsys.readouterr()
    assert main([*args, "verify", network]) == 0
    assert "locked for less than the network's retention period" in capsys.readouterr().out
    assert main([*args, "--json", "extend-locks", network]) == 0
    extended = json.loads(capsys.readouterr().out)
    server = from_endpoints(stack.log_path.parent / "endpoints.json")
    store = archive_store(str(stack.log_path.parent), server, None, None)
    for key, segment in segments(stack, network):
        until = required_until(segment)
        assert until is not None
        assert (
            until.year - 7
            == datetime.fromtimestamp(segment.manifest["created_at"] / 1000, UTC).year
        )
        copies = [e["key"] for r in segment.records for e in r.get("files", []) if e.get("key")]
        for name in [key, *copies]:
            lock = store.lock(name)
            assert lock.retain_until is not None
            assert lock.retain_until >= until, name
            assert lock.mode == "GOVERNANCE"  # the mode it had: never changed
    assert any("/files/" in key for key in extended["extended"])  # the file copy too
    assert main([*args, "--json", "extend-locks", network]) == 0
    assert json.loads(capsys.readouterr().out)["extended"] == []  # nothing left to extend
    assert main([*args, "verify", network]) == 0
    assert "locked for less" not in capsys.readouterr().out
