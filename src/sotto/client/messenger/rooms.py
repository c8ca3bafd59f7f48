"""Rooms: creating them, changing their signed membership, their name and label.

Each change is an operation signed after the verified head of the log
(docs/protocol.md §15), read again and signed again if the log moved.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any

from sotto.frames import answers
from sotto.frames.answers_conversations import ConversationAnswer
from sotto.protocol.errors import ProtocolError
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    MembershipState,
    Remove,
    Role,
    SetRole,
    self_conversation_id,
    verify_log,
)
from sotto.protocol.room import RoomProfile

from .. import self_sync
from ..encoding import b64e
from ..errors import ClientError, FrameError, MessagingError
from ..outbox import SentMessage
from .contacts import Contacts
from .core import _operation

__all__ = ["Rooms"]

ROOM_CREATE_MEMBERS = 31  # docs/api.md: members named at creation, besides the creator
ROOM_ADD_MEMBERS = 32  # ...and per add_members / remove_members
_ACTIONS: dict[type[Change], str] = {
    Add: "add_members",
    Remove: "remove_members",
    SetRole: "set_role",
    Leave: "leave",
}


class Rooms(Contacts):
    """Rooms: membership changes, members, the shared profile and the local label."""

    @_operation
    def create_room(self, label: str, user_ids: list[str]) -> str:
        """Create a room (this user its moderator) with any number of members.

        The creation operation names 31 members besides this user; larger
        rooms grow by signed add operations of 32 each.
        """
        label = label.removeprefix("#")
        if not label or self.state.room(label) is not None:
            raise MessagingError(f"a room named #{label} already exists on this device")
        identities = self._user_identities(user_ids)
        others = sorted(identities)
        first = {u: identities[u] for u in others[:ROOM_CREATE_MEMBERS]}
        cid = f"room-{secrets.token_hex(12)}"
        own = MemberEntry.of(self.info.user_id, self._identity, Role.MODERATOR)
        entries = sorted([own, *self._entries(first)], key=lambda e: e.user_id)
        op = self._sign(None, Create(ConversationKind.ROOM, tuple(entries)), conversation_id=cid)
        answer = self._ask(
            ConversationAnswer, "create_conversation", retry=False, conversation_id=cid, op=b64e(op)
        )
        conversation = self._conversation_frame(answer, cid)
        record = self._record(conversation["conversation_id"], kind="room")
        record.label = label
        with contextlib.suppress(ProtocolError):  # a label the wire cannot carry stays here
            self_sync.change(self, self_sync.LABEL, cid, label)
        self.save()
        state = verify_log([op], [self._identity], conversation_id=cid, now=self._clock())
        rest = others[ROOM_CREATE_MEMBERS:]
        for start in range(0, len(rest), ROOM_ADD_MEMBERS):
            batch = {u: identities[u] for u in rest[start : start + ROOM_ADD_MEMBERS]}
            op = self._sign(state, Add(tuple(self._entries(batch))))
            self._ask(ConversationAnswer, "add_members", conversation_id=cid, op=b64e(op))
            state = state.extend([op], [self._identity], now=self._clock())
        with contextlib.suppress(ClientError):
            self_sync.publish(self)  # the label, to this user's other devices
        return record.conversation_id

    def _change_membership(
        self, cid: str, changes: Callable[[MembershipState], list[Change]]
    ) -> None:
        """Sign and send ``changes`` after the verified head, reading the log again if it moved."""
        for attempt in range(3):
            conversation = self.refresh(cid)
            state = conversation.membership
            if state is None:
                raise MessagingError("this conversation has no verified membership log")
            try:
                for change in changes(state):
                    action = _ACTIONS[type(change)]
                    op = self._sign(state, change)
                    # conversation (left, for a leave): nothing of it is used but its shape
                    self._ask(answers.ANSWERS[action], action, conversation_id=cid, op=b64e(op))
                    state = state.extend([op], [self._identity], now=self._clock())
                return
            except ProtocolError as exc:
                raise MessagingError(f"that change is not allowed: {exc}") from None
            except FrameError as exc:
                if exc.code != "conflict" or "membership log moved" not in exc.message:
                    raise
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @_operation
    def add_members(self, target: str, user_ids: list[str]) -> None:
        cid = self.resolve(target)
        identities = self._user_identities(user_ids)

        def adds(state: MembershipState) -> list[Change]:
            new = sorted(u for u in identities if u not in state.members)
            return [
                Add(tuple(self._entries({u: identities[u] for u in new[i : i + ROOM_ADD_MEMBERS]})))
                for i in range(0, len(new), ROOM_ADD_MEMBERS)
            ]

        self._change_membership(cid, adds)
        self.refresh(cid)  # the next send rotates to the new roster
        record = self._record(cid)
        if record.room_name:
            # Newcomers see nothing sent before they joined: tell them the room's name.
            self.send(cid, RoomProfile(record.room_name, record.topic).to_control())

    @_operation
    def remove_members(self, target: str, user_ids: list[str]) -> None:
        """Remove members (moderators only); every sender rotates before its next message."""
        cid = self.resolve(target)

        def removes(state: MembershipState) -> list[Change]:
            gone = sorted(u for u in set(user_ids) if u in state.members)
            return [
                Remove(tuple(gone[i : i + ROOM_ADD_MEMBERS]))
                for i in range(0, len(gone), ROOM_ADD_MEMBERS)
            ]

        self._change_membership(cid, removes)
        self.refresh(cid)
        self._engine(cid).request_rotation()

    @_operation
    def leave(self, target: str) -> None:
        cid = self.resolve(target)
        self._change_membership(cid, lambda state: [Leave()])
        record = self._record(cid)
        record.left = True
        self._live.pop(cid, None)
        record.state = None  # its chain keys serve nobody now

    @_operation
    def set_role(self, target: str, user_id: str, role: str) -> None:
        cid = self.resolve(target)
        wanted = Role.MODERATOR if role == "moderator" else Role.MEMBER
        self._change_membership(cid, lambda state: [SetRole(user_id, wanted)])

    @_operation
    def members(self, target: str) -> list[dict[str, Any]]:
        """The members and roles the verified membership log names, with their devices
        this device distributes to (the server's list, less what the log refuses)."""
        cid = self.resolve(target)
        conversation = self.refresh(cid)
        state = conversation.membership
        if state is None:
            raise MessagingError("this conversation has no verified membership log")
        devices: dict[str, int] = {}
        for user_id, _device_id in conversation.members:
            devices[user_id] = devices.get(user_id, 0) + 1
        roles = {Role.MODERATOR: "moderator", Role.MEMBER: "member"}
        return [
            {
                "user_id": user_id,
                "name": self.name_of(user_id),
                "role": roles[entry.role],
                "devices": devices.get(user_id, 0),
            }
            for user_id, entry in sorted(state.members.items())
        ]

    @_operation
    def set_room_profile(self, target: str, name: str, topic: str = "") -> SentMessage:
        """Give the room a name and topic its members see (end-to-end encrypted)."""
        cid = self.resolve(target)
        record = self._record(cid)
        if record.kind != "room":
            raise MessagingError("only rooms have a shared name")
        try:
            profile = RoomProfile(name, topic)
        except ProtocolError as exc:
            raise MessagingError(str(exc)) from None
        sent = self.send(cid, profile.to_control())
        record.room_name, record.topic, record.profile_at = name, topic, self._clock()
        self._dirty = True
        self.save()
        return sent

    @_operation
    def label_room(self, conversation_id: str, label: str) -> None:
        """Name a room someone else created, on this user's other devices too (end-to-end
        encrypted through ``self_sync``: the server never sees a label)."""
        label = label.removeprefix("#")
        existing = self.state.room(label)
        if existing is not None and existing.conversation_id != conversation_id:
            raise MessagingError(f"#{label} already names another room")
        if conversation_id == self_conversation_id(self.info.user_id):
            raise MessagingError("your own devices' conversation is not a room")
        self._sync_change(self_sync.LABEL, conversation_id, label)
