"""Rate limits: fixed windows counted in the guards table.

The table in docs/api.md is generated from ``LIMITS``; change both together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["LIMITS", "Limit", "RateLimited", "check"]


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
        Limit("fetch_device", "device", 60, 60),
        Limit("fetch_network", "network", 3000, 60),
        Limit("publish_device", "device", 20, 3600),
        Limit("publish_network", "network", 2000, 3600),
        Limit("link_device", "device", 10, 3600),
    )
}


class RateLimited(Exception):
    def __init__(self, limit: Limit, retry_after_s: int) -> None:
        super().__init__(f"{limit.bucket}: more than {limit.limit} per {limit.window_s}s")
        self.limit = limit
        self.retry_after_s = retry_after_s


class Counter(Protocol):
    def count(
        self, bucket: str, subject: str, window_start: int, window: int, limit: int
    ) -> bool: ...


def check(counter: Counter, bucket: str, subject: str, now_s: int, scale: float = 1.0) -> None:
    """Count a request against ``bucket`` for ``subject``; raise RateLimited over the limit.

    ``scale`` multiplies every limit (a deployment setting; the local stack's
    test suites raise it so that hundreds of enrollments from 127.0.0.1 pass).
    """
    base = LIMITS[bucket]
    limit = Limit(base.bucket, base.per, max(1, int(base.limit * scale)), base.window_s)
    window_start = now_s - now_s % limit.window_s
    if not counter.count(bucket, subject, window_start, limit.window_s, limit.limit):
        raise RateLimited(limit, window_start + limit.window_s - now_s)
