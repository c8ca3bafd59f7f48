"""Export throughput: MESSAGES archived messages opened and written as a package.

The records are what the archiver writes (envelopes with their sender's
certificate, the retention key distributions of each chain, the room's
creation operation), made here with the real engine: one sender alone in a
room with retention on, so every chain (rotated every 1,000 messages) goes
to the retention key only. Timed on the officer's side: opening (verify
signature and digest, decrypt, per message), then writing an EML/MBOX
package with its CSV and SHA-256 manifest, then ``verify_package``.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sotto.protocol.content import Text
from sotto.protocol.conversation import Conversation, LocalDevice
from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import IdentityKeyPair
from sotto.protocol.membership import ConversationKind, Create, MemberEntry, Role, sign_operation
from sotto.protocol.retention import RetentionSecrets
from sotto.protocol.safety import IdentityTracker
from sotto.records.export import ExportFilter, open_archive
from sotto.records.opening import ArchiveOpener
from sotto.records.package import verify_package, write_package

from ._report import table

MESSAGES = int(os.environ.get("SOTTO_BENCH_EXPORT_MESSAGES", "100000"))
NETWORK = "net-benchexport"
CID = "room-benchexport0001"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _records() -> tuple[list[dict[str, Any]], ArchiveOpener, float]:
    now = int(time.time() * 1000) - MESSAGES  # one ms apart, ending now
    identity = IdentityKeyPair.generate()
    device = DeviceSecrets.create(identity, "usr-sender", "dev-sender", now=now)
    retention = RetentionSecrets.create(NETWORK, "rtn-bench000001", now=now)
    sender = {
        "device_id": "dev-sender",
        "user_id": "usr-sender",
        "certificate": _b64(device.certificate.serialize()),
        "identity_key": _b64(identity.public.serialize()),
    }
    entry = MemberEntry.of("usr-sender", identity.public, Role.MODERATOR)
    op = sign_operation(
        device,
        identity.public,
        None,
        Create(ConversationKind.ROOM, (entry,)),
        now=now,
        conversation_id=CID,
    )
    records: list[dict[str, Any]] = [
        {
            "id": "log-0",
            "kind": "membership",
            "conversation_id": CID,
            "seq": 0,
            "server_time": now,
            "op": _b64(op),
            "sender": sender,
        }
    ]
    local = LocalDevice(device, identity.public, IdentityTracker())
    engine = Conversation.create(CID, local, [], now=now)
    engine.set_retention(retention.identity(NETWORK))
    started = time.perf_counter()
    for n in range(MESSAGES):
        at = now + n + 1
        outgoing = engine.prepare_send(Text(f"message {n}: a typical chat line."), now=at)
        for d in outgoing.distributions:
            records.append(
                {
                    "id": f"d-{n}",
                    "kind": "distribution",
                    "conversation_id": CID,
                    "seq": None,
                    "server_time": at,
                    "recipient_device": d.recipient_device_id,
                    "data": _b64(d.data),
                    "sender": sender,
                }
            )
        records.append(
            {
                "id": f"m-{n}",
                "kind": "envelope",
                "conversation_id": CID,
                "seq": n + 1,
                "server_time": at,
                "envelope": _b64(outgoing.envelope),
                "sender": sender,
            }
        )
    made_s = time.perf_counter() - started
    return records, ArchiveOpener(retention.officer.public, [retention.device]), made_s


def main() -> None:
    records, opener, made_s = _records()
    started = time.perf_counter()
    messages, report = open_archive(records, opener, ExportFilter())
    opened_s = time.perf_counter() - started
    assert not report.problems, report.problems[:3]
    assert report.exported == MESSAGES
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "package"
        started = time.perf_counter()
        write_package(out, NETWORK, "eml", messages, report, {})
        written_s = time.perf_counter() - started
        started = time.perf_counter()
        problems = verify_package(out)
        checked_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert problems == []
    table(
        f"export of {MESSAGES:,} messages (one conversation, EML/MBOX + CSV), one core",
        ["step", "seconds", "messages/s"],
        [
            [
                "archive made (sender side, not export)",
                f"{made_s:.1f}",
                f"{MESSAGES / made_s:,.0f}",
            ],
            ["open: verify + decrypt", f"{opened_s:.1f}", f"{MESSAGES / opened_s:,.0f}"],
            [
                f"write package ({size / 1e6:.0f} MB)",
                f"{written_s:.1f}",
                f"{MESSAGES / written_s:,.0f}",
            ],
            ["verify-package", f"{checked_s:.1f}", f"{MESSAGES / checked_s:,.0f}"],
        ],
    )


if __name__ == "__main__":
    main()
