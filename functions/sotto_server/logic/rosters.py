"""Keeping conversation rosters in step with a user's devices.

A linked device joins, a revoked one leaves, every conversation of its user;
each change moves the roster version, so every sender rotates its chain
before its next message (forward and backward secrecy across device changes).
"""

from __future__ import annotations

from ..dal.conversations import ConversationsStore
from .conversations import roster_entry

__all__ = ["device_added", "device_removed"]


def device_added(store: ConversationsStore, user_id: str, device_id: str) -> None:
    for cid, *_ in store.user_conversations(user_id):
        store.roster_change(cid, add=roster_entry(user_id, device_id))


def device_removed(store: ConversationsStore, user_id: str, device_id: str) -> None:
    for cid, *_ in store.user_conversations(user_id):
        store.roster_change(cid, remove=roster_entry(user_id, device_id))
