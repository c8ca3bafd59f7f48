"""What ``sotto chat`` and ``sotto history`` show: conversations, their lines, unread counts.

The functional core of the chat screen (no Textual, no sockets): the worker
thread turns the Messenger's state and events into plain values here, and
the app only renders them. Every string from the network reaches the screen
through ``sanitize`` as a Rich ``Text`` (never markup: ``[bold]`` in a
message is shown as typed). Times are the reader's local time.

Unread is what this device has not displayed: an incoming message whose
``first_read_at`` is unset. Only the conversation open on screen is marked
read (``ChatModel.open`` and ``ChatModel.apply`` return what was displayed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from rich.text import Text

from .events import Event, MessageEvent, NoticeEvent, ReceiptEvent
from .render import local_time
from .sanitize import CONTINUATION, sanitize, sanitize_lines
from .store import ConversationRecord, StoredMessage

__all__ = [
    "ChatModel",
    "ConversationView",
    "Line",
    "line_from_event",
    "line_from_stored",
    "render_line",
]


@dataclass(frozen=True)
class Line:
    """One line of a conversation's pane: a message, a receipt or a notice."""

    kind: str  # message | receipt | notice
    text: str  # raw: sanitised only when rendered
    time_ms: int = 0
    sender: str = ""
    message_id: str = ""
    outgoing: bool = False
    unread: bool = False
    delete_at: int | None = None  # local plaintext deadline (expiry; burn counts from display)
    burn_after_read_s: int = 0


def line_from_stored(message: StoredMessage, name_of: Callable[[str], str]) -> Line:
    return Line(
        kind="message",
        text=message.text,
        time_ms=message.server_time or message.timestamp,
        sender=name_of(message.sender_user_id),
        message_id=message.message_id,
        outgoing=message.outgoing,
        unread=not message.outgoing and message.first_read_at is None,
        delete_at=message.delete_at(),
        burn_after_read_s=0 if message.outgoing else message.burn_after_read_s,
    )


def line_from_event(event: Event) -> Line:
    if isinstance(event, MessageEvent):
        return Line(
            kind="message",
            text=event.text,
            time_ms=event.server_time or event.timestamp,
            sender=event.sender or event.sender_user_id,
            message_id=event.message_id,
            outgoing=event.outgoing,
            unread=not event.outgoing,
            delete_at=event.expires_at or None,
            burn_after_read_s=0 if event.outgoing else event.burn_after_read_s,
        )
    if isinstance(event, ReceiptEvent):
        which = ", ".join(f"#{s}" for s in event.seqs) or f"{len(event.message_ids)} message(s)"
        who = event.sender or event.from_user_id
        return Line(kind="receipt", text=f"{event.receipt} by {who} ({which})")
    return Line(kind="notice", text=event.detail)


def render_line(line: Line, *, now_ms: int | None = None) -> Text:
    """A line as Rich ``Text``: sanitised, markup never parsed, continuation lines marked."""
    if line.kind != "message":
        style = "dim" if line.kind == "receipt" else "yellow"
        mark = "  ✓ " if line.kind == "receipt" else "  ! "
        return Text(mark + "\n".join(sanitize_lines(line.text)), style=style)
    head = Text(local_time(line.time_ms, now_ms=now_ms), style="dim")
    head.append(" ")
    head.append(sanitize(line.sender), style="bold cyan" if line.outgoing else "bold green")
    head.append(": ")
    first, *rest = sanitize_lines(line.text)
    head.append(first)
    for more in rest:
        head.append("\n" + CONTINUATION + more)
    if line.delete_at or line.burn_after_read_s:
        head.append("  ⏱", style="dim")
    return head


@dataclass
class ConversationView:
    conversation_id: str
    name: str
    lines: list[Line] = field(default_factory=list)

    @property
    def unread(self) -> int:
        return sum(1 for line in self.lines if line.unread)

    @property
    def last_ms(self) -> int:
        return max((line.time_ms for line in self.lines), default=0)

    def label(self) -> Text:
        text = Text(sanitize(self.name))
        if self.unread:
            text.append(f" ({self.unread})", style="bold magenta")
        return text


def view_of(
    record: ConversationRecord, name: str, name_of: Callable[[str], str]
) -> ConversationView:
    lines = [line_from_stored(m, name_of) for m in record.history]
    return ConversationView(record.conversation_id, name, lines)


@dataclass
class ChatModel:
    """The conversations on screen and which one is open."""

    conversations: dict[str, ConversationView] = field(default_factory=dict)
    open_id: str | None = None

    def load(self, views: Iterable[ConversationView]) -> None:
        for view in sorted(views, key=lambda v: v.last_ms, reverse=True):
            self.conversations[view.conversation_id] = view

    @property
    def current(self) -> ConversationView | None:
        return None if self.open_id is None else self.conversations.get(self.open_id)

    def open(self, cid: str) -> list[str]:
        """Show ``cid``; returns the ids of the messages now displayed for the first time."""
        self.open_id = cid
        return self._displayed()

    def apply(self, events: Iterable[Event]) -> tuple[list[Line], list[str]]:
        """New events: (lines for the open pane, message ids displayed now and so read)."""
        shown: list[Line] = []
        for event in events:
            cid = event.conversation_id
            if cid is None or (isinstance(event, NoticeEvent) and cid not in self.conversations):
                # A notice for no conversation shown here: the open pane carries it.
                cid = self.open_id
                if cid is None:
                    continue
            name = getattr(event, "conversation", "")
            view = self.conversations.get(cid)
            if view is None:
                view = self.conversations[cid] = ConversationView(cid, name or cid)
            elif name:
                view.name = name  # a room renamed by its members: the newest name
            line = line_from_event(event)
            if line.kind == "message" and any(
                known.message_id == line.message_id for known in view.lines
            ):
                continue  # already in the backlog
            view.lines.append(line)
            if cid == self.open_id:
                shown.append(line)
        return shown, self._displayed()

    def _displayed(self) -> list[str]:
        view = self.current
        if view is None:
            return []
        ids = []
        now = int(time.time() * 1000)
        for index, line in enumerate(view.lines):
            if line.unread:
                ids.append(line.message_id)
                deadline = line.delete_at
                if line.burn_after_read_s:
                    burn = now + line.burn_after_read_s * 1000
                    deadline = min(deadline, burn) if deadline else burn
                view.lines[index] = replace(line, unread=False, delete_at=deadline)
        return ids

    def purge(self, now_ms: int) -> bool:
        """Drop lines past their deadline; True if the open pane changed."""
        changed_open = False
        for cid, view in self.conversations.items():
            kept = [line for line in view.lines if not line.delete_at or line.delete_at > now_ms]
            if len(kept) != len(view.lines):
                view.lines = kept
                changed_open = changed_open or cid == self.open_id
        return changed_open
