"""File routes: uploads through presigned multipart URLs, downloads of files messages name.

The server never sees a file's key, name or plaintext: a client encrypts the
stream (docs/protocol.md §8), uploads it part by part straight to S3 with
URLs this module signs, and sends the File content inside a signed envelope
whose ``send`` frame names the object id. From then on the object lives
exactly as long as that message; a download URL is signed only for a device
that can read the message, while it is live.

``file_limits`` is the one place that decides the size limit and whether
files and locations are allowed: the caller's effective policy
(``logic/policy.py``, the strictest of the network's and its groups'), with
refusals that name the limit in words.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from sotto.frames import paginate_lists
from sotto.frames.requests import (
    FileDownloadRequest,
    FilePolicyRequest,
    FileUploadAbortRequest,
    FileUploadCompleteRequest,
    FileUploadPartsRequest,
    FileUploadStartRequest,
)
from sotto.protocol.archive import MAX_ARCHIVED_FILE_BYTES

from ..dal.conversations import MAX_MESSAGE_LIFETIME_MS, StoredMessage
from ..dal.files import FileRecord, FilesStore
from ..dal.objects import Part
from .conversations import Stores, limit, roster_entry
from .errors import ErrorCode, Refused
from .outcome import Outcome
from .policy import effective_policy
from .principal import Principal
from .retention import retention_for

if TYPE_CHECKING:
    from sotto.frames.answers_files import (
        FileDownloadAnswer,
        FilePolicyAnswer,
        FileUploadAbortedAnswer,
        FileUploadCompletedAnswer,
        FileUploadPartsHeader,
        FileUploadStartedAnswer,
        HeldPart,
        PartUrl,
    )

__all__ = [
    "DOWNLOAD_URL_S",
    "MIN_PART_SIZE",
    "PART_URL_S",
    "UPLOAD_WINDOW_S",
    "FileLimits",
    "FileStores",
    "Objects",
    "abort",
    "complete",
    "download",
    "file_limits",
    "live",
    "part_size_for",
    "parts",
    "policy",
    "start",
]

GIB = 1024**3
MIB = 1024**2
# S3's floor for every part but the last; 8 MiB keeps a 5 GiB file at 640 parts.
MIN_PART_SIZE = 8 * MIB
# One ListParts page (1000) holds every part, so resuming is one request.
MAX_PARTS = 1000
# URLs are valid minutes, not days: a leaked one is soon worthless.
PART_URL_S = 15 * 60
DOWNLOAD_URL_S = 5 * 60
# An upload has a day to be completed and sent; then it is aborted and forgotten.
UPLOAD_WINDOW_S = 24 * 3600


@dataclass(frozen=True)
class FileLimits:
    """What a network allows: files and their size (plaintext bytes), and locations."""

    files_allowed: bool = True
    max_file_bytes: int = 5 * GIB
    location_allowed: bool = True
    whose: str = "your network's"  # who set the size limit, in words
    files_whose: str = "your network's"

    @property
    def max_object_bytes(self) -> int:
        # The stored stream: the plaintext plus a 40-byte header and 24 bytes per
        # chunk at the smallest chunk size (docs/protocol.md §8).
        return self.max_file_bytes + 40 + (self.max_file_bytes // 4096 + 1) * 24


def file_limits(stores: Stores, caller: Principal) -> FileLimits:
    """The caller's effective file and location policy (``logic/policy.py``): the one
    decision point for uploads and ``file_policy``."""
    groups = caller.user.groups if caller.user is not None else None
    policy = effective_policy(stores.directory, caller.network_id, caller.user_id, groups=groups)
    return FileLimits(
        files_allowed=bool(policy["files_allowed"]),
        max_file_bytes=int(policy["max_file_bytes"]),
        location_allowed=bool(policy["location_allowed"]),
        whose=policy.whose("max_file_bytes"),
        files_whose=policy.whose("files_allowed"),
    )


def format_size(size: int) -> str:
    """``5368709120`` -> ``5 GiB``; a limit in words, never raw bytes."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


class Objects(Protocol):
    """The attachments bucket (``dal/objects.py``), as the logic needs it."""

    def start_upload(self, key: str) -> str: ...
    def part_url(self, key: str, upload_id: str, number: int, expires_s: int) -> str: ...
    def download_url(self, key: str, expires_s: int) -> str: ...
    def parts(self, key: str, upload_id: str) -> list[Part] | None: ...
    def complete(self, key: str, upload_id: str, parts: list[Part]) -> None: ...
    def abort(self, key: str, upload_id: str) -> None: ...
    def exists(self, key: str) -> bool: ...


@dataclass(frozen=True)
class FileStores:
    stores: Stores
    files: FilesStore
    objects: Objects


def part_size_for(size: int) -> int:
    """The smallest whole MiB at or above MIN_PART_SIZE that fits ``size`` in MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)
    return max(MIN_PART_SIZE, -(-needed // MIB) * MIB)


def _member_device(stores: Stores, caller: Principal, cid: str, rid: str | None) -> None:
    """The caller's device must be in the conversation's roster, in the caller's network.

    Membership is read first, keyed by the caller: a conversation the caller
    is not in answers not_found whether it exists or not.
    """
    if stores.conversations.member(cid, caller.user_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)
    conversation = stores.conversations.get(cid)
    if (
        conversation is None
        or conversation.network_id != caller.network_id
        or roster_entry(caller.user_id, caller.device_id) not in stores.conversations.roster(cid)
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)


def _own_upload(fs: FileStores, caller: Principal, object_id: str, rid: str | None) -> FileRecord:
    record = fs.files.get(object_id)
    if record is None or record.uploader_device != caller.device_id:
        raise Refused(ErrorCode.NOT_FOUND, "no such upload", rid)
    return record


def policy(fs: FileStores, caller: Principal, request: FilePolicyRequest, now_ms: int) -> Outcome:
    limits = file_limits(fs.stores, caller)
    answer: FilePolicyAnswer = {
        "action": "file_policy",
        "id": request.id,
        "files_allowed": limits.files_allowed,
        "max_file_bytes": limits.max_file_bytes,
        "location_allowed": limits.location_allowed,
    }
    return Outcome(replies=[answer])


def start(
    fs: FileStores, caller: Principal, request: FileUploadStartRequest, now_ms: int
) -> Outcome:
    rid = request.id
    limits = file_limits(fs.stores, caller)
    if not limits.files_allowed:
        raise Refused(
            ErrorCode.POLICY, f"files are not allowed by {limits.files_whose} policy", rid
        )
    if request.size > limits.max_object_bytes:
        raise Refused(
            ErrorCode.TOO_LARGE,
            f"a file of {format_size(request.size)} is over {limits.whose} limit of "
            f"{format_size(limits.max_file_bytes)}",
            rid,
            details={"max_file_bytes": limits.max_file_bytes},
        )
    if (
        request.size > MAX_ARCHIVED_FILE_BYTES
        and fs.stores.retention is not None
        and retention_for(fs.stores.retention, caller.network_id) is not None
    ):
        # The archiver copies a file in one CopyObject, which S3 caps at 5 GiB.
        raise Refused(
            ErrorCode.TOO_LARGE,
            f"a file of {format_size(request.size)} is over the records archive's limit "
            f"of {format_size(MAX_ARCHIVED_FILE_BYTES)} (data retention is on)",
            rid,
            details={"max_file_bytes": MAX_ARCHIVED_FILE_BYTES},
        )
    _member_device(fs.stores, caller, request.conversation_id, rid)
    limit(fs.stores, "file_upload_device", caller.device_id, now_ms, rid)
    object_id = secrets.token_hex(16)
    record = FileRecord(
        object_id=object_id,
        conversation_id=request.conversation_id,
        network_id=caller.network_id,
        uploader_user=caller.user_id,
        uploader_device=caller.device_id,
        upload_id="",
        size=request.size,
        part_size=part_size_for(request.size),
        part_count=-(-request.size // part_size_for(request.size)),
        created_at=now_ms,
        state="uploading",
    )
    record = replace(record, upload_id=fs.objects.start_upload(record.key))
    fs.files.create(record, now_ms // 1000 + UPLOAD_WINDOW_S)
    answer: FileUploadStartedAnswer = {
        "action": "file_upload_started",
        "id": rid,
        "object_id": object_id,
        "part_size": record.part_size,
        "part_count": record.part_count,
        "expires_at": now_ms + UPLOAD_WINDOW_S * 1000,
    }
    return Outcome(replies=[answer])


def parts(
    fs: FileStores, caller: Principal, request: FileUploadPartsRequest, now_ms: int
) -> Outcome:
    """A page of UploadPart URLs (and, when resuming, the parts S3 already holds)."""
    rid = request.id
    limit(fs.stores, "file_url_device", caller.device_id, now_ms, rid)
    record = _own_upload(fs, caller, request.object_id, rid)
    if record.state != "uploading":
        raise Refused(ErrorCode.CONFLICT, "this upload is already complete", rid)
    last = min(record.part_count, request.first + request.count - 1)
    urls: list[PartUrl] = [
        {"part": n, "url": fs.objects.part_url(record.key, record.upload_id, n, PART_URL_S)}
        for n in range(request.first, last + 1)
    ]
    held: list[HeldPart] = []
    if request.held:
        found = fs.objects.parts(record.key, record.upload_id)
        if found is None:
            raise Refused(ErrorCode.NOT_FOUND, "no such upload", rid)
        held = [{"part": p.number, "etag": p.etag, "size": p.size} for p in found]
    header: FileUploadPartsHeader = {
        "action": "file_upload_parts",
        "id": rid,
        "object_id": record.object_id,
        "part_size": record.part_size,
        "part_count": record.part_count,
        "url_expires_at": now_ms + PART_URL_S * 1000,
    }
    return Outcome(replies=paginate_lists(header, {"urls": urls, "held": held}))


def _etags_digest(found: list[Part]) -> str:
    return hashlib.sha256("".join(f"{p.etag}\n" for p in found).encode()).hexdigest()


def complete(
    fs: FileStores, caller: Principal, request: FileUploadCompleteRequest, now_ms: int
) -> Outcome:
    """Complete with exactly the parts the client uploaded: every part present, each
    of the part size but the last, the declared total, and the ETags the client saw."""
    rid = request.id
    limit(fs.stores, "file_url_device", caller.device_id, now_ms, rid)
    record = _own_upload(fs, caller, request.object_id, rid)
    done: FileUploadCompletedAnswer = {
        "action": "file_upload_completed",
        "id": rid,
        "object_id": record.object_id,
    }
    if record.state != "uploading":
        return Outcome(replies=[done])  # a repeat after a lost answer
    found = fs.objects.parts(record.key, record.upload_id)
    if found is None:
        if fs.objects.exists(record.key):
            # S3 completed it but the record was not updated (a lost answer, a crash).
            fs.files.mark_complete(record.object_id)
            return Outcome(replies=[done])
        raise Refused(ErrorCode.NOT_FOUND, "no such upload", rid)
    numbers = [p.number for p in found]
    sizes_ok = all(p.size == record.part_size for p in found[:-1]) and bool(found)
    problem = None
    if numbers != list(range(1, record.part_count + 1)) or request.part_count != len(found):
        problem = f"{len(found)} of {record.part_count} parts are uploaded"
    elif not sizes_ok or sum(p.size for p in found) != record.size:
        problem = "the parts do not add up to the upload's size"
    elif _etags_digest(found) != request.etags_sha256:
        problem = "the parts S3 holds are not the ones this device uploaded"
    if problem is not None:
        raise Refused(ErrorCode.INCOMPLETE_UPLOAD, problem, rid)
    fs.objects.complete(record.key, record.upload_id, found)
    fs.files.mark_complete(record.object_id)
    return Outcome(replies=[done])


def abort(
    fs: FileStores, caller: Principal, request: FileUploadAbortRequest, now_ms: int
) -> Outcome:
    rid = request.id
    limit(fs.stores, "file_url_device", caller.device_id, now_ms, rid)
    record = _own_upload(fs, caller, request.object_id, rid)
    if record.state == "attached":
        raise Refused(ErrorCode.CONFLICT, "a message refers to this file", rid)
    if record.state == "uploading":
        fs.objects.abort(record.key, record.upload_id)
    # Any completed object goes with the record (the attachments function).
    fs.files.delete(record.object_id, caller.device_id)
    aborted: FileUploadAbortedAnswer = {"action": "file_upload_aborted", "id": rid}
    return Outcome(replies=[aborted])


def live(message: StoredMessage, now_ms: int) -> bool:
    """Neither expired nor burnt (a first read brought ``expires_at`` forward)."""
    ends = message.expires_at or message.server_time + MAX_MESSAGE_LIFETIME_MS
    return ends > now_ms


def download(
    fs: FileStores, caller: Principal, request: FileDownloadRequest, now_ms: int
) -> Outcome:
    """A GET URL for a file a live message of the caller's conversation refers to."""
    rid, cid = request.id, request.conversation_id
    limit(fs.stores, "file_url_device", caller.device_id, now_ms, rid)
    _member_device(fs.stores, caller, cid, rid)
    store = fs.stores.conversations
    message = store.message_by_id(cid, request.message_id)
    member = store.member(cid, caller.user_id)
    device = caller.device or fs.stores.directory.get_device(caller.device_id)
    joined = member.joined_seq if member is not None else 0
    created_at = device.created_at if device is not None else 0
    if (
        message is None
        or request.object_id not in message.files
        or message.seq <= joined
        or message.server_time < created_at
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such file", rid)
    if not live(message, now_ms):
        raise Refused(ErrorCode.GONE, "the message expired or burnt; its file is gone", rid)
    record = fs.files.get(request.object_id)
    if (
        record is None
        or record.state != "attached"
        or record.conversation_id != cid
        or record.network_id != caller.network_id
        or record.message_id != request.message_id
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such file", rid)
    answer: FileDownloadAnswer = {
        "action": "file_download",
        "id": rid,
        "object_id": record.object_id,
        "size": record.size,
        "url": fs.objects.download_url(record.key, DOWNLOAD_URL_S),
        "url_expires_at": now_ms + DOWNLOAD_URL_S * 1000,
    }
    return Outcome(replies=[answer])
