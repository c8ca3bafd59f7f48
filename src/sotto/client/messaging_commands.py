"""The messaging commands of the ``sotto`` CLI: send, listen, chat, history, conversations,
room, verify, contacts.

Naming people and rooms (kept simple on purpose):

* ``USER`` is a name from this profile's contacts (``sotto contacts add NAME
  USER_ID``), a user id (``usr-...``), or a handle of the network, looked up
  once (``lookup_user``) with the identity key pinned on first contact.
* ``#ROOM`` is a local label given with ``sotto room create`` (or ``sotto
  room name`` for a room someone else created); the server knows rooms only
  by opaque ids; labels (and contacts) reach this user's other devices end-to-end
  encrypted (``self_sync``), never the server in plaintext.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sotto.protocol.content import Text

from .errors import ClientError, MessagingError, UsageError
from .events import Event, MessageEvent, NoticeEvent, event_of
from .files import parse_coordinates, printable
from .listening import follow
from .messenger import Messenger, SafetyReport
from .profile import Profile, check_profile_name, read_passphrase
from .render import format_time, local_time, render_json, render_table
from .retention import notice_text
from .sanitize import sanitize, sanitize_block
from .store import StoredMessage

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["MESSAGING_HANDLERS"]


def _messenger(args: argparse.Namespace) -> Messenger:
    profile = Profile.open(check_profile_name(args.profile))
    info = profile.read_info()
    passphrase = read_passphrase(confirm=False)
    return Messenger.open(profile, info, profile.load_keys(passphrase), passphrase)


def _emit(events: Iterable[Event], as_json: bool) -> None:
    for event in events:
        line = json.dumps(event.to_json(), sort_keys=True) if as_json else event.text_line()
        print(line, flush=True)


def _progress(quiet: bool, what: str) -> Progress:
    """A bar with rate and ETA on the terminal's stderr; nothing with --json or no terminal."""
    # rich costs ~15 ms to import: only the file commands pay for it.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(what),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet or not sys.stderr.isatty(),
        transient=True,
    )


def _send(args: argparse.Namespace) -> None:
    chosen = [bool(args.file), bool(args.location)]
    if sum(chosen) > 1:
        raise UsageError("send a file or a location, not both")
    if not any(chosen) and args.text is None:
        raise UsageError("say what to send: TEXT, --file PATH or --location LAT,LON")
    if args.label and not args.location:
        raise UsageError("--label goes with --location")
    expires_s, burn_s = args.expires or 0, args.burn or 0
    timers = {"expires_s": expires_s, "burn_s": burn_s}
    with _messenger(args) as messenger:
        if args.file:
            if not args.file.is_file():
                raise UsageError(f"{args.file} is not a readable file")
            with _progress(args.json, printable(args.file.name)) as bar:
                task = bar.add_task("upload", total=None)
                sent = messenger.send_file(
                    args.target,
                    args.file,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    expires_s=expires_s,
                    burn_s=burn_s,
                )
            if args.text:
                messenger.send_text(args.target, args.text, **timers)
        elif args.location:
            try:
                lat, lon = parse_coordinates(args.location)
            except ValueError as error:
                raise UsageError(str(error)) from None
            sent = messenger.send_location(args.target, lat, lon, label=args.label, **timers)
        else:
            sent = messenger.send_text(args.target, args.text, **timers)
        retention = messenger.retention()
    value = {
        "conversation_id": sent.conversation_id,
        "seq": sent.seq,
        "message_id": sent.message_id,
        "server_time": sent.server_time,
        "delete_at": sent.delete_at,
        "retention": retention.to_json(),
    }
    if args.json:
        print(render_json(value))
    else:
        print(f"sent #{sent.seq} to {args.target} at {format_time(sent.server_time)}")
        if retention.enabled:
            print(notice_text(retention))


def _downloads(messenger: Messenger, events: list[Event], directory: Path | None) -> list[Event]:
    """Save each received file into ``directory`` (verified first); a failure is a notice."""
    if directory is None:
        return events
    out: list[Event] = []
    for event in events:
        out.append(event)
        if not isinstance(event, MessageEvent) or event.attachment is None or event.outgoing:
            continue
        try:
            saved = messenger.download(event.message_id, directory)
        except ClientError as error:
            out.append(NoticeEvent(event.conversation_id, "file_not_saved", str(error)))
            continue
        out.append(NoticeEvent(event.conversation_id, "file_saved", f"saved {saved}"))
    return out


def _check_download_dir(directory: Path | None) -> None:
    if directory is not None and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")


def _listen(args: argparse.Namespace) -> None:
    # Status lines go to stderr: stdout is the messages, for people and for pipes alike.
    def say(text: str) -> None:
        print(f"sotto: {text}", file=sys.stderr, flush=True)

    _check_download_dir(args.download)
    with _messenger(args) as messenger:
        retention = messenger.retention()
        # Said whenever it is on, as Wickr's "Data Retention Turned On" banner; silence means off.
        if retention.enabled and args.json:
            print(json.dumps({"type": "retention", **retention.to_json()}, sort_keys=True))
        elif retention.enabled:
            print(notice_text(retention), flush=True)
        try:
            events = _downloads(messenger, messenger.sync(read=True), args.download)
            _emit(events, args.json)
            if args.once:
                if not any(isinstance(e, MessageEvent) for e in events):
                    say("nothing new")
                return
            say(f"listening as {sanitize(messenger.info.handle)}; Ctrl-C stops")
            follow(
                messenger,
                lambda shown: _emit(_downloads(messenger, list(shown), args.download), args.json),
                say,
                sleep=time.sleep,
            )
        except KeyboardInterrupt:
            pass  # Ctrl-C is how listen ends; the state is saved on the way out


def _files(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.is_dir():
        raise UsageError(f"{out} is a directory; name the file to create")
    with _messenger(args) as messenger, _progress(args.json, out.name) as bar:
        task = bar.add_task("download", total=None)
        saved = messenger.download(
            args.message_id,
            out.parent if str(out.parent) else Path("."),
            name=out.name,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if args.json:
        print(render_json({"message_id": args.message_id, "path": str(saved)}))
    else:
        print(f"saved {saved}")


def _chat(args: argparse.Namespace) -> None:
    """The full-screen app on a terminal; the line mode with ``--plain`` or without a TTY."""
    if args.plain or not (sys.stdin.isatty() and sys.stdout.isatty()):
        if args.target is None:
            raise UsageError("the line-mode chat needs a conversation: sotto chat USER|#ROOM")
        _line_chat(args)
        return
    from .chat_app import ChatApp  # Textual loads only for the full-screen chat

    with _messenger(args) as messenger:
        start = messenger.resolve(args.target) if args.target else None
        app = ChatApp(messenger, start)
        try:
            app.run()
        finally:
            # The worker thread is the Messenger's only caller: closing waits for it to end.
            app.worker.stop()
            if app.worker.started.is_set():
                app.worker.finished.wait(60)


def _line_chat(args: argparse.Namespace) -> None:
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    with _messenger(args) as messenger:
        cid = messenger.resolve(args.target)
        record = messenger.state.conversations[cid]
        name = sanitize(messenger.display_name(record))
        print(f"chat with {name}: type and press Enter; Ctrl-D ends")
        retention = messenger.retention()
        if retention.enabled:
            print(notice_text(retention), flush=True)
        _check_download_dir(args.download)

        def here(events: list[Event]) -> list[Event]:
            return _downloads(messenger, [e for e in events if _here(e, cid)], args.download)

        _show_here(messenger, here(messenger.sync()), cid)
        threading.Thread(target=read_stdin, daemon=True).start()
        try:
            while True:
                _show_here(messenger, here(messenger.poll(0.2)), cid)
                while not lines.empty():
                    text = lines.get()
                    if text is None:
                        return
                    if text.strip():
                        sent = messenger.send(cid, Text(text))
                        print(f"  (sent #{sent.seq})", flush=True)
        except KeyboardInterrupt:
            pass


def _here(event: Event, cid: str) -> bool:
    return event.conversation_id in (cid, None)


def _show_here(messenger: Messenger, events: list[Event], cid: str) -> None:
    """Print this conversation's events and mark only those read: other conversations'
    messages were fetched as delivered and stay unread for ``sotto chat`` to show."""
    shown = [e for e in events if _here(e, cid)]
    _emit(shown, False)
    if any(isinstance(e, MessageEvent) for e in shown):
        messenger.mark_read(shown)


def _history(args: argparse.Namespace) -> None:
    """This device's stored messages of one conversation, oldest first (nothing is fetched)."""
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with _messenger(args) as messenger:
        with messenger.operation():
            cid = _local_conversation(messenger, args.target)
            name = messenger.display_name(messenger.state.conversations[cid])
        messages = messenger.history(cid)
        if args.limit is not None:
            messages = messages[-args.limit :]
        if args.json:
            print(render_json([_history_json(messenger, cid, name, m) for m in messages]))
            return
        if not messages:
            print(f"no messages with {sanitize(name)} on this device")
        for message in messages:
            print(_history_text(messenger, message))


def _local_conversation(messenger: Messenger, target: str) -> str:
    """The conversation ``target`` names among those this device has (none is created)."""
    state = messenger.state
    if target.startswith("#"):
        record = state.room(target[1:])
        if record is None:
            raise MessagingError(f"no room named {target!r} on this device")
        return record.conversation_id
    if target in state.conversations:
        return target
    user_id = messenger.resolve_user(target)
    for record in state.conversations.values():
        if record.kind == "direct" and record.peer == user_id:
            return record.conversation_id
    raise MessagingError(f"no conversation with {target!r} on this device")


def _history_json(
    messenger: Messenger, cid: str, name: str, message: StoredMessage
) -> dict[str, Any]:
    # The shape of a ``listen --json`` message, plus what this device knows of it.
    value = event_of(cid, name, message, messenger.name_of(message.sender_user_id)).to_json()
    value.update(
        outgoing=message.outgoing, read_at=message.first_read_at, receipts=dict(message.receipts)
    )
    return value


def _history_text(messenger: Messenger, message: StoredMessage) -> str:
    when = local_time(message.server_time or message.timestamp, full=True)
    who = sanitize(messenger.name_of(message.sender_user_id))
    line = sanitize_block(message.text, f"[{when}] <{who}> ")
    if message.receipts:
        states = ", ".join(
            f"{state} by {sanitize(messenger.name_of(user))}"
            for user, state in sorted(message.receipts.items())
        )
        line += f"  ({states})"
    elif message.outgoing and message.seq is None:
        line += "  (not confirmed by the server yet)"
    return line


def _conversations(args: argparse.Namespace) -> None:
    with _messenger(args) as messenger:
        rows = messenger.conversations()
    if args.json:
        print(render_json(rows))
    else:
        print(render_table(rows))


def _room(args: argparse.Namespace) -> None:
    command = args.room_command
    room = str(getattr(args, "room", "") or "")
    if room and not room.startswith("#"):
        raise UsageError("name the room as #ROOM")
    with _messenger(args) as messenger:
        if command == "create":
            members = [messenger.resolve_user(m) for m in args.members]
            cid = messenger.create_room(args.name, members)
            print(f"created #{args.name.removeprefix('#')} ({cid}) with {len(members)} member(s)")
        elif command == "add":
            messenger.add_members(room, [messenger.resolve_user(u) for u in args.users])
            print(f"added {len(args.users)} member(s) to {room}")
        elif command == "remove":
            messenger.remove_members(room, [messenger.resolve_user(u) for u in args.users])
            print(f"removed {len(args.users)} member(s) from {room}")
        elif command == "leave":
            messenger.leave(room)
            print(f"left {room}")
        elif command in ("promote", "demote"):
            role = "moderator" if command == "promote" else "member"
            messenger.set_role(room, messenger.resolve_user(args.user), role)
            print(f"{args.user} is now a {role} of {room}")
        elif command == "members":
            rows = messenger.members(room)
            print(render_json(rows) if args.json else render_table(rows))
        elif command == "rename":
            messenger.set_room_profile(room, args.name, args.topic)
            print(f"{room} is now named {args.name} for its members")
        else:
            messenger.label_room(args.conversation_id, args.name)
            print(f"{args.conversation_id} is #{args.name.removeprefix('#')} on this device")


def _verify(args: argparse.Namespace) -> None:
    with _messenger(args) as messenger:
        user_id = messenger.resolve_user(args.user)
        report = messenger.verify(user_id, confirm=args.confirm, accept_change=args.accept_change)
    if args.json:
        print(render_json(report.__dict__))
        return
    print(_safety_text(report))


def _safety_text(report: SafetyReport) -> str:
    if report.changed:
        state = (
            "CHANGED: this is not the identity key you had; compare the safety number "
            "in person, then run again with --accept-change"
        )
    elif report.verified:
        state = "verified"
    else:
        state = "not verified: compare this number in person, then run again with --confirm"
    return f"user    {report.user_id}\nsafety  {report.safety_number}\nstatus  {state}"


def _contacts(args: argparse.Namespace) -> None:
    with _messenger(args) as messenger:
        if args.contacts_command == "add":
            messenger.add_contact(args.handle, args.user_id)
        elif args.contacts_command == "remove":
            messenger.remove_contact(args.handle)
        rows = [{"handle": h, "user_id": u} for h, u in sorted(messenger.state.contacts.items())]
    print(render_json(rows) if args.json else render_table(rows))


MESSAGING_HANDLERS = {
    "send": _send,
    "listen": _listen,
    "chat": _chat,
    "history": _history,
    "conversations": _conversations,
    "room": _room,
    "verify": _verify,
    "contacts": _contacts,
    "files": _files,
}
