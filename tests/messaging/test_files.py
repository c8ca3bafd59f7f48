"""Files end to end over the local stack: encrypted upload to presigned S3 parts, resume,
verified download on every device, refusals, and what S3 ends up holding."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sotto.client import files
from sotto.client.errors import FrameError, MessagingError
from sotto.client.events import Event, MessageEvent
from sotto.client.messenger import Messenger
from sotto.local.aws import presigned_refusal
from tests.support.people import messenger_for, seed_person
from tests.support.stack import Socket, Stack, admin, seed_device

from .conftest import Team, wait_for

MIB = 1024 * 1024
SAMPLE = b"PLAINTEXT-SAMPLE-7f3a9c"


def _make_file(path: Path, size: int) -> str:
    """A file of ``size`` bytes with a recognisable plaintext sample every MiB; its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            block = (SAMPLE + os.urandom(MIB - len(SAMPLE)))[: size - written]
            out.write(block)
            digest.update(block)
            written += len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_events(events: list[Event], cid: str) -> list[MessageEvent]:
    return [
        e
        for e in events
        if isinstance(e, MessageEvent) and e.conversation_id == cid and e.attachment is not None
    ]


def _receive_files(
    device: Messenger, cids: list[str], timeout: float = 30.0
) -> dict[str, MessageEvent]:
    """The newest file message of each conversation, syncing until every one arrived."""
    deadline = time.monotonic() + timeout
    found: dict[str, MessageEvent] = {}
    while set(found) != set(cids) and time.monotonic() < deadline:
        events = device.sync()
        for cid in cids:
            for event in _file_events(events, cid):
                found[cid] = event
    assert set(found) == set(cids), "the file message did not arrive"
    return found


def _receive_file(device: Messenger, cid: str) -> MessageEvent:
    return _receive_files(device, [cid])[cid]


def _bucket(stack: Stack) -> tuple[Any, str]:
    s3 = stack.client("s3")
    name = next(b["Name"] for b in s3.list_buckets()["Buckets"] if "attachments" in b["Name"])
    return s3, name


def _objects(stack: Stack) -> list[tuple[str, bytes]]:
    s3, bucket = _bucket(stack)
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [(o["Key"], s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listed]


def test_a_50_mb_file_reaches_two_devices_of_a_user_and_a_room_byte_identical(
    team: Team, stack: Stack, tmp_path: Path
) -> None:
    a1, a2 = team.alice.devices
    b1, b2 = team.bob.devices
    (c1,) = team.carol.devices
    source = tmp_path / "Quarterly report — secret.bin"
    expected = _make_file(source, 50 * 1000 * 1000)
    direct = a1.resolve("bob")
    room = a1.create_room("files-room", [team.bob.user_id, team.carol.user_id])

    a1.send_file("bob", source)
    a1.send_file(room, source)

    received = [
        (device, cid, event)
        for device, cids in [
            (b1, [direct, room]),
            (b2, [direct, room]),
            (a2, [direct]),
            (c1, [room]),
        ]
        for cid, event in _receive_files(device, cids).items()
    ]
    assert len(received) == 6
    for device, cid, event in received:
        assert event.attachment is not None
        assert event.attachment["name"] == source.name
        assert "key" not in event.attachment
        assert "digest" not in event.attachment
        out = tmp_path / f"{device.info.device_id}-{cid}"
        out.mkdir()
        saved = device.download(event.message_id, out)
        assert saved.name == source.name
        assert _sha256(saved) == expected
    # S3 holds two random keys, neither naming the file nor holding its plaintext.
    stored = _objects(stack)
    assert len(stored) >= 2
    for key, body in stored:
        assert key.startswith("f/")
        assert len(key) == 34
        assert "report" not in key
        assert team.alice.user_id not in key
        assert SAMPLE not in body
        assert source.name.encode() not in body
        assert b"Quarterly" not in body


def test_an_interrupted_upload_resumes_from_the_last_finished_part(
    team: Team, tmp_path: Path
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    source = tmp_path / "resume.bin"
    expected = _make_file(source, 30 * MIB)  # four parts of 8 MiB
    first_run: list[int] = []

    def crash_after_two(number: int) -> None:
        first_run.append(number)
        if len(first_run) == 2:
            raise KeyboardInterrupt  # as a crash or Ctrl-C would stop the process

    with pytest.raises(KeyboardInterrupt):
        a1.send_file("bob", source, on_part=crash_after_two)
    second_run: list[int] = []
    a1.send_file("bob", source, on_part=second_run.append)

    assert first_run == [1, 2]
    assert second_run == [3, 4]  # only the parts S3 did not hold went again
    event = _receive_file(b1, a1.resolve("bob"))
    saved = b1.download(event.message_id, tmp_path)
    assert _sha256(saved) == expected


def test_a_tampered_or_swapped_object_is_refused_and_never_left_in_the_directory(
    team: Team, stack: Stack, tmp_path: Path
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = a1.resolve("bob")
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    _make_file(first, 100_000)
    _make_file(second, 100_000)
    a1.send_file("bob", first)
    event_one = _receive_file(b1, cid)
    a1.send_file("bob", second)
    event_two = _receive_file(b1, cid)
    assert event_one.attachment is not None
    assert event_two.attachment is not None
    s3, bucket = _bucket(stack)
    key_one = f"f/{event_one.attachment['object_id']}"
    key_two = f"f/{event_two.attachment['object_id']}"
    original = s3.get_object(Bucket=bucket, Key=key_one)["Body"].read()
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    # One flipped byte in the middle of the first object (a new version).
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 1
    s3.put_object(Bucket=bucket, Key=key_one, Body=bytes(tampered))
    with pytest.raises(MessagingError, match="does not verify"):
        b1.download(event_one.message_id, downloads)
    # The second object replaced by the first one's (valid) stream.
    s3.put_object(Bucket=bucket, Key=key_two, Body=original)
    with pytest.raises(MessagingError, match="does not verify"):
        b1.download(event_two.message_id, downloads)

    assert list(downloads.iterdir()) == []
    assert list((b1.profile.path / "downloads").iterdir()) == []


def test_downloads_never_overwrite_and_names_are_sanitised(team: Team, tmp_path: Path) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    source = tmp_path / "notes.txt"
    _make_file(source, 10_000)
    a1.send_file("bob", source)
    event = _receive_file(b1, a1.resolve("bob"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"mine")
    saved = b1.download(event.message_id, out)
    assert saved.name == "notes (2).txt"
    assert (out / "notes.txt").read_bytes() == b"mine"
    with pytest.raises(MessagingError, match="not overwritten"):
        b1.download(event.message_id, out, name="notes.txt")
    assert files.sanitise_name("../../etc/passwd") == "passwd"
    assert files.sanitise_name(".bashrc") == "bashrc"
    assert files.sanitise_name("a\x1b[31mred\u202e.txt") == "a[31mred.txt"
    assert files.sanitise_name("..") == "file"


def test_non_members_other_networks_and_expired_messages_get_no_download_url(
    team: Team, stack: Stack, tmp_path: Path
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    (c1,) = team.carol.devices
    cid = a1.resolve("bob")
    source = tmp_path / "short-lived.txt"
    _make_file(source, 5_000)
    a1.send_file("bob", source, expires_s=3)
    event = _receive_file(b1, cid)
    assert event.attachment is not None
    fields = {
        "conversation_id": cid,
        "message_id": event.message_id,
        "object_id": event.attachment["object_id"],
    }
    assert b1._call("file_download", **fields)["url"]  # bob may, while it lives
    with pytest.raises(FrameError) as refused:
        c1._call("file_download", **fields)  # carol is not in alice and bob's conversation
    assert refused.value.code == "not_found"
    other = admin(stack, "POST", "/networks", {"name": "Other files"})["network_id"]
    with Socket(stack, seed_device(stack, network_id=other)) as socket:
        assert socket.request("file_download", **fields)["code"] == "not_found"
    time.sleep(3.5)
    with pytest.raises(FrameError) as gone:
        b1._call("file_download", **fields)
    assert gone.value.code == "gone"


def test_a_burnt_message_takes_its_file_with_it(team: Team, tmp_path: Path) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = a1.resolve("bob")
    source = tmp_path / "burn.txt"
    _make_file(source, 5_000)
    a1.send_file("bob", source, burn_s=1)
    events = b1.sync(read=True)  # read: the server's burn clock starts
    (event,) = _file_events(events, cid)
    assert event.attachment is not None
    time.sleep(1.5)
    with pytest.raises(FrameError) as gone:
        b1._call(
            "file_download",
            conversation_id=cid,
            message_id=event.message_id,
            object_id=event.attachment["object_id"],
        )
    assert gone.value.code == "gone"


def test_a_removed_file_record_deletes_every_version_of_its_object(
    team: Team, stack: Stack, tmp_path: Path
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    source = tmp_path / "expiring.txt"
    _make_file(source, 5_000)
    a1.send_file("bob", source)
    event = _receive_file(b1, a1.resolve("bob"))
    assert event.attachment is not None
    object_id = event.attachment["object_id"]
    s3, bucket = _bucket(stack)
    key = f"f/{object_id}"
    assert s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions")

    # What DynamoDB's TTL does at the message's end: the record goes, the stream says so.
    dynamodb = stack.client("dynamodb")
    dynamodb.delete_item(
        TableName=stack.table("MessagesTable"),
        Key={"pk": {"S": f"FILE#{object_id}"}, "sk": {"S": "FILE"}},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
        if not listed.get("Versions") and not listed.get("DeleteMarkers"):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the object outlived its record")


def test_uploads_over_the_limit_unfinished_or_not_the_senders_are_refused(
    team: Team, stack: Stack, tmp_path: Path
) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = a1.resolve("bob")
    with pytest.raises(FrameError) as big:
        a1._call("file_upload_start", conversation_id=cid, size=6 * 1024**3)
    assert big.value.code == "too_large"
    assert "a file of 6 GiB is over your network's limit of 5 GiB" in str(big.value)
    started = a1._call("file_upload_start", conversation_id=cid, size=100)
    with pytest.raises(FrameError) as incomplete:
        a1._call(
            "file_upload_complete",
            object_id=started["object_id"],
            part_count=1,
            etags_sha256="0" * 64,
        )
    assert incomplete.value.code == "incomplete_upload"
    # bob cannot send a message naming alice's upload, nor abort it.
    with pytest.raises(FrameError) as foreign:
        b1._call("file_upload_abort", object_id=started["object_id"])
    assert foreign.value.code == "not_found"
    assert a1._call("file_upload_abort", object_id=started["object_id"])["action"] == (
        "file_upload_aborted"
    )


def test_location_messages_render_coordinates_and_a_map_link(team: Team) -> None:
    a1 = team.alice.devices[0]
    b1 = team.bob.devices[0]
    cid = a1.resolve("bob")
    lat, lon = files.parse_coordinates("51.5007,-0.1246")
    a1.send_location("bob", lat, lon, label="Big Ben\x1b[2J")
    events = wait_for(b1, 1, cid)
    (event,) = [e for e in events if isinstance(e, MessageEvent) and e.location is not None]
    assert event.location is not None
    assert event.location["latitude"] == pytest.approx(51.5007)
    assert "openstreetmap.org/?mlat=51.5007000&mlon=-0.1246000" in event.location["map"]
    assert "\x1b" not in event.text
    assert "51.500700,-0.124600" in event.text


def test_the_local_stack_refuses_expired_presigned_urls(stack: Stack) -> None:
    assert presigned_refusal("X-Amz-Date=20260101T000000Z&X-Amz-Expires=60", 1_900_000_000) == (
        "Request has expired"
    )
    assert presigned_refusal("uploadId=x&partNumber=1", 0) is None
    s3, bucket = _bucket(stack)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "f/expiry-check"}, ExpiresIn=1
    )
    time.sleep(2.1)
    answer = files._HTTP.request("PUT", url, body=b"late")
    assert answer.status == 403
    assert b"Request has expired" in answer.data


def test_a_completion_repeated_after_s3_completed_still_completes(team: Team, stack: Stack) -> None:
    a1 = team.alice.devices[0]
    cid = a1.resolve("bob")
    body = b"x" * 100
    started = a1._call("file_upload_start", conversation_id=cid, size=len(body))
    page = a1._call("file_upload_parts", object_id=started["object_id"], count=1)
    answer = files._HTTP.request("PUT", page["urls"][0]["url"], body=body)
    etag = answer.headers["ETag"]
    # S3 completed, then the function stopped before recording it (a lost answer).
    s3, bucket = _bucket(stack)
    key = f"f/{started['object_id']}"
    upload_id = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)["Uploads"][0]["UploadId"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    done = a1._call(
        "file_upload_complete",
        object_id=started["object_id"],
        part_count=1,
        etags_sha256=files.etags_digest([etag]),
    )
    assert done["action"] == "file_upload_completed"


def test_the_networks_policy_sets_the_file_limits_and_says_them_in_words(
    stack: Stack, tmp_path: Path
) -> None:
    network = str(admin(stack, "POST", "/networks", {"name": "File policy"})["network_id"])
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    admin(stack, "PUT", f"/networks/{network}/policy", {"max_file_bytes": 10 * 1024**2})
    with messenger_for(stack, tmp_path, alice.devices[0]) as messenger:
        cid = messenger.send_text(bob.user_id, "a file follows").conversation_id
        with pytest.raises(FrameError) as big:
            messenger._call("file_upload_start", conversation_id=cid, size=20 * 1024**2)
        assert big.value.code == "too_large"
        assert "a file of 20 MiB is over your network's limit of 10 MiB" in str(big.value)
        admin(stack, "PUT", f"/networks/{network}/policy", {"files_allowed": False})
        with pytest.raises(FrameError) as none:
            messenger._call("file_upload_start", conversation_id=cid, size=100)
        assert none.value.code == "policy_violation"
        assert "files are not allowed by your network's policy" in str(none.value)
