"""The archiver: new ciphertext of retaining networks into hash-chained segments.

Input is the messages stream's new items in shard order (envelopes, key
distributions to retention devices, membership operations). Nothing is
decrypted: a record is the stored item as it is, plus the sender device's
certificate and its user's identity key from the directory, so an export
can verify every signature offline. Items of networks without retention on
are passed over. Per network and batch, one segment: read the chain head,
drop records already archived (a replayed batch), write the segment object,
then commit head and markers in one conditional transaction; a lost race
reads again and retries. Before a segment is built, every file its
envelopes name is copied into the archive inside S3 (CopyObject: the
encrypted stream, re-encrypted at rest under the archive key and locked),
and the envelope record gains the copy's key, size and SHA-256, so the file
is under the chain like the message; a file already gone is recorded as
missing, so ``verify`` names it. What could not be archived is returned, so the
handler reports it as a partial batch failure and the stream retries it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sotto.protocol.archive import (
    MAX_ARCHIVED_FILE_BYTES,
    build_segment,
    file_key,
    segment_key,
)
from sotto.protocol.errors import ProtocolError
from sotto.protocol.membership import MembershipOperation

from ..dal.archive import ArchiveHead, ArchiveHeads, ArchiveObjects, Conflict
from ..dal.conversations import ConversationsStore
from ..dal.directory import DirectoryStore
from ..dal.files import object_key
from ..dal.retention import RetentionStore
from .retention import retention_for

__all__ = ["Archived", "ArchiverStores", "StreamItem", "archive", "stream_item"]

COMMIT_ATTEMPTS = 5
# Backfilled operations per conversation (rooms change membership rarely; a longer
# log's later operations come from the stream as they are written).
MAX_LOG_BACKFILL = 500
# Records per segment: a segment's markers and head are one transaction (at most 100).
SEGMENT_RECORDS = 90


@dataclass(frozen=True)
class StreamItem:
    """One stream record: its sequence number, when it was written, its key and new image."""

    sequence: str
    created_ms: int
    pk: str
    sk: str
    image: Mapping[str, Any]


@dataclass
class ArchiverStores:
    directory: DirectoryStore
    conversations: ConversationsStore
    retention: RetentionStore
    heads: ArchiveHeads
    objects: ArchiveObjects
    # The attachments bucket, whose file objects envelopes name.
    files_bucket: str = ""
    _networks: dict[str, str | None] = field(default_factory=dict)
    _copied: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _senders: dict[str, dict[str, str] | None] = field(default_factory=dict)


def stream_item(record: Mapping[str, Any]) -> StreamItem:
    """From Lambda's DynamoDB stream record (binary values arrive base64-encoded)."""
    ddb = record["dynamodb"]
    return StreamItem(
        sequence=str(ddb["SequenceNumber"]),
        created_ms=int(float(ddb.get("ApproximateCreationDateTime", 0)) * 1000),
        pk=str(ddb["Keys"]["pk"]["S"]),
        sk=str(ddb["Keys"]["sk"]["S"]),
        image=ddb.get("NewImage") or {},
    )


def _s(image: Mapping[str, Any], name: str) -> str:
    return str(image[name]["S"])


def _n(image: Mapping[str, Any], name: str) -> int:
    value = image.get(name)
    return int(value["N"]) if value else 0


def _b(image: Mapping[str, Any], name: str) -> str:
    """A binary attribute as the record keeps it: base64 (the event's own encoding)."""
    value = image[name]["B"]
    return value if isinstance(value, str) else base64.b64encode(value).decode()


def _conversation_of(item: StreamItem) -> str:
    if item.pk.startswith("CONV#"):
        return item.pk.removeprefix("CONV#")
    return _s(item.image, "conversation_id")


def _network(stores: ArchiverStores, cid: str) -> str | None:
    if cid not in stores._networks:
        conversation = stores.conversations.get(cid)
        stores._networks[cid] = None if conversation is None else conversation.network_id
    return stores._networks[cid]


def _sender(stores: ArchiverStores, device_id: str) -> dict[str, str] | None:
    if device_id not in stores._senders:
        device = stores.directory.get_device(device_id)
        user = None if device is None else stores.directory.get_user(device.user_id)
        stores._senders[device_id] = (
            None
            if device is None or user is None
            else {
                "device_id": device_id,
                "user_id": device.user_id,
                "certificate": base64.b64encode(device.certificate).decode(),
                "identity_key": base64.b64encode(user.identity_key).decode(),
            }
        )
    return stores._senders[device_id]


def _record(stores: ArchiverStores, item: StreamItem, cid: str) -> dict[str, Any]:
    image = item.image
    base = {"id": f"{item.pk}|{item.sk}", "conversation_id": cid}
    if item.sk.startswith("MSG#"):
        sender = _sender(stores, _s(image, "sender_device"))
        return {
            **base,
            "kind": "envelope",
            "seq": int(item.sk.removeprefix("MSG#")),
            "server_time": _n(image, "server_time"),
            "message_id": _s(image, "message_id"),
            "expires_at": _n(image, "expires_at_ms"),
            "burn_s": _n(image, "burn_s"),
            "envelope": _b(image, "envelope"),
            "sender": sender,
            # Replaced by the archived copies' entries just before the segment is built.
            "_files": sorted(str(f) for f in image.get("files", {}).get("SS", [])),
        }
    if item.sk.startswith("LOG#"):
        return _membership(stores, cid, int(item.sk.removeprefix("LOG#")), _b(image, "op"), item)
    return {
        **base,
        "kind": "distribution",
        "seq": None,
        "server_time": _n(image, "server_time"),
        "recipient_device": item.pk.removeprefix("MAIL#"),
        "data": _b(image, "data"),
        "sender": _sender(stores, _s(image, "from_device")),
    }


@dataclass
class Archived:
    """What a batch did: records and segments committed, sequence numbers not archived."""

    records: int = 0
    segments: int = 0
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _membership(
    stores: ArchiverStores, cid: str, seq: int, op: str, item: StreamItem | None
) -> dict[str, Any]:
    """A membership operation, with its signer's identity key (what verifying it needs)."""
    signer: dict[str, str] | None = None
    try:
        signer_device = MembershipOperation.parse(base64.b64decode(op)).signer.device_id
        signer = _sender(stores, signer_device)
    except ProtocolError:
        signer = None  # stored unverifiable: the export says so
    return {
        "id": f"CONV#{cid}|LOG#{seq:08d}",
        "conversation_id": cid,
        "kind": "membership",
        "seq": seq,
        "server_time": item.created_ms if item is not None else 0,
        "op": op,
        "sender": signer,
    }


def _log_backfill(stores: ArchiverStores, cid: str) -> list[dict[str, Any]]:
    """The whole membership log of a conversation: an export verifies it from creation,
    also for conversations created before retention was on (repeats are dropped)."""
    return [
        _membership(stores, cid, seq, base64.b64encode(op).decode(), None)
        for seq, op in stores.conversations.log_operations(cid, -1, MAX_LOG_BACKFILL)
    ]


def archive(
    stores: ArchiverStores, items: Sequence[StreamItem], now: Callable[[], int]
) -> Archived:
    """Archive ``items`` (a replay adds nothing); ``failed`` is to be retried."""
    by_network: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    years: dict[str, int] = {}
    backfilled: set[str] = set()
    for item in items:
        cid = _conversation_of(item)
        network = _network(stores, cid)
        if network is None:
            continue
        if network not in years:
            retention = retention_for(stores.retention, network)
            years[network] = 0 if retention is None else retention.years
        if years[network] == 0:
            continue  # retention off: nothing of this network is archived
        pending = by_network.setdefault(network, [])
        if cid not in backfilled:
            backfilled.add(cid)
            pending.extend((item.sequence, record) for record in _log_backfill(stores, cid))
        pending.append((item.sequence, _record(stores, item, cid)))
    result = Archived()
    for network, pending in by_network.items():
        try:
            result.segments += _commit_segment(stores, network, pending, years[network], now)
            result.records += len(pending)
        except Exception as exc:  # one network's failure must not hold back the others
            result.failed.extend(sequence for sequence, _ in pending)
            result.problems.append(f"{network}: {type(exc).__name__}: {str(exc)[:300]}")
    return result


def _commit_segment(
    stores: ArchiverStores,
    network: str,
    pending: list[tuple[str, dict[str, Any]]],
    years: int,
    now: Callable[[], int],
) -> int:
    """Commit ``pending`` in segments of at most SEGMENT_RECORDS; how many were written."""
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for _sequence, record in pending:  # a backfilled operation may also be in the batch
        if record["id"] not in seen:
            seen.add(record["id"])
            unique.append(record)
    written = 0
    for start in range(0, len(unique), SEGMENT_RECORDS):
        written += _commit_one(stores, network, unique[start : start + SEGMENT_RECORDS], years, now)
    return written


def _commit_one(
    stores: ArchiverStores,
    network: str,
    pending: list[dict[str, Any]],
    years: int,
    now: Callable[[], int],
) -> int:
    """Commit one segment of ``pending`` (0 if all were archived already); 1 otherwise."""
    for _attempt in range(COMMIT_ATTEMPTS):
        ids = [record["id"] for record in pending]
        done = stores.heads.archived(network, ids)
        records = [
            _with_files(stores, network, record) for record in pending if record["id"] not in done
        ]
        if not records:
            return 0
        head = stores.heads.head(network)
        number = 1 if head is None else head.segment + 1
        previous = "0" * 64 if head is None else head.manifest_hash
        segment = build_segment(
            network, number, previous, records, created_at=now(), retention_years=years
        )
        object_key = segment_key(network, number, segment.hash)
        stores.objects.put(object_key, segment.body())
        try:
            stores.heads.commit(
                network,
                0 if head is None else head.segment,
                ArchiveHead(number, segment.hash, object_key),
                [record["id"] for record in records],
                now(),
            )
            return 1
        except Conflict:
            continue  # another invocation moved the head, or archived some: read again
    raise RuntimeError(f"archive head of {network} kept moving")


def _with_files(stores: ArchiverStores, network: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as archived: its ``_files`` copied into the archive and listed in ``files``."""
    if "_files" not in record:
        return record
    archived = {k: v for k, v in record.items() if k != "_files"}
    if record["_files"]:
        archived["files"] = [_copy(stores, network, oid) for oid in record["_files"]]
    return archived


def _copy(stores: ArchiverStores, network: str, object_id: str) -> dict[str, Any]:
    """One file object into the archive (once per invocation, whatever the retries)."""
    done = stores._copied.get((network, object_id))
    if done is not None:
        return done
    source, target = object_key(object_id), file_key(network, object_id)
    size = stores.objects.source_size(stores.files_bucket, source) if stores.files_bucket else None
    entry: dict[str, Any]
    if size is None:
        entry = {"object_id": object_id, "missing": "gone from the attachments bucket"}
    elif size > MAX_ARCHIVED_FILE_BYTES:
        entry = {"object_id": object_id, "size": size, "missing": "over the 5 GiB copy limit"}
    else:
        sha256 = stores.objects.copy_file(stores.files_bucket, source, target)
        entry = (
            {"object_id": object_id, "missing": "gone from the attachments bucket"}
            if sha256 is None
            else {"object_id": object_id, "key": target, "size": size, "sha256": sha256}
        )
    stores._copied[(network, object_id)] = entry
    return entry
