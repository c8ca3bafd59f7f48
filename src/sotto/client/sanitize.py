"""Strings from the network, made safe to put on a person's screen.

Message text, handles, room names, server error details: any of them can
come from someone hostile. Printed raw, an ESC or a C1 byte clears the
screen, recolours text or sets the terminal title (OSC); a carriage return
or a newline makes one message look like a line from another user; a bidi
override makes text read in another order than it is stored. Every human
output path renders such strings through this module; ``--json`` output is
left alone (JSON escapes control characters itself).

What is neutralised is shown, not dropped, so a person sees that something
was there: a control character becomes its escape (``\\x1b``, ``\\r``,
``\\u202e``), and a message's own line breaks become continuation lines that
start with ``CONTINUATION``, which no line the CLI prints itself starts with.
"""

from __future__ import annotations

import unicodedata

__all__ = ["CONTINUATION", "sanitize", "sanitize_block", "sanitize_lines"]

CONTINUATION = "   | "

# Format characters that reorder or hide text. Zero-width joiners stay: emoji need them.
_BIDI = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u206a\u206b"
    "\u206c\u206d\u206e\u206f"
)
_NAMED = {"\r": "\\r", "\t": "\\t", "\n": "\\n", "\x1b": "\\x1b", "\x7f": "\\x7f"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def _unsafe(char: str) -> bool:
    # Cc: C0, DEL and C1 (0x9b is a one-byte CSI); Zl/Zp: line and paragraph separators;
    # Cs: lone surrogates, which cannot even be encoded for output.
    return char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs")


def sanitize(text: str) -> str:
    """``text`` on one line with every control, separator and bidi character escaped."""
    if text.isprintable():  # the common case: nothing to do (printable excludes them all)
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def sanitize_lines(text: str) -> list[str]:
    """``text`` split at its own line breaks, each line sanitised; at least one line.

    ``\\r\\n`` counts as one break; a lone ``\\r`` is shown, never obeyed.
    """
    return [sanitize(line) for line in text.replace("\r\n", "\n").split("\n")]


def sanitize_block(text: str, first: str = "") -> str:
    """``first`` followed by ``text``; every line after the first starts with ``CONTINUATION``."""
    head, *rest = sanitize_lines(text)
    return "\n".join([first + head, *(CONTINUATION + line for line in rest)])
