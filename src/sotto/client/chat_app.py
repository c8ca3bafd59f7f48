"""``sotto chat``: the full-screen terminal app (Textual).

A thin adapter: ``ChatWorker`` (one thread, the only caller of the
Messenger) fetches and sends; ``ChatModel`` decides what each pane shows and
what counts as read; this module lays them out. On the left, every
conversation with its unread count; on the right, the open conversation's
backlog and new messages; at the bottom an input line of its own, which
incoming messages never touch. Everything from the network is rendered as
sanitised Rich ``Text`` (``chat_model.render_line``), never as markup.

Keys: Enter sends; Ctrl-N / Ctrl-P (or the list) switch conversations; Ctrl-Q quits.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, Label, ListItem, ListView, RichLog, Static

from .chat_model import ChatModel, ConversationView, Line, render_line
from .chat_worker import Arrived, Banner, ChatWorker, Failed, Loaded, News, Sent, Status
from .messenger import Messenger
from .sanitize import sanitize

__all__ = ["ChatApp"]


class _News(Message):
    """What the worker thread reports, carried onto the app's event loop."""

    def __init__(self, news: News) -> None:
        super().__init__()
        self.news = news


class _Conversation(ListItem):
    def __init__(self, view: ConversationView) -> None:
        self.conversation_id = view.conversation_id
        self.title = Label(view.label(), markup=False)
        super().__init__(self.title)


class ChatApp(App[None]):
    """Every conversation of one Messenger; ``start`` names the one to open first."""

    TITLE = "sotto chat"
    CSS = """
    #conversations { width: 28; border-right: solid $primary; }
    #pane { width: 1fr; }
    #messages { height: 1fr; }
    #status { height: 1; color: $text-muted; }
    #banner { height: auto; color: $warning; display: none; }
    #input { dock: bottom; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next_conversation", "next", priority=True),
        Binding("ctrl+p", "previous_conversation", "previous", priority=True),
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(self, messenger: Messenger, start: str | None = None) -> None:
        super().__init__()
        self.model = ChatModel()
        self._start = start
        self.worker = ChatWorker(messenger, self._post)
        self.loaded = False
        self._handle, self._status = "", "connecting…"

    def _show_status(self) -> None:
        who = f"{sanitize(self._handle)} · " if self._handle else ""
        self.query_one("#status", Static).update(Text(who + sanitize(self._status)))

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ListView(id="conversations")
            with Vertical(id="pane"):
                yield Static(Text("connecting…"), id="status", markup=False)
                yield Static(Text(""), id="banner", markup=False)
                yield RichLog(id="messages", wrap=True, markup=False, highlight=False)
                yield Input(placeholder="type a message; Enter sends", id="input")
        yield Footer()

    def _post(self, news: News) -> None:  # from the worker thread: post_message is thread-safe
        self.post_message(_News(news))

    def on_mount(self) -> None:
        self.run_worker(self.worker.run, thread=True, name="messenger", exit_on_error=False)
        self.set_interval(1.0, self._purge)
        self.query_one(Input).focus()

    def on_unmount(self) -> None:
        self.worker.stop()

    async def action_quit(self) -> None:
        self.worker.stop()
        self.exit()

    # -- what the worker reports -------------------------------------------------------

    def on__news(self, message: _News) -> None:
        news = message.news
        if isinstance(news, Loaded):
            self._loaded(news)
        elif isinstance(news, Arrived):
            shown, read = self.model.apply(news.events)
            for line in shown:
                self._pane.write(render_line(line))
            self._mark_read(read)
            if self.model.open_id is None and self.model.conversations:
                # The first conversation of a new device: open it rather than show nothing.
                self.open_conversation(next(iter(self.model.conversations)))
            self._refresh_list()
        elif isinstance(news, Sent):
            view = self.model.conversations.get(news.conversation_id)
            if view is not None:
                view.lines.append(news.line)
                if news.conversation_id == self.model.open_id:
                    self._pane.write(render_line(news.line))
        elif isinstance(news, Failed):
            self._pane.write(render_line(Line(kind="notice", text=news.text)))
        elif isinstance(news, Banner):
            banner = self.query_one("#banner", Static)
            banner.update(Text(sanitize(news.text)))
            banner.display = True
        elif isinstance(news, Status):
            self._status = news.text
            self._show_status()

    def _loaded(self, news: Loaded) -> None:
        self.model.load(news.conversations)
        self._handle = news.handle
        self._show_status()
        self._refresh_list()
        start = self._start if self._start in self.model.conversations else None
        first = start or next(iter(self.model.conversations), None)
        if first is not None:
            self.open_conversation(first)
        else:
            hint = "no conversations on this device yet: `sotto chat USER` or `#ROOM` opens one"
            self._pane.write(render_line(Line(kind="notice", text=hint)))
        self.loaded = True

    # -- the screen ----------------------------------------------------------------------

    @property
    def _pane(self) -> RichLog:
        return self.query_one("#messages", RichLog)

    def open_conversation(self, cid: str) -> None:
        read = self.model.open(cid)
        self._render_open()
        self._mark_read(read)
        self._refresh_list()

    def _render_open(self) -> None:
        log = self._pane
        log.clear()
        view = self.model.current
        if view is None:
            return
        log.write(Text(f"— {sanitize(view.name)} —", style="bold"))
        now = int(time.time() * 1000)
        for line in view.lines:
            log.write(render_line(line, now_ms=now))

    def _mark_read(self, message_ids: list[str]) -> None:
        if self.model.open_id is not None:
            self.worker.read(self.model.open_id, message_ids)

    def _refresh_list(self) -> None:
        listing = self.query_one("#conversations", ListView)
        items = {item.conversation_id: item for item in listing.query(_Conversation)}
        for cid, view in self.model.conversations.items():
            item = items.get(cid)
            if item is None:
                item = _Conversation(view)
                listing.append(item)
            item.title.update(view.label())
        order = list(self.model.conversations)
        if self.model.open_id in order:
            index = order.index(self.model.open_id)
            if listing.index != index:
                listing.index = index

    def _purge(self) -> None:
        if self.model.purge(int(time.time() * 1000)):
            self._render_open()
        self._refresh_list()

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        item = event.item
        if isinstance(item, _Conversation) and item.conversation_id != self.model.open_id:
            self.open_conversation(item.conversation_id)
        self.query_one(Input).focus()

    @on(Input.Submitted, "#input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value
        event.input.clear()
        if text.strip() and self.model.open_id is not None:
            self.worker.send(self.model.open_id, text)

    def _step(self, by: int) -> None:
        order = list(self.model.conversations)
        if not order:
            return
        index = order.index(self.model.open_id) if self.model.open_id in order else -by
        self.open_conversation(order[(index + by) % len(order)])

    def action_next_conversation(self) -> None:
        self._step(1)

    def action_previous_conversation(self) -> None:
        self._step(-1)
