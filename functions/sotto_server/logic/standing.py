"""Whether a caller is still in good standing, and closing the sockets of one who is not.

The $connect authorizer vouches for a device once, when its socket opens; a
device revoked or a user suspended afterwards must lose every socket at once
and be refused on every frame it still manages to send. So each WebSocket
frame re-reads the caller's device and user (one consistent BatchGetItem,
used for that frame only), and a revocation closes sockets found both through
the presence item (a consistent read) and the by-device index (which may lag
a just-opened socket by a moment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..dal.connections import ConnectionsStore
from ..dal.directory import DirectoryStore
from .errors import ErrorCode, Refused
from .principal import Principal

__all__ = ["NotInGoodStanding", "close_device_sockets", "in_good_standing"]

Disconnect = Callable[[str], None]


class NotInGoodStanding(Refused):
    """The caller's device is revoked or its user suspended: refuse, then disconnect."""


def in_good_standing(directory: DirectoryStore, caller: Principal) -> Principal:
    """The caller with its device and user records as read now, or NotInGoodStanding."""
    device, user = directory.get_device_and_user(caller.device_id, caller.user_id)
    if device is None or device.status != "active" or device.user_id != caller.user_id:
        raise NotInGoodStanding(ErrorCode.REVOKED, "this device has been revoked")
    if user is None or user.status != "active":
        raise NotInGoodStanding(ErrorCode.SUSPENDED, "this user is suspended")
    return replace(caller, device=device, user=user)


def close_device_sockets(
    connections: ConnectionsStore, disconnect: Disconnect, device_id: str
) -> int:
    """Close every open socket of a device; returns how many were asked to close."""
    found = set(connections.online([device_id]).get(device_id, []))
    found.update(c.connection_id for c in connections.for_device(device_id))
    for connection_id in sorted(found):
        disconnect(connection_id)
    return len(found)
