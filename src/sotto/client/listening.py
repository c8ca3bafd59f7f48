"""``sotto listen``'s loop: sync, then follow pushes, and ride out a server that goes away.

A listener is left open all day. When the network drops or the server
restarts, it says so once, waits with exponential backoff (1 s doubling to
30 s, with jitter so a room of listeners does not return in step), and
carries on with a sync, so nothing sent meanwhile is missed. A server that
answers but cannot serve now (``rate_limited``, ``internal_error``, API
Gateway's own error) is waited out the same way, for at least as long as it
asks; any other refusal (``revoked``, ``suspended``, ...) ends the listener.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import ConnectionLost, FrameError, ServerUnreachable
from .events import Event

__all__ = ["PASSING_ERRORS", "Backoff", "Follower", "follow"]

# Error codes that say "not now" rather than "never": API Gateway's generic
# error frame carries no code (``error``).
PASSING_ERRORS = frozenset({"rate_limited", "internal_error", "error"})


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
    back = "reconnected"  # what to say when it works again
    while not stop():
        try:
            events = messenger.sync(read=read) if lost else messenger.poll(poll_s, read=read)
        except (ConnectionLost, ServerUnreachable) as exc:
            if not lost:
                say(f"connection lost ({exc}); reconnecting")
                back = "reconnected"
            lost = True
            messenger.disconnect()
            sleep(backoff.delay())
            continue
        except FrameError as exc:
            if exc.code not in PASSING_ERRORS:
                raise
            if not lost:
                say(f"the server cannot answer now ({exc.code}); trying again")
                back = "the server is answering again"
            lost = True  # then sync: whatever the failed call was for, nothing is missed
            sleep(max(backoff.delay(), exc.retry_after_s or 0.0))
            continue
        if lost:
            say(back)
            lost = False
            backoff.reset()
        show(events)
