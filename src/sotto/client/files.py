"""Files: encrypt while uploading to presigned S3 parts, resume after a crash, verify on download.

Upload (docs/api.md, Files): the plaintext is read in 1 MiB blocks and
encrypted as a stream (docs/protocol.md §8); the ciphertext fills one part
at a time (the server's part size, 8 MiB or more) and each part goes
straight to S3 on a URL the server signed. Memory is one part plus one
block, whatever the file's size.

Resume: the file key, the stream's salt and each finished part's MD5 and
ETag are sealed in the profile's vault after every part. Encryption is
deterministic given key and salt, so a second run re-encrypts the file
(cheap next to the network) to rebuild the digest, skips every part S3
already holds whose bytes are the same, and uploads the rest. A file that
changed in between is noticed (its parts' MD5s differ) and starts over.

Download: the stream is decrypted into a staging file in the profile, and
only after the digest and size in the signed File content verified is it
linked into the destination under a sanitised name that never replaces an
existing file. A file that fails verification never reaches the destination.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import secrets
import shutil
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import urllib3

from sotto.frames.answers_files import (
    FileDownloadAnswer,
    FileUploadAbortedAnswer,
    FileUploadCompletedAnswer,
    FileUploadPartsPart,
    FileUploadStartedAnswer,
)
from sotto.protocol.attachments import DEFAULT_CHUNK_SIZE, Decryptor, Encryptor, encrypted_size
from sotto.protocol.content import File
from sotto.protocol.errors import ProtocolError

from .errors import ClientError, FrameError, MalformedFrame, MessagingError, SessionError
from .session import shaped

__all__ = [
    "BLOCK",
    "Progress",
    "UploadedFile",
    "download_file",
    "etags_digest",
    "place_file",
    "sanitise_name",
    "upload_file",
]

BLOCK = 1024 * 1024
URLS_PER_PAGE = 16
UPLOAD_PREFIX = "upload-"
MAX_NAME_BYTES = 200
_HTTP = urllib3.PoolManager(
    retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504)),
    timeout=urllib3.Timeout(connect=10, read=120),
)


class Caller(Protocol):
    def __call__(self, action: str, **fields: Any) -> dict[str, Any]: ...


T = TypeVar("T")


def _ask(call: Caller, shape: type[T], action: str, **fields: Any) -> T:
    """``call``'s answer as its shape (``sotto.frames.answers_files``), or ``MalformedFrame``."""
    return shaped(shape, action, call(action, **fields))


class VaultLike(Protocol):
    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def remove(self, name: str) -> None: ...


# (bytes done, bytes total): called as parts go out or blocks come in.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class UploadedFile:
    content: File  # what the message carries
    object_id: str


@dataclass
class _UploadState:
    """What a second run needs to resume: sealed in the vault (the key is secret)."""

    conversation_id: str
    path: str
    file_size: int
    mtime_ns: int
    key: str  # base64
    salt: str  # base64
    object_id: str = ""
    part_size: int = 0
    part_count: int = 0
    md5s: dict[str, str] = field(default_factory=dict)  # part -> hex MD5 of its bytes
    etags: dict[str, str] = field(default_factory=dict)  # part -> ETag S3 answered
    completed: bool = False


def etags_digest(etags: list[str]) -> str:
    """What file_upload_complete takes: SHA-256 over the ETags in order, newline after each."""
    return hashlib.sha256("".join(f"{etag}\n" for etag in etags).encode()).hexdigest()


def _state_name(cid: str, path: Path) -> str:
    return UPLOAD_PREFIX + hashlib.sha256(f"{cid}\0{path}".encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def upload_file(
    call: Caller,
    vault: VaultLike,
    cid: str,
    path: Path,
    *,
    progress: Progress | None = None,
    on_part: Callable[[int], None] | None = None,
) -> UploadedFile:
    """Encrypt ``path`` into an upload for conversation ``cid``; resume one left unfinished.

    ``on_part`` (tests) is called after each part is stored, with its number.
    """
    path = path.resolve()
    info = path.stat()
    name = _state_name(cid, path)
    state = _load_state(vault, name, cid, path, info.st_size, info.st_mtime_ns)
    stream_size = encrypted_size(info.st_size, DEFAULT_CHUNK_SIZE)
    if not state.object_id:
        started = _ask(
            call,
            FileUploadStartedAnswer,
            "file_upload_start",
            conversation_id=cid,
            size=stream_size,
        )
        state.object_id = started["object_id"]
        state.part_size = started["part_size"]
        state.part_count = started["part_count"]
        vault.write(name, json.dumps(asdict(state)).encode())
    held: dict[int, str] = {}
    if not state.completed and state.etags:
        try:
            answer = _ask(
                call,
                FileUploadPartsPart,
                "file_upload_parts",
                object_id=state.object_id,
                count=0,
                held=True,
            )
        except FrameError as error:
            if error.code != "not_found":
                raise
            vault.remove(name)  # the upload expired: start over
            return upload_file(call, vault, cid, path, progress=progress, on_part=on_part)
        held = {p["part"]: p["etag"] for p in answer["held"]}
    salt = base64.b64decode(state.salt)
    encryptor = Encryptor(base64.b64decode(state.key), rng=lambda n: salt[:n])
    pages = _UrlPages(call, state.object_id, state.part_count)
    done = 0
    # One part uploads while the next is encrypted: two parts in memory at most.
    pending: deque[tuple[int, bytearray, bytes, Future[str]]] = deque()

    def settle(keep: int) -> None:
        while len(pending) > keep:
            number, part, md5, future = pending.popleft()
            try:
                etag = future.result()
            except _UrlExpired:  # the link was slower than the URL's minutes: sign again
                etag = _put_part(pages, pages.url(number, fresh=True), number, part, md5)
            state.md5s[str(number)], state.etags[str(number)] = md5.hex(), etag
            vault.write(name, json.dumps(asdict(state)).encode())
            if on_part is not None:
                on_part(number)

    with path.open("rb") as source, ThreadPoolExecutor(1, "sotto-upload") as uploader:
        try:
            for number, part in _parts(source, encryptor, state.part_size):
                md5 = hashlib.md5(part, usedforsecurity=False)
                key = str(number)
                if state.completed or (
                    held.get(number) == state.etags.get(key) and key in state.md5s
                ):
                    if state.md5s.get(key) != md5.hexdigest():
                        # The file changed since the first run: its old parts are useless.
                        settle(0)
                        _abandon(call, vault, name, state)
                        return upload_file(
                            call, vault, cid, path, progress=progress, on_part=on_part
                        )
                else:
                    url = pages.url(number)  # the socket is used from this thread only
                    future = uploader.submit(_put_part, pages, url, number, part, md5.digest())
                    pending.append((number, part, md5.digest(), future))
                    settle(1)
                done += len(part)
                if progress is not None:
                    progress(done, stream_size)
            settle(0)
        finally:
            for *_, future in pending:
                future.cancel()
    if not state.completed:
        etags = [state.etags[str(n)] for n in range(1, state.part_count + 1)]
        _complete(call, state.object_id, state.part_count, etags_digest(etags))
        state.completed = True
        vault.write(name, json.dumps(asdict(state)).encode())
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    content = File(
        state.object_id,
        base64.b64decode(state.key),
        encryptor.digest,
        info.st_size,
        path.name,
        media_type,
    )
    return UploadedFile(content, state.object_id)


# S3 may take a while to assemble a large object; completing again is idempotent
# (docs/api.md), so an answer that is late is asked for again.
COMPLETE_ATTEMPTS = 10


def _complete(call: Caller, object_id: str, part_count: int, digest: str) -> None:
    for attempt in range(COMPLETE_ATTEMPTS):
        try:
            _ask(
                call,
                FileUploadCompletedAnswer,
                "file_upload_complete",
                object_id=object_id,
                part_count=part_count,
                etags_sha256=digest,
            )
            return
        except (FrameError, MalformedFrame):
            raise
        except SessionError:
            if attempt == COMPLETE_ATTEMPTS - 1:
                raise


def forget_upload(vault: VaultLike, cid: str, path: Path) -> None:
    """Drop the resume state once the message that sends the file is out."""
    vault.remove(_state_name(cid, path.resolve()))


def _load_state(
    vault: VaultLike, name: str, cid: str, path: Path, size: int, mtime_ns: int
) -> _UploadState:
    raw = vault.read(name)
    if raw is not None:
        try:
            state = _UploadState(**json.loads(raw))
        except (TypeError, ValueError):
            state = None
        if state is not None and (state.file_size, state.mtime_ns) == (size, mtime_ns):
            return state
    return _UploadState(
        conversation_id=cid,
        path=str(path),
        file_size=size,
        mtime_ns=mtime_ns,
        key=_b64(secrets.token_bytes(32)),
        salt=_b64(secrets.token_bytes(32)),
    )


def _abandon(call: Caller, vault: VaultLike, name: str, state: _UploadState) -> None:
    with contextlib.suppress(FrameError):
        _ask(call, FileUploadAbortedAnswer, "file_upload_abort", object_id=state.object_id)
    vault.remove(name)


def _parts(source: Any, encryptor: Encryptor, part_size: int) -> Iterator[tuple[int, bytearray]]:
    """The encrypted stream, cut into parts of ``part_size`` bytes (the last is shorter)."""
    part = bytearray()
    number = 1
    while True:
        block = source.read(BLOCK)
        part += encryptor.update(block) if block else encryptor.finalize()
        while len(part) >= part_size:
            yield number, part[:part_size]
            del part[:part_size]
            number += 1
        if not block:
            break
    if part:
        yield number, part


class _UrlPages:
    """UploadPart URLs, fetched a page at a time and again when one expired."""

    def __init__(self, call: Caller, object_id: str, part_count: int) -> None:
        self._call, self._object_id, self._part_count = call, object_id, part_count
        self._urls: dict[int, str] = {}

    def url(self, number: int, *, fresh: bool = False) -> str:
        if fresh or number not in self._urls:
            answer = _ask(
                self._call,
                FileUploadPartsPart,
                "file_upload_parts",
                object_id=self._object_id,
                first=number,
                count=URLS_PER_PAGE,
            )
            self._urls = {u["part"]: u["url"] for u in answer["urls"]}
        url = self._urls.get(number)
        if url is None:
            raise MalformedFrame("file_upload_parts", [f"urls (part {number})"])
        return url


def _put_part(pages: _UrlPages, url: str, number: int, part: bytearray, md5: bytes) -> str:
    """PUT one part; its ETag. A URL that expired meanwhile (403) is refused once more
    only after the pages answer a fresh one, so a slow link never loses a part."""
    headers = {
        "Content-Length": str(len(part)),
        "Content-MD5": base64.b64encode(md5).decode(),
    }
    # http.client sends any bytes-like body as it is: no 8 MiB copy into bytes.
    response = _HTTP.request("PUT", url, body=cast(bytes, part), headers=headers)
    if response.status == 403 and b"expired" in response.data:
        raise _UrlExpired(number)
    if response.status == 200 and response.headers.get("ETag"):
        return str(response.headers["ETag"])
    raise MessagingError(f"part {number} was refused by storage (HTTP {response.status})")


class _UrlExpired(MessagingError):
    def __init__(self, number: int) -> None:
        super().__init__(f"the URL for part {number} expired")
        self.number = number


# -- downloading ---------------------------------------------------------------------


def download_file(
    call: Caller,
    cid: str,
    message_id: str,
    content: File,
    staging: Path,
    *,
    progress: Progress | None = None,
) -> Path:
    """Fetch and decrypt into a fresh file under ``staging``; raises unless it verified.

    The caller moves the verified file to where it belongs (``place_file``).
    """
    answer = _ask(
        call,
        FileDownloadAnswer,
        "file_download",
        conversation_id=cid,
        message_id=message_id,
        object_id=content.object_id,
    )
    staging.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = staging / f"partial-{secrets.token_hex(8)}"
    decryptor = Decryptor(content.key)
    response = _HTTP.request("GET", answer["url"], preload_content=False)
    try:
        if response.status != 200:
            raise MessagingError(f"storage refused the download (HTTP {response.status})")
        total = answer["size"]
        seen = 0
        with _exclusive(target) as out:
            for block in response.stream(BLOCK):
                seen += len(block)
                out.write(decryptor.update(block))
                if progress is not None:
                    progress(seen, total)
            out.write(
                decryptor.finalize(expected_digest=content.digest, expected_size=content.size)
            )
    except (ProtocolError, ClientError, OSError, urllib3.exceptions.HTTPError) as error:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        if isinstance(error, ProtocolError):
            raise MessagingError(f"the file does not verify ({error.code}); discarded") from None
        raise
    finally:
        response.release_conn()
    return target


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[Any]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def sanitise_name(name: str) -> str:
    """A name safe to create in a directory: no path, no control or format characters,
    not hidden, at most 200 bytes; "file" if nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C" and ch not in "\0")
    kept = kept.strip().lstrip(".").strip()
    while len(kept.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = kept.rpartition(".")
        kept = f"{stem[:-1]}{dot}{ext}" if dot and len(ext) < 16 and stem else kept[:-1]
    return kept or "file"


def place_file(verified: Path, directory: Path, name: str, *, exact: bool = False) -> Path:
    """Move a verified file into ``directory`` as ``name`` (or ``name (2)``, ...), never over
    an existing file; with ``exact`` the name is taken as given or refused."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for index in range(1, 10_000):
        candidate = directory / (name if index == 1 else f"{stem} ({index}){dot}{ext}")
        try:
            os.link(verified, candidate)
        except FileExistsError:
            if exact:
                raise MessagingError(f"{candidate} exists; not overwritten") from None
            continue
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            try:
                with _exclusive(candidate) as out, verified.open("rb") as source:
                    shutil.copyfileobj(source, out, BLOCK)
            except FileExistsError:
                if exact:
                    raise MessagingError(f"{candidate} exists; not overwritten") from None
                continue
        verified.unlink()
        return candidate
    raise MessagingError(f"no free name for {name} in {directory}")


# -- showing file and location messages -----------------------------------------------


def attachment_record(content: File) -> dict[str, Any]:
    """What the sealed history keeps of a File content to fetch it later."""
    return {
        "object_id": content.object_id,
        "key": _b64(content.key),
        "digest": _b64(content.digest),
        "size": content.size,
        "name": content.name,
        "media_type": content.media_type,
    }


def file_of(record: dict[str, Any]) -> File:
    return File(
        str(record["object_id"]),
        base64.b64decode(record["key"]),
        base64.b64decode(record["digest"]),
        int(record["size"]),
        str(record["name"]),
        str(record["media_type"]),
    )


def public_attachment(record: dict[str, Any]) -> dict[str, Any]:
    """The fields a screen or ``--json`` line shows (never the key)."""
    return {k: record[k] for k in ("object_id", "size", "name", "media_type")}


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def printable(text: str) -> str:
    """Hostile text made safe for a terminal: control and format characters dropped."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


def file_text(content: File) -> str:
    name, media = printable(content.name), printable(content.media_type)
    return f"[file] {name} ({human_size(content.size)}, {media})"


def location_record(latitude_e7: int, longitude_e7: int, label: str) -> dict[str, Any]:
    lat, lon = latitude_e7 / 1e7, longitude_e7 / 1e7
    return {
        "latitude": lat,
        "longitude": lon,
        "label": label,
        "map": f"https://www.openstreetmap.org/?mlat={lat:.7f}&mlon={lon:.7f}#map=16/{lat:.5f}/{lon:.5f}",
    }


def location_text(record: dict[str, Any]) -> str:
    label = f" {printable(record['label'])}" if record.get("label") else ""
    return f"[location]{label} {record['latitude']:.6f},{record['longitude']:.6f} {record['map']}"


def parse_coordinates(text: str) -> tuple[int, int]:
    """``LAT,LON`` in decimal degrees -> degrees times 10^7."""
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise ValueError("a location is LAT,LON in decimal degrees, e.g. 51.5007,-0.1246") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude is -90..90 and longitude -180..180")
    return round(lat * 1e7), round(lon * 1e7)
