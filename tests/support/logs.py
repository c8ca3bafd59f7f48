"""Signed membership operations for tests that drive the server's routes directly.

The SDK signs these itself (``Messenger.create_room`` and friends); server
tests need the same request fields without the SDK: ``{conversation_id, op}``
signed by the test device, after the log the server serves.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sotto.protocol.device import DeviceSecrets
from sotto.protocol.keys import ECDSA_SIGNATURE_LENGTH, IdentityPublicKey
from sotto.protocol.membership import (
    GENESIS,
    LABEL,
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
    verify_log,
)
from sotto_server.dal.conversations import LogAppend

from .stack import SeededDevice, Socket, b64, unb64

__all__ = [
    "add_fields",
    "create_fields",
    "creation",
    "direct_fields",
    "identities",
    "leave_fields",
    "log_state",
    "remove_fields",
    "role_fields",
    "self_fields",
    "sign",
]


def _now() -> int:
    return int(time.time() * 1000)


def sign(
    device: SeededDevice, state: MembershipState | None, change: Change, *, cid: str = ""
) -> bytes:
    """``change`` signed by the device after ``state``, unchecked (``sign_operation`` would
    refuse what verifiers refuse; tests also play members who try it anyway)."""
    secrets_, _identity = _keys(device)
    now = _now()
    position = (
        (cid, 0, GENESIS, now)
        if state is None
        else (state.conversation_id, state.seq + 1, state.head, max(now, state.timestamp))
    )
    draft = MembershipOperation(
        *position, secrets_.certificate, change, bytes(ECDSA_SIGNATURE_LENGTH)
    )
    return replace(draft, signature=secrets_.signing_key.sign(LABEL, draft.body())).serialize()


def _keys(device: SeededDevice) -> tuple[DeviceSecrets, IdentityPublicKey]:
    assert device.secrets is not None
    assert device.identity is not None
    return device.secrets, device.identity.public


def creation(cid: str, creator: SeededDevice, *others: SeededDevice) -> LogAppend:
    """A room's creation operation, signed by ``creator``'s device, as ``LogAppend``."""
    device, identity = _keys(creator)
    members = [MemberEntry.of(creator.user_id, identity, Role.MODERATOR)]
    for other in others:
        members.append(MemberEntry.of(other.user_id, _keys(other)[1]))
    now = _now()
    change = Create(ConversationKind.ROOM, tuple(sorted(members, key=lambda m: m.user_id)))
    op = sign_operation(device, identity, None, change, now=now, conversation_id=cid)
    keys = [identity, *(_keys(o)[1] for o in others)]
    state = verify_log([op], keys, conversation_id=cid, now=now)
    return LogAppend(0, op, state.serialize())


def identities(socket: Socket, user_ids: list[str]) -> dict[str, IdentityPublicKey]:
    """The server's identity keys for ``user_ids`` (the ``identities`` route)."""
    if not user_ids:
        return {}
    found: dict[str, IdentityPublicKey] = {}
    for part in socket.answers("identities", user_ids=sorted(set(user_ids))):
        for entry in part.get("identities", []):
            found[entry["user_id"]] = IdentityPublicKey.parse(unb64(entry["identity_key"]))
    return found


def _entry(user_id: str, keys: dict[str, IdentityPublicKey]) -> MemberEntry:
    """The user's entry; one the server does not know gets a made-up fingerprint (refused)."""
    key = keys.get(user_id)
    return MemberEntry.of(user_id, key) if key else MemberEntry(user_id, secrets.token_bytes(32))


def _create(
    socket: Socket, device: SeededDevice, cid: str, kind: int, user_ids: list[str]
) -> dict[str, Any]:
    _secrets, identity = _keys(device)
    keys = identities(socket, [u for u in user_ids if u != device.user_id])
    creator_role = Role.MODERATOR if kind == ConversationKind.ROOM else Role.MEMBER
    members = [MemberEntry.of(device.user_id, identity, creator_role)]
    members += [_entry(u, keys) for u in sorted(set(user_ids) - {device.user_id})]
    change = Create(kind, tuple(sorted(members, key=lambda m: m.user_id)))
    return {"conversation_id": cid, "op": b64(sign(device, None, change, cid=cid))}


def create_fields(
    socket: Socket, device: SeededDevice, user_ids: list[str], *, cid: str | None = None
) -> dict[str, Any]:
    """``create_conversation`` fields for a new room of the device's user and ``user_ids``."""
    cid = cid or f"room-{secrets.token_hex(12)}"
    return _create(socket, device, cid, ConversationKind.ROOM, user_ids)


def direct_fields(socket: Socket, device: SeededDevice, user_id: str) -> dict[str, Any]:
    """``create_conversation`` fields for the direct conversation with ``user_id``."""
    cid = direct_conversation_id(device.user_id, user_id)
    return _create(socket, device, cid, ConversationKind.DIRECT, [user_id])


def self_fields(
    device: SeededDevice, *, cid: str | None = None, member: SeededDevice | None = None
) -> dict[str, Any]:
    """``create_conversation`` fields for the self conversation of ``member`` (the device's
    user unless given) under ``cid`` (its derived id unless given), signed by ``device``."""
    member = member or device
    entry = MemberEntry.of(member.user_id, _keys(member)[1])
    cid = cid or self_conversation_id(member.user_id)
    op = sign(device, None, Create(ConversationKind.SELF, (entry,)), cid=cid)
    return {"conversation_id": cid, "op": b64(op)}


def log_state(socket: Socket, cid: str) -> MembershipState:
    """The conversation's log as the server serves it, verified."""
    operations: list[bytes] = []
    keys: list[IdentityPublicKey] = []
    after = -1
    while True:
        parts = socket.answers("membership_log", conversation_id=cid, after=after)
        assert parts[0].get("action") == "membership_log", parts[0]
        page = sorted((o for p in parts for o in p.get("operations", [])), key=lambda o: o["seq"])
        operations += [unb64(o["op"]) for o in page]
        keys += [
            IdentityPublicKey.parse(unb64(i["identity_key"]))
            for p in parts
            for i in p.get("identities", [])
        ]
        if not parts[0].get("more") or not page:
            break
        after = page[-1]["seq"]
    state = verify_log(operations, keys, conversation_id=cid, now=_now())
    return state


def _after(
    socket: Socket, device: SeededDevice, cid: str, change: Callable[[], Change]
) -> dict[str, Any]:
    state = log_state(socket, cid)
    return {"conversation_id": cid, "op": b64(sign(device, state, change()))}


def add_fields(
    socket: Socket, device: SeededDevice, cid: str, user_ids: list[str]
) -> dict[str, Any]:
    keys = identities(socket, user_ids)
    return _after(
        socket,
        device,
        cid,
        lambda: Add(tuple(_entry(u, keys) for u in sorted(set(user_ids)))),
    )


def remove_fields(
    socket: Socket, device: SeededDevice, cid: str, user_ids: list[str]
) -> dict[str, Any]:
    return _after(socket, device, cid, lambda: Remove(tuple(sorted(set(user_ids)))))


def role_fields(
    socket: Socket, device: SeededDevice, cid: str, user_id: str, role: str
) -> dict[str, Any]:
    value = Role.MODERATOR if role == "moderator" else Role.MEMBER
    return _after(socket, device, cid, lambda: SetRole(user_id, value))


def leave_fields(socket: Socket, device: SeededDevice, cid: str) -> dict[str, Any]:
    return _after(socket, device, cid, lambda: Leave())
