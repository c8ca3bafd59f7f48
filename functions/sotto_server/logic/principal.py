"""The caller of a WebSocket route, as the $connect authorizer vouched for it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Principal"]


@dataclass(frozen=True)
class Principal:
    """What the authorizer vouches for; travels in every later event's context."""

    device_id: str
    user_id: str
    network_id: str

    def context(self) -> dict[str, str]:
        return {"device_id": self.device_id, "user_id": self.user_id, "network_id": self.network_id}
