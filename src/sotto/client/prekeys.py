"""Publishing prekeys: batches that fit the WebSocket message limit, written ahead to disk.

A prekey's private half is saved in the keystore *before* its certificate is
published: a published prekey whose private key was lost would make every
message sealed to it unreadable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sotto.frames.answers_devices import PrekeysPublishedAnswer, PrekeyStatusAnswer
from sotto.protocol.certificates import PrekeyCertificate
from sotto.protocol.device import DeviceSecrets

from .encoding import b64e
from .errors import FrameError
from .session import Session

__all__ = [
    "ONE_TIME_BATCH",
    "ONE_TIME_TARGET",
    "PrekeyStatus",
    "Published",
    "now_ms",
    "plan_replenish",
    "prekey_status",
    "publish_prekeys",
    "unpublished_one_time",
]

# About 45 post-quantum prekeys fit in API Gateway's 128 KB message; 40 leaves headroom.
ONE_TIME_BATCH = 40
# How many one-time prekeys a device keeps on the server.
ONE_TIME_TARGET = 100


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class PrekeyStatus:
    one_time_prekeys: int
    signed_prekey_expires_at: int | None


def prekey_status(session: Session) -> PrekeyStatus:
    answer = session.request_as(PrekeyStatusAnswer, "prekey_status")
    return PrekeyStatus(answer["one_time_prekeys"], answer["signed_prekey_expires_at"])


@dataclass(frozen=True)
class Published:
    stored: int | None  # the server's count of one-time prekeys after the last batch
    through: int  # highest one-time prekey id now on the server (0: none published)


def publish_prekeys(
    session: Session,
    *,
    signed: PrekeyCertificate | None = None,
    one_time: Sequence[PrekeyCertificate] = (),
    through: int = 0,
) -> Published:
    """Publish in batches of ``ONE_TIME_BATCH``, lowest ids first; the signed prekey rides
    with the first batch. ``through`` is the watermark before this call.
    """
    stored: int | None = None
    ordered = sorted(one_time, key=lambda cert: cert.prekey_id)
    step = ONE_TIME_BATCH
    batches = [ordered[i : i + step] for i in range(0, len(ordered), step)]
    if signed is not None and not batches:
        batches = [[]]
    for index, batch in enumerate(batches):
        fields: dict[str, Any] = {}
        if index == 0 and signed is not None:
            fields["signed_prekey"] = b64e(signed.serialize())
        if batch:
            fields["one_time_prekeys"] = [b64e(cert.serialize()) for cert in batch]
        try:
            answer = session.request_as(PrekeysPublishedAnswer, "publish_prekeys", **fields)
        except FrameError as exc:
            # Our own ids can only collide with themselves: an earlier run published this
            # batch and stopped before saving the watermark. The batch is on the server.
            if exc.code != "conflict" or not batch:
                raise
        else:
            stored = answer["one_time_prekeys"]
        through = max([through, *(cert.prekey_id for cert in batch)])
    return Published(stored, through)


def unpublished_one_time(device: DeviceSecrets, through: int) -> list[PrekeyCertificate]:
    """Prekeys made but never published (ids only grow, so: above the watermark)."""
    return sorted(
        (cert for _, cert in device.one_time_prekeys.values() if cert.prekey_id > through),
        key=lambda cert: cert.prekey_id,
    )


def plan_replenish(
    device: DeviceSecrets,
    status: PrekeyStatus,
    *,
    through: int,
    now: int,
    target: int = ONE_TIME_TARGET,
    rotate: bool = False,
) -> tuple[PrekeyCertificate | None, list[PrekeyCertificate]]:
    """The prekeys to publish (mutating ``device``); the caller saves, then publishes.

    Prekeys made earlier but never published go first, so a failed publish
    leaves nothing behind. The signed prekey is rotated when forced, when it
    is due, or when the server holds none that is still current.
    """
    device.prune(now=now)
    signed = None
    server_signed_stale = (
        status.signed_prekey_expires_at is None or status.signed_prekey_expires_at <= now
    )
    if (
        rotate
        or server_signed_stale
        or not device.signed_prekeys
        or device.signed_prekey_due(now=now)
    ):
        signed = device.rotate_signed_prekey(now=now)
    missing = max(0, target - status.one_time_prekeys)
    one_time = unpublished_one_time(device, through)[:missing]
    if len(one_time) < missing:
        one_time += device.new_one_time_prekeys(missing - len(one_time), now=now)
    return signed, one_time
