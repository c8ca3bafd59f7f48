"""Keeping conversation rosters and sockets in step with the directory.

Driven by the directory's stream (``handlers.rosters``), never by the
request that made the change: a linked device joins, a revoked one leaves,
every conversation of its user, however many that is, and a retry repeats
only what is left (each step is conditional, so a repeat is a no-op). Each
change moves the roster version, so every sender rotates its chain before
its next message (forward and backward secrecy across device changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..dal.connections import ConnectionsStore
from ..dal.conversations import ConversationsStore
from ..dal.directory import DirectoryStore
from .standing import Disconnect, close_device_sockets

__all__ = ["Applied", "DirectoryChange", "Stores", "apply"]


@dataclass(frozen=True)
class Stores:
    directory: DirectoryStore
    conversations: ConversationsStore
    connections: ConnectionsStore
    disconnect: Disconnect


@dataclass(frozen=True)
class DirectoryChange:
    """One directory stream record, as far as rosters and sockets care."""

    kind: Literal["device_added", "device_revoked", "user_suspended"]
    user_id: str
    device_id: str = ""


@dataclass(frozen=True)
class Applied:
    conversations: int
    changed: int
    sockets_closed: int


def apply(stores: Stores, change: DirectoryChange) -> Applied:
    if change.kind == "user_suspended":
        closed = sum(
            close_device_sockets(stores.connections, stores.disconnect, device_id)
            for device_id, _certificate, _status in stores.directory.list_devices(change.user_id)
        )
        return Applied(0, 0, closed)
    closed = 0
    if change.kind == "device_revoked":
        # Again, after the admin request did: a socket that opened while it ran.
        closed = close_device_sockets(stores.connections, stores.disconnect, change.device_id)
    if change.kind == "device_added":
        device = stores.directory.get_device(change.device_id)
        if device is None or device.status != "active":
            return Applied(0, 0, 0)  # revoked since: its own record follows in the stream
    conversations = stores.conversations.user_conversations(change.user_id)
    changed = 0
    for cid, *_ in conversations:
        if change.kind == "device_added":
            changed += stores.conversations.roster_add(cid, change.user_id, change.device_id)
        else:
            changed += stores.conversations.roster_remove(cid, change.user_id, change.device_id)
    return Applied(len(conversations), changed, closed)
