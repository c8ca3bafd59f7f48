"""Rate limits: fixed windows counted in the guards table.

The table in docs/api.md is ``docs_table()``; ``tests/identity/test_rate_limits.py``
holds the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

__all__ = ["LIMITS", "Limit", "RateLimited", "Window", "check", "docs_table", "window_for"]


@dataclass(frozen=True)
class Limit:
    bucket: str
    per: str  # what the subject is: "ip", "device", "network", "user"
    limit: int
    window_s: int
    what: str  # for people: the docs/api.md row


LIMITS: dict[str, Limit] = {
    limit.bucket: limit
    for limit in (
        Limit(
            "enroll_ip",
            "ip",
            20,
            60,
            "enrollment and link requests (`/v1/enroll*`, `/v1/link/requests`)",
        ),
        Limit("enroll_network", "network", 200, 3600, "enrollment"),
        # A new device polls its link's status while the person approves it.
        Limit("link_poll_ip", "ip", 120, 60, "link status polls (`/v1/link/status`)"),
        # Counted in bundles: one sender rotating a 1000-member room of
        # phones, laptops and tablets fetches about 3,000 at once.
        Limit(
            "fetch_device",
            "device",
            5000,
            600,
            "bundles fetched (`fetch_bundles`, per device asked for)",
        ),
        Limit("fetch_network", "network", 50000, 600, "bundles fetched (`fetch_bundles`)"),
        Limit("publish_device", "device", 20, 3600, "`publish_prekeys`"),
        Limit("publish_network", "network", 2000, 3600, "`publish_prekeys`"),
        Limit("link_device", "device", 10, 3600, "`link_create`"),
        # Nobody buries another user in rooms: rooms are made at a human pace.
        Limit("room_create_user", "user", 30, 3600, "rooms created (`create_conversation`, room)"),
        Limit("direct_create_user", "user", 200, 3600, "direct (and self) conversations created"),
        Limit(
            "membership_device", "device", 120, 3600, "`add_members`, `remove_members`, `set_role`"
        ),
        # Messaging: generous for people, bounded for scripts. The send
        # counter rides in the message's own transaction (still one write).
        Limit("send_device", "device", 300, 60, "`send`"),
        # A 1000-member room's rotation is 50-75 distribute frames.
        Limit("distribute_device", "device", 600, 600, "`distribute` frames"),
        # New chains per sender device: rotations follow membership and device
        # changes, and each one is mail for every device of a conversation.
        Limit(
            "chain_device", "device", 120, 3600, "new chains (a `distribute` with a new `chain_id`)"
        ),
        # Identity keys are looked up before a room is created or grown, pinned after.
        Limit("identities_device", "device", 600, 600, "users looked up (`identities`)"),
        # People are found by handle at a human pace; a script walking a network's
        # handles gets a few hundred an hour, not the directory.
        Limit(
            "lookup_device", "device", 60, 600, "users looked up by handle or id (`lookup_user`)"
        ),
        Limit("sync_device", "device", 600, 60, "`sync`"),
        Limit("ack_device", "device", 600, 60, "`ack`"),
        # A client reads its policy when it opens a session and when one is pushed.
        Limit("policy_device", "device", 120, 60, "`policy`"),
        # Each upload holds an S3 multipart upload and a record for a day at most.
        Limit("file_upload_device", "device", 60, 3600, "uploads started (`file_upload_start`)"),
        # URL pages, completions, aborts and downloads: a 5 GiB file is 40 pages.
        Limit("file_url_device", "device", 600, 600, "other `file_*` requests"),
    )
}


def _window(seconds: int) -> str:
    return {60: "minute", 600: "10 minutes", 3600: "hour"}[seconds]


def docs_table() -> str:
    """The rate-limit table of docs/api.md (a test holds the two equal)."""
    rows = ["| What | Per | Limit |", "|---|---|---|"]
    for limit in LIMITS.values():
        per = "source IP" if limit.per == "ip" else limit.per
        rows.append(f"| {limit.what} | {per} | {limit.limit:,} per {_window(limit.window_s)} |")
    return "\n".join(rows)


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
    limit = replace(base, limit=max(1, int(base.limit * scale)))
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
