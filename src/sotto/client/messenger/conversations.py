"""Conversations: records and engines, the verified membership, direct and self.

``refresh`` verifies a conversation's signed membership log (docs/protocol.md
§15) and gives its engine the devices the log justifies; every other device
the server lists is refused, and what changed becomes a notice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sotto.frames.answers_conversations import (
    ConversationAnswer,
    ConversationDevicesPart,
    ConversationInfo,
    ConversationsPart,
    MembershipLogPart,
    RosterDevice,
)
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.conversation import Conversation, Member, MembershipChange, RefusedDevice
from sotto.protocol.errors import IdentityChanged, ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.membership import (
    Add,
    Change,
    ConversationKind,
    Create,
    Leave,
    MemberEntry,
    MembershipOperation,
    MembershipState,
    Remove,
    Role,
    SetRole,
    direct_conversation_id,
    self_conversation_id,
    sign_operation,
)

from ..encoding import b64d, b64e
from ..errors import ClientError, FrameError, MessagingError, TrustError
from ..events import Event, NoticeEvent
from ..store import ConversationRecord, StoredMessage
from .core import _identity, _operation, _shaped
from .people import People

__all__ = ["Conversations"]

NAMES_SHOWN = 5  # a membership notice names this many users, then counts the rest
HANDLE = re.compile(r"[a-z0-9._-]{1,32}")  # as invites give them (docs/api.md)
CONVERSATION_ID = re.compile(r"(room|dm|self)-[0-9a-f]+")  # as the server and §15 make them
_KINDS = {
    ConversationKind.DIRECT: "direct",
    ConversationKind.ROOM: "room",
    ConversationKind.SELF: "self",
}


class Conversations(People):
    """A conversation's record and engine, its verified roster; finding and listing them."""

    def engine(self, cid: str) -> Conversation:
        """The conversation's engine (for inspection and tests; mutate only through this SDK)."""
        return self._engine(cid)

    def resolve(self, target: str) -> str:
        """``#room`` (a local label), or a user (handle or id): the conversation id."""
        if target.startswith("#"):
            record = self.state.room(target[1:])
            if record is None:
                raise MessagingError(f"no room named {target!r} on this device")
            return record.conversation_id
        if target == self_conversation_id(self.info.user_id):
            raise MessagingError("that is your own devices' conversation: it carries no messages")
        if target in self.state.conversations or CONVERSATION_ID.fullmatch(target):
            return target  # a conversation id (one this device has not seen yet, too)
        user_id = self.resolve_user(target)
        known = next(
            (
                r.conversation_id
                for r in self.state.conversations.values()
                if r.kind == "direct" and r.peer == user_id and not r.left
            ),
            None,
        )
        if known is not None:
            return known  # no round trip: the direct conversation of two users never changes
        if target.startswith(("room-", "dm-")):
            self.conversations()  # a conversation id this device has not seen yet?
            if target in self.state.conversations:
                return target
        try:
            return self.direct(user_id)
        except FrameError as exc:
            if exc.code not in ("not_found", "bad_request"):
                raise
        except MessagingError:
            pass
        raise MessagingError(f"no user or conversation {target!r}") from None

    def _sign(
        self, state: MembershipState | None, change: Change, *, conversation_id: str | None = None
    ) -> bytes:
        return sign_operation(
            self.keys.device,
            self._identity,
            state,
            change,
            now=self._clock(),
            conversation_id=conversation_id,
        )

    def _entries(
        self, identities: Mapping[str, IdentityPublicKey], role: int = Role.MEMBER
    ) -> list[MemberEntry]:
        return [MemberEntry.of(u, identities[u], role) for u in sorted(identities)]

    @_operation
    def direct(self, user_id: str) -> str:
        """The direct conversation with ``user_id``: created (signed by this device) if new."""
        if user_id == self.info.user_id:
            raise MessagingError("a direct conversation is with another user")
        cid = direct_conversation_id(self.info.user_id, user_id)
        identities = self._user_identities([user_id])
        entries = sorted(
            [MemberEntry.of(self.info.user_id, self._identity), *self._entries(identities)],
            key=lambda e: e.user_id,
        )
        op = self._sign(None, Create(ConversationKind.DIRECT, tuple(entries)), conversation_id=cid)
        answer = self._ask(
            ConversationAnswer, "create_conversation", conversation_id=cid, op=b64e(op)
        )
        conversation = self._conversation_frame(answer, cid)
        record = self._record(conversation["conversation_id"], kind="direct")
        record.peer = user_id
        return record.conversation_id

    @_operation
    def self_conversation(self) -> str:
        """This user's own devices' conversation (``self_sync``): created, signed here, if new."""
        cid = self_conversation_id(self.info.user_id)
        record = self.state.conversations.get(cid)
        if record is None or (record.state is None and cid not in self._live):
            entry = MemberEntry.of(self.info.user_id, self._identity)
            op = self._sign(None, Create(ConversationKind.SELF, (entry,)), conversation_id=cid)
            answer = self._ask(
                ConversationAnswer, "create_conversation", conversation_id=cid, op=b64e(op)
            )
            self._conversation_frame(answer, cid)
            self._record(cid, kind="self")
        return cid

    @_operation
    def conversations(self) -> list[dict[str, Any]]:
        """The server's list, with this device's labels and last local message."""
        self.purge()  # a burnt or expired message is no one's last message
        listed = self._call_parts("list_conversations")
        rows: list[dict[str, Any]] = []
        for part in (_shaped(ConversationsPart, "list_conversations", p) for p in listed):
            for item in part["conversations"]:
                cid = item["conversation_id"]
                if cid == self_conversation_id(self.info.user_id):
                    continue  # this user's devices' own: contacts and labels, no chat
                record = self._record(cid, kind=item["kind"])
                last = record.history[-1] if record.history else None
                rows.append(
                    {
                        "conversation_id": cid,
                        "kind": record.kind,
                        "name": self.display_name(record),
                        "role": item["role"],
                        "members": item["member_count"],
                        "last_seq": item["last_seq"],
                        "read_through": record.cursor,
                        "last_message": None if last is None else last.text,
                    }
                )
        return rows

    def display_name(self, record: ConversationRecord) -> str:
        if record.kind == "self":
            return "your devices"
        if record.label:
            return f"#{record.label}"
        if record.room_name:
            return f"#{record.room_name}"
        if record.peer:
            return self.name_of(record.peer)
        return record.conversation_id

    @_operation
    def history(self, target: str) -> list[StoredMessage]:
        cid = target if target in self.state.conversations else self.resolve(target)
        self.purge()
        return list(self.state.conversations[cid].history)

    def _conversation_frame(self, answer: ConversationAnswer, cid: str) -> ConversationInfo:
        conversation = answer["conversation"]
        if conversation["conversation_id"] != cid:
            raise MessagingError("the server answered with another conversation than was created")
        return conversation

    def _record(self, cid: str, *, kind: str | None = None) -> ConversationRecord:
        self._touched.add(cid)  # whoever asks may change it; unchanged files are not rewritten
        record = self.state.conversations.get(cid)
        if record is None:
            record = ConversationRecord(cid, kind or "unknown")
            self.state.conversations[cid] = record
            self._dirty = True
        elif kind is not None and record.kind == "unknown":
            record.kind = kind
        return record

    def _engine(self, cid: str) -> Conversation:
        """The conversation's engine: loaded from the keystore, or built from the roster."""
        live = self._live.get(cid)
        if live is not None:
            return live
        record = self._record(cid)
        if record.state is None:
            return self.refresh(cid)
        try:
            live = Conversation.parse(record.state, self.local)
        except IdentityChanged as exc:
            raise TrustError(exc.user_id, self.name_of(exc.user_id)) from None
        self._live[cid] = live
        return live

    @_operation
    def refresh(self, cid: str) -> Conversation:
        """Verify the conversation's membership log and keep the devices it justifies.

        The new operations after the verified head (``membership_log``) and
        the server's device list (``conversation_devices``) go to the engine
        (``update_membership``): it verifies every operation and distributes
        only to devices of users the log names, certified by the identity it
        binds them to. Every other device the server lists is refused and
        reported; joins, leaves and new devices are reported too (``notices``).
        """
        parts = [
            _shaped(ConversationDevicesPart, "conversation_devices", p)
            for p in self._call_parts("conversation_devices", conversation_id=cid)
        ]
        version = max((p["roster_version"] for p in parts), default=0)
        now = self._clock()
        identities: dict[str, IdentityPublicKey] = {}
        for part in parts:
            for listed in part["members"]:
                user_id = listed["user_id"]
                identity = _identity(listed["identity_key"])
                if user_id == self.info.user_id and identity != self.local.identity:
                    raise TrustError(user_id, "your own user")
                identities[user_id] = identity
                handle = listed["handle"]
                if HANDLE.fullmatch(handle):
                    self.state.handles[user_id] = handle  # a name to show, never trusted
        devices = [
            member
            for part in parts
            for device in part["devices"]
            if (member := self._member(cid, device, identities)) is not None
            and member.address != self.local.address
        ]
        record = self._record(cid)
        conversation = self._live.get(cid)
        if conversation is None and record.state is not None:
            conversation = self._engine(cid)
        if conversation is None:
            conversation = Conversation.create(cid, self.local, [], now=now)
        state = conversation.membership
        operations, signers, head = self._log_after(cid, -1 if state is None else state.seq)
        try:
            change = conversation.update_membership(
                operations,
                devices,
                now=now,
                identities=[*identities.values(), *signers],
                served_seq=head,
            )
        except IdentityChanged as exc:
            raise TrustError(exc.user_id, self.name_of(exc.user_id)) from None
        except ProtocolError as exc:
            raise MessagingError(
                f"the server's membership log for {self.display_name(record)} does not verify: "
                f"{exc}; not trusting it"
            ) from None
        self._live[cid] = conversation
        verified = conversation.membership
        if verified is not None:
            record.kind = _KINDS[verified.kind]
            others = sorted(u for u in verified.members if u != self.info.user_id)
            if record.kind == "direct" and len(others) == 1:
                record.peer = others[0]
        known = self._refused.get(cid, {})
        self._refused[cid] = {r.address: r.code for r in change.refused}
        # On first sight the whole history verifies; only its latest step is news.
        self._report_change(
            cid,
            change,
            operations if state is not None else operations[-1:],
            [r for r in change.refused if known.get(r.address) != r.code],
        )
        record.roster_version = version
        self._dirty = True
        return conversation

    def _drain_notices(self) -> list[Event]:
        notices, self._notices = self._notices, []
        return list(notices)

    def _log_after(self, cid: str, after: int) -> tuple[list[bytes], list[IdentityPublicKey], int]:
        """The stored membership operations after ``after``, their signers' keys, the head."""
        operations: list[bytes] = []
        signers: list[IdentityPublicKey] = []
        head = after
        while True:
            answer = self._ask(
                MembershipLogPart, "membership_log", conversation_id=cid, after=after
            )
            page = sorted(answer["operations"], key=lambda o: o["seq"])
            operations += [b64d(o["op"], "membership operation") for o in page]
            signers += [_identity(i["identity_key"]) for i in answer["identities"]]
            head = answer["head_seq"]
            if not answer["more"] or not page:
                return operations, signers, head
            after = page[-1]["seq"]

    def _report_change(
        self,
        cid: str,
        change: MembershipChange,
        operations: list[bytes],
        refused: list[RefusedDevice],
    ) -> None:
        """What a person should see of a verified membership change: each operation, by
        whom; new devices of members; devices the server lists that the log refuses."""
        for data in operations:
            text = self._describe(MembershipOperation.parse(data))
            if text:
                self._notices.append(NoticeEvent(cid, "membership", text))
        for user_id, device_id in change.new_devices:
            if user_id != self.info.user_id and user_id not in change.joined:
                name = self.name_of(user_id)
                text = f"{name} has a new device ({device_id}); compare safety numbers if unsure"
                self._notices.append(NoticeEvent(cid, "new_device", text))
        for device in refused:  # reported once a process, not on every refresh
            user_id, device_id = device.address
            self._notices.append(
                NoticeEvent(
                    cid,
                    device.code,
                    f"refused device {device_id} of {self.name_of(user_id)}: the server lists it,"
                    f" the membership log does not justify it ({device.code}); it gets no keys",
                )
            )

    def _describe(self, op: MembershipOperation) -> str:
        """One verified operation in words (names as this device knows them)."""
        by = "you" if op.signer.user_id == self.info.user_id else self.name_of(op.signer.user_id)
        change = op.change

        def names(user_ids: Iterable[str]) -> str:
            listed = [self.name_of(u) for u in user_ids]
            shown = ", ".join(listed[:NAMES_SHOWN])
            rest = len(listed) - NAMES_SHOWN
            return f"{shown} and {rest} more" if rest > 0 else shown

        if isinstance(change, Create):
            if change.conversation_kind != ConversationKind.ROOM:
                return ""  # the conversation itself says who is in it
            return f"{by} created the room with {len(change.members)} members"
        if isinstance(change, Add):
            return f"{by} added {names(m.user_id for m in change.members)}"
        if isinstance(change, Remove):
            return f"{by} removed {names(change.users)}"
        if isinstance(change, Leave):
            return f"{by} left"
        if isinstance(change, SetRole):
            role = "a moderator" if change.role == Role.MODERATOR else "a member"
            return f"{by} made {self.name_of(change.user_id)} {role}"
        return f"{by} changed the membership ({change.NAME})"  # a device rebinding its key

    def _member(
        self, cid: str, device: RosterDevice, identities: dict[str, IdentityPublicKey]
    ) -> Member | None:
        """A listed device as the engine takes it (it verifies the certificate itself)."""
        user_id, device_id = device["user_id"], device["device_id"]
        identity = identities.get(user_id)
        if identity is None:
            return None  # no identity for its user: it cannot be justified, nothing to send it
        try:
            certificate = DeviceCertificate.parse(b64d(device["certificate"], "certificate"))
        except (ProtocolError, ClientError) as exc:
            self._notices.append(NoticeEvent(cid, "bad_certificate", f"device {device_id}: {exc}"))
            return None
        if (certificate.user_id, certificate.device_id) != (user_id, device_id):
            self._notices.append(
                NoticeEvent(
                    cid, "bad_certificate", f"device {device_id}: a certificate for another"
                )
            )
            return None
        return Member(certificate, identity)
