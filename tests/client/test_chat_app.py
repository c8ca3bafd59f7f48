"""``sotto chat`` (full screen, Textual) and ``sotto history`` on the local stack (issue 14
item 7).

The app runs under Textual's own test driver (``App.run_test()`` and its
Pilot) with a real Messenger on the local stack; the other people are
Messengers driven from a thread (``asyncio.to_thread``) so the app's event
loop keeps running while they sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, RichLog, Static

from sotto.client.chat_app import ChatApp
from sotto.client.chat_model import ChatModel, ConversationView, Line, render_line
from sotto.client.events import Event, MessageEvent, ReceiptEvent
from sotto.client.messenger import Messenger
from sotto.client.render import local_time
from sotto.protocol.content import Text
from tests.support.people import messenger_for, seed_person
from tests.support.stack import SeededDevice, Stack, admin

from .conftest import RunCli

HOSTILE = "[bold red]x[/] \x1b[2J\x1b]0;pwned\x07 end"


@pytest.fixture(scope="module")
def network(stack: Stack) -> str:
    return str(admin(stack, "POST", "/networks", {"name": "Chat"})["network_id"])


def pane_text(app: ChatApp) -> str:
    return "\n".join(strip.text for strip in app.query_one("#messages", RichLog).lines)


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await pilot.pause(0.1)


async def receipts_until(
    messenger: Messenger, kind: str, timeout: float = 30.0
) -> list[ReceiptEvent]:
    """Sync ``messenger`` (in a thread) until a ``kind`` receipt arrives; all receipts seen."""
    seen: list[ReceiptEvent] = []
    deadline = time.monotonic() + timeout
    while not any(r.receipt == kind for r in seen):
        assert time.monotonic() < deadline, f"no {kind} receipt; saw {seen}"
        events: list[Event] = await asyncio.to_thread(messenger.sync)
        seen += [e for e in events if isinstance(e, ReceiptEvent)]
        if not any(r.receipt == kind for r in seen):
            await asyncio.sleep(0.2)
    return seen


def test_chat_shows_each_conversation_in_its_pane_and_reads_only_what_it_shows(
    stack: Stack, network: str, tmp_path: Path
) -> None:
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with (
        messenger_for(stack, tmp_path, alice.devices[0]) as from_alice,
        messenger_for(stack, tmp_path, carol.devices[0]) as from_carol,
    ):
        to_alice = from_alice.send_text(bob.user_id, "hi from alice")
        from_carol.send_text(bob.user_id, "hi from carol")
        with messenger_for(stack, tmp_path, bob.devices[0]) as bobs:
            start = bobs.resolve(alice.user_id)
            app = ChatApp(bobs, start)
            asyncio.run(_chat_session(app, from_alice, from_carol, to_alice.conversation_id))
            assert app.worker.finished.wait(30)  # the Messenger is the worker's until then


async def _chat_session(
    app: ChatApp, from_alice: Messenger, from_carol: Messenger, alice_cid: str
) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "hi from alice" in pane_text(app))
        await until(pilot, lambda: len(app.model.conversations) == 2)
        carol_cid = next(c for c in app.model.conversations if c != alice_cid)
        # Carol's message is counted, not shown, and not read.
        assert app.model.conversations[carol_cid].unread == 1
        assert "hi from carol" not in pane_text(app)
        assert app.model.conversations[alice_cid].unread == 0
        await until(pilot, lambda: "connected" in str(app.query_one("#status", Static).render()))
        await receipts_until(from_alice, "read")  # the message on screen was read
        carol_saw = await receipts_until(from_carol, "delivered")
        assert [r.receipt for r in carol_saw] == ["delivered"]

        # Switching shows carol's conversation in the pane, and only now reads it.
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "hi from carol" in pane_text(app))
        assert "hi from alice" not in pane_text(app)
        assert app.model.conversations[carol_cid].unread == 0
        await receipts_until(from_carol, "read")

        # The input line sends to the open conversation.
        await pilot.click("#input")
        await pilot.press(*"hello carol", "enter")
        await until(pilot, lambda: "you: hello carol" in pane_text(app))
        texts = [
            e.text for e in await asyncio.to_thread(from_carol.sync) if isinstance(e, MessageEvent)
        ]
        assert texts == ["hello carol"]

        # Half a line typed stays as it is while a message arrives in the open pane.
        await pilot.press(*"draft")
        await asyncio.to_thread(from_carol.send, carol_cid, Text("carol again"))
        await until(pilot, lambda: "carol again" in pane_text(app))
        assert app.query_one("#input", Input).value == "draft"

        # A message arriving for the conversation that is not open is counted.
        await asyncio.to_thread(from_alice.send, alice_cid, Text("while you were away"))
        await until(pilot, lambda: app.model.conversations[alice_cid].unread == 1)
        assert "while you were away" not in pane_text(app)
        await pilot.press("ctrl+q")


def test_chat_shows_markup_and_escapes_in_a_message_literally(
    stack: Stack, network: str, tmp_path: Path
) -> None:
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, tmp_path, alice.devices[0]) as from_alice:
        from_alice.send_text(bob.user_id, HOSTILE)
    with messenger_for(stack, tmp_path, bob.devices[0]) as bobs:
        app = ChatApp(bobs, None)

        async def session() -> None:
            async with app.run_test(size=(100, 30)) as pilot:
                await until(pilot, lambda: "end" in pane_text(app))
                text = pane_text(app)
                assert "[bold red]x[/]" in text  # markup shown as typed, not obeyed
                assert "\\x1b[2J" in text
                assert "\\x1b]0;pwned\\x07" in text
                assert "\x1b" not in text
                assert "\x07" not in text
                await pilot.press("ctrl+q")

        asyncio.run(session())
        assert app.worker.finished.wait(30)


def test_a_line_shows_local_time_and_no_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30: local time is not UTC
    time.tzset()
    try:
        noon_utc = 1_764_676_800_000  # 2025-12-02 12:00:00 UTC
        assert local_time(noon_utc, full=True) == "2025-12-02 17:30:00 IST"
        line = Line(kind="message", text="[b]hi[/b]", time_ms=noon_utc, sender="[i]eve")
        rendered = render_line(line, now_ms=noon_utc)
        assert rendered.plain == "17:30 [i]eve: [b]hi[/b]"
        assert not any("italic" in str(span.style) for span in rendered.spans)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _profile(device: SeededDevice) -> str:
    return f"p-{device.device_id}"


def test_history_lists_the_local_messages_with_a_limit(
    stack: Stack, network: str, home: Path, run_cli: RunCli
) -> None:
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as from_alice:
        for text in ("one", "two", HOSTILE):
            from_alice.send_text(bob.user_id, text)
    with messenger_for(stack, home, bob.devices[0]) as bobs:
        bobs.sync()
    result = run_cli("history", alice.user_id, "--profile", _profile(bob.devices[0]))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [line.split("> ", 1)[1] for line in lines[:2]] == ["one", "two"]
    assert "\x1b" not in result.out
    assert "\\x1b[2J" in lines[2]
    as_json = run_cli(
        "history", alice.user_id, "--limit", "2", "--json", "--profile", _profile(bob.devices[0])
    )
    rows = json.loads(as_json.out)
    assert [r["text"] for r in rows] == ["two", HOSTILE]  # JSON keeps the exact text
    assert {r["sender"]["user_id"] for r in rows} == {alice.user_id}
    # Alice's own copy shows who received it, once her device has heard.
    with messenger_for(stack, home, alice.devices[0]) as from_alice:
        from_alice.sync()
    mine = run_cli("history", bob.user_id, "--profile", _profile(alice.devices[0]))
    assert "delivered by" in mine.out.splitlines()[0]
    unknown = run_cli("history", "#nowhere", "--profile", _profile(bob.devices[0]))
    assert unknown.code == 1
    assert "no room named" in unknown.err


def test_chat_without_a_terminal_falls_back_to_the_line_mode(
    stack: Stack,
    network: str,
    home: Path,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob, carol = (seed_person(stack, network) for _ in range(3))
    with messenger_for(stack, home, alice.devices[0]):
        pass
    with messenger_for(stack, home, bob.devices[0]) as from_bob:
        from_bob.send_text(alice.user_id, "from bob")
    with messenger_for(stack, home, carol.devices[0]) as from_carol:
        from_carol.send_text(alice.user_id, "from carol, not shown here")
    monkeypatch.setattr("sys.stdin", io.StringIO("typed in a pipe\n"))
    result = run_cli("chat", bob.user_id, "--profile", _profile(alice.devices[0]))
    assert result.code == 0, result.err
    assert "chat with" in result.out
    assert "(sent #" in result.out
    assert "from bob" in result.out
    assert "from carol" not in result.out
    with messenger_for(stack, home, bob.devices[0]) as bobs:
        events = bobs.sync()
        assert [e.text for e in events if isinstance(e, MessageEvent)] == ["typed in a pipe"]
        assert "read" in [e.receipt for e in events if isinstance(e, ReceiptEvent)]
    with messenger_for(stack, home, carol.devices[0]) as carols:
        # Carol's message was not shown, so it is delivered, never read.
        assert [e.receipt for e in carols.sync() if isinstance(e, ReceiptEvent)] == ["delivered"]
    no_target = run_cli("chat", "--profile", _profile(alice.devices[0]))
    assert no_target.code == 2
    assert "needs a conversation" in no_target.err


def test_a_hostile_conversation_name_is_inert_in_the_list() -> None:
    view = ConversationView(
        "room-1", "[b]ops\x1b]0;x\x07", [Line(kind="message", text="hi", unread=True)]
    )
    label = view.label()
    assert label.plain == "[b]ops\\x1b]0;x\\x07 (1)"


def test_the_open_pane_starts_a_burn_clock_and_drops_the_line_at_its_deadline() -> None:
    burning = Line(
        kind="message", text="burn me", message_id="aa", unread=True, burn_after_read_s=5
    )
    other = Line(kind="message", text="later", message_id="bb", unread=True, burn_after_read_s=5)
    model = ChatModel()
    model.load(
        [ConversationView("dm-1", "alice", [burning]), ConversationView("dm-2", "carol", [other])]
    )
    assert model.open("dm-1") == ["aa"]  # displayed, so read
    assert model.conversations["dm-2"].unread == 1  # not displayed: not read, no clock
    [shown] = model.conversations["dm-1"].lines
    assert shown.delete_at is not None
    assert model.conversations["dm-2"].lines[0].delete_at is None
    assert model.purge(shown.delete_at + 1) is True
    assert model.conversations["dm-1"].lines == []
    assert [line.text for line in model.conversations["dm-2"].lines] == ["later"]


def test_sotto_chat_runs_full_screen_on_a_terminal_and_quits(
    stack: Stack, network: str, home: Path
) -> None:
    """The real command on a pseudo-terminal: it draws, shows the backlog, quits on Ctrl-Q."""
    alice, bob = seed_person(stack, network), seed_person(stack, network)
    with messenger_for(stack, home, alice.devices[0]) as from_alice:
        from_alice.send_text(bob.user_id, "on a real terminal")
    with messenger_for(stack, home, bob.devices[0]):
        pass
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    argv = [sys.executable, "-m", "sotto.cli", "chat", alice.user_id]
    process = subprocess.Popen(
        [*argv, "--profile", _profile(bob.devices[0])],
        stdin=follower,
        stdout=follower,
        stderr=follower,  # Textual draws on stderr
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while b"on a real terminal" not in screen:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError((process.returncode, screen[-3000:]))
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                screen += os.read(leader, 65536)
        os.write(leader, b"\x11")  # Ctrl-Q
        while process.poll() is None:
            assert time.monotonic() < deadline
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(leader, 65536)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.returncode == 0
