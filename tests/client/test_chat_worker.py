"""The chat's worker thread, with a fake Messenger: it fetches everything as "delivered",
runs the screen's commands between polls, and rides out a lost connection."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any, cast

from textual.widgets import Static

from sotto.client.chat_app import ChatApp
from sotto.client.chat_worker import Banner, ChatWorker, News, Sent, Status
from sotto.client.errors import ConnectionLost
from sotto.client.outbox import SentMessage
from sotto.client.retention import RetentionNotice
from sotto.client.store import ConversationRecord


class FakeMessenger:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.info = SimpleNamespace(handle="bob", user_id="usr-b")
        self.state = SimpleNamespace(conversations={})
        self.lose_next_poll = True

    def sync(self, *, read: bool = False) -> list[Any]:
        self.calls.append(("sync", read))
        return []

    def poll(self, timeout: float, *, read: bool = False) -> list[Any]:
        self.calls.append(("poll", read))
        if self.lose_next_poll:
            self.lose_next_poll = False
            raise ConnectionLost(1006, "gone")
        time.sleep(0.01)
        return []

    def disconnect(self) -> None:
        self.calls.append(("disconnect",))

    def send_text(self, cid: str, text: str) -> SentMessage:
        self.calls.append(("send", cid, text))
        return SentMessage(cid, "ab" * 16, 7, 1000, None)

    def retention(self) -> RetentionNotice:
        return RetentionNotice("net-1", enabled=True, years=7, officer_fingerprint="ab12")

    def name_of(self, user_id: str) -> str:
        return "you"


def test_worker_reads_nothing_itself_and_reconnects_after_a_lost_socket() -> None:
    fake = FakeMessenger()
    news: list[News] = []
    worker = ChatWorker(cast(Any, fake), news.append)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while sum(isinstance(n, Status) and n.text == "connected" for n in news) < 2:
            assert time.monotonic() < deadline, news
            time.sleep(0.05)
        worker.send("dm-1", "hello")
        while not any(isinstance(n, Sent) for n in news):
            assert time.monotonic() < deadline, news
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    assert worker.finished.is_set()
    statuses = [n.text for n in news if isinstance(n, Status)]
    assert statuses[:3] == ["connected", "connection lost (gone); reconnecting", "connected"]
    fetches = [c for c in fake.calls if c[0] in ("sync", "poll")]
    assert all(read is False for _, read in fetches)  # read receipts only for what is shown
    assert fake.calls[:4] == [("sync", False), ("poll", False), ("disconnect",), ("sync", False)]
    [banner] = [n for n in news if isinstance(n, Banner)]  # retention on: said once, on top
    assert banner.text.startswith("Data Retention Turned On")
    [sent] = [n for n in news if isinstance(n, Sent)]
    assert (sent.conversation_id, sent.line.text, sent.line.outgoing) == ("dm-1", "hello", True)


def test_the_app_shows_data_retention_above_every_conversation() -> None:
    fake = FakeMessenger()
    fake.lose_next_poll = False
    app = ChatApp(cast(Any, fake), None)

    async def session() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            banner = app.query_one("#banner", Static)
            deadline = time.monotonic() + 10
            while not banner.display:
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            assert str(banner.render()).startswith("Data Retention Turned On")
            await pilot.press("ctrl+q")

    asyncio.run(session())
    assert app.worker.finished.wait(10)


def test_the_chat_list_leaves_out_the_users_own_devices_conversation() -> None:
    fake = FakeMessenger()
    fake.state.conversations = {
        "self-ab": ConversationRecord("self-ab", "self"),
        "dm-1": ConversationRecord("dm-1", "direct", peer="usr-a"),
    }
    fake.display_name = lambda record: record.conversation_id  # type: ignore[attr-defined]
    worker = ChatWorker(cast(Any, fake), lambda news: None)
    assert [view.conversation_id for view in worker._snapshot()] == ["dm-1"]
