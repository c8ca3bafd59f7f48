"""The ``sotto`` command line."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_duration", "parse_since", "parse_size", "policy_settings"]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sotto" / "local"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sotto")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sotto", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sotto {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the whole backend on this machine")
    local_commands = local.add_subparsers(dest="local_command", required=True)
    up = local_commands.add_parser("up", help="start the local stack until Ctrl-C")
    up.add_argument("--port", type=int, default=0, help="WebSocket port (default: any free)")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"where state and endpoints.json live (default: {_default_data_dir()})",
    )
    kept = up.add_mutually_exclusive_group()
    kept.add_argument(
        "--fresh", action="store_true", help="discard the saved state and start empty"
    )
    kept.add_argument(
        "--ephemeral", action="store_true", help="keep nothing: no state is read or saved"
    )
    up.add_argument(
        "--save-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="save the state this often too (always on Ctrl-C); default 30",
    )
    up.add_argument(
        "--verbose", action="store_true", help="print the handlers' JSON logs (quiet by default)"
    )
    # Shorter limits let a client's reconnect logic be exercised in seconds.
    up.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="close sockets idle this long, as API Gateway does after 10 minutes",
    )
    up.add_argument(
        "--max-connection",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="close sockets open this long, as API Gateway does after 2 hours",
    )
    up.add_argument(
        "--rate-limit-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply every rate limit (test suites enroll hundreds of devices from one IP)",
    )
    _add_client_commands(commands)
    return parser


def _profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=os.environ.get("SOTTO_PROFILE") or "default",
        help="profile name under SOTTO_HOME (default: $SOTTO_PROFILE or 'default')",
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_client_commands(commands: Any) -> None:
    enroll = commands.add_parser("enroll", help="enroll this device with an invite code")
    enroll.add_argument("--server", required=True, help="HTTP API URL, or local data dir")
    enroll.add_argument("--code", required=True, help="the invite code from your administrator")
    _profile_option(enroll)

    link = commands.add_parser("link", help="link this new device to your existing account")
    link.add_argument("--server", required=True, help="HTTP API URL, or local data dir")
    link.add_argument("--code", required=True, help="the code shown by 'sotto device add'")
    link.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    _profile_option(link)

    device = commands.add_parser("device", help="manage this user's devices")
    device_commands = device.add_subparsers(dest="device_command", required=True)
    add = device_commands.add_parser("add", help="approve a new device (on an existing one)")
    add.add_argument("--yes", action="store_true", help="approve without asking")
    add.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    _profile_option(add)

    devices = commands.add_parser("devices", help="list and verify a user's devices")
    devices.add_argument("user_id", nargs="?", help="user id (default: your own)")
    _profile_option(devices)
    _json_option(devices)

    keys = commands.add_parser("keys", help="this device's prekeys on the server")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    status = keys_commands.add_parser("status", help="prekeys stored on the server")
    _profile_option(status)
    _json_option(status)
    publish = keys_commands.add_parser("publish", help="replenish prekeys, rotate when due")
    publish.add_argument("--rotate", action="store_true", help="rotate the signed prekey now")
    _profile_option(publish)
    _json_option(publish)

    whoami = commands.add_parser("whoami", help="the user and device of a profile")
    _profile_option(whoami)
    _json_option(whoami)

    _add_messaging_commands(commands)
    _add_records_commands(commands)

    admin = commands.add_parser("admin", help="administer a deployment (AWS credentials)")
    admin.add_argument("--server", required=True, help="HTTP API URL, or local data dir")
    _json_option(admin)
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    network = admin_commands.add_parser("network", help="networks")
    network_commands = network.add_subparsers(dest="network_command", required=True)
    network_commands.add_parser("create", help="create a network").add_argument("name")
    network_commands.add_parser("list", help="list networks")
    invite = admin_commands.add_parser("invite", help="invite a user; prints the one-time code")
    invite.add_argument("network_id")
    invite.add_argument("handle")
    invite.add_argument(
        "--ttl", type=parse_duration, default=None, metavar="DURATION", help="e.g. 30m, 12h, 7d"
    )
    retention = admin_commands.add_parser(
        "retention", help="a network's retention identity (records archive)"
    )
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    for name, text in (
        ("enable", "create the retention identity here (keys wrapped by KMS) or turn it on"),
        ("disable", "stop archiving new messages of the network"),
        ("rotate", "a new retention key, certified by the officer (compliance role)"),
        ("show", "the network's retention identity and its generations"),
    ):
        sub = retention_commands.add_parser(name, help=text)
        sub.add_argument("network_id", metavar="NETWORK_ID")
        if name in ("enable", "rotate"):
            sub.add_argument("--years", type=int, default=None, help="retention period (years)")
            sub.add_argument(
                "--archive-key", default=None, help="the archive KMS key (alias or ARN)"
            )
    for name, metavar, text in (
        ("users", "NETWORK_ID", "users of a network"),
        ("user", "USER_ID", "a user and its devices"),
        ("suspend", "USER_ID", "suspend a user; closes its devices' sockets"),
        ("reinstate", "USER_ID", "reinstate a suspended user"),
        ("device", "DEVICE_ID", "a device"),
        ("revoke", "DEVICE_ID", "revoke a device; closes its sockets"),
    ):
        admin_commands.add_parser(name, help=text).add_argument("target", metavar=metavar)
    _add_policy_commands(admin_commands)
    _add_invite_and_audit_commands(admin_commands)


def _add_invite_and_audit_commands(admin_commands: Any) -> None:
    invites = admin_commands.add_parser("invites", help="a network's pending invites")
    invites.add_argument("network_id")
    revoke = admin_commands.add_parser("invite-revoke", help="revoke a pending invite")
    revoke.add_argument("network_id")
    revoke.add_argument("user_id")
    reissue = admin_commands.add_parser(
        "invite-reissue", help="a new code for a pending invite (the old one stops working)"
    )
    reissue.add_argument("network_id")
    reissue.add_argument("user_id")
    reissue.add_argument("--ttl", type=parse_duration, default=None, metavar="DURATION")
    bulk = admin_commands.add_parser(
        "invite-bulk", help="invite every row of a CSV (handle, display name, group)"
    )
    bulk.add_argument("network_id")
    bulk.add_argument("csv", type=Path, help="CSV file; a header row is optional")
    bulk.add_argument("--ttl", type=parse_duration, default=None, metavar="DURATION")
    audit = admin_commands.add_parser("audit", help="a network's audit log")
    audit.add_argument("network_id")
    audit.add_argument(
        "--since", type=parse_since, default=None, metavar="TIME", help="e.g. 24h, or 2026-12-01"
    )
    audit.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain and the sealed segments; exit 1 naming any gap or edit",
    )
    audit.add_argument(
        "--archive-bucket", help="the archive bucket (stack output); default: the local stack's"
    )


def parse_since(text: str) -> int:
    """A duration back from now (``24h``) or an ISO date/time (UTC) -> epoch milliseconds."""
    import time
    from datetime import UTC, datetime

    try:
        return int(time.time() * 1000) - parse_duration(text) * 1000
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (e.g. 24h, 2026-12-01)") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _switch(text: str) -> bool:
    value = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"not yes or no: {text!r}")
    return value[text.lower()]


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``100K``, ``1024`` -> bytes (binary units)."""
    match = re.fullmatch(r"(\d{1,12})([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)")
    return int(match[1]) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match[2].upper()]


def _policy_options() -> dict[str, tuple[str, Any, str]]:
    """Policy knobs the CLI sets: option -> (request field, parser, help)."""
    return {
        "--max-expiry": ("max_expiry_s", parse_duration, "longest expiry, e.g. 1h, 7d"),
        "--max-burn": ("max_burn_s", parse_duration, "longest burn-on-read, e.g. 10m"),
        "--files": ("files_allowed", _switch, "whether files may be sent: yes or no"),
        "--max-file-size": ("max_file_bytes", parse_size, "largest file, e.g. 500M (default 5G)"),
        "--location": ("location_allowed", _switch, "whether location may be shared: yes or no"),
        "--calls": ("calls_allowed", _switch, "whether calls are allowed: yes or no"),
        "--read-receipts": ("read_receipts", str, "disabled, enabled or forced"),
        "--max-devices": ("max_devices", int, "most devices per user"),
    }


def _add_policy_commands(admin_commands: Any) -> None:
    policy = admin_commands.add_parser("policy", help="network policy and security groups")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    show = policy_commands.add_parser("show", help="a network's policy and groups")
    show.add_argument("network_id")
    show.add_argument("--user", help="also the effective policy of this user")
    set_ = policy_commands.add_parser("set", help="set knobs of the network's or a group's policy")
    set_.add_argument("network_id")
    set_.add_argument("--group", help="a security group (default: the network's default)")
    for option, (dest, kind, text) in _policy_options().items():
        choices = ["disabled", "enabled", "forced"] if dest == "read_receipts" else None
        set_.add_argument(option, dest=dest, type=kind, default=None, help=text, choices=choices)
    set_.add_argument(
        "--clear",
        action="append",
        default=[],
        choices=sorted(option.removeprefix("--") for option in _policy_options()),
        help="stop this document constraining a knob (repeatable)",
    )
    group = admin_commands.add_parser("group", help="security groups and their members")
    group_commands = group.add_subparsers(dest="group_command", required=True)
    create = group_commands.add_parser("create", help="create a security group")
    create.add_argument("network_id")
    create.add_argument("group")
    for verb, text in (("add", "add users to a group"), ("remove", "take users out of a group")):
        members = group_commands.add_parser(verb, help=text)
        members.add_argument("network_id")
        members.add_argument("group")
        members.add_argument("user_ids", nargs="+", metavar="USER_ID")


def _add_records_commands(commands: Any) -> None:
    records = commands.add_parser(
        "records", help="the records officer's tools (compliance role credentials)"
    )
    records.add_argument("--server", default=None, help="HTTP API URL, or local data dir")
    records.add_argument("--archive-bucket", default=None, help="the ArchiveBucket (stack output)")
    records.add_argument("--messages-table", default=None, help="the MessagesTable (stack output)")
    _json_option(records)
    records_commands = records.add_subparsers(dest="records_command", required=True)
    verify = records_commands.add_parser(
        "verify", help="check a network's archive: chain, digests, locks, sequence numbers"
    )
    verify.add_argument("network_id", metavar="NETWORK_ID")
    export = records_commands.add_parser(
        "export", help="decrypt a network's archive here into a verifiable package"
    )
    export.add_argument("network_id", metavar="NETWORK_ID")
    export.add_argument("--format", choices=("rsmf", "eml"), required=True)
    export.add_argument("--out", required=True, help="an empty or new directory")
    export.add_argument("--from", dest="start", default=None, help="ISO 8601 date or time (UTC)")
    export.add_argument("--to", dest="end", default=None, help="ISO 8601 date or time (UTC)")
    export.add_argument("--user", default=None, help="a user id: messages from or to them")
    export.add_argument("--conversation", default=None, help="a conversation id")
    export.add_argument("--archive-key", default=None, help="the archive KMS key (alias or ARN)")
    for name, text in (
        ("hold", "place S3 legal holds on the archive segments of a user or conversation"),
        ("release", "remove those legal holds"),
    ):
        hold = records_commands.add_parser(name, help=text)
        hold.add_argument("network_id", metavar="NETWORK_ID")
        scope = hold.add_mutually_exclusive_group(required=True)
        scope.add_argument("--user", default=None, help="a user id")
        scope.add_argument("--conversation", default=None, help="a conversation id")
        hold.add_argument("--from", dest="start", default=None, help="ISO 8601 (UTC)")
        hold.add_argument("--to", dest="end", default=None, help="ISO 8601 (UTC)")
    extend = records_commands.add_parser(
        "extend-locks",
        help="lock every archived object for its network's whole retention period",
    )
    extend.add_argument("network_id", metavar="NETWORK_ID")
    package = records_commands.add_parser(
        "verify-package", help="re-check an export package offline (digests, completeness)"
    )
    package.add_argument("directory", metavar="DIR")


def _add_messaging_commands(commands: Any) -> None:
    target_help = "a user id or contact handle, or #ROOM (a local room label)"
    send = commands.add_parser("send", help="send an end-to-end encrypted message")
    send.add_argument("target", metavar="USER|#ROOM", help=target_help)
    send.add_argument("text", nargs="?", help="the message (with --file: a caption after it)")
    send.add_argument(
        "--file", type=Path, metavar="PATH", help="send a file (up to 5 GiB; resumes if rerun)"
    )
    send.add_argument("--location", metavar="LAT,LON", help="share a location (decimal degrees)")
    send.add_argument("--label", default="", metavar="TEXT", help="a place name for --location")
    send.add_argument(
        "--expires", type=parse_duration, metavar="DURATION", help="delete everywhere after this"
    )
    send.add_argument(
        "--burn", type=parse_duration, metavar="DURATION", help="delete this long after reading"
    )
    _profile_option(send)
    _json_option(send)

    listen = commands.add_parser("listen", help="sync, then print messages as they arrive")
    listen.add_argument("--once", action="store_true", help="exit after the initial sync")
    listen.add_argument(
        "--download", type=Path, metavar="DIR", help="save received files here once verified"
    )
    _profile_option(listen)
    listen.add_argument("--json", action="store_true", help="one JSON object per line")

    chat = commands.add_parser(
        "chat", help="full-screen chat: every conversation, unread counts (Ctrl-Q ends)"
    )
    chat.add_argument(
        "target", nargs="?", metavar="USER|#ROOM", help=f"open this one first: {target_help}"
    )
    chat.add_argument(
        "--plain",
        action="store_true",
        help="line mode for one conversation (Ctrl-D ends); also without a terminal",
    )
    chat.add_argument(
        "--download", type=Path, metavar="DIR", help="save received files here once verified"
    )
    _profile_option(chat)

    files = commands.add_parser("files", help="files sent to this device")
    files_commands = files.add_subparsers(dest="files_command", required=True)
    get = files_commands.add_parser("get", help="fetch and verify a received file")
    get.add_argument("message_id", metavar="MESSAGE_ID")
    get.add_argument("--out", type=Path, required=True, metavar="PATH", help="never overwritten")
    _profile_option(get)
    _json_option(get)

    history = commands.add_parser("history", help="a conversation's messages on this device")
    history.add_argument("target", metavar="USER|#ROOM", help=target_help)
    history.add_argument(
        "--limit", type=int, default=None, metavar="N", help="only the last N messages"
    )
    _profile_option(history)
    _json_option(history)

    conversations = commands.add_parser("conversations", help="this user's conversations")
    _profile_option(conversations)
    _json_option(conversations)

    room = commands.add_parser("room", help="create and moderate rooms, leave them, name them")
    room_commands = room.add_subparsers(dest="room_command", required=True)
    create = room_commands.add_parser("create", help="create a room (you are its moderator)")
    create.add_argument("name", help="your label; never sent to the server in plaintext")
    create.add_argument("members", nargs="+", metavar="MEMBER", help="user ids or handles")
    _profile_option(create)
    add = room_commands.add_parser("add", help="add members to a room you moderate")
    add.add_argument("room", metavar="#ROOM")
    add.add_argument("users", nargs="+", metavar="USER")
    _profile_option(add)
    name = room_commands.add_parser("name", help="label a room someone else created")
    name.add_argument("conversation_id")
    name.add_argument("name")
    _profile_option(name)
    members = room_commands.add_parser("members", help="a room's members and their roles")
    members.add_argument("room", metavar="#ROOM")
    _profile_option(members)
    _json_option(members)
    remove = room_commands.add_parser("remove", help="remove members from a room you moderate")
    remove.add_argument("room", metavar="#ROOM")
    remove.add_argument("users", nargs="+", metavar="USER")
    _profile_option(remove)
    leave = room_commands.add_parser("leave", help="leave a room")
    leave.add_argument("room", metavar="#ROOM")
    _profile_option(leave)
    for verb, text in (
        ("promote", "make a member a moderator"),
        ("demote", "make a moderator a member"),
    ):
        role = room_commands.add_parser(verb, help=text)
        role.add_argument("room", metavar="#ROOM")
        role.add_argument("user", metavar="USER")
        _profile_option(role)
    rename = room_commands.add_parser(
        "rename", help="set the room's name (and topic) for every member, end-to-end encrypted"
    )
    rename.add_argument("room", metavar="#ROOM")
    rename.add_argument("name")
    rename.add_argument("--topic", default="", help="a topic line members see")
    _profile_option(rename)

    verify = commands.add_parser("verify", help="a user's safety number; mark it compared")
    verify.add_argument("user", metavar="USER")
    verify.add_argument("--confirm", action="store_true", help="the numbers matched in person")
    verify.add_argument(
        "--accept-change",
        action="store_true",
        help="trust a CHANGED identity key (after comparing the new safety number)",
    )
    _profile_option(verify)
    _json_option(verify)

    contacts = commands.add_parser(
        "contacts", help="your names for user ids (shared end-to-end with your other devices)"
    )
    contacts_commands = contacts.add_subparsers(dest="contacts_command")
    contact_add = contacts_commands.add_parser("add", help="remember HANDLE as USER_ID")
    contact_add.add_argument("handle")
    contact_add.add_argument("user_id")
    _profile_option(contact_add)
    _json_option(contact_add)
    contact_remove = contacts_commands.add_parser("remove", help="forget the contact HANDLE")
    contact_remove.add_argument("handle")
    _profile_option(contact_remove)
    _json_option(contact_remove)
    _profile_option(contacts)
    _json_option(contacts)


def policy_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The request body of ``policy set``: the knobs given, and null for each cleared."""
    options = _policy_options()
    settings = {
        dest: getattr(args, dest)
        for dest, _kind, _text in options.values()
        if getattr(args, dest, None) is not None
    }
    for name in args.clear:
        settings[options[f"--{name}"][0]] = None
    return settings


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d`` -> seconds."""
    match = re.fullmatch(r"(\d{1,9})([smhd]?)", text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 12h, 7d)")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "local" and args.local_command == "up":
        # Imported here: the local stack pulls in moto, which the client does not need.
        from sotto.local.gateway import GatewayLimits
        from sotto.local.stack import run

        if not 0 <= args.port <= 65535:
            print("sotto: --port must be between 0 and 65535", file=sys.stderr)
            return 2
        if args.idle_timeout <= 0 or args.max_connection <= 0:
            print("sotto: timeouts must be positive", file=sys.stderr)
            return 2
        if not 0 < args.rate_limit_scale <= 10_000:
            print("sotto: --rate-limit-scale must be in (0, 10000]", file=sys.stderr)
            return 2
        if args.save_every <= 0:
            print("sotto: --save-every must be positive", file=sys.stderr)
            return 2
        limits = GatewayLimits(
            idle_timeout_seconds=args.idle_timeout, max_connection_seconds=args.max_connection
        )
        return run(
            args.data_dir or _default_data_dir(),
            args.port,
            limits,
            args.rate_limit_scale,
            persist=not args.ephemeral,
            fresh=args.fresh,
            save_every_s=args.save_every,
            verbose=args.verbose,
        )
    # Imported here: `local up` must not pay for (or depend on) the client.
    from sotto.client.commands import run_command

    return run_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
