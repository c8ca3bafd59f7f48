"""The thread that owns the Messenger while ``sotto chat`` runs.

A Messenger is not thread-safe, so exactly one thread calls it: this one. The
screen hands it commands (send this text, these messages are now displayed)
through a queue and hears back through ``post`` with plain values (``News``);
between commands it syncs, then polls for pushes a quarter second at a time,
and rides out a lost server with the listener's backoff.

Every event is fetched as "delivered" (``read=False``): a read receipt goes
only for what the screen reports as displayed (``mark_read``), so a message
in a conversation that is not open stays unread, for this device and for its
sender.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .chat_model import ConversationView, Line, view_of
from .errors import ClientError, ConnectionLost, ServerUnreachable
from .events import Event, event_of
from .listening import Backoff
from .messenger import Messenger
from .retention import notice_text

__all__ = ["Arrived", "Banner", "ChatWorker", "Failed", "Loaded", "News", "Sent", "Status"]

POLL_S = 0.25  # the longest a command waits behind a poll


@dataclass(frozen=True)
class Loaded:
    conversations: list[ConversationView]
    handle: str


@dataclass(frozen=True)
class Arrived:
    events: list[Event]


@dataclass(frozen=True)
class Sent:
    conversation_id: str
    line: Line


@dataclass(frozen=True)
class Failed:
    conversation_id: str | None
    text: str


@dataclass(frozen=True)
class Status:
    text: str


@dataclass(frozen=True)
class Banner:
    """Shown above every conversation for the whole session (data retention is on)."""

    text: str


News = Loaded | Arrived | Sent | Failed | Status | Banner


@dataclass(frozen=True)
class _Send:
    conversation_id: str
    text: str


@dataclass(frozen=True)
class _Read:
    conversation_id: str
    message_ids: tuple[str, ...]


class ChatWorker:
    """``run()`` in one thread; ``send``, ``read`` and ``stop`` from any other."""

    def __init__(self, messenger: Messenger, post: Callable[[News], None]) -> None:
        self._messenger = messenger
        self._post = post
        self._commands: queue.Queue[_Send | _Read] = queue.Queue()
        self._stop = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()

    def send(self, conversation_id: str, text: str) -> None:
        self._commands.put(_Send(conversation_id, text))

    def read(self, conversation_id: str, message_ids: list[str]) -> None:
        if message_ids:
            self._commands.put(_Read(conversation_id, tuple(message_ids)))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self.started.set()
        try:
            self._post(Loaded(self._snapshot(), self._messenger.info.handle))
            self._say_retention()
            self._loop()
        except Exception as exc:
            # Said on screen (the app stays open to read), then recorded as the worker's error.
            self._post(Status(f"stopped: {type(exc).__name__}: {exc}; Ctrl-Q quits"))
            raise
        finally:
            self.finished.set()

    def _say_retention(self) -> None:
        """Said whenever it is on, as the line commands say it (Wickr's banner)."""
        try:
            retention = self._messenger.retention()
        except ClientError:
            return  # not reachable now: the loop reports the connection
        if retention.enabled:
            self._post(Banner(notice_text(retention)))

    def _snapshot(self) -> list[ConversationView]:
        messenger = self._messenger
        return [
            view_of(record, messenger.display_name(record), messenger.name_of)
            for record in messenger.state.conversations.values()
            # The self conversation is this user's devices' own (contacts, labels): no chat.
            if record.kind not in ("unknown", "self") and (not record.left or record.history)
        ]

    def _loop(self) -> None:
        backoff = Backoff()
        lost, synced = False, False
        refused = ""  # the last refusal said: a refusal that repeats is said once
        while not self._stop.is_set():
            try:
                self._run_commands()
                if synced and not lost:
                    events = self._messenger.poll(POLL_S)
                else:
                    events = self._messenger.sync()
            except (ConnectionLost, ServerUnreachable) as exc:
                if not lost:
                    self._post(Status(f"connection lost ({exc}); reconnecting"))
                lost = True
                self._messenger.disconnect()
                self._stop.wait(backoff.delay())
                continue
            except ClientError as exc:  # a refusal in words: say it, carry on
                if str(exc) != refused:
                    refused = str(exc)
                    self._post(Failed(None, refused))
                self._stop.wait(1.0)
                continue
            refused = ""
            if lost or not synced:
                self._post(Status("connected"))
                lost, synced = False, True
                backoff.reset()
            if events:
                self._post(Arrived(events))

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, _Send):
                self._send(command)
            else:
                self._mark_read(command)

    def _send(self, command: _Send) -> None:
        messenger = self._messenger
        try:
            sent = messenger.send_text(command.conversation_id, command.text)
        except ConnectionLost:
            self._post(
                Failed(
                    command.conversation_id,
                    "not confirmed yet (connection lost): it is sent again on reconnecting",
                )
            )
            raise
        except ClientError as exc:
            self._post(Failed(command.conversation_id, f"not sent: {exc}"))
            return
        line = Line(
            kind="message",
            text=command.text,
            time_ms=sent.server_time,
            sender=messenger.name_of(messenger.info.user_id),
            message_id=sent.message_id,
            outgoing=True,
            delete_at=sent.delete_at,
        )
        self._post(Sent(command.conversation_id, line))

    def _mark_read(self, command: _Read) -> None:
        """Read receipts (and burn clocks) for the messages the screen displayed."""
        messenger = self._messenger
        record = messenger.state.conversations.get(command.conversation_id)
        if record is None:
            return
        wanted = set(command.message_ids)
        events: list[Event] = [
            event_of(command.conversation_id, "", stored)
            for stored in record.history
            if stored.message_id in wanted and stored.first_read_at is None
        ]
        if events:
            messenger.mark_read(events)
