"""The caller of a WebSocket route, as the $connect authorizer vouched for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..dal.directory import DeviceRecord, UserRecord

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """What the authorizer vouches for; travels in every later event's context.

    ``device`` and ``user`` are the records read for the current frame when
    its standing was checked (``logic.standing``): routes use them instead of
    reading again, and never keep them beyond the frame.
    """

    device_id: str
    user_id: str
    network_id: str
    device: DeviceRecord | None = field(default=None, compare=False, repr=False)
    user: UserRecord | None = field(default=None, compare=False, repr=False)

    def context(self) -> dict[str, str]:
        return {"device_id": self.device_id, "user_id": self.user_id, "network_id": self.network_id}
