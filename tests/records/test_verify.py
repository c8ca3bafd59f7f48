"""``sotto records verify``: a complete archive passes; a tampered, a deleted segment and a
gap in sequence numbers are each named, and the command exits non-zero."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sotto.cli import main
from sotto.protocol.archive import build_segment, segment_key
from sotto.protocol.content import Text
from sotto.records.verify import Lock, verify_archive
from tests.records.archive_support import bucket, segments, wait_archived
from tests.records.test_retention_identity import enable, new_network, room
from tests.support.people import messenger_for
from tests.support.stack import Stack


def verify(
    stack: Stack, network: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    code = main(["records", "--server", str(stack.log_path.parent), "--json", "verify", network])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def archived(stack: Stack, tmp_path: Path) -> str:
    network = new_network(stack, "Verified")
    alice, _bob, cid = room(stack, network, tmp_path)
    enable(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        for n in range(3):
            messenger.send(cid, Text(f"record {n}"))
            wait_archived(stack, network, "envelope", n + 1)  # one segment per message
    return network


def test_a_complete_archive_verifies(stack, archived, capsys):
    code, report = verify(stack, archived, capsys)
    assert code == 0, report["problems"]
    assert report["ok"] is True
    assert report["segments"] >= 3
    assert report["conversations"] == 1


def test_a_tampered_segment_is_named(stack, archived, capsys):
    # The first segment holding a message (how the archiver batched them is its own choice).
    key, segment, record = next(
        (key, segment, record)
        for key, segment in segments(stack, archived)
        for record in segment.records
        if record["kind"] == "envelope"
    )
    record["server_time"] += 1  # the operator "corrects" a timestamp
    stack.client("s3").put_object(Bucket=bucket(stack), Key=key, Body=segment.body())
    code, report = verify(stack, archived, capsys)
    assert code == 1
    assert any(key in problem and "altered" in problem for problem in report["problems"])


def test_a_deleted_segment_is_named(stack, archived, capsys):
    key, segment = segments(stack, archived)[0]
    stack.client("s3").delete_object(Bucket=bucket(stack), Key=key)  # a delete marker
    code, report = verify(stack, archived, capsys)
    assert code == 1
    assert f"segment {segment.number}: missing (deleted, or never written)" in report["problems"]


def test_a_gap_in_sequence_numbers_and_an_unlocked_object_are_named():
    records = [
        {
            "id": f"CONV#c|MSG#{seq:012d}",
            "kind": "envelope",
            "conversation_id": "c",
            "seq": seq,
            "server_time": seq,
        }
        for seq in (1, 2, 4)
    ]
    segment = build_segment("net-x", 1, "0" * 64, records, created_at=1, retention_years=7)
    key = segment_key("net-x", 1, segment.hash)
    now = datetime.now(UTC)
    report = verify_archive(
        "net-x",
        [(key, segment)],
        (1, segment.hash),
        {key: Lock("COMPLIANCE", now + timedelta(1))},
        now=now,
    )
    assert report.problems == ["conversation c: message 3 missing from the archive"]
    report = verify_archive("net-x", [(key, segment)], (1, segment.hash), {}, now=now)
    assert f"{key}: not under Object Lock" in report.problems


@pytest.fixture
def with_file(stack: Stack, tmp_path: Path) -> tuple[str, str]:
    network = new_network(stack, "Verified files")
    alice, _bob, cid = room(stack, network, tmp_path)
    enable(stack, network)
    source = tmp_path / "minutes.txt"
    source.write_bytes(b"minutes of the meeting\n" * 2000)
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        messenger.send_file(cid, source)
    (envelope,) = wait_archived(stack, network, "envelope", 1)
    (entry,) = envelope["files"]
    return network, str(entry["key"])


def test_an_archive_with_files_verifies_and_a_tampered_file_copy_is_named(stack, with_file, capsys):
    network, key = with_file
    code, report = verify(stack, network, capsys)
    assert code == 0, report["problems"]
    assert report["files"] == 1
    # The operator overwrites the copy (a new version on top of the locked one).
    stack.client("s3").put_object(
        Bucket=bucket(stack), Key=key, Body=b"something else", ChecksumAlgorithm="SHA256"
    )
    code, report = verify(stack, network, capsys)
    assert code == 1
    assert any(p.startswith(f"{key}: altered: SHA-256 differs") for p in report["problems"])


def test_a_deleted_file_copy_is_named(stack, with_file, capsys):
    network, key = with_file
    stack.client("s3").delete_object(Bucket=bucket(stack), Key=key)  # a delete marker
    code, report = verify(stack, network, capsys)
    assert code == 1
    assert any(p.startswith(f"{key}: missing from the archive") for p in report["problems"])
