"""The messaging commands of the ``sotto`` CLI: send, listen, chat, conversations, room,
verify, contacts.

Naming people and rooms (kept simple on purpose):

* ``USER`` is a name from this profile's contacts (``sotto contacts add NAME
  USER_ID``), a user id (``usr-...``), or a handle of the network, looked up
  once (``lookup_user``) with the identity key pinned on first contact.
* ``#ROOM`` is a local label given with ``sotto room create`` (or ``sotto
  room name`` for a room someone else created); the server knows rooms only
  by opaque ids, and labels never leave this device.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterable

from sotto.protocol.content import Text

from .errors import UsageError
from .events import Event, MessageEvent
from .listening import follow
from .messaging import Messenger, SafetyReport
from .profile import Profile, check_profile_name, read_passphrase
from .render import format_time, render_json, render_table
from .retention import notice_text
from .sanitize import sanitize

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


def _send(args: argparse.Namespace) -> None:
    with _messenger(args) as messenger:
        sent = messenger.send_text(
            args.target, args.text, expires_s=args.expires or 0, burn_s=args.burn or 0
        )
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


def _listen(args: argparse.Namespace) -> None:
    # Status lines go to stderr: stdout is the messages, for people and for pipes alike.
    def say(text: str) -> None:
        print(f"sotto: {text}", file=sys.stderr, flush=True)

    with _messenger(args) as messenger:
        retention = messenger.retention()
        # Said whenever it is on, as Wickr's "Data Retention Turned On" banner; silence means off.
        if retention.enabled and args.json:
            print(json.dumps({"type": "retention", **retention.to_json()}, sort_keys=True))
        elif retention.enabled:
            print(notice_text(retention), flush=True)
        try:
            events = messenger.sync(read=True)
            _emit(events, args.json)
            if args.once:
                if not any(isinstance(e, MessageEvent) for e in events):
                    say("nothing new")
                return
            say(f"listening as {sanitize(messenger.info.handle)}; Ctrl-C stops")
            follow(
                messenger,
                lambda shown: _emit(shown, args.json),
                say,
                sleep=time.sleep,
            )
        except KeyboardInterrupt:
            pass  # Ctrl-C is how listen ends; the state is saved on the way out


def _chat(args: argparse.Namespace) -> None:
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
        _emit((e for e in messenger.sync(read=True) if _here(e, cid)), False)
        threading.Thread(target=read_stdin, daemon=True).start()
        try:
            while True:
                _emit((e for e in messenger.poll(0.2, read=True) if _here(e, cid)), False)
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
        rows = [{"handle": h, "user_id": u} for h, u in sorted(messenger.state.contacts.items())]
    print(render_json(rows) if args.json else render_table(rows))


MESSAGING_HANDLERS = {
    "send": _send,
    "listen": _listen,
    "chat": _chat,
    "conversations": _conversations,
    "room": _room,
    "verify": _verify,
    "contacts": _contacts,
}
