"""Message routes: distribute chain keys, send envelopes, sync and acknowledge.

The server verifies what it can without keys (docs/protocol.md: sender,
certificates, signatures, digests, times), stores each conversation message
once, and names the notices the handler pushes to online devices. Pushes are
a courtesy: the stored copy and each device's cursor are the truth.
"""

from __future__ import annotations

from typing import Any

from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.distribution import LABEL as DISTRIBUTION_LABEL
from sotto.protocol.distribution import KeyDistribution
from sotto.protocol.envelope import ExpiryPolicy, verify_envelope
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey

from ..dal.conversations import Conversation, Mail, StoredMessage
from ..dal.directory import Conflict
from .conversations import Stores, roster_entry
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome, paginate
from .principal import Principal
from .requests import AckRequest, DistributeRequest, SendRequest, SyncRequest

__all__ = ["SYNC_PAGE_ITEMS", "ack", "distribute", "send", "sync"]

# One sync page; a client acks and syncs again while ``more`` is true.
SYNC_PAGE_ITEMS = 200
POLICY = ExpiryPolicy()


def _sender_certificate(
    stores: Stores, caller: Principal, rid: str | None
) -> tuple[DeviceCertificate, IdentityPublicKey]:
    # Both were read for this frame by its standing check.
    device = caller.device or stores.directory.get_device(caller.device_id)
    user = caller.user or stores.directory.get_user(caller.user_id)
    if device is None or user is None or not device.certificate:
        raise Refused(ErrorCode.FORBIDDEN, "this device has no certificate", rid)
    try:
        return DeviceCertificate.parse(device.certificate), IdentityPublicKey.parse(
            user.identity_key
        )
    except ProtocolError:
        raise Refused(ErrorCode.FORBIDDEN, "this device has no valid certificate", rid) from None


def _sending_device(
    stores: Stores, caller: Principal, cid: str, rid: str | None
) -> tuple[Conversation, set[str]]:
    """The conversation and its roster, which must hold the caller's device.

    The roster holds only members' devices, so it answers membership too: no
    member read on the per-message path. Anyone else gets not_found.
    """
    conversation = stores.conversations.get(cid)
    roster = stores.conversations.roster(cid) if conversation is not None else set()
    if (
        conversation is None
        or conversation.network_id != caller.network_id
        or roster_entry(caller.user_id, caller.device_id) not in roster
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)
    return conversation, roster


def _mail_frame(mail: Mail) -> dict[str, Any]:
    return {
        "mail_id": mail.mail_id,
        "conversation_id": mail.conversation_id,
        "kind": mail.kind,
        "data": b64(mail.data),
        "from_device": mail.from_device,
        "server_time": mail.server_time,
    }


def _message_frame(message: StoredMessage) -> dict[str, Any]:
    return {
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "envelope": b64(message.envelope),
        "server_time": message.server_time,
    }


def distribute(
    stores: Stores, caller: Principal, request: DistributeRequest, now_ms: int
) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    _conversation, roster = _sending_device(stores, caller, cid, rid)
    certificate, _identity = _sender_certificate(stores, caller, rid)
    items: list[tuple[str, str, str, bytes, str]] = []
    recipients: set[str] = set()
    for index, data in enumerate(request.distributions):
        try:
            kd = KeyDistribution.parse(data)
        except ProtocolError as error:
            raise Refused(
                ErrorCode.INVALID_ENVELOPE, f"distribution {index} is malformed ({error.code})", rid
            ) from None
        recipient = roster_entry(kd.recipient_user_id, kd.recipient_device_id)
        problem = None
        if kd.conversation_id != cid:
            problem = "is for another conversation"
        elif (kd.sender_user_id, kd.sender_device_id) != (caller.user_id, caller.device_id):
            problem = "names another sender"
        elif recipient not in roster or kd.recipient_device_id == caller.device_id:
            problem = "is for a device outside the conversation"
        elif not certificate.device_key.verify(DISTRIBUTION_LABEL, kd.body(), kd.signature):
            problem = "signature does not verify"
        if problem is not None:
            raise Refused(ErrorCode.INVALID_ENVELOPE, f"distribution {index} {problem}", rid)
        recipients.add(recipient)
        items.append((kd.recipient_device_id, cid, "distribution", data, caller.device_id))
    # Mail first: a chain recorded as delivered must already be in the mailboxes.
    stored = stores.conversations.put_mail(items, now_ms)
    stores.conversations.record_distribution(cid, caller.device_id, request.chain_id, recipients)
    outcome = Outcome(
        replies=[
            {
                "action": "distributed",
                "id": rid,
                "chain_id": b64(request.chain_id),
                "count": len(items),
            }
        ]
    )
    outcome.notices = [(m.device_id, {"action": "mail", **_mail_frame(m)}) for m in stored]
    return outcome


def _check_chain(
    stores: Stores,
    caller: Principal,
    conversation: Conversation,
    roster: set[str],
    chain_id: bytes,
    rid: str | None,
) -> None:
    """The envelope's chain must have reached exactly the roster, less the sender."""
    expected = roster - {roster_entry(caller.user_id, caller.device_id)}
    if not expected:
        return  # alone in the conversation: nobody to distribute to
    recorded = stores.conversations.chain(conversation.conversation_id, caller.device_id)
    given = recorded[1] if recorded is not None and recorded[0] == chain_id else set()
    missing, extra = expected - given, given - expected
    if missing or extra:
        raise Refused(
            ErrorCode.STALE_DEVICES,
            "the chain key did not reach exactly the conversation's devices",
            rid,
            details={
                "missing": sorted(entry.split("/", 1)[1] for entry in missing),
                "extra": sorted(entry.split("/", 1)[1] for entry in extra),
                "roster_version": conversation.roster_version,
            },
        )


def send(stores: Stores, caller: Principal, request: SendRequest, now_ms: int) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    conversation, roster = _sending_device(stores, caller, cid, rid)
    certificate, identity = _sender_certificate(stores, caller, rid)
    try:
        envelope = verify_envelope(
            request.envelope,
            sender_certificate=certificate,
            sender_identity=identity,
            now=now_ms,
            policy=POLICY,
        )
    except ProtocolError as error:
        raise Refused(ErrorCode.INVALID_ENVELOPE, f"envelope refused ({error.code})", rid) from None
    header = envelope.header
    if header.conversation_id != cid:
        raise Refused(ErrorCode.INVALID_ENVELOPE, "envelope is for another conversation", rid)
    message_id = header.message_id.hex()
    if request.to_user is None:
        existing = stores.conversations.message_by_id(cid, message_id)
        if existing is not None:
            return Outcome(replies=[_sent(rid, existing)])
    _check_chain(stores, caller, conversation, roster, header.chain_id, rid)

    if request.to_user is not None:
        if stores.conversations.member(cid, request.to_user) is None:
            raise Refused(ErrorCode.NOT_FOUND, "no such member", rid)
        targets = [
            e.split("/", 1)[1] for e in sorted(roster) if e.startswith(f"{request.to_user}/")
        ]
        targets = [t for t in targets if t != caller.device_id]
        stored_mail = stores.conversations.put_mail(
            [(t, cid, "envelope", request.envelope, caller.device_id) for t in targets], now_ms
        )
        outcome = Outcome(
            replies=[
                {
                    "action": "sent",
                    "id": rid,
                    "conversation_id": cid,
                    "message_id": message_id,
                    "server_time": now_ms,
                    "mailbox": True,
                }
            ]
        )
        outcome.notices = [(m.device_id, {"action": "mail", **_mail_frame(m)}) for m in stored_mail]
        return outcome

    draft = StoredMessage(
        conversation_id=cid,
        seq=0,
        envelope=request.envelope,
        sender_device=caller.device_id,
        message_id=message_id,
        server_time=now_ms,
        expires_at=header.expires_at,
        burn_s=header.burn_after_read_s,
    )
    for _ in range(3):
        try:
            stored = stores.conversations.append(conversation, draft)
            break
        except Conflict as conflict:
            if conflict.reason != "roster_changed":
                raise Refused(ErrorCode.CONFLICT, "the conversation is busy; retry", rid) from None
            # The roster moved after the chain was checked: check it again.
            conversation, roster = _sending_device(stores, caller, cid, rid)
            _check_chain(stores, caller, conversation, roster, header.chain_id, rid)
    else:
        raise Refused(ErrorCode.CONFLICT, "the conversation is busy; retry", rid)
    outcome = Outcome(replies=[_sent(rid, stored)])
    push = {"action": "message", **_message_frame(stored)}
    outcome.notices = [
        (entry.split("/", 1)[1], push)
        for entry in sorted(roster)
        if entry.split("/", 1)[1] != caller.device_id
    ]
    return outcome


def _sent(rid: str | None, message: StoredMessage) -> dict[str, Any]:
    return {
        "action": "sent",
        "id": rid,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "server_time": message.server_time,
        "message_id": message.message_id,
    }


def _live(message: StoredMessage, now_ms: int, device_created_at: int) -> bool:
    if message.expires_at and message.expires_at <= now_ms:
        return False  # TTL deletion lags; expired is gone
    # A device linked later gets no earlier history.
    return message.server_time >= device_created_at


def sync(stores: Stores, caller: Principal, request: SyncRequest, now_ms: int) -> Outcome:
    store = stores.conversations
    device = caller.device or stores.directory.get_device(caller.device_id)
    created_at = device.created_at if device is not None else 0
    budget = SYNC_PAGE_ITEMS
    mail = store.mail(caller.device_id, limit=budget)
    more = len(mail) >= budget
    budget -= len(mail)
    cursors = store.cursors(caller.device_id)
    messages: list[StoredMessage] = []
    through: dict[str, int] = {}
    for cid, _kind, _role, joined_seq in store.user_conversations(caller.user_id):
        if budget <= 0:
            more = True
            break
        start = max(cursors.get(cid, 0), joined_seq)
        page = store.messages_after(cid, start, limit=budget + 1)
        if len(page) > budget:
            page, more = page[:budget], True
        if page:
            through[cid] = page[-1].seq
        budget -= len(page)
        # The sending device has its own plaintext; its other devices get the copy.
        messages.extend(
            m for m in page if m.sender_device != caller.device_id and _live(m, now_ms, created_at)
        )
    entries: list[dict[str, Any]] = [{"type": "mail", **_mail_frame(m)} for m in mail]
    entries += [{"type": "message", **_message_frame(m)} for m in messages]
    header = {"action": "sync", "id": request.id, "more": more, "through": through}
    pages = _pages(header, entries)
    return Outcome(replies=pages)


def _pages(header: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split sync entries over frames under the frame limit, mail and messages apart."""
    pages = paginate(header, "entries", entries)
    for page in pages:
        items = page.pop("entries")
        page["mail"] = [_untyped(e) for e in items if e["type"] == "mail"]
        page["messages"] = [_untyped(e) for e in items if e["type"] == "message"]
    return pages


def _untyped(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "type"}


def ack(stores: Stores, caller: Principal, request: AckRequest, now_ms: int) -> Outcome:
    store = stores.conversations
    mine = {cid for cid, *_ in store.user_conversations(caller.user_id)}
    for cid, seq in request.cursors.items():
        if cid in mine:
            store.advance_cursor(caller.device_id, cid, seq)
    if request.mail:
        store.delete_mail(caller.device_id, list(request.mail))
    for ref in request.read:
        if ref.conversation_id not in mine:
            continue
        for message in store.messages_after(ref.conversation_id, ref.seq - 1, limit=1):
            if message.seq == ref.seq and message.burn_s:
                store.start_burn(ref.conversation_id, ref.seq, now_ms + message.burn_s * 1000)
    return Outcome(replies=[{"action": "acked", "id": request.id}])
