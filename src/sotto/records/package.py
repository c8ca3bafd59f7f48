"""An export package on disk: RSMF 2.0 or EML/MBOX with NARA's metadata CSV, a SHA-256
manifest and a verification report; ``verify_package`` re-checks one offline.

Layout of DIR::

    rsmf/<conversation>-<YYYY-MM-DD>.rsmf   (format rsmf: one per conversation and UTC day)
    mbox/<conversation>.mbox                 (format eml: one mailbox per conversation)
    metadata.csv                             (both: pipe-delimited, one row per message)
    verification_report.json                 (counts, problems, what was asked for)
    SHA256SUMS                               (every other file: "<sha256>  <path>")

An RSMF file is an RFC 5322 message with the ``X-RSMF-*`` headers and one
base64 attachment ``rsmf.zip`` holding ``rsmf_manifest.json`` (participants,
conversations of type ``direct`` or ``channel``, events). Addresses are
``<user id>@<network>.sotto.invalid``: Sotto has no mail addresses, and
``.invalid`` (RFC 2606) can never be delivered to.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, BinaryIO

from .export import ExportedMessage, ExportReport

__all__ = ["SUMS", "verify_package", "write_package"]

SUMS = "SHA256SUMS"
REPORT = "verification_report.json"
GENERATOR = "Sotto records export"
RSMF_VERSION = "2.0.0"
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


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _address(user_id: str, network: str) -> str:
    return f"{user_id}@{network}.sotto.invalid"


def _csv_cell(value: object) -> str:
    # Pipe-delimited: a pipe or line break inside a value would split the row.
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _csv(messages: Sequence[ExportedMessage]) -> bytes:
    rows = ["|".join(_CSV_FIELDS)]
    for m in messages:
        values = (
            m.message_id,
            m.conversation_id,
            m.conversation_kind,
            m.seq,
            m.sender_user_id,
            m.sender_device_id,
            ";".join(m.addressees),
            _iso(m.server_time),
            "",
            _iso(m.expires_at) if m.expires_at else "",
            m.burn_after_read_s,
        )
        rows.append("|".join(_csv_cell(v) for v in values))
    return ("\r\n".join(rows) + "\r\n").encode()


def _email(m: ExportedMessage, network: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = _address(m.sender_user_id, network)
    message["To"] = ", ".join(_address(u, network) for u in m.addressees) or "undisclosed:;"
    message["Date"] = format_datetime(datetime.fromtimestamp(m.server_time / 1000, UTC))
    message["Message-ID"] = f"<{m.message_id}@{network}.sotto.invalid>"
    message["Subject"] = f"Sotto {m.conversation_kind} {m.conversation_id} #{m.seq}"
    message["X-Sotto-Conversation"] = m.conversation_id
    message["X-Sotto-Sender-Device"] = m.sender_device_id
    if m.expires_at:
        message["X-Sotto-Expires-At"] = _iso(m.expires_at)
    if m.burn_after_read_s:
        message["X-Sotto-Burn-After-Read-S"] = str(m.burn_after_read_s)
    message.set_content(m.text)
    return message


def _append_mbox(box: BinaryIO, message: EmailMessage, server_time: int) -> None:
    """One mboxrd entry: a ``From `` line, the message with body ``From `` lines escaped."""
    stamp = time.asctime(time.gmtime(server_time / 1000))
    message.set_unixfrom(f"From sotto@sotto.invalid {stamp}")
    BytesGenerator(box, mangle_from_=True).flatten(message, unixfrom=True)
    box.write(b"\n")


def _rsmf(day: str, cid: str, messages: Sequence[ExportedMessage], network: str) -> bytes:
    users = sorted({u for m in messages for u in (m.sender_user_id, *m.addressees)})
    kind = "direct" if messages[0].conversation_kind == "direct" else "channel"
    manifest = {
        "version": RSMF_VERSION,
        "participants": [{"id": u, "display": u, "email": _address(u, network)} for u in users],
        "conversations": [
            {
                "id": cid,
                "display": cid,
                "platform": "Sotto",
                "type": kind,
                "participants": users,
            }
        ],
        "events": [_event(m) for m in messages],
    }
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("rsmf_manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    wrapper = EmailMessage()
    wrapper["X-RSMF-Version"] = RSMF_VERSION
    wrapper["X-RSMF-Generator"] = GENERATOR
    wrapper["X-RSMF-BeginDate"] = _iso(min(m.server_time for m in messages))
    wrapper["X-RSMF-EndDate"] = _iso(max(m.server_time for m in messages))
    wrapper["X-RSMF-EventCount"] = str(len(messages))
    wrapper["X-RSMF-AttachmentCount"] = "0"
    wrapper["From"] = _address(messages[0].sender_user_id, network)
    wrapper["To"] = ", ".join(_address(u, network) for u in users)
    wrapper["Subject"] = f"Sotto {kind} {cid} {day}"
    wrapper["Date"] = format_datetime(datetime.fromtimestamp(messages[0].server_time / 1000, UTC))
    wrapper.set_content(
        "\n".join(f"[{_iso(m.server_time)}] {m.sender_user_id}: {m.text}" for m in messages)
    )
    wrapper.add_attachment(
        archive.getvalue(), maintype="application", subtype="zip", filename="rsmf.zip"
    )
    return bytes(wrapper)


def _event(m: ExportedMessage) -> dict[str, Any]:
    custom = [{"name": "seq", "value": str(m.seq)}, {"name": "device", "value": m.sender_device_id}]
    if m.expires_at:
        custom.append({"name": "expiring", "value": _iso(m.expires_at)})
    if m.burn_after_read_s:
        custom.append({"name": "burn_on_read_s", "value": str(m.burn_after_read_s)})
    return {
        "id": m.message_id,
        "type": "message",
        "participant": m.sender_user_id,
        "conversation": m.conversation_id,
        "timestamp": _iso(m.server_time),
        "body": m.text,
        "attachments": [],
        "custom": custom,
    }


def write_package(
    out: Path,
    network: str,
    fmt: str,
    messages: Sequence[ExportedMessage],
    report: ExportReport,
    asked: dict[str, Any],
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    written: list[Path] = []
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
                path = out / "rsmf" / f"{cid}-{day}.rsmf"
                path.write_bytes(_rsmf(day, cid, of_day, network))
                written.append(path)
    else:
        (out / "mbox").mkdir()
        for cid, items in sorted(by_conversation.items()):
            path = out / "mbox" / f"{cid}.mbox"
            with path.open("wb") as box:
                for m in items:
                    _append_mbox(box, _email(m, network), m.server_time)
            written.append(path)
    (out / "metadata.csv").write_bytes(_csv(messages))
    written.append(out / "metadata.csv")
    (out / REPORT).write_text(
        json.dumps(
            {"network_id": network, "format": fmt, "asked": asked, **report.to_json()},
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
    """Problems with a package: a listed file changed or missing, a file not listed."""
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
    return problems
