"""Export packages with attachments, offline: files decrypted, verified and carried in RSMF
zips and MIME parts; no output file reaches the size limit (RSMF split by events, a
mailbox by messages, a file too large for any container in pieces); verify-package
re-checks every attachment."""

from __future__ import annotations

import email
import hashlib
import io
import json
import mailbox
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path

from sotto.protocol.attachments import MIN_CHUNK_SIZE, Encryptor
from sotto.records.export import ExportedAttachment, ExportedMessage, ExportReport
from sotto.records.package import verify_package, write_package

DAY = 1_800_000_000_000  # 2027-01-15T08:00:00Z


class Archive:
    """Encrypted streams under archive keys, as the archive bucket holds them."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.plain: dict[str, bytes] = {}

    def attach(self, name: str, size: int) -> ExportedAttachment:
        data = secrets.token_bytes(size)
        key = secrets.token_bytes(32)
        encryptor = Encryptor(key, chunk_size=MIN_CHUNK_SIZE)
        stream = bytes(encryptor.update(data) + encryptor.finalize())
        object_id = secrets.token_hex(16)
        archive_key = f"networks/net-x/files/{object_id}"
        self.objects[archive_key] = stream
        self.plain[name] = data
        return ExportedAttachment(
            object_id, name, "application/pdf", size, archive_key, key, encryptor.digest
        )

    def fetch(self, key: str) -> Iterator[bytes]:
        data = self.objects[key]
        for start in range(0, len(data), 7000):  # any split
            yield data[start : start + 7000]


def message(seq: int, text: str, *attachments: ExportedAttachment) -> ExportedMessage:
    return ExportedMessage(
        conversation_id="conv-1",
        conversation_kind="room",
        seq=seq,
        message_id=f"{seq:032x}",
        sender_user_id="usr-alice",
        sender_device_id="dev-a",
        server_time=DAY + seq * 1000,
        sent_at=DAY + seq * 1000,
        addressees=("usr-bob",),
        text=text,
        expires_at=0,
        burn_after_read_s=0,
        attachments=attachments,
    )


def rsmf_bundle(path: Path) -> zipfile.ZipFile:
    wrapper = email.message_from_bytes(path.read_bytes())
    (part,) = [p for p in wrapper.walk() if p.get_filename() == "rsmf.zip"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return zipfile.ZipFile(io.BytesIO(payload))


def test_rsmf_events_list_their_attachments_and_the_zip_carries_them(tmp_path):
    archive = Archive()
    report_pdf = archive.attach("report.pdf", 20_000)
    messages = [message(1, "[file] report.pdf", report_pdf), message(2, "thanks")]
    out = tmp_path / "pkg"
    write_package(out, "net-x", "rsmf", messages, ExportReport(), {}, fetch=archive.fetch)
    (path,) = (out / "rsmf").glob("*.rsmf")
    wrapper = email.message_from_bytes(path.read_bytes())
    assert wrapper["X-RSMF-Version"] == "2.0.0"
    assert wrapper["X-RSMF-AttachmentCount"] == "1"
    assert wrapper["X-RSMF-EventCount"] == "2"
    assert wrapper["X-RSMF-EventCollectionID"] == "conv-1"
    assert wrapper["X-RSMF-Application"] == "Sotto"
    bundle = rsmf_bundle(path)
    manifest = json.loads(bundle.read("rsmf_manifest.json"))
    (entry,) = manifest["events"][0]["attachments"]
    assert entry["display"] == "report.pdf"
    assert entry["size"] == 20_000
    assert bundle.read(entry["id"]) == archive.plain["report.pdf"]
    assert manifest["events"][1]["attachments"] == []
    rows = (out / "metadata.csv").read_text().splitlines()
    digest = hashlib.sha256(archive.plain["report.pdf"]).hexdigest()
    assert f"report.pdf (sha256 {digest})" in rows[1]
    assert verify_package(out) == []
    assert not (out / ".staging").exists()


def test_eml_messages_carry_their_files_as_mime_attachments(tmp_path):
    archive = Archive()
    minutes = archive.attach("minutes é.pdf", 9_000)
    out = tmp_path / "pkg"
    messages = [message(1, "[file] minutes", minutes), message(2, "plain text, ünïcode")]
    write_package(out, "net-x", "eml", messages, ExportReport(), {}, fetch=archive.fetch)
    (box,) = (out / "mbox").glob("*.mbox")
    first, second = list(mailbox.mbox(str(box)))
    (part,) = [p for p in first.walk() if p.get_content_disposition() == "attachment"]
    assert part.get_payload(decode=True) == archive.plain["minutes é.pdf"]
    assert str(part.get_filename()).endswith("minutes é.pdf")
    (text,) = [p for p in second.walk() if p.get_content_type() == "text/plain"]
    assert text.get_payload(decode=True) == "plain text, ünïcode".encode()
    assert verify_package(out) == []


def test_no_output_file_reaches_the_limit_and_a_huge_file_goes_beside_in_pieces(tmp_path):
    archive = Archive()
    limit = 200_000
    messages = [message(n, f"file {n}", archive.attach(f"f{n}.bin", 40_000)) for n in range(1, 7)]
    messages.append(message(7, "the big one", archive.attach("big.bin", 450_000)))
    # Text whose JSON escapes are six times its size, beside a file that nearly fills a file.
    messages.append(message(8, "\x01" * 3_000, archive.attach("near.bin", 60_000)))
    for fmt in ("rsmf", "eml"):
        out = tmp_path / fmt
        written = write_package(
            out,
            "net-x",
            fmt,
            messages,
            ExportReport(),
            {},
            fetch=archive.fetch,
            max_file_bytes=limit,
        )
        assert all(p.stat().st_size < limit for p in written)
        containers = list((out / ("rsmf" if fmt == "rsmf" else "mbox")).iterdir())
        assert len(containers) > 1  # split by events / messages
        pieces = sorted((out / "attachments").iterdir())
        assert len(pieces) == 3
        assert b"".join(p.read_bytes() for p in pieces) == archive.plain["big.bin"]
        report = json.loads((out / "verification_report.json").read_text())
        assert len(report["attachments"]) == 8
        assert verify_package(out) == []
    events = sorted(
        (
            event
            for path in (tmp_path / "rsmf" / "rsmf").iterdir()
            for event in json.loads(rsmf_bundle(path).read("rsmf_manifest.json"))["events"]
        ),
        key=lambda event: str(event["timestamp"]),
    )
    assert [e["body"] for e in events] == [m.text for m in messages]  # every event, once
    big = events[-2]
    assert big["attachments"] == []
    assert any(c["name"] == "attachment_outside_rsmf" for c in big["custom"])


def test_a_file_whose_archived_stream_was_altered_is_left_out_and_named(tmp_path):
    archive = Archive()
    attachment = archive.attach("a.pdf", 10_000)
    stream = bytearray(archive.objects[attachment.archive_key])
    stream[-5] ^= 1
    archive.objects[attachment.archive_key] = bytes(stream)
    report = ExportReport()
    out = tmp_path / "pkg"
    write_package(
        out,
        "net-x",
        "rsmf",
        [message(1, "[file] a.pdf", attachment)],
        report,
        {},
        fetch=archive.fetch,
    )
    assert any("does not verify" in problem for problem in report.problems)
    manifest = json.loads(rsmf_bundle(next((out / "rsmf").iterdir())).read("rsmf_manifest.json"))
    assert manifest["events"][0]["attachments"] == []
    assert verify_package(out) == []  # the package is what it says it is
