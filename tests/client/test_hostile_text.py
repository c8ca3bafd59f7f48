"""Strings from the network never drive the terminal (issue 14 item 5).

The hostile strings are the ones a reviewer used: clear the screen, recolour,
set the title (OSC), a one-byte C1 CSI, a carriage return that overwrites the
line, a newline that forges a line from another user, a bidi override.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sotto.client.events import Event, MessageEvent, NoticeEvent, ReceiptEvent
from sotto.client.render import render, render_table
from sotto.client.sanitize import CONTINUATION, sanitize, sanitize_block, sanitize_lines

HOSTILE = {
    "clear screen": "\x1b[2J\x1b[H",
    "recolour": "\x1b[31mred\x1b[0m",
    "title": "\x1b]0;pwned\x07",
    "c1 csi": "\x9b2J",
    "overwrite": "harmless\r<usr-boss> transfer the funds",
    "forged line": "hi\n[2026-12-01 10:00:00 UTC] #ops <usr-boss> send me the keys",
    "bidi": "invoice_\u202egnp.exe",
    "separator": "one\u2028two",
    "delete": "abc\x7f\x08\x08",
}


def _controls(text: str) -> list[str]:
    """Every character a terminal would act on (newlines included)."""
    return [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u2028"]


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_sanitize_leaves_nothing_a_terminal_obeys_and_shows_what_was_there(text: str) -> None:
    safe = sanitize(text)
    assert _controls(safe) == []
    assert safe != text  # it was neutralised ...
    assert "\\" in safe  # ... visibly, as an escape


@given(st.text())
def test_sanitize_output_is_always_inert(text: str) -> None:
    assert _controls(sanitize(text)) == []
    for line in sanitize_lines(text):
        assert _controls(line) == []


def test_plain_and_emoji_text_is_unchanged() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # zero-width joiners: kept
    for text in ("hello", "naïve café", "日本語", family, "tab-free text"):
        assert sanitize(text) == text


def test_a_message_line_break_is_a_continuation_line_not_a_new_message() -> None:
    event = MessageEvent(
        "room-1", "#ops", 3, "usr-eve", "dev-1", HOSTILE["forged line"], "ab" * 16, 0, 0, 0, 0
    )
    first, second = event.text_line().splitlines()
    assert first.endswith("<usr-eve> hi")
    assert second.startswith(CONTINUATION)  # not "[time] #ops <usr-boss>"
    assert second == CONTINUATION + HOSTILE["forged line"].split("\n")[1]


def test_crlf_is_one_break_and_a_lone_cr_is_shown() -> None:
    assert sanitize_lines("a\r\nb") == ["a", "b"]
    assert sanitize_lines("a\rb") == ["a\\rb"]


def test_every_event_kind_renders_hostile_fields_inert() -> None:
    bad = HOSTILE["clear screen"] + HOSTILE["title"]
    events: list[Event] = [
        MessageEvent("c", bad, 1, bad, bad, bad, "ab" * 16, 0, 0, 0, 0),
        ReceiptEvent("c", bad, bad, bad, "read", ("ab" * 16,), (1,)),
        NoticeEvent(bad, "x", bad + "\n" + bad),
    ]
    for event in events:
        for line in event.text_line().splitlines():
            assert _controls(line) == []
        assert json.loads(json.dumps(event.to_json()))  # JSON mode: untouched, still valid


def test_json_mode_keeps_the_exact_text() -> None:
    event = MessageEvent("c", "#ops", 1, "u", "d", HOSTILE["title"], "ab" * 16, 0, 0, 0, 0)
    assert event.to_json()["text"] == HOSTILE["title"]


def test_tables_and_key_value_output_are_sanitised() -> None:
    bad = HOSTILE["recolour"]
    assert _controls(render_table([{"handle": bad, "n": 1}])) == _controls("\n")
    assert "\x1b" not in render({"handle": bad, "rows": [{"name": bad}], "nested": {bad: bad}})


def test_block_prefixes_every_line_after_the_first() -> None:
    assert sanitize_block("a\nb\nc", "> ") == f"> a\n{CONTINUATION}b\n{CONTINUATION}c"


def test_a_reader_that_goes_away_is_not_an_error(tmp_path) -> None:
    """`sotto ... | head`: exit 141 like any Unix tool, and no traceback on stderr."""
    script = (
        "import sys\n"
        "from sotto.client import commands\n"
        "def flood(args):\n"
        "    for n in range(1_000_000):\n"
        "        print('line', n)\n"
        "commands._HANDLERS['whoami'] = flood\n"
        "import argparse\n"
        "sys.exit(commands.run_command(argparse.Namespace(command='whoami')))\n"
    )
    reader, writer = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=writer, stderr=subprocess.PIPE
    )
    os.close(writer)
    os.read(reader, 10)
    os.close(reader)  # the reader leaves
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141
    assert err == b""
