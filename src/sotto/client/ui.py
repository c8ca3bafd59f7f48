"""How flows talk to the person: show a line, ask a yes/no question.

Flows take a ``Ui`` so the CLI, a future GUI and tests each supply their own.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

__all__ = ["ConsoleUi", "Ui"]


class Ui(Protocol):
    def show(self, text: str) -> None: ...

    def confirm(self, question: str) -> bool: ...


class ConsoleUi:
    """Lines to stdout (flushed: another process may be waiting for them), answers from stdin."""

    def __init__(self, out: TextIO | None = None, inp: TextIO | None = None) -> None:
        self._out = out
        self._in = inp

    def show(self, text: str) -> None:
        out = self._out or sys.stdout
        print(text, file=out, flush=True)

    def confirm(self, question: str) -> bool:
        out, inp = self._out or sys.stdout, self._in or sys.stdin
        print(f"{question} [y/N] ", end="", file=out, flush=True)
        answer = inp.readline()
        return answer.strip().lower() in ("y", "yes")
