"""Contacts: names this user gives people, shared with the user's other devices.

A change is kept here and sent into the user's self conversation
(``self_sync``) at once if it can be, else with the next sync; sending it is
why this part stands on ``Sending``.
"""

from __future__ import annotations

import contextlib

from sotto.protocol.errors import ProtocolError

from .. import self_sync
from ..errors import ClientError, MessagingError
from .core import _operation
from .sending import Sending

__all__ = ["Contacts"]


class Contacts(Sending):
    """Adding and removing contacts; any change synced to this user's other devices."""

    @_operation
    def add_contact(self, handle: str, user_id: str) -> None:
        """Remember ``handle`` as ``user_id``, on this user's other devices too (``self_sync``)."""
        self._sync_change(self_sync.CONTACT, handle.removeprefix("@"), user_id)

    @_operation
    def remove_contact(self, handle: str) -> None:
        handle = handle.removeprefix("@")
        if handle not in self.state.contacts:
            raise MessagingError(f"no contact named {handle!r}")
        self._sync_change(self_sync.CONTACT, handle, "")

    def _sync_change(self, kind: str, key: str, value: str) -> None:
        """A contact or label change: kept here, sent to this user's other devices now if it
        can be (else with the next sync)."""
        try:
            self_sync.change(self, kind, key, value)
        except ProtocolError as exc:
            raise MessagingError(str(exc)) from None
        self.save()
        with contextlib.suppress(ClientError):
            self_sync.publish(self)
