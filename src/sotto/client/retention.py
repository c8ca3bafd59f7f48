"""What a client knows about its network's retention: fetched, verified, pinned, shown.

The ``retention`` route answers the network's retention identity or that
retention is off. The client verifies the chain (officer -> retention device
-> KEM key) and pins the officer's identity in its ``IdentityTracker`` under
``officer_user_id(network)``: a different officer later is a changed
identity, refused (``TrustError``) until the person compares the safety
number and accepts it (``sotto verify records-NET --accept-change``). A new
key generation from the same officer is accepted. The last state seen is
written to ``retention.json`` in the profile (public data only), so
``whoami`` can say whether retention is on without connecting.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sotto.frames.answers_devices import RetentionFields
from sotto.protocol.certificates import DeviceCertificate, PrekeyCertificate
from sotto.protocol.errors import IdentityChanged, ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import RetentionIdentity, officer_user_id
from sotto.protocol.safety import IdentityTracker

from .encoding import b64d
from .errors import MalformedFrame, MessagingError, TrustError
from .fingerprints import identity_fingerprint

__all__ = [
    "RETENTION_FILE",
    "RetentionNotice",
    "fetch_retention",
    "last_known",
    "notice_text",
]

RETENTION_FILE = "retention.json"
# Screens warn this long before the retention key expires: after it, nothing can be sent.
EXPIRY_WARNING_MS = 14 * 24 * 3600 * 1000


@dataclass(frozen=True)
class RetentionNotice:
    """What the screens say: whether this network's messages are archived, and by whom."""

    network_id: str
    enabled: bool
    years: int = 0
    officer_fingerprint: str = ""
    checked_at: int = 0
    key_expires_at: int = 0  # when the served generation stops verifying (0: not known)

    def to_json(self) -> dict[str, Any]:
        return {
            "network_id": self.network_id,
            "enabled": self.enabled,
            "years": self.years,
            "officer_fingerprint": self.officer_fingerprint,
            "checked_at": self.checked_at,
            "key_expires_at": self.key_expires_at,
        }


def notice_text(notice: RetentionNotice | None, *, now: int | None = None) -> str:
    """What every screen says of retention; ``now`` (default: the clock) dates the key's
    expiry warning, so a notice saved days ago still counts the days right."""
    if notice is None:
        return "Data retention: not known yet (connect once: sotto listen --once)"
    if not notice.enabled:
        return "Data retention: off"
    text = (
        f"Data Retention Turned On: every message in this network is archived for "
        f"{notice.years} year(s) and readable by its records officer "
        f"(officer key {notice.officer_fingerprint})"
    )
    left = notice.key_expires_at - (int(time.time() * 1000) if now is None else now)
    if notice.key_expires_at and left < EXPIRY_WARNING_MS:
        text += (
            f". Its archive key expires on {_day(notice.key_expires_at)} (in"
            f" {max(0, left) // 86_400_000} day(s)); after that nothing can be sent until the"
            " records officer rotates it: tell them"
        )
    return text


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


# What an enabled retention answer carries besides its network (all or none: the shape).
_ENABLED_FIELDS = ("years", "officer_identity", "certificate", "prekey")


def _parse(answer: RetentionFields, network_id: str) -> RetentionIdentity:
    missing = [name for name in _ENABLED_FIELDS if name not in answer]
    if missing:
        raise MalformedFrame("retention", missing)
    try:
        return RetentionIdentity(
            network_id,
            IdentityPublicKey.parse(b64d(answer.get("officer_identity"), "officer_identity")),
            DeviceCertificate.parse(b64d(answer.get("certificate"), "certificate")),
            PrekeyCertificate.parse(b64d(answer.get("prekey"), "prekey")),
        )
    except ProtocolError as exc:
        raise MessagingError(f"the server's retention identity is malformed: {exc}") from None


def fetch_retention(
    call: Callable[[], RetentionFields],
    network_id: str,
    tracker: IdentityTracker,
    *,
    now: int,
    profile_dir: Path | None = None,
) -> tuple[RetentionIdentity | None, RetentionNotice]:
    """Ask, verify, pin; record what the screens show. Raises instead of trusting a new officer."""
    answer = call()
    if answer["network_id"] != network_id:
        raise MessagingError("the server answered retention for another network")
    identity: RetentionIdentity | None = None
    if answer["enabled"]:
        identity = _parse(answer, network_id)
        try:
            identity.verify(now=now)
        except ProtocolError as exc:
            if identity.expires_at <= now:
                with contextlib.suppress(ProtocolError):
                    identity.verify(now=identity.expires_at - 1)  # only its time is up?
                    raise MessagingError(
                        f"this network's retention key expired on {_day(identity.expires_at)}:"
                        " nothing can be sent in it until its records officer rotates the key"
                        " (sotto admin retention rotate). Report this to your records officer."
                    ) from None
            raise MessagingError(
                f"the server's retention identity does not verify ({exc}); not sending to it. "
                "Report this to your records officer."
            ) from None
        officer_id = officer_user_id(network_id)
        try:
            tracker.check(officer_id, identity.officer)
        except IdentityChanged:
            raise TrustError(officer_id, "the records officer of this network") from None
        notice = RetentionNotice(
            network_id,
            True,
            answer.get("years", 0),
            identity_fingerprint(identity.officer),
            now,
            identity.expires_at,
        )
    else:
        notice = RetentionNotice(network_id, False, checked_at=now)
    if profile_dir is not None:
        _write(profile_dir / RETENTION_FILE, notice)
    return identity, notice


def _write(path: Path, notice: RetentionNotice) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(notice.to_json(), sort_keys=True) + "\n")
    temporary.replace(path)


def last_known(profile_dir: Path) -> RetentionNotice | None:
    """The retention state this profile last saw, or None (never connected, or unreadable)."""
    try:
        data = json.loads((profile_dir / RETENTION_FILE).read_text())
        return RetentionNotice(
            str(data["network_id"]),
            bool(data["enabled"]),
            int(data.get("years") or 0),
            str(data.get("officer_fingerprint") or ""),
            int(data.get("checked_at") or 0),
            int(data.get("key_expires_at") or 0),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
