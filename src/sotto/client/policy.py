"""The network policy as a client holds it: read on sync, replaced when one is pushed.

The server enforces what it can see (timers in every envelope header, devices
at link); the client applies the same limits before it sends, so a person
hears the limit at once, in the same words, and enforces what only it can
see (read receipts, location and calls by content type).

The frame comes from the network: every field is checked here, and a frame
that does not parse leaves the policy the client had.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sotto.protocol.content import CallSignal, Content, File, Location
from sotto.protocol.conversation import MessageTimers

from .errors import MessagingError

__all__ = ["ClientPolicy", "PolicyError", "format_duration", "parse_policy"]

ReadReceipts = Literal["disabled", "enabled", "forced"]
# What a source may be called on screen: "network" or a group name as the server validates it.
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_RECEIPTS: dict[object, ReadReceipts] = {
    "disabled": "disabled",
    "enabled": "enabled",
    "forced": "forced",
}


class PolicyError(MessagingError):
    """What the person asked for is over the network's (or a security group's) policy."""


def format_duration(seconds: int) -> str:
    """``3600`` -> ``1h``; the server's wording (``logic/policy.py``) exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a limit is a positive integer or null")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("a switch is true or false")
    return value


@dataclass(frozen=True)
class ClientPolicy:
    max_expiry_s: int | None = None
    max_burn_s: int | None = None
    files_allowed: bool = True
    max_file_bytes: int | None = None
    location_allowed: bool = True
    calls_allowed: bool = True
    read_receipts: ReadReceipts = "enabled"
    max_devices: int | None = None
    sources: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def _whose(self, knob: str) -> str:
        source = self.sources.get(knob, "network")
        return "your network's" if source == "network" else f"security group {source}'s"

    def timers(self, expires_s: int, burn_s: int) -> MessageTimers:
        """The timers to send: a message without expiry gets the longest the policy allows."""
        if self.max_expiry_s is not None:
            limit = format_duration(self.max_expiry_s)
            if expires_s > self.max_expiry_s:
                raise PolicyError(
                    f"expiry {format_duration(expires_s)} is over "
                    f"{self._whose('max_expiry_s')} limit of {limit}"
                )
            expires_s = expires_s or self.max_expiry_s
        if self.max_burn_s is not None and burn_s > self.max_burn_s:
            raise PolicyError(
                f"burn-on-read {format_duration(burn_s)} is over {self._whose('max_burn_s')} "
                f"limit of {format_duration(self.max_burn_s)}"
            )
        return MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)

    def check_content(self, content: Content) -> None:
        """Refuse, before sending, what only the client can see: files, location, calls."""
        if isinstance(content, File):
            if not self.files_allowed:
                raise PolicyError(f"files are not allowed by {self._whose('files_allowed')} policy")
            if self.max_file_bytes is not None and content.size > self.max_file_bytes:
                raise PolicyError(
                    f"a file of {_size(content.size)} is over {self._whose('max_file_bytes')} "
                    f"limit of {_size(self.max_file_bytes)}"
                )
        elif isinstance(content, Location) and not self.location_allowed:
            raise PolicyError(
                f"location sharing is not allowed by {self._whose('location_allowed')} policy"
            )
        elif isinstance(content, CallSignal) and not self.calls_allowed:
            raise PolicyError(f"calls are not allowed by {self._whose('calls_allowed')} policy")

    def receipts(self, wanted: bool) -> bool:
        """Whether this device sends receipts: the policy may force them on or off."""
        if self.read_receipts == "disabled":
            return False
        return True if self.read_receipts == "forced" else wanted

    def describe(self) -> dict[str, Any]:
        return {
            "max_expiry": None if self.max_expiry_s is None else format_duration(self.max_expiry_s),
            "max_burn": None if self.max_burn_s is None else format_duration(self.max_burn_s),
            "files_allowed": self.files_allowed,
            "max_file_bytes": self.max_file_bytes,
            "location_allowed": self.location_allowed,
            "calls_allowed": self.calls_allowed,
            "read_receipts": self.read_receipts,
            "max_devices": self.max_devices,
        }


def parse_policy(frame: Mapping[str, Any]) -> ClientPolicy:
    """A ``policy`` frame's policy; ValueError on anything malformed."""
    values = frame.get("policy")
    sources = frame.get("sources") or {}
    version = frame.get("version", 0)
    if not isinstance(values, dict) or not isinstance(sources, dict):
        raise ValueError("a policy frame carries a policy object")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("version is an integer")
    receipts = _RECEIPTS.get(values.get("read_receipts", "enabled"))
    if receipts is None:
        raise ValueError("read_receipts is disabled, enabled or forced")
    return ClientPolicy(
        max_expiry_s=_limit(values.get("max_expiry_s")),
        max_burn_s=_limit(values.get("max_burn_s")),
        files_allowed=_flag(values.get("files_allowed", True)),
        max_file_bytes=_limit(values.get("max_file_bytes")),
        location_allowed=_flag(values.get("location_allowed", True)),
        calls_allowed=_flag(values.get("calls_allowed", True)),
        read_receipts=receipts,
        max_devices=_limit(values.get("max_devices")),
        sources={
            k: v
            for k, v in sources.items()
            if isinstance(k, str) and isinstance(v, str) and _SOURCE.match(v)
        },
        version=version,
    )
