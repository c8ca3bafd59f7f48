"""``sotto listen``'s loop: sync, then follow pushes, and ride out a server that goes away.

A listener is left open all day. When the network drops or the server
restarts, it says so once, waits with exponential backoff (1 s doubling to
30 s, with jitter so a room of listeners does not return in step), and
carries on with a sync, so nothing sent meanwhile is missed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ConnectionLost, ServerUnreachable
from .events import Event

__all__ = ["Backoff", "Follower", "follow"]


class Follower(Protocol):
    def sync(self, *, read: bool = False) -> list[Event]: ...

    def poll(self, timeout: float, *, read: bool = False) -> list[Event]: ...

    def disconnect(self) -> None: ...


@dataclass
class Backoff:
    """Delays of 1, 2, 4 … ``ceiling`` s, each with up to 20% jitter; ``reset`` on success."""

    first_s: float = 1.0
    ceiling_s: float = 30.0
    jitter: Callable[[], float] = field(default=random.random)
    _next: float = 0.0

    def delay(self) -> float:
        base = self._next or self.first_s
        self._next = min(base * 2, self.ceiling_s)
        return base * (1 + 0.2 * self.jitter())

    def reset(self) -> None:
        self._next = 0.0


def follow(
    messenger: Follower,
    show: Callable[[Iterable[Event]], None],
    say: Callable[[str], None],
    *,
    sleep: Callable[[float], None],
    read: bool = True,
    poll_s: float = 1.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Sync, show, then poll until ``stop()``; connection failures wait and sync again."""
    backoff = Backoff()
    lost = False
    while not stop():
        try:
            events = messenger.sync(read=read) if lost else messenger.poll(poll_s, read=read)
        except (ConnectionLost, ServerUnreachable) as exc:
            if not lost:
                say(f"connection lost ({exc}); reconnecting")
            lost = True
            messenger.disconnect()
            sleep(backoff.delay())
            continue
        if lost:
            say("reconnected")
            lost = False
            backoff.reset()
        show(events)
