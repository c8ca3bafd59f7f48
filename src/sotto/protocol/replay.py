"""Replay detection by message id, in bounded memory.

A receiver records each message id it accepted. The set is capped; an id
evicted from it is still not replayable, because the message key that opened
it was deleted (``ReceiverChain.commit``), so a late replay fails with
``MessageKeyUnavailable`` instead of ``ReplayedMessage``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .errors import ReplayedMessage

__all__ = ["DEFAULT_REPLAY_CAPACITY", "ReplayGuard"]

DEFAULT_REPLAY_CAPACITY = 100_000


class ReplayGuard:
    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def __iter__(self) -> Iterator[bytes]:
        """The recorded ids, oldest first (the order eviction follows)."""
        return iter(self._seen)

    @property
    def capacity(self) -> int:
        return self._capacity

    def check(self, message_id: bytes) -> None:
        if message_id in self._seen:
            raise ReplayedMessage(f"message {message_id.hex()} was already accepted")

    def record(self, message_id: bytes) -> None:
        """Call only after the message was fully verified and decrypted."""
        self._seen[message_id] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
