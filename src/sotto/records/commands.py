"""The ``sotto records`` commands' work: read the archive, unwrap keys, write packages.

Run on the records officer's machine with the compliance role's credentials:
the archive is read from S3 and the head from DynamoDB, the retention keys
are unwrapped by KMS here, and everything is decrypted here. Nothing
decrypted leaves this machine except into the package directory.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sotto.client import retention_admin
from sotto.client.api import AdminApi
from sotto.client.encoding import b64d
from sotto.client.errors import UsageError
from sotto.client.server import ServerConfig
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import open_device

from .archive_store import ArchiveStore, archive_store
from .export import ExportFilter, open_archive
from .holds import HoldScope, files_in_scope, segments_in_scope
from .locks import short_locks
from .opening import ArchiveOpener
from .package import verify_package, write_package
from .verify import VerifyReport, archived_files, committed_chain, verify_archive

__all__ = [
    "export_command",
    "extend_locks_command",
    "hold_command",
    "verify_command",
    "verify_package_command",
]


def _verify(store: ArchiveStore, network_id: str) -> tuple[VerifyReport, list[dict[str, Any]]]:
    segments, unreadable = store.segments(network_id)
    head = store.head(network_id)
    committed = committed_chain(segments, head)
    file_keys = archived_files(committed)
    locks = {key: store.lock(key) for key in [*(k for k, _s in segments), *file_keys]}
    digests = {key: store.file_digest(key) for key in file_keys}
    report = verify_archive(network_id, segments, head, locks, now=datetime.now(UTC), files=digests)
    report.problems = unreadable + report.problems
    report.short_locks = len(short_locks(committed, locks))
    records = [r for _key, s in committed for r in s.records]
    return report, records


def verify_command(
    spec: str, server: ServerConfig, network_id: str, bucket: str | None, table: str | None
) -> VerifyReport:
    return _verify(archive_store(spec, server, bucket, table), network_id)[0]


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not an ISO 8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _opener(api: AdminApi, kms: retention_admin.ArchiveKms, network_id: str) -> ArchiveOpener:
    shown = api.get_retention(network_id)
    if shown["status"] == "off":
        raise UsageError(f"retention was never enabled for {network_id}")
    officer = IdentityPublicKey.parse(b64d(shown["officer_identity"], "officer identity"))
    devices = []
    for generation in shown["generations"]:
        identity = retention_admin.served_identity(shown, generation)
        key = kms.unwrap(
            b64d(generation["wrapped_device_key"], "wrapped key"),
            network_id,
            retention_admin.RETENTION_PURPOSE,
            generation["device_id"],
        )
        devices.append(open_device(identity, key))
    return ArchiveOpener(officer, devices)


def export_command(args: argparse.Namespace, server: ServerConfig, api: AdminApi) -> dict[str, Any]:
    network_id = args.network_id
    store = archive_store(args.server, server, args.archive_bucket, args.messages_table)
    verified, records = _verify(store, network_id)
    kms = retention_admin.archive_kms(args.server, server, args.archive_key)
    keep = ExportFilter(_ms(args.start), _ms(args.end), args.user, args.conversation)
    messages, report = open_archive(records, _opener(api, kms, network_id), keep)
    report.problems = verified.problems + report.problems
    asked = {
        "from": args.start,
        "to": args.end,
        "user": args.user,
        "conversation": args.conversation,
        "segments_verified": verified.segments,
    }
    out = Path(args.out)
    written = write_package(
        out, network_id, args.format, messages, report, asked, fetch=store.file_stream
    )
    return {
        "network_id": network_id,
        "format": args.format,
        "out": str(out),
        "files": len(written),
        "messages": report.exported,
        "signatures_checked": report.signatures_checked,
        "problems": report.problems,
    }


def hold_command(args: argparse.Namespace, server: ServerConfig, on: bool) -> dict[str, Any]:
    """Place (``on``) or remove legal holds on the committed segments of a scope."""
    try:
        scope = HoldScope(args.user, args.conversation, _ms(args.start), _ms(args.end))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    store = archive_store(args.server, server, args.archive_bucket, args.messages_table)
    segments, _unreadable = store.segments(args.network_id)
    committed = committed_chain(segments, store.head(args.network_id))
    keys = segments_in_scope(scope, committed)
    file_keys = files_in_scope(scope, committed)
    for key in [*keys, *file_keys]:
        store.set_legal_hold(key, on)
    return {
        "network_id": args.network_id,
        "legal_hold": "ON" if on else "OFF",
        "user": args.user,
        "conversation": args.conversation,
        "from": args.start,
        "to": args.end,
        "segments": keys,
        "files": file_keys,
    }


def extend_locks_command(args: argparse.Namespace, server: ServerConfig) -> dict[str, Any]:
    """Lock every committed segment and file copy for its network's whole retention period.

    Each object keeps its lock mode (COMPLIANCE in prod stages: it can only be
    extended, never shortened or removed); one that is locked long enough is
    left alone, so running it again changes nothing.
    """
    store = archive_store(args.server, server, args.archive_bucket, args.messages_table)
    segments, _unreadable = store.segments(args.network_id)
    committed = committed_chain(segments, store.head(args.network_id))
    file_keys = archived_files(committed)
    locks = {key: store.lock(key) for key in [*(k for k, _s in committed), *file_keys]}
    short = short_locks(committed, locks)
    for key, until in sorted(short.items()):
        store.extend_lock(key, locks[key].mode or "COMPLIANCE", until)
    return {
        "network_id": args.network_id,
        "extended": sorted(short),
        "already_long_enough": len(locks) - len(short),
        "until": max((u.isoformat() for u in short.values()), default=None),
    }


def verify_package_command(directory: str) -> list[str]:
    return verify_package(Path(directory))
