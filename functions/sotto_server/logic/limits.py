"""Rate limits: fixed windows counted in the guards table.

The table in docs/api.md is generated from ``LIMITS``; change both together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["LIMITS", "Limit", "RateLimited", "Window", "check", "window_for"]


@dataclass(frozen=True)
class Limit:
    bucket: str
    per: str  # what the subject is: "ip", "device", "network", "user"
    limit: int
    window_s: int


LIMITS: dict[str, Limit] = {
    limit.bucket: limit
    for limit in (
        Limit("enroll_ip", "ip", 20, 60),
        Limit("enroll_network", "network", 200, 3600),
        # A new device polls its link's status while the person approves it.
        Limit("link_poll_ip", "ip", 120, 60),
        # Counted in bundles: one sender rotating a 1000-member room of
        # phones, laptops and tablets fetches about 3,000 at once.
        Limit("fetch_device", "device", 5000, 600),
        Limit("fetch_network", "network", 50000, 600),
        Limit("publish_device", "device", 20, 3600),
        Limit("publish_network", "network", 2000, 3600),
        Limit("link_device", "device", 10, 3600),
        # Nobody buries another user in rooms: rooms are made at a human pace.
        Limit("room_create_user", "user", 30, 3600),
        Limit("direct_create_user", "user", 200, 3600),
        Limit("membership_device", "device", 120, 3600),
        # Messaging: generous for people, bounded for scripts.
        Limit("send_device", "device", 300, 60),
        # A 1000-member room's rotation is 50-75 distribute frames.
        Limit("distribute_device", "device", 600, 600),
        # New chains per sender device and conversation: rotations follow
        # membership and device changes; each one is mail for every device.
        Limit("chain_device", "device", 120, 3600),
        Limit("sync_device", "device", 600, 60),
        Limit("ack_device", "device", 600, 60),
    )
}


class RateLimited(Exception):
    def __init__(self, limit: Limit, retry_after_s: int) -> None:
        super().__init__(f"{limit.bucket}: more than {limit.limit} per {limit.window_s}s")
        self.limit = limit
        self.retry_after_s = retry_after_s


class Counter(Protocol):
    def count(
        self, bucket: str, subject: str, window_start: int, window: int, limit: int, cost: int
    ) -> bool: ...


@dataclass(frozen=True)
class Window:
    """The counter a request is charged to: which window, and the limit at this scale."""

    limit: Limit
    subject: str
    start: int

    def retry_from(self, now_s: int) -> int:
        return self.start + self.limit.window_s - now_s


def window_for(bucket: str, subject: str, now_s: int, scale: float = 1.0) -> Window:
    base = LIMITS[bucket]
    limit = Limit(base.bucket, base.per, max(1, int(base.limit * scale)), base.window_s)
    return Window(limit, subject, now_s - now_s % limit.window_s)


def check(
    counter: Counter,
    bucket: str,
    subject: str,
    now_s: int,
    scale: float = 1.0,
    *,
    cost: int = 1,
) -> None:
    """Count ``cost`` units against ``bucket`` for ``subject``; raise RateLimited over the limit.

    A request that would pass the limit counts nothing. ``scale`` multiplies
    every limit (a deployment setting, ``rate_limit_scale``).
    """
    window = window_for(bucket, subject, now_s, scale)
    limit, retry = window.limit, window.retry_from(now_s)
    if cost > limit.limit:
        raise RateLimited(limit, retry)
    if not counter.count(bucket, subject, window.start, limit.window_s, limit.limit, cost):
        raise RateLimited(limit, retry)
