"""An in-memory Sotto server for real ``Messenger`` objects: devices wired together.

``FakeServer`` answers, at the frame level, the WebSocket routes that users
with one device each need for direct conversations and rooms created with
their members (docs/api.md, "Messaging"); each device talks to it through its own ``FakeSession``, a
``SessionLike`` (``sotto.client.messenger.core``). Answers are built as the
shared shapes (``sotto.frames.answers*``) and paged with
``sotto.frames.paginate_lists``, as the real handlers do; requests are
checked with the models the server parses them with (``check_request``).

Kept faithful, because delivery depends on it:

* a conversation's messages get seqs 1, 2, ... in the order they are stored;
  ``send`` is idempotent on the envelope's message id (a repeat answers the
  first ``sent`` again and stores nothing);
* ``to_user`` envelopes and key distributions are mail, kept per recipient
  device until it acknowledges them, under an id derived from what they are
  (a repeated distribution replaces the first copy);
* ``sync`` pages from the device's acknowledged cursors (small pages, so a
  catch-up takes several), ``resume`` reads on from where a page stopped, a
  device never gets its own messages back but ``through`` covers them;
  ``ack`` moves cursors forward only and deletes acknowledged mail;
* every stored message and mail item is pushed to the recipient devices'
  open sessions, mail before the ``distributed`` answer.

Skipped, because the client's own checks are what these tests exercise and
the server's do not change what is delivered: authentication, rate limits,
policy limits (every user has the default policy), retention (off), the
envelope and signature checks of ``send`` and ``distribute``, the check that
a chain reached exactly the roster (``stale_devices``), verification of
membership operations (stored as signed, the client verifies them),
membership changes after creation, files, links and prekey publishing (the
signed prekey is every bundle; one-time prekeys are never handed out). A
route it does not have raises ``NotImplementedError``, never a refusal a
Messenger might take in its stride.

Faults: ``Trip`` makes a chosen request lose its connection or crash the
device before or after the server applies it; ``PushFaults`` drops,
duplicates and reorders pushes on their way into a session's queue.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sotto.client.encoding import b64d, b64e
from sotto.client.errors import ConnectionLost, FrameError
from sotto.client.session import check_request
from sotto.frames import join_parts, paginate_lists
from sotto.frames.answers import (
    AckedAnswer,
    Bundle,
    BundlesHeader,
    DistributedAnswer,
    MailItem,
    MailPush,
    MembershipPush,
    MessageItem,
    MessagePush,
    PolicyAnswer,
    SentAnswer,
    SyncHeader,
)
from sotto.frames.answers_conversations import (
    ConversationAnswer,
    ConversationDevicesHeader,
    ConversationInfo,
    ConversationsHeader,
    IdentitiesHeader,
    ListedConversation,
    LogOperation,
    MembershipLogHeader,
    RosterDevice,
    RosterMember,
    SignerIdentity,
    UnknownUser,
    UserIdentity,
)
from sotto.frames.answers_devices import DeviceItem, DevicesHeader, RetentionAnswer, UserAnswer
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.distribution import KeyDistribution
from sotto.protocol.envelope import Envelope
from sotto.protocol.membership import ConversationKind, Create, MembershipOperation, Role

__all__ = ["Crash", "FakeServer", "FakeSession", "PushFaults", "Trip"]

PAGE_MESSAGES = 3  # the real server's 2,000: small, so a catch-up takes several pages
PAGE_MAIL = 2  # the real server's 100
_ROLES = {Role.MEMBER: "member", Role.MODERATOR: "moderator"}
_KINDS = {
    ConversationKind.DIRECT: "direct",
    ConversationKind.ROOM: "room",
    ConversationKind.SELF: "self",
}


class Crash(BaseException):
    """The device's process died here (a BaseException: no ``except ClientError`` stops it)."""


@dataclass
class _Device:
    user_id: str
    device_id: str
    certificate: bytes
    signed_prekey: bytes


@dataclass
class _User:
    user_id: str
    handle: str
    identity_key: bytes
    devices: list[str] = field(default_factory=list)


@dataclass
class _Stored:
    seq: int
    envelope: bytes
    sender_device: str
    message_id: str
    server_time: int


@dataclass
class _Conversation:
    conversation_id: str
    kind: str
    members: dict[str, str]  # user -> role
    created_at: int
    log: list[bytes] = field(default_factory=list)
    messages: list[_Stored] = field(default_factory=list)
    roster_version: int = 1

    @property
    def last_seq(self) -> int:
        return len(self.messages)


@dataclass
class Trip:
    """A request of ``device_id`` with ``action`` that fails: ``skip`` matching ones pass
    first, then ``times`` fail. ``applied``: the server applies it before the failure (its
    answer is what is lost). ``crash``: the device dies (``Crash``) instead of losing its
    connection (``ConnectionLost``, which the Messenger retries on a new one)."""

    device_id: str
    action: str
    applied: bool
    crash: bool = False
    skip: int = 0
    times: int = 1
    seen: int = 0
    fired: int = 0

    def due(self, device_id: str, action: str, applied: bool) -> bool:
        if (device_id, action, applied) != (self.device_id, self.action, self.applied):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.fired >= self.times:
            return False
        self.fired += 1
        return True


class PushFaults:
    """Pushes on their way into a session's queue: some dropped, some duplicated, some put
    ahead of those already waiting (reordered). Counts what it did."""

    def __init__(
        self, seed: int, *, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0
    ) -> None:
        self.rng = random.Random(seed)
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.dropped = self.duplicated = self.reordered = 0

    def enqueue(self, frame: dict[str, Any], queue: deque[dict[str, Any]]) -> None:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        copies = 1
        if self.rng.random() < self.duplicate:
            copies, self.duplicated = 2, self.duplicated + 1
        for _ in range(copies):
            if queue and self.rng.random() < self.reorder:
                self.reordered += 1
                queue.insert(self.rng.randrange(len(queue)), dict(frame))
            else:
                queue.append(dict(frame))


class FakeSession:
    """One device's connection to the ``FakeServer`` (``SessionLike``)."""

    def __init__(self, server: FakeServer, device_id: str) -> None:
        self.server, self.device_id = server, device_id
        self.pushes: deque[dict[str, Any]] = deque()
        self.closed = False

    def push(self, frame: Mapping[str, Any]) -> None:
        faults = self.server.push_faults.get(self.device_id)
        if faults is None:
            self.pushes.append(dict(frame))
        else:
            faults.enqueue(dict(frame), self.pushes)

    def request(self, action: str, **fields: Any) -> dict[str, Any]:
        return join_parts(self.request_parts(action, **fields))

    def request_parts(self, action: str, **fields: Any) -> list[dict[str, Any]]:
        if self.closed:
            raise ConnectionLost(None, "the fake connection is closed")
        check_request(action, fields)
        self.server.requests.append((self.device_id, action))
        self._trip(action, applied=False)
        parts = self.server.handle(self.device_id, action, fields)
        self._trip(action, applied=True)
        return parts

    def request_many(
        self,
        action: str,
        requests: Sequence[Mapping[str, Any]],
        answered: dict[int, list[dict[str, Any]]],
    ) -> None:
        for index, fields in enumerate(requests):
            if index not in answered:
                answered[index] = self.request_parts(action, **fields)

    def next_push(self, timeout: float) -> dict[str, Any] | None:
        if self.closed:
            raise ConnectionLost(None, "the fake connection is closed")
        return self.pushes.popleft() if self.pushes else None

    def close(self) -> None:
        self.closed = True
        self.server.sessions.get(self.device_id, set()).discard(self)

    def _trip(self, action: str, *, applied: bool) -> None:
        for trip in self.server.trips:
            if trip.due(self.device_id, action, applied):
                self.close()  # the socket goes either way; pushes waiting in it are lost
                if trip.crash:
                    self.server.dead.add(self.device_id)  # it writes nothing more
                    raise Crash(f"{self.device_id} died at {action} (applied: {applied})")
                raise ConnectionLost(1006, f"lost at {action} (applied: {applied})")


class FakeServer:
    """Users, devices, conversations, mailboxes and cursors of one network, in memory."""

    def __init__(self, network_id: str = "net-fake") -> None:
        self.network_id = network_id
        self.users: dict[str, _User] = {}
        self.devices: dict[str, _Device] = {}
        self.conversations: dict[str, _Conversation] = {}
        self.cursors: dict[tuple[str, str], int] = {}  # (device, conversation) -> seq
        self.mail: dict[str, dict[str, MailItem]] = {}  # device -> mail id -> item
        self.sessions: dict[str, set[FakeSession]] = {}
        self.trips: list[Trip] = []
        self.push_faults: dict[str, PushFaults] = {}
        self.requests: list[tuple[str, str]] = []  # (device, action), every one received
        self.dead: set[str] = set()  # devices whose process died (a Crash): no more saves
        self._time = itertools.count(1_700_000_000_000)
        self._ids = itertools.count(1)

    # -- the directory, as enrollment leaves it

    def add_device(
        self, user_id: str, handle: str, identity_key: bytes, certificate: bytes, prekey: bytes
    ) -> None:
        user = self.users.setdefault(user_id, _User(user_id, handle, identity_key))
        device_id = _certified_device(certificate)
        user.devices.append(device_id)
        self.devices[device_id] = _Device(user_id, device_id, certificate, prekey)

    def connect(self, device_id: str) -> Callable[[], FakeSession]:
        """A ``Messenger``'s ``connect``: each call opens a new session for the device."""

        def open_session() -> FakeSession:
            session = FakeSession(self, device_id)
            self.sessions.setdefault(device_id, set()).add(session)
            return session

        return open_session

    # -- requests

    def handle(self, device_id: str, action: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        route = getattr(self, f"_{action}", None)
        if route is None:
            raise NotImplementedError(f"the fake server has no {action!r} route")
        rid = f"r{next(self._ids)}"
        parts: list[dict[str, Any]] = route(self.devices[device_id], rid, fields)
        return parts

    def _now(self) -> int:
        return next(self._time)

    def _push(self, device_id: str, frame: Mapping[str, Any]) -> None:
        for session in list(self.sessions.get(device_id, ())):
            session.push(frame)

    def _roster(self, conversation: _Conversation) -> list[str]:
        return [d for u in conversation.members for d in self.users[u].devices]

    def _member(self, caller: _Device, cid: str) -> _Conversation:
        conversation = self.conversations.get(cid)
        if conversation is None or caller.user_id not in conversation.members:
            raise FrameError("request", "not_found", "no such conversation")
        return conversation

    def _policy(self, caller: _Device, rid: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        answer: PolicyAnswer = {
            "action": "policy",
            "id": rid,
            "network_id": self.network_id,
            "user_id": caller.user_id,
            "policy": {},
            "sources": {},
            "groups": [],
            "version": 1,
        }
        return [dict(answer)]

    def _retention(self, caller: _Device, rid: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        answer: RetentionAnswer = {
            "action": "retention",
            "id": rid,
            "network_id": self.network_id,
            "enabled": False,
        }
        return [dict(answer)]

    def _identities(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        wanted = sorted(set(fields["user_ids"]))
        found: list[UserIdentity] = [
            {
                "user_id": u,
                "handle": self.users[u].handle,
                "identity_key": b64e(self.users[u].identity_key),
            }
            for u in wanted
            if u in self.users
        ]
        unknown: list[UnknownUser] = [{"user_id": u} for u in wanted if u not in self.users]
        header: IdentitiesHeader = {"action": "identities", "id": rid}
        return paginate_lists(header, {"identities": found, "unknown": unknown})

    def _lookup_user(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        for user in self.users.values():
            if user.handle == fields["handle"]:
                answer: UserAnswer = {
                    "action": "user",
                    "id": rid,
                    "user_id": user.user_id,
                    "handle": user.handle,
                    "status": "active",
                    "identity_key": b64e(user.identity_key),
                }
                return [dict(answer)]
        raise FrameError("lookup_user", "not_found", "no such user")

    def _list_devices(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        user = self.users[fields["user_id"]]
        header: DevicesHeader = {
            "action": "devices",
            "id": rid,
            "user_id": user.user_id,
            "identity_key": b64e(user.identity_key),
        }
        devices: list[DeviceItem] = [
            {"device_id": d, "certificate": b64e(self.devices[d].certificate), "status": "active"}
            for d in user.devices
        ]
        return paginate_lists(header, {"devices": devices})

    def _create_conversation(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        cid, op = fields["conversation_id"], b64d(fields["op"], "op")
        conversation = self.conversations.get(cid)
        if conversation is None:  # a direct conversation created twice: the first one stands
            change = MembershipOperation.parse(op).change
            assert isinstance(change, Create)
            roles = {e.user_id: _ROLES[e.role] for e in change.members}
            kind = _KINDS[change.conversation_kind]
            conversation = _Conversation(cid, kind, roles, self._now(), [op])
            self.conversations[cid] = conversation
            for user_id in roles:
                if user_id == caller.user_id:
                    continue
                push: MembershipPush = {
                    "action": "membership",
                    "conversation_id": cid,
                    "kind": conversation.kind,
                    "change": "added",
                    "users": [user_id],
                    "by": caller.user_id,
                    "roster_version": conversation.roster_version,
                    "seq": 0,
                    "op": b64e(op),
                }
                for device_id in self.users[user_id].devices:
                    self._push(device_id, push)
        info: ConversationInfo = {
            "conversation_id": cid,
            "kind": conversation.kind,
            "members": [{"user_id": u, "role": r} for u, r in conversation.members.items()],
            "roster_version": conversation.roster_version,
            "last_seq": conversation.last_seq,
            "created_at": conversation.created_at,
            "log_seq": len(conversation.log) - 1,
        }
        answer: ConversationAnswer = {"action": "conversation", "id": rid, "conversation": info}
        return [dict(answer)]

    def _list_conversations(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        listed: list[ListedConversation] = [
            {
                "conversation_id": c.conversation_id,
                "kind": c.kind,
                "role": c.members[caller.user_id],
                "roster_version": c.roster_version,
                "member_count": len(c.members),
                "last_seq": c.last_seq,
            }
            for c in self.conversations.values()
            if caller.user_id in c.members
        ]
        header: ConversationsHeader = {"action": "conversations", "id": rid}
        return paginate_lists(header, {"conversations": listed})

    def _conversation_devices(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        conversation = self._member(caller, fields["conversation_id"])
        members: list[RosterMember] = [
            {
                "user_id": u,
                "role": role,
                "handle": self.users[u].handle,
                "identity_key": b64e(self.users[u].identity_key),
            }
            for u, role in conversation.members.items()
        ]
        devices: list[RosterDevice] = [
            {
                "user_id": self.devices[d].user_id,
                "device_id": d,
                "certificate": b64e(self.devices[d].certificate),
            }
            for d in self._roster(conversation)
        ]
        header: ConversationDevicesHeader = {
            "action": "conversation_devices",
            "id": rid,
            "conversation_id": conversation.conversation_id,
            "roster_version": conversation.roster_version,
        }
        return paginate_lists(header, {"members": members, "devices": devices})

    def _membership_log(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        conversation = self._member(caller, fields["conversation_id"])
        after: int = fields["after"]
        operations: list[LogOperation] = [
            {"seq": seq, "op": b64e(op)} for seq, op in enumerate(conversation.log) if seq > after
        ]
        signers = sorted(
            {MembershipOperation.parse(b64d(o["op"], "op")).signer.user_id for o in operations}
        )
        identities: list[SignerIdentity] = [
            {"user_id": u, "identity_key": b64e(self.users[u].identity_key)} for u in signers
        ]
        header: MembershipLogHeader = {
            "action": "membership_log",
            "id": rid,
            "conversation_id": conversation.conversation_id,
            "head_seq": len(conversation.log) - 1,
            "more": False,
        }
        return paginate_lists(header, {"operations": operations, "identities": identities})

    def _fetch_bundles(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        bundles: list[Bundle] = [
            {
                "user_id": d["user_id"],
                "device_id": d["device_id"],
                "kind": "signed",
                "prekey": b64e(self.devices[d["device_id"]].signed_prekey),
            }
            for d in fields["devices"]
            if d["device_id"] in self.devices
        ]
        header: BundlesHeader = {"action": "bundles", "id": rid}
        return paginate_lists(header, {"bundles": bundles, "unavailable": []})

    def _put_mail(self, device_id: str, item: MailItem) -> None:
        box = self.mail.setdefault(device_id, {})
        box.pop(item["mail_id"], None)  # a repeat replaces the first copy, as the newest
        box[item["mail_id"]] = item
        push: MailPush = {"action": "mail", **item}
        self._push(device_id, push)

    def _distribute(
        self, caller: _Device, rid: str, fields: dict[str, Any]
    ) -> list[dict[str, Any]]:
        conversation = self._member(caller, fields["conversation_id"])
        now = self._now()
        for raw in fields["distributions"]:
            data = b64d(raw, "distribution")
            recipient = KeyDistribution.parse(data).recipient_device_id
            mail_id = _mail_id(
                conversation.conversation_id, caller.device_id, fields["chain_id"], recipient
            )
            item: MailItem = {
                "mail_id": mail_id,
                "conversation_id": conversation.conversation_id,
                "kind": "distribution",
                "data": raw,
                "from_device": caller.device_id,
                "server_time": now,
            }
            self._put_mail(recipient, item)
        answer: DistributedAnswer = {
            "action": "distributed",
            "id": rid,
            "chain_id": fields["chain_id"],
            "count": len(fields["distributions"]),
        }
        return [dict(answer)]

    def _send(self, caller: _Device, rid: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        conversation = self._member(caller, fields["conversation_id"])
        cid = conversation.conversation_id
        envelope = b64d(fields["envelope"], "envelope")
        message_id = Envelope.parse(envelope).header.message_id.hex()
        now = self._now()
        to_user = fields.get("to_user")
        if to_user is not None:
            for device_id in self.users[to_user].devices:
                if device_id == caller.device_id:
                    continue
                item: MailItem = {
                    "mail_id": _mail_id(cid, message_id, device_id),
                    "conversation_id": cid,
                    "kind": "envelope",
                    "data": fields["envelope"],
                    "from_device": caller.device_id,
                    "server_time": now,
                }
                self._put_mail(device_id, item)
            mailed: SentAnswer = {
                "action": "sent",
                "id": rid,
                "conversation_id": cid,
                "message_id": message_id,
                "server_time": now,
                "mailbox": True,
            }
            return [dict(mailed)]
        stored = next((m for m in conversation.messages if m.message_id == message_id), None)
        if stored is None:
            stored = _Stored(conversation.last_seq + 1, envelope, caller.device_id, message_id, now)
            conversation.messages.append(stored)
            push: MessagePush = {"action": "message", **_message_item(cid, stored)}
            for device_id in self._roster(conversation):
                if device_id != caller.device_id:
                    self._push(device_id, push)
        answer: SentAnswer = {
            "action": "sent",
            "id": rid,
            "conversation_id": cid,
            "seq": stored.seq,
            "server_time": stored.server_time,
            "message_id": message_id,
        }
        return [dict(answer)]

    def _sync(self, caller: _Device, rid: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """One page: the plan is [conversation, start, head] per conversation with news,
        from the cursors on the first page and from the token on a resumed one."""
        token = fields.get("resume")
        plan: list[tuple[str, int, int]]
        if token is None:
            read_mail = True
            plan = [
                (c.conversation_id, self.cursors.get((caller.device_id, cid), 0), c.last_seq)
                for cid, c in self.conversations.items()
                if caller.user_id in c.members
            ]
            plan = [e for e in plan if e[2] > e[1]]
        else:
            resumed = json.loads(token)
            read_mail = bool(resumed["mail"])
            plan = [(str(c), int(start), int(head)) for c, start, head in resumed["plan"]]
        box = list(self.mail.get(caller.device_id, {}).values()) if read_mail else []
        mail, mail_more = box[:PAGE_MAIL], len(box) > PAGE_MAIL
        messages: list[MessageItem] = []
        through: dict[str, int] = {}
        budget, left = PAGE_MESSAGES, list[tuple[str, int, int]]()
        for cid, start, head in plan:
            conversation = self.conversations[cid]
            taken = [m for m in conversation.messages if start < m.seq <= head][: max(budget, 0)]
            if not taken:
                left.append((cid, start, head))
                continue
            budget -= len(taken)
            through[cid] = taken[-1].seq
            messages += [
                _message_item(cid, m) for m in taken if m.sender_device != caller.device_id
            ]
            if taken[-1].seq < head:
                left.append((cid, taken[-1].seq, head))
        more = mail_more or bool(left)
        header: SyncHeader = {
            "action": "sync",
            "id": rid,
            "more": more,
            "through": through,
            "rosters": {c: self.conversations[c].roster_version for c in through},
        }
        if more:
            header["resume"] = json.dumps({"mail": mail_more, "plan": left})
        return paginate_lists(header, {"mail": mail, "messages": messages})

    def _ack(self, caller: _Device, rid: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        for cid, seq in (fields.get("cursors") or {}).items():
            key = (caller.device_id, cid)
            if cid in self.conversations and seq > self.cursors.get(key, 0):
                self.cursors[key] = seq
        box = self.mail.get(caller.device_id, {})
        for mail_id in fields.get("mail") or []:
            box.pop(mail_id, None)
        answer: AckedAnswer = {"action": "acked", "id": rid}
        return [dict(answer)]


def _message_item(cid: str, stored: _Stored) -> MessageItem:
    return {
        "conversation_id": cid,
        "seq": stored.seq,
        "envelope": b64e(stored.envelope),
        "server_time": stored.server_time,
    }


def _mail_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _certified_device(certificate: bytes) -> str:
    return DeviceCertificate.parse(certificate).device_id
