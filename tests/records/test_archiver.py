"""The archiver: every envelope, retention distribution and membership operation of a
retaining network lands once in a verifying hash chain, whatever the stream does.

The first test runs the archiver as the local stack runs it (moto's stream,
Lambda's event source semantics). The others drive the same logic with the
stored items replayed, reordered and interrupted, against the same tables
and bucket, as a retried or bisected stream batch would.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from sotto.protocol.archive import check_chain
from sotto.protocol.content import Text
from sotto.protocol.conversation import MessageTimers
from sotto_server.dal.archive import ArchiveHeads, ArchiveObjects
from sotto_server.dal.conversations import ConversationsStore
from sotto_server.dal.directory import DirectoryStore
from sotto_server.dal.retention import RetentionStore
from sotto_server.logic import archiver
from tests.records.archive_support import bucket, committed_records, head, segments, wait_archived
from tests.records.test_retention_identity import enable, new_network, room
from tests.support.people import messenger_for
from tests.support.stack import Stack


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_the_archive_holds_every_message_sent_in_a_verifying_chain(stack, home):
    network = new_network(stack, "Archive")
    alice, bob, cid = room(stack, network, home)
    enable(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_text("#ops", "plain")
        messenger.send(cid, Text("expiring"), timers=MessageTimers(expires_in_ms=60_000))
        messenger.send(cid, Text("burning"), timers=MessageTimers(burn_after_read_s=5))
    with messenger_for(stack, home, bob.devices[0]) as messenger:
        messenger.sync(read=True)
        messenger.send(cid, Text("reply"))
    envelopes = wait_archived(stack, network, "envelope", 4)
    sent = [
        int(i["sk"]["S"].removeprefix("MSG#"))
        for i in stack.client("dynamodb").query(
            TableName=stack.table("MessagesTable"),
            KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
            ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MSG#"}},
        )["Items"]
    ]
    assert sorted(r["seq"] for r in envelopes if r["conversation_id"] == cid) == sorted(sent)
    assert wait_archived(stack, network, "distribution", 2)  # alice's chain, then bob's
    assert all(r["sender"]["certificate"] for r in envelopes)
    top = head(stack, network)
    assert top is not None
    assert check_chain(segments(stack, network), (top.segment, top.manifest_hash)) == []
    # A network without retention keeps nothing in the archive.
    other = new_network(stack, "Unarchived")
    carol, _dave, other_room = room(stack, other, home)
    with messenger_for(stack, home, carol.devices[0]) as messenger:
        messenger.send(other_room, Text("not retained"))
    assert head(stack, other) is None


def stores(stack: Stack) -> archiver.ArchiverStores:
    dynamodb = stack.client("dynamodb")
    return archiver.ArchiverStores(
        directory=DirectoryStore(dynamodb, stack.table("DirectoryTable")),
        conversations=ConversationsStore(dynamodb, stack.table("MessagesTable")),
        retention=RetentionStore(dynamodb, stack.table("DirectoryTable")),
        heads=ArchiveHeads(dynamodb, stack.table("MessagesTable")),
        objects=ArchiveObjects(
            stack.client("s3"), bucket(stack), stack.endpoints["resources"]["keys"]["ArchiveKey"]
        ),
        files_bucket=stack.endpoints["resources"]["buckets"]["AttachmentsBucket"],
    )


def as_stream_items(items: list[dict[str, Any]]) -> list[archiver.StreamItem]:
    """Stored items as the stream delivered them (binary as base64, as in Lambda's event)."""

    def jsonable(value: dict[str, Any]) -> dict[str, Any]:
        return {
            name: {"B": base64.b64encode(v["B"]).decode()} if "B" in v else v
            for name, v in value.items()
        }

    return [
        archiver.StreamItem(
            sequence=f"{index:021d}",
            created_ms=1,
            pk=item["pk"]["S"],
            sk=item["sk"]["S"],
            image=jsonable(item),
        )
        for index, item in enumerate(items)
    ]


def test_replayed_reordered_and_interrupted_batches_archive_each_record_once(
    stack, home, monkeypatch
):
    network = new_network(stack, "Replays")
    alice, _bob, cid = room(stack, network, home)
    enable(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        for n in range(6):
            messenger.send(cid, Text(f"m{n}"))
    archived = wait_archived(stack, network, "envelope", 6)
    assert len(archived) == 6
    before = committed_records(stack, network)
    items = stack.client("dynamodb").query(
        TableName=stack.table("MessagesTable"),
        KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MSG#"}},
    )["Items"]
    replay = as_stream_items(items)
    # GIVEN duplicates and reordered shards, WHEN the archiver sees them again,
    # THEN nothing is added and no segment is written.
    done = archiver.archive(stores(stack), replay + list(reversed(replay)), lambda: 1)
    assert (done.segments, done.failed) == (0, [])
    assert committed_records(stack, network) == before
    # A crash between writing a segment and committing it: the records are reported
    # failed, the retry commits them once, and the orphaned object does not count.
    for key in [f"CONV#{cid}|{i['sk']['S']}" for i in items[-2:]]:
        heads = ArchiveHeads(stack.client("dynamodb"), stack.table("MessagesTable"))
        heads._client.delete_item(
            TableName=stack.table("MessagesTable"),
            Key={"pk": {"S": f"ARCHIVE#{network}"}, "sk": {"S": f"R#{key}"}},
        )
    crashing = stores(stack)
    real_commit = crashing.heads.commit
    calls = {"n": 0}

    def crash_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the function timed out")
        real_commit(*args, **kwargs)

    monkeypatch.setattr(crashing.heads, "commit", crash_once)
    first = archiver.archive(crashing, replay[-2:], lambda: 2)
    assert set(first.failed) == {replay[-2].sequence, replay[-1].sequence}
    second = archiver.archive(crashing, replay[-2:], lambda: 3)
    assert (second.segments, second.failed) == (1, [])
    ids = [r["id"] for r in committed_records(stack, network)]
    # The two whose markers were lost are archived again (a marker is the proof of
    # archiving; losing one is what this simulates), and nothing else repeats.
    assert len(ids) == len(before) + 2
    top = head(stack, network)
    assert top is not None
    assert check_chain(segments(stack, network), (top.segment, top.manifest_hash)) == []


def test_a_sent_file_is_copied_into_the_archive_under_lock_with_its_sha256(stack, home):
    network = new_network(stack, "Archived files")
    alice, _bob, cid = room(stack, network, home)
    enable(stack, network)
    source = home / "report.pdf"
    source.write_bytes(secrets.token_bytes(300_000))
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        messenger.send_file(cid, source)
    (envelope,) = wait_archived(stack, network, "envelope", 1)
    (entry,) = envelope["files"]
    s3 = stack.client("s3")
    attachments = stack.endpoints["resources"]["buckets"]["AttachmentsBucket"]
    original = s3.get_object(Bucket=attachments, Key=f"f/{entry['object_id']}")["Body"].read()
    assert entry["key"] == f"networks/{network}/files/{entry['object_id']}"
    assert entry["size"] == len(original)
    copy = s3.get_object(Bucket=bucket(stack), Key=entry["key"])
    body = copy["Body"].read()
    # The encrypted stream, byte for byte: nothing was decrypted on the way.
    assert body == original
    assert entry["sha256"] == hashlib.sha256(body).hexdigest()
    assert copy.get("ObjectLockMode")
    assert copy.get("ObjectLockRetainUntilDate")
    assert copy["ServerSideEncryption"] == "aws:kms"
    # The entry is inside the record, so the chain commits its digest.
    top = head(stack, network)
    assert top is not None
    assert check_chain(segments(stack, network), (top.segment, top.manifest_hash)) == []


def test_a_file_gone_before_archiving_is_recorded_missing_not_skipped(stack, home):
    network = new_network(stack, "Gone files")
    alice, _bob, cid = room(stack, network, home)
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        source = home / "gone.bin"
        source.write_bytes(b"x" * 5000)
        messenger.send_file(cid, source)  # retention still off: not archived
    items = stack.client("dynamodb").query(
        TableName=stack.table("MessagesTable"),
        KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{cid}"}, ":m": {"S": "MSG#"}},
    )["Items"]
    (object_id,) = items[0]["files"]["SS"]
    s3 = stack.client("s3")
    attachments = stack.endpoints["resources"]["buckets"]["AttachmentsBucket"]
    for version in s3.list_object_versions(Bucket=attachments, Prefix=f"f/{object_id}")["Versions"]:
        s3.delete_object(Bucket=attachments, Key=version["Key"], VersionId=version["VersionId"])
    enable(stack, network)
    done = archiver.archive(stores(stack), as_stream_items(items), lambda: 5)
    assert done.failed == []
    (envelope,) = [r for r in committed_records(stack, network) if r["kind"] == "envelope"]
    assert envelope["files"] == [
        {"object_id": object_id, "missing": "gone from the attachments bucket"}
    ]


def test_uploads_over_the_archive_copy_limit_are_refused_while_retention_is_on(stack, home):
    from sotto.client.errors import FrameError

    network = new_network(stack, "Big files")
    alice, _bob, cid = room(stack, network, home)
    over = 5 * 1024**3 + 1
    with messenger_for(stack, home, alice.devices[0]) as messenger:
        started = messenger._call("file_upload_start", conversation_id=cid, size=over)
        messenger._call("file_upload_abort", object_id=started["object_id"])
        enable(stack, network)
        with pytest.raises(FrameError) as refused:
            messenger._call("file_upload_start", conversation_id=cid, size=over)
    assert refused.value.code == "too_large"
    assert "records archive" in str(refused.value)
