"""An export package on disk: RSMF 2.0 or EML/MBOX with NARA's metadata CSV, a SHA-256
manifest and a verification report; ``verify_package`` re-checks one offline.

Layout of DIR::

    rsmf/<conversation>-<YYYY-MM-DD>[-<n>].rsmf  (format rsmf: per conversation and UTC day)
    mbox/<conversation>[-<n>].mbox               (format eml: per conversation)
    attachments/<name>.part<NNN>                 (only a file too large for any container)
    metadata.csv                                 (both: pipe-delimited, one row per message)
    verification_report.json                     (counts, problems, attachments, what was asked)
    SHA256SUMS                                   (every other file: "<sha256>  <path>")

No file of the package reaches ``max_file_bytes`` (2 GB unless told): a day of
a conversation whose RSMF would is split by events into ``-2``, ``-3``, ...
files, a mailbox by messages, and a file too large to fit in any container is
written beside them in pieces (``cat name.part* > name``), which the event or
email names (``X-Sotto-Attachment-Outside``).

An RSMF file is an RFC 5322 message with the ``X-RSMF-*`` headers and one
base64 attachment ``rsmf.zip`` holding ``rsmf_manifest.json`` (participants,
conversations of type ``direct`` or ``channel``, events) and, at its root, the
attachments its events list by ``id``. Addresses are
``<user id>@<network>.sotto.invalid``: Sotto has no mail addresses, and
``.invalid`` (RFC 2606) can never be delivered to.

Attachments are fetched from the archive, decrypted here and checked against
the size and SHA-384 digest in the sender's signed File content before they
enter the package; one that does not verify is left out and named in the
report. Containers are written as streams (base64 a MiB at a time), so memory
stays small whatever the files' sizes.
"""

from __future__ import annotations

import base64
import email
import hashlib
import io
import json
import mailbox
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from sotto.client.files import sanitise_name
from sotto.protocol.attachments import Decryptor
from sotto.protocol.errors import ProtocolError

from .export import ExportedAttachment, ExportedMessage, ExportReport

__all__ = ["MAX_FILE_BYTES", "SUMS", "Fetch", "verify_package", "write_package"]

SUMS = "SHA256SUMS"
REPORT = "verification_report.json"
GENERATOR = "Sotto records export"
APPLICATION = "Sotto"
RSMF_VERSION = "2.0.0"
# Under 2 GB however a gigabyte is counted (e-discovery loaders and FAT32 stop there).
MAX_FILE_BYTES = 2_000_000_000
# base64 with 76-character lines: 4/3 and a line break per 76 characters, rounded up.
_B64_GROWTH = 1.4
_CONTAINER_OVERHEAD = 64 * 1024
_CHUNK = 57 * 1024 * 18  # a whole number of 57-byte base64 lines, about 1 MiB
_CSV_FIELDS = (
    "message_id",
    "conversation_id",
    "conversation_type",
    "seq",
    "sender",
    "sender_device",
    "addressees",
    "date",
    "attachments",
    "expires_at",
    "burn_after_read_s",
)

# An archived object's encrypted bytes by key, as a stream of chunks.
Fetch = Callable[[str], Iterable[bytes]]


@dataclass(frozen=True)
class _Staged:
    """An attachment decrypted and verified, waiting in the staging directory."""

    message_id: str
    attachment: ExportedAttachment
    path: Path
    sha256: str
    member: str  # its name inside a container, unique in the package


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _address(user_id: str, network: str) -> str:
    return f"{user_id}@{network}.sotto.invalid"


def _csv_cell(value: object) -> str:
    # Pipe-delimited: a pipe or line break inside a value would split the row.
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _csv(messages: Sequence[ExportedMessage], staged: dict[str, list[_Staged]]) -> bytes:
    rows = ["|".join(_CSV_FIELDS)]
    for m in messages:
        files = ";".join(
            f"{s.attachment.name.replace(';', ',')} (sha256 {s.sha256})"
            for s in staged.get(m.message_id, [])
        )
        values = (
            m.message_id,
            m.conversation_id,
            m.conversation_kind,
            m.seq,
            m.sender_user_id,
            m.sender_device_id,
            ";".join(m.addressees),
            _iso(m.server_time),
            files,
            _iso(m.expires_at) if m.expires_at else "",
            m.burn_after_read_s,
        )
        rows.append("|".join(_csv_cell(v) for v in values))
    return ("\r\n".join(rows) + "\r\n").encode()


# -- attachments: fetch, decrypt, verify --------------------------------------------


def _stage(
    messages: Sequence[ExportedMessage], fetch: Fetch | None, staging: Path, report: ExportReport
) -> dict[str, list[_Staged]]:
    staged: dict[str, list[_Staged]] = {}
    for m in messages:
        for index, attachment in enumerate(m.attachments):
            if fetch is None:
                report.problems.append(f"message {m.message_id}: no archive to fetch files from")
                continue
            path = staging / secrets.token_hex(8)
            try:
                digest = _decrypt(fetch(attachment.archive_key), attachment, path)
            except (ProtocolError, OSError) as error:
                path.unlink(missing_ok=True)
                report.problems.append(
                    f"message {m.message_id}: file {attachment.object_id} does not verify "
                    f"({getattr(error, 'code', type(error).__name__)}); left out"
                )
                continue
            member = f"{m.message_id}-{index + 1}-{sanitise_name(attachment.name)}"
            staged.setdefault(m.message_id, []).append(
                _Staged(m.message_id, attachment, path, digest, member)
            )
    return staged


def _decrypt(chunks: Iterable[bytes], attachment: ExportedAttachment, path: Path) -> str:
    """Decrypt into ``path``; the plaintext's SHA-256 once size and signed digest verify."""
    decryptor = Decryptor(attachment.key)
    plain = hashlib.sha256()
    with path.open("xb") as out:
        for chunk in chunks:
            data = decryptor.update(chunk)
            plain.update(data)
            out.write(data)
        data = decryptor.finalize(expected_digest=attachment.digest, expected_size=attachment.size)
        plain.update(data)
        out.write(data)
    return plain.hexdigest()


def _outside(item: _Staged, out: Path, limit: int) -> list[str]:
    """A file too large for any container, in pieces under ``limit`` beside them."""
    (out / "attachments").mkdir(exist_ok=True)
    piece = limit - 1
    names: list[str] = []
    with item.path.open("rb") as source:
        number = 1
        while True:
            name = f"attachments/{item.member}.part{number:03d}"
            with (out / name).open("xb") as target:
                copied = _copy_at_most(source, target, piece)
            if copied == 0 and names:
                (out / name).unlink()
                break
            names.append(name)
            number += 1
            if copied < piece:
                break
    return names


def _copy_at_most(source: BinaryIO, target: BinaryIO, limit: int) -> int:
    copied = 0
    while copied < limit:
        block = source.read(min(1 << 20, limit - copied))
        if not block:
            break
        target.write(block)
        copied += len(block)
    return copied


# -- MIME, written as a stream -------------------------------------------------------


def _headers(pairs: Sequence[tuple[str, str, dict[str, str]]], policy: Any) -> bytes:
    scratch = EmailMessage(policy=policy)
    for name, value, params in pairs:
        scratch.add_header(name, value, **params)
    return b"".join(policy.fold_binary(name, value) for name, value in scratch.items())


def _write_b64(out: BinaryIO, source: BinaryIO, nl: bytes) -> None:
    while block := source.read(_CHUNK):
        encoded = base64.b64encode(block)
        out.write(nl.join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + nl)


def _write_mime(
    out: BinaryIO,
    headers: Sequence[tuple[str, str, dict[str, str]]],
    text: str,
    parts: Sequence[tuple[str, str, Path]],
    nl: bytes,
) -> None:
    """A message: ``headers``, then the text alone, or multipart/mixed with the text and
    each ``(filename, media type, path)`` as a base64 attachment."""
    policy = email_policy.SMTP if nl == b"\r\n" else email_policy.default
    body = base64.b64encode(text.encode())
    text_lines = nl.join(body[i : i + 76] for i in range(0, len(body), 76)) + nl
    text_headers: list[tuple[str, str, dict[str, str]]] = [
        ("Content-Type", "text/plain", {"charset": "utf-8"}),
        ("Content-Transfer-Encoding", "base64", {}),
    ]
    if not parts:
        out.write(_headers([*headers, ("MIME-Version", "1.0", {}), *text_headers], policy) + nl)
        out.write(text_lines)
        return
    boundary = f"=_sotto_{secrets.token_hex(12)}"
    top = [("MIME-Version", "1.0", {}), ("Content-Type", "multipart/mixed", {"boundary": boundary})]
    out.write(_headers([*headers, *top], policy) + nl)
    out.write(b"--" + boundary.encode() + nl + _headers(text_headers, policy) + nl + text_lines)
    for filename, media_type, path in parts:
        part = [
            ("Content-Type", media_type, {}),
            ("Content-Transfer-Encoding", "base64", {}),
            ("Content-Disposition", "attachment", {"filename": filename}),
        ]
        out.write(b"--" + boundary.encode() + nl + _headers(part, policy) + nl)
        with path.open("rb") as source:
            _write_b64(out, source, nl)
    out.write(b"--" + boundary.encode() + b"--" + nl)


def _text_weight(m: ExportedMessage) -> int:
    """A safe bound on what a message's text adds to a container: the preview, the
    manifest's JSON (escapes at most 6 bytes per byte), headers, all base64-encoded."""
    return int((8 * len(m.text.encode()) + 4096) * _B64_GROWTH)


def _file_weight(item: _Staged) -> int:
    return int((item.attachment.size + 1024) * _B64_GROWTH)


def _place_outside(
    m: ExportedMessage, items: Sequence[_Staged], limit: int
) -> tuple[list[_Staged], list[_Staged]]:
    """A message's files that fit in a container with it (smallest first), and the rest."""
    used = _CONTAINER_OVERHEAD + _text_weight(m)
    inside: list[_Staged] = []
    outside: list[_Staged] = []
    for item in sorted(items, key=lambda i: i.attachment.size):
        if used + _file_weight(item) < limit:
            inside.append(item)
            used += _file_weight(item)
        else:
            outside.append(item)
    return inside, outside


def _weight(m: ExportedMessage, inside: Sequence[_Staged]) -> int:
    return _text_weight(m) + sum(_file_weight(s) for s in inside)


def _media_type(value: str) -> str:
    maintype, _, subtype = value.partition("/")
    ok = maintype.isascii() and subtype.isascii() and maintype.isalnum() and subtype
    return (
        value
        if ok and all(c.isalnum() or c in "+-._" for c in subtype)
        else ("application/octet-stream")
    )


# -- RSMF ---------------------------------------------------------------------------


def _event(
    m: ExportedMessage, inside: list[_Staged], outside: dict[str, list[str]]
) -> dict[str, Any]:
    custom = [{"name": "seq", "value": str(m.seq)}, {"name": "device", "value": m.sender_device_id}]
    if m.expires_at:
        custom.append({"name": "expiring", "value": _iso(m.expires_at)})
    if m.burn_after_read_s:
        custom.append({"name": "burn_on_read_s", "value": str(m.burn_after_read_s)})
    for member, pieces in outside.items():
        custom.append({"name": "attachment_outside_rsmf", "value": f"{member}: {' '.join(pieces)}"})
    return {
        "id": m.message_id,
        "type": "message",
        "participant": m.sender_user_id,
        "conversation": m.conversation_id,
        "timestamp": _iso(m.server_time),
        "body": m.text,
        "attachments": [
            {"id": s.member, "display": s.attachment.name, "size": s.attachment.size}
            for s in inside
        ],
        "custom": custom,
    }


def _rsmf_groups(
    messages: Sequence[ExportedMessage], staged: dict[str, list[_Staged]], limit: int
) -> list[list[ExportedMessage]]:
    """Consecutive events whose RSMF file stays under ``limit`` (by a safe estimate)."""
    groups: list[list[ExportedMessage]] = []
    current: list[ExportedMessage] = []
    used = _CONTAINER_OVERHEAD
    for m in messages:
        inside, _rest = _place_outside(m, staged.get(m.message_id, []), limit)
        weight = _weight(m, inside)
        if current and used + weight >= limit:
            groups.append(current)
            current, used = [], _CONTAINER_OVERHEAD
        current.append(m)
        used += weight
    if current:
        groups.append(current)
    return groups


def _write_rsmf(
    path: Path,
    cid: str,
    day: str,
    messages: Sequence[ExportedMessage],
    staged: dict[str, list[_Staged]],
    outside: dict[str, dict[str, list[str]]],
    network: str,
    staging: Path,
    limit: int,
) -> list[dict[str, Any]]:
    users = sorted({u for m in messages for u in (m.sender_user_id, *m.addressees)})
    kind = "direct" if messages[0].conversation_kind == "direct" else "channel"
    inside = {
        m.message_id: [
            s for s in staged.get(m.message_id, []) if s.member not in outside.get(m.message_id, {})
        ]
        for m in messages
    }
    manifest = {
        "version": RSMF_VERSION,
        # RSMF 2.0: groups the day and size slices of one conversation (as the header does).
        "eventcollectionid": cid,
        "participants": [{"id": u, "display": u, "email": _address(u, network)} for u in users],
        "conversations": [
            {
                "id": cid,
                "display": cid,
                "platform": APPLICATION,
                "type": kind,
                "participants": users,
            }
        ],
        "events": [
            _event(m, inside[m.message_id], outside.get(m.message_id, {})) for m in messages
        ],
    }
    bundle = staging / f"rsmf-{secrets.token_hex(8)}.zip"
    placed: list[dict[str, Any]] = []
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        archive.writestr("rsmf_manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        for m in messages:
            for item in inside[m.message_id]:
                # Stored: the file as it was sent (most attachments are compressed already).
                info = zipfile.ZipInfo(item.member, time.gmtime(m.server_time / 1000)[:6])
                info.compress_type = zipfile.ZIP_STORED
                with (
                    item.path.open("rb") as source,
                    archive.open(info, "w", force_zip64=True) as to,
                ):
                    shutil.copyfileobj(source, to, 1 << 20)
                placed.append(_placed(item, path.name, member=item.member))
    count = sum(len(items) for items in inside.values())
    headers: list[tuple[str, str, dict[str, str]]] = [
        ("X-RSMF-Version", RSMF_VERSION, {}),
        ("X-RSMF-Generator", GENERATOR, {}),
        ("X-RSMF-Application", APPLICATION, {}),
        ("X-RSMF-BeginDate", _iso(min(m.server_time for m in messages)), {}),
        ("X-RSMF-EndDate", _iso(max(m.server_time for m in messages)), {}),
        ("X-RSMF-EventCount", str(len(messages)), {}),
        ("X-RSMF-AttachmentCount", str(count), {}),
        # One conversation's slices (days, and a day split for size) belong together.
        ("X-RSMF-EventCollectionID", cid, {}),
        ("X-RSMF-Participants", ", ".join(users), {}),
        ("From", _address(messages[0].sender_user_id, network), {}),
        ("To", ", ".join(_address(u, network) for u in users), {}),
        ("Subject", f"Sotto {kind} {cid} {day}", {}),
        ("Date", format_datetime(datetime.fromtimestamp(messages[0].server_time / 1000, UTC)), {}),
    ]
    preview = "\n".join(f"[{_iso(m.server_time)}] {m.sender_user_id}: {m.text}" for m in messages)
    with path.open("xb") as out:
        _write_mime(out, headers, preview, [("rsmf.zip", "application/zip", bundle)], b"\r\n")
    bundle.unlink()
    if path.stat().st_size >= limit:
        raise RuntimeError(f"{path.name} reached {path.stat().st_size} bytes (limit {limit})")
    return placed


def _placed(item: _Staged, where: str, **more: Any) -> dict[str, Any]:
    return {
        "message_id": item.message_id,
        "object_id": item.attachment.object_id,
        "name": item.attachment.name,
        "size": item.attachment.size,
        "sha256": item.sha256,
        "in": where,
        **more,
    }


# -- EML / MBOX ---------------------------------------------------------------------


def _email_headers(m: ExportedMessage, network: str) -> list[tuple[str, str, dict[str, str]]]:
    to = ", ".join(_address(u, network) for u in m.addressees) or "undisclosed:;"
    headers: list[tuple[str, str, dict[str, str]]] = [
        ("From", _address(m.sender_user_id, network), {}),
        ("To", to, {}),
        ("Date", format_datetime(datetime.fromtimestamp(m.server_time / 1000, UTC)), {}),
        ("Message-ID", f"<{m.message_id}@{network}.sotto.invalid>", {}),
        ("Subject", f"Sotto {m.conversation_kind} {m.conversation_id} #{m.seq}", {}),
        ("X-Sotto-Conversation", m.conversation_id, {}),
        ("X-Sotto-Sender-Device", m.sender_device_id, {}),
    ]
    if m.expires_at:
        headers.append(("X-Sotto-Expires-At", _iso(m.expires_at), {}))
    if m.burn_after_read_s:
        headers.append(("X-Sotto-Burn-After-Read-S", str(m.burn_after_read_s), {}))
    return headers


def _write_mboxes(
    out: Path,
    cid: str,
    messages: Sequence[ExportedMessage],
    staged: dict[str, list[_Staged]],
    outside: dict[str, dict[str, list[str]]],
    network: str,
    limit: int,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """One mailbox per conversation, continued in ``-2``, ``-3``, ... before ``limit``."""
    written: list[Path] = []
    placed: list[dict[str, Any]] = []
    box: BinaryIO | None = None
    used = 0
    try:
        for m in messages:
            inside = [
                s
                for s in staged.get(m.message_id, [])
                if s.member not in outside.get(m.message_id, {})
            ]
            weight = _weight(m, inside)
            if box is None or (used and _CONTAINER_OVERHEAD + used + weight >= limit):
                if box is not None:
                    box.close()
                number = len(written) + 1
                path = out / "mbox" / (f"{cid}.mbox" if number == 1 else f"{cid}-{number}.mbox")
                box, used = path.open("xb"), 0
                written.append(path)
            headers = _email_headers(m, network)
            for member, pieces in outside.get(m.message_id, {}).items():
                headers.append(("X-Sotto-Attachment-Outside", f"{member}: {' '.join(pieces)}", {}))
            stamp = time.asctime(time.gmtime(m.server_time / 1000))
            box.write(f"From sotto@sotto.invalid {stamp}\n".encode())
            # Every body is base64, so no line can begin with "From ": nothing to escape.
            _write_mime(
                box,
                headers,
                m.text,
                [(s.member, _media_type(s.attachment.media_type), s.path) for s in inside],
                b"\n",
            )
            box.write(b"\n")
            used += weight
            placed += [_placed(s, written[-1].name, member=s.member) for s in inside]
    finally:
        if box is not None:
            box.close()
    for path in written:
        if path.stat().st_size >= limit:
            raise RuntimeError(f"{path.name} reached {path.stat().st_size} bytes (limit {limit})")
    return written, placed


# -- the package ----------------------------------------------------------------------


def write_package(
    out: Path,
    network: str,
    fmt: str,
    messages: Sequence[ExportedMessage],
    report: ExportReport,
    asked: dict[str, Any],
    *,
    fetch: Fetch | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    staging = out / ".staging"
    staging.mkdir(mode=0o700)
    try:
        return _write(out, network, fmt, messages, report, asked, fetch, max_file_bytes, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(
    out: Path,
    network: str,
    fmt: str,
    messages: Sequence[ExportedMessage],
    report: ExportReport,
    asked: dict[str, Any],
    fetch: Fetch | None,
    limit: int,
    staging: Path,
) -> list[Path]:
    staged = _stage(messages, fetch, staging, report)
    written: list[Path] = []
    placed: list[dict[str, Any]] = []
    # A file no container could hold under the limit goes beside them, in pieces.
    outside: dict[str, dict[str, list[str]]] = {}
    by_id = {m.message_id: m for m in messages}
    for message_id, of_message in staged.items():
        for item in _place_outside(by_id[message_id], of_message, limit)[1]:
            pieces = _outside(item, out, limit)
            outside.setdefault(item.message_id, {})[item.member] = pieces
            written += [out / p for p in pieces]
            placed.append(_placed(item, "attachments", pieces=pieces))
    by_conversation: dict[str, list[ExportedMessage]] = {}
    for m in messages:
        by_conversation.setdefault(m.conversation_id, []).append(m)
    if fmt == "rsmf":
        (out / "rsmf").mkdir()
        for cid, items in sorted(by_conversation.items()):
            days: dict[str, list[ExportedMessage]] = {}
            for m in items:
                days.setdefault(_iso(m.server_time)[:10], []).append(m)
            for day, of_day in sorted(days.items()):
                groups = _rsmf_groups(of_day, staged, limit)
                for number, group in enumerate(groups, start=1):
                    suffix = "" if number == 1 else f"-{number}"
                    path = out / "rsmf" / f"{cid}-{day}{suffix}.rsmf"
                    placed += _write_rsmf(
                        path, cid, day, group, staged, outside, network, staging, limit
                    )
                    written.append(path)
    else:
        (out / "mbox").mkdir()
        for cid, items in sorted(by_conversation.items()):
            boxes, in_boxes = _write_mboxes(out, cid, items, staged, outside, network, limit)
            written += boxes
            placed += in_boxes
    (out / "metadata.csv").write_bytes(_csv(messages, staged))
    written.append(out / "metadata.csv")
    (out / REPORT).write_text(
        json.dumps(
            {
                "network_id": network,
                "format": fmt,
                "asked": asked,
                **report.to_json(),
                "attachments": placed,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    written.append(out / REPORT)
    sums = [f"{_sha256(p)}  {p.relative_to(out).as_posix()}" for p in sorted(written)]
    (out / SUMS).write_text("\n".join(sums) + "\n")
    return written


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_package(out: Path) -> list[str]:
    """Problems with a package: a listed file changed or missing, a file not listed, an
    attachment the report lists that is not in its container with its SHA-256."""
    sums = out / SUMS
    if not sums.is_file():
        return [f"{SUMS} is missing"]
    problems: list[str] = []
    listed: set[str] = set()
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed.add(name)
        path = out / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif _sha256(path) != digest:
            problems.append(f"{name}: altered (SHA-256 differs)")
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if path.is_file() and name != SUMS and name not in listed:
            problems.append(f"{name}: not in {SUMS}")
    if REPORT not in listed:
        problems.append(f"{REPORT}: not in the package")
    elif not problems:
        problems += _attachment_problems(out)
    return problems


def _attachment_problems(out: Path) -> list[str]:
    """Each attachment the report lists, found in its container, hashes as the report says."""
    try:
        placed = json.loads((out / REPORT).read_text()).get("attachments") or []
    except ValueError:
        return [f"{REPORT}: unreadable"]
    problems: list[str] = []
    found: dict[tuple[str, str], str] = {}
    for container in sorted({str(p.get("in")) for p in placed}):
        if container.endswith(".rsmf"):
            found |= {(container, k): v for k, v in _rsmf_members(out / "rsmf" / container).items()}
        elif container.endswith(".mbox"):
            found |= {(container, k): v for k, v in _mbox_parts(out / "mbox" / container).items()}
    for entry in placed:
        label = f"attachment {entry.get('name')!r} of message {entry.get('message_id')}"
        if entry.get("in") == "attachments":
            actual: str | None = _sha256_of_pieces([out / p for p in entry.get("pieces") or []])
        else:
            container, member = str(entry.get("in")), str(entry.get("member"))
            key = member if container.endswith(".rsmf") else f"{entry.get('message_id')}/{member}"
            actual = found.get((container, key))
        if actual is None:
            problems.append(f"{label}: not in {entry.get('in')}")
        elif actual != entry.get("sha256"):
            problems.append(f"{label}: SHA-256 differs from the report")
    return problems


def _rsmf_members(path: Path) -> dict[str, str]:
    with path.open("rb") as source:
        wrapper = email.message_from_binary_file(source)
    for part in wrapper.walk():
        if part.get_filename() == "rsmf.zip":
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                break
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                return {
                    name: _sha256_of(archive.open(name))
                    for name in archive.namelist()
                    if name != "rsmf_manifest.json"
                }
    return {}


def _mbox_parts(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for message in mailbox.mbox(str(path)):
        mid = str(message["Message-ID"] or "").strip("<>").split("@")[0]
        for part in message.walk():
            if part.get_content_disposition() == "attachment":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    found[f"{mid}/{part.get_filename()}"] = hashlib.sha256(payload).hexdigest()
    return found


def _sha256_of_pieces(pieces: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        with piece.open("rb") as source:
            while block := source.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _sha256_of(source: IO[bytes]) -> str:
    digest = hashlib.sha256()
    with source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
