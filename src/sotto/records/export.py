"""Opening a network's committed archive into the messages people saw (pure).

Records come in chain order. Every distribution to a retention device is
opened first (its sender's certificate and identity checked as of when it
was stored), then each conversation's envelopes in sequence order: each is
verified (sender certificate under the sender's identity, signature,
ciphertext digest) and decrypted as the receiving client would. Addressees
are the members of the conversation's signed membership log, verified from
its creation operation, as it stood when the message was stored. A file or
location message is exported with the text a client shows for it; a file's
key and digest come out of the signed envelope, and its archived copy is
named from the record, so the package can fetch, decrypt and check it.
Content a client does not display (receipts, control messages) is counted,
not exported. Nothing here touches the network or KMS.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sotto.client.files import file_text, location_record, location_text
from sotto.protocol.archive import files_of
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.content import File, Location, Text
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.membership import ConversationKind, MembershipOperation, verify_log

from .opening import ArchiveOpener

__all__ = [
    "ExportFilter",
    "ExportReport",
    "ExportedAttachment",
    "ExportedMessage",
    "open_archive",
]


@dataclass(frozen=True)
class ExportedAttachment:
    """A file a message carried: what the sender's signed File content says, and where
    the archive keeps its encrypted stream."""

    object_id: str
    name: str
    media_type: str
    size: int  # plaintext bytes
    archive_key: str
    key: bytes = field(repr=False)
    digest: bytes = field(repr=False)  # SHA-384 of the encrypted stream


@dataclass(frozen=True)
class ExportedMessage:
    conversation_id: str
    conversation_kind: str  # "direct" or "room"
    seq: int
    message_id: str
    sender_user_id: str
    sender_device_id: str
    server_time: int
    sent_at: int
    addressees: tuple[str, ...]
    text: str
    expires_at: int
    burn_after_read_s: int
    attachments: tuple[ExportedAttachment, ...] = ()


@dataclass(frozen=True)
class ExportFilter:
    start_ms: int | None = None
    end_ms: int | None = None
    user_id: str | None = None
    conversation_id: str | None = None

    def keeps(self, message: ExportedMessage) -> bool:
        if self.start_ms is not None and message.server_time < self.start_ms:
            return False
        if self.end_ms is not None and message.server_time >= self.end_ms:
            return False
        if self.conversation_id is not None and message.conversation_id != self.conversation_id:
            return False
        return self.user_id is None or self.user_id in (
            message.sender_user_id,
            *message.addressees,
        )


@dataclass
class ExportReport:
    records: int = 0
    distributions_opened: int = 0
    envelopes_opened: int = 0
    signatures_checked: int = 0
    not_displayed: int = 0
    exported: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "distributions_opened": self.distributions_opened,
            "envelopes_opened": self.envelopes_opened,
            "signatures_checked": self.signatures_checked,
            "not_displayed": self.not_displayed,
            "exported": self.exported,
            "problems": list(self.problems),
        }


_SENDERS: dict[tuple[str, str], tuple[DeviceCertificate, IdentityPublicKey]] = {}


def _sender(record: dict[str, Any]) -> tuple[DeviceCertificate, IdentityPublicKey]:
    """The record's sender, parsed once per certificate: a parsed certificate remembers
    the identity it verified under, so its two signatures are checked once, not per message."""
    sender = record.get("sender")
    if not isinstance(sender, dict):
        raise ValueError("the archive holds no certificate for its sender")
    cache_key = (str(sender["certificate"]), str(sender["identity_key"]))
    if cache_key not in _SENDERS:
        _SENDERS[cache_key] = (
            DeviceCertificate.parse(base64.b64decode(sender["certificate"])),
            IdentityPublicKey.parse(base64.b64decode(sender["identity_key"])),
        )
    return _SENDERS[cache_key]


class _Memberships:
    """Each conversation's verified membership, as it stood at a given time."""

    def __init__(self, records: Iterable[dict[str, Any]], report: ExportReport) -> None:
        ops: dict[str, dict[int, bytes]] = {}
        identities: list[IdentityPublicKey] = []
        for record in records:
            if record.get("kind") != "membership":
                continue
            ops.setdefault(record["conversation_id"], {})[int(record["seq"])] = base64.b64decode(
                record["op"]
            )
            with contextlib.suppress(ValueError, ProtocolError, KeyError):
                identities.append(_sender(record)[1])
        self._timeline: dict[str, list[tuple[int, tuple[str, ...], int]]] = {}
        for cid, by_seq in ops.items():
            ordered = [by_seq[seq] for seq in sorted(by_seq)]
            steps: list[tuple[int, tuple[str, ...], int]] = []
            for count in range(1, len(ordered) + 1):
                at = MembershipOperation.parse(ordered[count - 1]).timestamp
                try:
                    state = verify_log(ordered[:count], identities, conversation_id=cid, now=at)
                except ProtocolError as error:
                    report.problems.append(
                        f"conversation {cid}: membership log does not verify at operation "
                        f"{count - 1} ({error.code})"
                    )
                    break
                steps.append((at, tuple(sorted(state.members)), state.kind))
            self._timeline[cid] = steps

    def at(self, cid: str, when: int) -> tuple[tuple[str, ...], str] | None:
        steps = [s for s in self._timeline.get(cid, []) if s[0] <= when]
        if not steps:
            return None
        _at, members, kind = steps[-1]
        names = {ConversationKind.DIRECT: "direct", ConversationKind.SELF: "self"}
        return members, names.get(kind, "room")


def open_archive(
    records: Sequence[dict[str, Any]], opener: ArchiveOpener, keep: ExportFilter
) -> tuple[list[ExportedMessage], ExportReport]:
    report = ExportReport(records=len(records))
    for record in records:
        if record.get("kind") != "distribution":
            continue
        try:
            certificate, identity = _sender(record)
            opener.add_distribution(
                base64.b64decode(record["data"]),
                sender_certificate=certificate,
                sender_identity=identity,
                at=int(record["server_time"]),
            )
            report.distributions_opened += 1
            report.signatures_checked += 1
        except (ProtocolError, ValueError, KeyError) as error:
            report.problems.append(f"record {record.get('id')}: distribution not opened ({error})")
    memberships = _Memberships(records, report)
    envelopes = sorted(
        (r for r in records if r.get("kind") == "envelope"),
        key=lambda r: (r["conversation_id"], int(r["seq"])),
    )
    messages: list[ExportedMessage] = []
    for record in envelopes:
        cid, at = record["conversation_id"], int(record["server_time"])
        try:
            certificate, identity = _sender(record)
            opened = opener.open(
                base64.b64decode(record["envelope"]),
                sender_certificate=certificate,
                sender_identity=identity,
                at=at,
            )
        except (ProtocolError, ValueError, KeyError) as error:
            report.problems.append(f"record {record.get('id')}: not opened ({error})")
            continue
        report.envelopes_opened += 1
        report.signatures_checked += 1
        content = opened.content
        attachments: tuple[ExportedAttachment, ...] = ()
        if isinstance(content, Text):
            text = content.text
        elif isinstance(content, Location):
            place = location_record(content.latitude_e7, content.longitude_e7, content.label)
            text = location_text(place)
        elif isinstance(content, File):
            text = file_text(content)
            attachments = _attachment(record, content, report)
        else:
            report.not_displayed += 1
            continue
        membership = memberships.at(cid, at)
        members: tuple[str, ...]
        if membership is None:
            report.problems.append(f"record {record.get('id')}: no verified membership at its time")
            members, kind = (), "unknown"
        else:
            members, kind = membership
        header = opened.header
        message = ExportedMessage(
            conversation_id=cid,
            conversation_kind=kind,
            seq=int(record["seq"]),
            message_id=header.message_id.hex(),
            sender_user_id=header.sender_user_id,
            sender_device_id=header.sender_device_id,
            server_time=at,
            sent_at=header.timestamp,
            addressees=tuple(u for u in members if u != header.sender_user_id),
            text=text,
            expires_at=header.expires_at,
            burn_after_read_s=header.burn_after_read_s,
            attachments=attachments,
        )
        if keep.keeps(message):
            messages.append(message)
    report.exported = len(messages)
    return messages, report


def _attachment(
    record: dict[str, Any], content: File, report: ExportReport
) -> tuple[ExportedAttachment, ...]:
    """The archived copy of the file a message's signed content names (the record's entry
    for that object id; a message can only name a file the server attached to it)."""
    entry = next((e for e in files_of(record) if e["object_id"] == content.object_id), None)
    if entry is None or not entry.get("key"):
        why = "not in the record" if entry is None else entry.get("missing")
        report.problems.append(
            f"record {record.get('id')}: file {content.object_id} not archived ({why})"
        )
        return ()
    return (
        ExportedAttachment(
            object_id=content.object_id,
            name=content.name,
            media_type=content.media_type,
            size=content.size,
            archive_key=str(entry["key"]),
            key=content.key,
            digest=content.digest,
        ),
    )
