"""Archive lag and the archiver's cost per million messages (issue 10 items 4 and 9).

A local stack (in process, default rate limits) with retention on for its
network; a room is written through the storage layer and MESSAGES envelopes
are appended to it at RATE per second, as the send route stores them. The
archiver runs from moto's stream the way Lambda would. A watcher reads the
network's committed archive (head, then segments) every 100 ms and notes
when each message first appears there: lag = that moment - the message's
server time (an upper bound: it includes the watcher's period). Goal:
p99 < 60 s.

Cost per million messages, at us-east-1 list prices: Lambda requests and
arm64 GB-seconds at the function's memory (the measured handler time),
S3 PUTs (one per segment), DynamoDB on-demand writes (a marker per record,
a head per segment, and the conditional transaction doubles both) and KMS
(none per message: the archive bucket uses an S3 Bucket Key).
"""

from __future__ import annotations

import os
import secrets
import statistics
import threading
import time
from dataclasses import replace

from sotto import topology
from sotto.protocol.archive import parse_segment
from sotto.protocol.retention import RetentionSecrets
from sotto_server.dal import conversations as dal
from sotto_server.dal.archive import ArchiveHeads
from sotto_server.dal.retention import Retention, RetentionGeneration, RetentionStore
from sotto_server.logic.conversations import MAX_CONVERSATIONS_PER_USER, roster_entry

from ._report import table
from ._stack import BenchStack, now_ms
from .bench_messaging import _creation

MESSAGES = int(os.environ.get("SOTTO_BENCH_ARCHIVE_MESSAGES", "300"))
RATE = float(os.environ.get("SOTTO_BENCH_ARCHIVE_RATE", "20"))
GOAL_P99_S = 60.0
# us-east-1 list prices.
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_ARM_GB_S = 0.0000133334
S3_PUT = 0.005 / 1000
DYNAMODB_WRITE = 1.25 / 1e6


def _enable(stack: BenchStack) -> None:
    now = now_ms()
    made = RetentionSecrets.create(stack.network_id, "rtn-benchmark0001", now=now)
    identity = made.identity(stack.network_id)
    key = stack.endpoints.resources["keys"]["ArchiveKey"]
    kms = stack.client("kms")
    wrap = kms.encrypt(KeyId=key, Plaintext=made.device_key_bytes())["CiphertextBlob"]
    officer = kms.encrypt(KeyId=key, Plaintext=made.officer_key_bytes())["CiphertextBlob"]
    store = RetentionStore(
        stack.client("dynamodb"), stack.endpoints.resources["tables"]["DirectoryTable"]
    )
    store.create(
        Retention(
            network_id=stack.network_id,
            status="enabled",
            years=7,
            officer_identity=identity.officer.serialize(),
            wrapped_officer_key=officer,
            current=RetentionGeneration(
                1,
                identity.device_id,
                identity.certificate.serialize(),
                identity.prekey.serialize(),
                wrap,
                now,
            ),
            updated_at=now,
        )
    )


def _room(stack: BenchStack) -> tuple[dal.Conversation, str]:
    sender, reader = stack.enroll(label="sender"), stack.enroll(label="reader")
    room = dal.Conversation(
        conversation_id=f"room-{secrets.token_hex(12)}",
        kind="room",
        network_id=stack.network_id,
        created_by=sender.user_id,
        created_at=now_ms(),
        last_seq=0,
        roster_version=1,
        member_count=2,
    )
    members = [dal.Member(sender.user_id, "moderator", 0), dal.Member(reader.user_id, "member", 0)]
    devices = {roster_entry(d.user_id, d.device_id) for d in (sender, reader)}
    log = _creation(room.conversation_id, sender, reader)
    stack.conversations.create(
        room, members, devices, max_per_user=MAX_CONVERSATIONS_PER_USER, log=log
    )
    return room, sender.device_id


class _Watcher:
    """Notes when each envelope of the room first shows in the committed archive."""

    def __init__(self, stack: BenchStack, network: str, cid: str) -> None:
        self._s3 = stack.client("s3")
        self._bucket = stack.endpoints.resources["buckets"]["ArchiveBucket"]
        self._heads = ArchiveHeads(
            stack.client("dynamodb"), stack.endpoints.resources["tables"]["MessagesTable"]
        )
        self._network, self._cid = network, cid
        self.seen: dict[int, int] = {}
        self._read: set[str] = set()
        self.segments = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            head = self._heads.head(self._network)
            if head is not None and head.object_key not in self._read:
                self._walk(head.object_key, head.segment)
            self.stop.wait(0.1)

    def _walk(self, key: str, number: int) -> None:
        at = now_ms()
        prefix = f"networks/{self._network}/segments/"
        listing = self._s3.list_objects_v2(Bucket=self._bucket, Prefix=prefix)
        by_hash = {}
        for entry in listing.get("Contents", []):
            if entry["Key"] in self._read and entry["Key"] != key:
                continue
            body = self._s3.get_object(Bucket=self._bucket, Key=entry["Key"])["Body"].read()
            by_hash[entry["Key"]] = parse_segment(body, entry["Key"])
        for object_key, segment in by_hash.items():
            if object_key in self._read or segment.number > number:
                continue
            self._read.add(object_key)
            self.segments += 1
            for record in segment.records:
                if record["kind"] == "envelope" and record["conversation_id"] == self._cid:
                    self.seen.setdefault(int(record["seq"]), at)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    with BenchStack(rate_limit_scale=1) as stack:
        _enable(stack)
        room, device_id = _room(stack)
        watcher = _Watcher(stack, stack.network_id, room.conversation_id)
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        sent: dict[int, int] = {}
        envelope = secrets.token_bytes(600)  # the archiver never opens an envelope
        started = time.perf_counter()
        for n in range(MESSAGES):
            server_time = now_ms()
            stored = stack.conversations.append(
                room,
                dal.StoredMessage(
                    conversation_id=room.conversation_id,
                    seq=0,
                    envelope=envelope,
                    sender_device=device_id,
                    message_id=secrets.token_hex(16),
                    server_time=server_time,
                    expires_at=server_time + 60_000 if n % 3 == 1 else 0,
                    burn_s=5 if n % 3 == 2 else 0,
                ),
            )
            room = replace(room, last_seq=stored.seq)
            sent[stored.seq] = server_time
            delay = started + (n + 1) / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + 120
        while len(watcher.seen) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        watcher.stop.set()
        thread.join(5)
        stack.wait_idle()
        lags = [(watcher.seen[seq] - at) / 1000 for seq, at in sent.items() if seq in watcher.seen]
        calls = stack.functions.calls["archiver"]
        seconds = stack.functions.seconds["archiver"]
    missing = len(sent) - len(lags)
    p50, p99 = _percentile(lags, 0.5), _percentile(lags, 0.99)
    table(
        f"archive lag, {MESSAGES} messages at {RATE:g}/s (a third expiring, a third burn-on-read)",
        ["p50 s", "p99 s", "max s", "mean s", "not archived", f"goal p99 < {GOAL_P99_S:g} s"],
        [
            [
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{max(lags):.2f}",
                f"{statistics.fmean(lags):.2f}",
                missing,
                "met" if p99 < GOAL_P99_S and not missing else "NOT MET",
            ]
        ],
    )
    memory_gb = topology.function("archiver").memory_mb / 1024
    per_message = {
        "Lambda requests": calls * LAMBDA_REQUEST / MESSAGES,
        "Lambda GB-s (arm64)": seconds * memory_gb * LAMBDA_ARM_GB_S / MESSAGES,
        "S3 PUTs": watcher.segments * S3_PUT / MESSAGES,
        # A transactional write costs two units per item: a marker each, a head per segment.
        "DynamoDB writes": 2 * (MESSAGES + watcher.segments) * DYNAMODB_WRITE / MESSAGES,
        "KMS (S3 Bucket Key)": 0.0,
    }
    rows = [[name, f"${cost * 1e6:,.2f}"] for name, cost in per_message.items()]
    rows.append(["total", f"${sum(per_message.values()) * 1e6:,.2f}"])
    table(
        f"archiver cost per million messages ({calls} invocations, {watcher.segments} segments, "
        f"{seconds:.1f} s handler time, locally)",
        ["what", "per 1M messages"],
        rows,
    )


if __name__ == "__main__":
    main()
