"""The client commands of the ``sotto`` CLI: parsed arguments in, text out, exit code back.

Every failure a person can cause or meet (wrong passphrase, unknown profile,
refused connection, server error) is printed as one ``sotto: ...`` line on
stderr with exit code 1 (2 for usage errors); never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from sotto.frames.answers_admin import RetentionAdminAnswer, RetentionOffAnswer
from sotto.protocol.errors import KeystoreError, ProtocolError
from sotto.protocol.keys import IdentityPublicKey

from . import retention_admin
from .api import AdminApi, fetch_info
from .audit import ArchiveReader, AuditReport, local_archive, read_log, verify_log
from .bulk import bulk_invite
from .devices import DeviceListing, KeysReport, approve_link, keys_publish, keys_status
from .devices import list_devices as list_user_devices
from .encoding import b64d
from .enrollment import enroll, link_device
from .errors import ClientError, UsageError
from .fingerprints import identity_fingerprint
from .messaging_commands import MESSAGING_HANDLERS
from .profile import DeviceKeys, Profile, ProfileInfo, check_profile_name, read_passphrase
from .render import format_time, render, render_json, render_table
from .retention import last_known, notice_text
from .sanitize import sanitize_block
from .server import ServerConfig, resolve_server
from .ui import ConsoleUi

__all__ = ["run_command"]


def run_command(args: argparse.Namespace) -> int:
    try:
        handler = _HANDLERS[args.command]
        handler(args)
    except KeyboardInterrupt:
        print("sotto: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sotto listen | head`: the reader left, which is not an error. Point stdout at
        # /dev/null so the interpreter's last flush does not complain about it either.
        with contextlib.suppress(OSError, ValueError):  # no real stdout: nothing to flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    except ClientError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeystoreError as exc:
        _error(exc.detail or exc.code.replace("_", " "))
        return 1
    except ProtocolError as exc:
        _error(str(exc))
        return 1
    return 0


def _error(text: str) -> None:
    # Details can quote the server or a peer: sanitised like any remote string.
    print(sanitize_block(text, "sotto: "), file=sys.stderr)


def _server(spec: str) -> ServerConfig:
    return resolve_server(spec, fetch_info)


def _open(args: argparse.Namespace) -> tuple[Profile, ProfileInfo, DeviceKeys, str]:
    profile = Profile.open(check_profile_name(args.profile))
    info = profile.read_info()
    passphrase = read_passphrase(confirm=False)
    return profile, info, profile.load_keys(passphrase), passphrase


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(render_json(value) if getattr(args, "json", False) else text)


# -- enrollment and linking --------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> None:
    name = check_profile_name(args.profile)
    server = _server(args.server)
    Profile(name).check_absent()  # before the prompt: no point typing a passphrase twice
    passphrase = read_passphrase(confirm=True)
    info = enroll(server, args.code, name, passphrase, ui=ConsoleUi())
    print(f"Profile {name!r} is ready: {info.handle} ({info.user_id}), device {info.device_id}")


def _link(args: argparse.Namespace) -> None:
    name = check_profile_name(args.profile)
    server = _server(args.server)
    Profile(name).check_absent()
    passphrase = read_passphrase(confirm=True)
    info = link_device(server, args.code, name, passphrase, ui=ConsoleUi(), timeout_s=args.timeout)
    print(f"Profile {name!r} is ready: {info.handle} ({info.user_id}), device {info.device_id}")


def _device(args: argparse.Namespace) -> None:
    # argparse allows only "add" here.
    _, info, keys, _ = _open(args)
    approve_link(info, keys, ui=ConsoleUi(), assume_yes=args.yes, timeout_s=args.timeout)


# -- devices, keys, whoami -------------------------------------------------------------------


def _devices(args: argparse.Namespace) -> None:
    _, info, keys, _ = _open(args)
    listing = list_user_devices(info, keys, args.user_id or info.user_id)
    _print(args, asdict(listing), _listing_text(listing))


def _listing_text(listing: DeviceListing) -> str:
    trust = {
        "own": "your identity key",
        "changed": "DOES NOT MATCH this profile's identity key: do not trust these devices",
        "unverified": "not verified: compare the safety number in person",
    }[listing.trust]
    lines = [f"user      {listing.user_id}", f"identity  {listing.identity_fingerprint} ({trust})"]
    if listing.safety_number is not None:
        lines.append(f"safety    {listing.safety_number}")
    rows = [
        {
            "device_id": d.device_id,
            "status": d.status,
            "check": "verified" if d.verified else f"INVALID: {d.problem}",
            "expires_at": d.expires_at,
            "key_fingerprint": d.key_fingerprint,
        }
        for d in listing.devices
    ]
    return "\n".join([*lines, "", render_table(rows)])


def _keys(args: argparse.Namespace) -> None:
    profile, info, keys, passphrase = _open(args)
    if args.keys_command == "publish":
        report = keys_publish(profile, info, keys, passphrase, rotate=args.rotate)
    else:
        report = keys_status(info, keys)
    _print(args, asdict(report), _keys_text(report, args.keys_command == "publish"))


def _keys_text(report: KeysReport, published: bool) -> str:
    expires = report.server.signed_prekey_expires_at
    lines = [
        f"one-time prekeys on server  {report.server.one_time_prekeys}",
        f"signed prekey expires       {'none' if expires is None else format_time(expires)}",
        f"one-time prekeys held here  {report.local_one_time}",
        f"signed prekey rotation      {'due' if report.signed_prekey_due else 'not due'}",
    ]
    if published:
        lines.append(
            f"published                   {report.published_one_time} one-time prekeys"
            + (", a new signed prekey" if report.rotated_signed else "")
        )
    return "\n".join(lines)


def _whoami(args: argparse.Namespace) -> None:
    profile = Profile.open(check_profile_name(args.profile))
    info = profile.read_info()
    identity = info.identity_public()
    value: dict[str, Any] = {
        "profile": profile.name,
        "handle": info.handle,
        "user_id": info.user_id,
        "device_id": info.device_id,
        "network_id": info.network_id,
        "network_name": info.network_name,
        "server": info.server.http,
        "identity_fingerprint": None if identity is None else identity_fingerprint(identity),
        "holds_identity_key": info.holds_identity,
        "created_at": info.created_at,
    }
    retention = last_known(profile.path)
    value["retention"] = None if retention is None else retention.to_json()
    text = render({k: v for k, v in value.items() if k != "retention"})
    _print(args, value, f"{text}\n{notice_text(retention)}")


# -- admin ---------------------------------------------------------------------------------------


def _retention(
    args: argparse.Namespace, server: ServerConfig, api: AdminApi
) -> retention_admin.RetentionShown | RetentionAdminAnswer | RetentionOffAnswer:
    command, network_id = args.retention_command, args.network_id
    if command == "show":
        return retention_admin.show(api, network_id)
    if command == "disable":
        return retention_admin.disable(api, network_id)
    kms = retention_admin.archive_kms(args.server, server, args.archive_key)
    if command == "enable":
        return retention_admin.enable(api, kms, network_id, args.years or 7)
    return retention_admin.rotate(api, kms, network_id, args.years)


def _retention_text(answer: RetentionAdminAnswer | RetentionOffAnswer) -> str:
    if answer["status"] == "off":
        return f"retention is off for {answer['network_id']} (never enabled)"
    officer = identity_fingerprint(
        IdentityPublicKey.parse(b64d(answer["officer_identity"], "officer identity"))
    )
    return render(
        {
            "network_id": answer["network_id"],
            "status": answer["status"],
            "years": answer["years"],
            "generation": answer["generation"],
            "retention_device": answer["device_id"],
            "officer_fingerprint": officer,
        }
    )


def _admin(args: argparse.Namespace) -> None:
    server = _server(args.server)
    api = AdminApi(server)
    command = args.admin_command
    if command == "retention":
        shown = _retention(args, server, api)
        _print(args, shown, _retention_text(shown))
        return
    if command == "audit":
        _audit(api, args)
        return
    if command == "invite":
        invited = api.invite(args.network_id, args.handle, ttl_s=args.ttl)
        # The only time the code is ever shown: say what to do with it.
        text = render(invited) + (
            "\n\nGive the code to the user (it is shown only this once); they run:\n"
            f"  sotto enroll --server {args.server} --code {invited['code']} "
            f"--profile {args.handle}"
        )
        _print(args, invited, text)
        return
    answer: Mapping[str, Any]
    if command == "network":
        if args.network_command == "create":
            answer = api.create_network(args.name)
        else:
            answer = api.list_networks()
    elif command in ("policy", "group"):
        answer = _policy_admin(api, args)
    elif command == "invites":
        answer = api.list_invites(args.network_id)
    elif command == "invite-revoke":
        answer = api.revoke_invite(args.network_id, args.user_id)
    elif command == "invite-reissue":
        answer = api.reissue_invite(args.network_id, args.user_id, ttl_s=args.ttl)
    elif command == "invite-bulk":
        answer = bulk_invite(api, args.network_id, args.csv, ttl_s=args.ttl)
    else:
        calls: dict[str, Callable[[str], Mapping[str, Any]]] = {
            "users": api.list_users,
            "user": api.get_user,
            "suspend": api.suspend_user,
            "reinstate": api.reinstate_user,
            "device": api.get_device,
            "revoke": api.revoke_device,
        }
        answer = calls[command](args.target)
    _print(args, answer, render(answer))


def _audit(api: AdminApi, args: argparse.Namespace) -> None:
    report = read_log(api, args.network_id)
    if args.verify:
        archive = (
            ArchiveReader(args.archive_bucket)
            if args.archive_bucket
            else local_archive(args.server)
        )
        verify_log(report, archive)
    rows = []
    for entry in report.entries:
        fields = entry.fields()
        if args.since is not None and int(fields.get("at", 0)) < args.since:
            continue
        rows.append({"seq": entry.seq, "hash": entry.hash, **fields})
    if args.json:
        print(
            render_json({"network_id": args.network_id, "entries": rows, **_verdict(report, args)})
        )
    else:
        table = [
            {
                "seq": row["seq"],
                "at": row.get("at"),
                "event": row.get("event"),
                "actor": f"{row.get('actor', {}).get('kind')}:{row.get('actor', {}).get('id')}",
                "subject": " ".join(f"{k}={v}" for k, v in sorted(row.get("subject", {}).items())),
                "outcome": row.get("outcome"),
            }
            for row in rows
        ]
        print(render_table(table))
        if args.verify and not report.problems:
            print(
                f"\nverified: {len(report.entries)} entries chain to the head; "
                f"{len(report.segments)} sealed segments match"
            )
    if args.verify and report.problems:
        raise ClientError("the audit log does not verify:\n  " + "\n  ".join(report.problems[:50]))


def _verdict(report: AuditReport, args: argparse.Namespace) -> dict[str, Any]:
    if not args.verify:
        return {}
    return {"verified": not report.problems, "problems": report.problems}


def _policy_admin(api: AdminApi, args: argparse.Namespace) -> Mapping[str, Any]:
    from sotto.cli import policy_settings

    if args.admin_command == "group":
        if args.group_command == "create":
            return api.create_group(args.network_id, args.group)
        if args.group_command == "add":
            return api.add_group_members(args.network_id, args.group, args.user_ids)
        return api.remove_group_members(args.network_id, args.group, args.user_ids)
    if args.policy_command == "set":
        settings = policy_settings(args)
        if not settings:
            raise UsageError("name at least one knob to set (e.g. --max-expiry 1h) or --clear")
        return api.set_policy(args.network_id, settings, group=args.group)
    shown = api.show_policy(args.network_id)
    if args.user:
        return {**shown, "user": api.user_policy(args.user)}
    return shown


def _records(args: argparse.Namespace) -> None:
    from sotto.records import commands as records_commands

    if args.records_command == "verify-package":
        problems = records_commands.verify_package_command(args.directory)
        value = {"directory": args.directory, "ok": not problems, "problems": problems}
        text = (
            "package OK: every file matches SHA256SUMS"
            if not problems
            else "\n".join(["package has PROBLEMS:", *(f"  - {p}" for p in problems)])
        )
        _print(args, value, text)
        if problems:
            raise RecordsProblems(len(problems))
        return
    if not args.server:
        raise UsageError("sotto records: --server is required")
    server = _server(args.server)
    if args.records_command == "verify":
        report = records_commands.verify_command(
            args.server, server, args.network_id, args.archive_bucket, args.messages_table
        )
        _print(args, asdict(report) | {"ok": report.ok}, report.text())
        if not report.ok:
            raise RecordsProblems(len(report.problems))
        return
    if args.records_command in ("hold", "release"):
        held = records_commands.hold_command(args, server, args.records_command == "hold")
        _print(
            args,
            held,
            f"legal hold {held['legal_hold']} on {len(held['segments'])} segment(s) and "
            f"{len(held['files'])} file(s) of {held['network_id']}",
        )
        return
    if args.records_command == "extend-locks":
        extended = records_commands.extend_locks_command(args, server)
        count = len(extended["extended"])
        _print(
            args,
            extended,
            f"extended {count} lock(s) of {extended['network_id']} to the end of their"
            f" retention ({extended['until']}); {extended['already_long_enough']} already"
            " locked long enough"
            if count
            else f"every archived object of {extended['network_id']} is locked long enough",
        )
        return
    summary = records_commands.export_command(args, server, AdminApi(server))
    _print(args, summary, render(summary))
    if summary["problems"]:
        raise RecordsProblems(len(summary["problems"]))


class RecordsProblems(ClientError):
    """Verify found problems: already printed; the exit code says so."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the archive has {count} problem(s)")


_HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "enroll": _enroll,
    "link": _link,
    "device": _device,
    "devices": _devices,
    "keys": _keys,
    "whoami": _whoami,
    "admin": _admin,
    "records": _records,
    **MESSAGING_HANDLERS,
}
