"""Message routes: distribute chain keys, send envelopes, sync and acknowledge.

The server verifies what it can without keys (docs/protocol.md: sender,
certificates, signatures, digests, times), stores each conversation message
once, and names the notices the handler pushes to online devices. Pushes are
a courtesy: the stored copy and each device's cursor are the truth.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sotto.frames import paginate_lists
from sotto.frames.requests import (
    AckRequest,
    DistributeRequest,
    PolicyRequest,
    SendRequest,
    SyncRequest,
)
from sotto.protocol.certificates import DeviceCertificate
from sotto.protocol.distribution import LABEL as DISTRIBUTION_LABEL
from sotto.protocol.distribution import KeyDistribution
from sotto.protocol.envelope import ExpiryPolicy, verify_envelope
from sotto.protocol.errors import ProtocolError
from sotto.protocol.keys import IdentityPublicKey
from sotto.protocol.retention import officer_user_id

from ..dal.conversations import (
    MAX_MESSAGE_LIFETIME_MS,
    Conversation,
    Mail,
    MailDraft,
    StoredMessage,
)
from ..dal.directory import Conflict
from . import limits, sync_resume
from .conversations import Stores, limit, roster_entry
from .errors import ErrorCode, Refused
from .frames import b64
from .outcome import Outcome
from .policy import EffectivePolicy, check_envelope_timers, effective_policy
from .principal import Principal
from .retention import retention_of
from .sync_resume import Entry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

    from sotto.frames.answers import (
        AckedAnswer,
        DistributedAnswer,
        MailItem,
        MailPush,
        MessageItem,
        MessagePush,
        PolicyAnswer,
        SentAnswer,
        SyncHeader,
    )

__all__ = [
    "SYNC_PAGE_BYTES",
    "SYNC_PAGE_CONVERSATIONS",
    "SYNC_PAGE_MAIL",
    "SYNC_PAGE_MESSAGES",
    "ack",
    "caller_policy",
    "distribute",
    "policy",
    "send",
    "sync",
]

# One sync page: mail and messages each have their own budget; a client
# acks and syncs again, with the page's ``resume``, while ``more`` is true.
SYNC_PAGE_MAIL = 100
SYNC_PAGE_MESSAGES = 2000
# Envelope bytes a page stops at (about 14 parts of 100 KB): a page of large
# messages stays as large as a page of small ones.
SYNC_PAGE_BYTES = 1024 * 1024
# Conversations a page reads: its ``through`` is one ack frame's cursors.
SYNC_PAGE_CONVERSATIONS = 100
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

    The caller's own membership is read first, keyed by the caller: a
    conversation the caller is not in answers not_found after that one read,
    whether it exists or not (no timing oracle for direct conversations).
    """
    if stores.conversations.member(cid, caller.user_id) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)
    conversation = stores.conversations.get(cid)
    roster = stores.conversations.roster(cid) if conversation is not None else set()
    if (
        conversation is None
        or conversation.network_id != caller.network_id
        or roster_entry(caller.user_id, caller.device_id) not in roster
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such conversation", rid)
    return conversation, roster


def _retention_entry(stores: Stores, conversation: Conversation) -> str | None:
    """The roster entry of the network's retention device while retention is on.

    Every chain must reach it as it must reach every member device: the
    server refuses a send whose chain did not (``stale_devices`` names it).
    """
    retention = retention_of(stores, conversation.network_id)
    if retention is None:
        return None
    return roster_entry(officer_user_id(conversation.network_id), retention.current.device_id)


def _mail_frame(mail: Mail) -> MailItem:
    return {
        "mail_id": mail.mail_id,
        "conversation_id": mail.conversation_id,
        "kind": mail.kind,
        "data": b64(mail.data),
        "from_device": mail.from_device,
        "server_time": mail.server_time,
    }


def _message_frame(message: StoredMessage) -> MessageItem:
    return {
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "envelope": b64(message.envelope),
        "server_time": message.server_time,
    }


def _mail_push(mail: Mail) -> MailPush:
    return {"action": "mail", **_mail_frame(mail)}


def caller_policy(stores: Stores, caller: Principal) -> EffectivePolicy:
    """The caller's effective policy; its groups come from the frame's standing check."""
    groups = caller.user.groups if caller.user is not None else None
    return effective_policy(stores.directory, caller.network_id, caller.user_id, groups=groups)


def policy(stores: Stores, caller: Principal, request: PolicyRequest, now_ms: int) -> Outcome:
    """The caller's effective policy, as an admin's change pushes it (``policy`` frame)."""
    limit(stores, "policy_device", caller.device_id, now_ms, request.id)
    answer: PolicyAnswer = {
        "action": "policy",
        "id": request.id,
        **caller_policy(stores, caller).to_json(),
    }
    return Outcome(replies=[answer])


def distribute(
    stores: Stores, caller: Principal, request: DistributeRequest, now_ms: int
) -> Outcome:
    rid = request.id
    cid = request.conversation_id
    limit(stores, "distribute_device", caller.device_id, now_ms, rid)
    conversation, roster = _sending_device(stores, caller, cid, rid)
    certificate, _identity = _sender_certificate(stores, caller, rid)
    retention = _retention_entry(stores, conversation)
    reachable = roster if retention is None else roster | {retention}
    recorded = stores.conversations.chain(cid, caller.device_id)
    if recorded is None or recorded[0] != request.chain_id:
        # A new chain is mail for every device of the conversation: bounded.
        limit(stores, "chain_device", caller.device_id, now_ms, rid)
    drafts: list[MailDraft] = []
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
        elif recipient not in reachable or kd.recipient_device_id == caller.device_id:
            problem = "is for a device outside the conversation"
        elif recipient in recipients:
            problem = "repeats a recipient of this frame"
        elif kd.signed and not certificate.device_key.verify(
            DISTRIBUTION_LABEL, kd.body(), kd.signature
        ):
            # A session distribution (docs/protocol.md §16.2) has no signature: only the two
            # devices hold its key, so its AEAD is what authenticates it, to the recipient.
            problem = "signature does not verify"
        if problem is not None:
            raise Refused(ErrorCode.INVALID_ENVELOPE, f"distribution {index} {problem}", rid)
        recipients.add(recipient)
        drafts.append(
            MailDraft(
                kd.recipient_device_id,
                cid,
                "distribution",
                data,
                caller.device_id,
                request.chain_id,
            )
        )
    # Mail first: a chain recorded as delivered must already be in the mailboxes.
    stored = stores.conversations.put_mail(drafts, now_ms)
    stores.conversations.record_distribution(cid, caller.device_id, request.chain_id, recipients)
    answer: DistributedAnswer = {
        "action": "distributed",
        "id": rid,
        "chain_id": b64(request.chain_id),
        "count": len(drafts),
    }
    outcome = Outcome(replies=[answer])
    outcome.notices = [(m.device_id, _mail_push(m)) for m in stored]
    # Pushed before the answer: the sender's next send must not overtake its key.
    outcome.notices_first = True
    return outcome


def _check_chain(
    stores: Stores,
    caller: Principal,
    conversation: Conversation,
    roster: set[str],
    chain_id: bytes,
    rid: str | None,
) -> None:
    """The envelope's chain must have reached exactly the roster, less the sender,
    and the retention device while retention is on."""
    expected = roster - {roster_entry(caller.user_id, caller.device_id)}
    retention = _retention_entry(stores, conversation)
    if retention is not None:
        expected.add(retention)
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
    # Every envelope, receipts and call signals too: the timers are in its signed header.
    check_envelope_timers(
        caller_policy(stores, caller),
        timestamp=header.timestamp,
        expires_at=header.expires_at,
        burn_after_read_s=header.burn_after_read_s,
        request_id=rid,
    )
    message_id = header.message_id.hex()
    if request.to_user is None:
        existing = stores.conversations.message_by_id(cid, message_id)
        if existing is not None:
            return Outcome(replies=[_sent(rid, existing)])
    _check_chain(stores, caller, conversation, roster, header.chain_id, rid)

    ends = header.expires_at or now_ms + MAX_MESSAGE_LIFETIME_MS
    position = stores.conversations.position_claim(
        cid, caller.device_id, header.chain_id, header.iteration, message_id, ends // 1000 + 1
    )
    if request.to_user is not None:
        limit(stores, "send_device", caller.device_id, now_ms, rid)
        try:
            stores.conversations.claim(position)
        except Conflict:
            raise _rolled_back(rid) from None
        return _send_to_user(stores, caller, request, roster, header.message_id, now_ms)
    attach = _attachments(stores, caller, request, message_id, header.expires_at, now_ms)
    window = limits.window_for("send_device", caller.device_id, now_ms // 1000, stores.limit_scale)
    charge = (
        None
        if stores.guards is None
        else stores.guards.count_update(
            "send_device", caller.device_id, window.start, window.limit.window_s, window.limit.limit
        )
    )

    draft = StoredMessage(
        conversation_id=cid,
        seq=0,
        envelope=request.envelope,
        sender_device=caller.device_id,
        message_id=message_id,
        server_time=now_ms,
        expires_at=header.expires_at,
        burn_s=header.burn_after_read_s,
        files=tuple(request.files),
    )
    for _ in range(3):
        try:
            stored = stores.conversations.append(
                conversation, draft, charge=charge, attach=attach, position=position
            )
            break
        except Conflict as conflict:
            if conflict.reason == "position_used":
                raise _rolled_back(rid) from None
            if conflict.reason == "file_unavailable":
                raise Refused(
                    ErrorCode.NOT_FOUND,
                    "no such upload: complete it in this conversation from this device first",
                    rid,
                ) from None
            if conflict.reason == "rate_limited":
                raise Refused(
                    ErrorCode.RATE_LIMITED,
                    "too many requests; retry later",
                    rid,
                    retry_after_s=window.retry_from(now_ms // 1000),
                ) from None
            if conflict.reason != "roster_changed":
                raise Refused(ErrorCode.CONFLICT, "the conversation is busy; retry", rid) from None
            # The roster moved after the chain was checked: check it again.
            conversation, roster = _sending_device(stores, caller, cid, rid)
            _check_chain(stores, caller, conversation, roster, header.chain_id, rid)
    else:
        raise Refused(ErrorCode.CONFLICT, "the conversation is busy; retry", rid)
    outcome = Outcome(replies=[_sent(rid, stored)])
    push: MessagePush = {"action": "message", **_message_frame(stored)}
    outcome.notices = [
        (entry.split("/", 1)[1], push)
        for entry in sorted(roster)
        if entry.split("/", 1)[1] != caller.device_id
    ]
    return outcome


def _attachments(
    stores: Stores,
    caller: Principal,
    request: SendRequest,
    message_id: str,
    expires_at: int,
    now_ms: int,
) -> list[TransactWriteItemTypeDef]:
    """The transaction items tying the frame's uploads to the message, for its lifetime."""
    if not request.files:
        return []
    if request.to_user is not None or stores.files is None:
        raise Refused(
            ErrorCode.BAD_REQUEST, "files travel in conversation messages only", request.id
        )
    ends_s = (expires_at or now_ms + MAX_MESSAGE_LIFETIME_MS) // 1000 + 1
    return [
        stores.files.attach_item(
            object_id, request.conversation_id, caller.device_id, message_id, ends_s
        )
        for object_id in request.files
    ]


def _rolled_back(rid: str | None) -> Refused:
    return Refused(
        ErrorCode.ROLLED_BACK,
        "this device already sent another message at this chain position: its state is older"
        " than its last send (restored from a backup?); start a new chain",
        rid,
    )


def _send_to_user(
    stores: Stores,
    caller: Principal,
    request: SendRequest,
    roster: set[str],
    message_id: bytes,
    now_ms: int,
) -> Outcome:
    """An envelope for one member's devices (a receipt, a call signal): their mailboxes.

    Idempotent on the message id: the mail id is derived from it, so a
    repeat replaces the first copy.
    """
    rid, cid = request.id, request.conversation_id
    if request.to_user is None or stores.conversations.member(cid, request.to_user) is None:
        raise Refused(ErrorCode.NOT_FOUND, "no such member", rid)
    targets = [e.split("/", 1)[1] for e in sorted(roster) if e.startswith(f"{request.to_user}/")]
    drafts = [
        MailDraft(t, cid, "envelope", request.envelope, caller.device_id, message_id)
        for t in targets
        if t != caller.device_id
    ]
    stored_mail = stores.conversations.put_mail(drafts, now_ms)
    answer: SentAnswer = {
        "action": "sent",
        "id": rid,
        "conversation_id": cid,
        "message_id": message_id.hex(),
        "server_time": now_ms,
        "mailbox": True,
    }
    outcome = Outcome(replies=[answer])
    outcome.notices = [(m.device_id, _mail_push(m)) for m in stored_mail]
    return outcome


def _sent(rid: str | None, message: StoredMessage) -> SentAnswer:
    return {
        "action": "sent",
        "id": rid,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "server_time": message.server_time,
        "message_id": message.message_id,
    }


def _live(message: StoredMessage, now_ms: int, device_created_at: int) -> bool:
    ends = message.expires_at or message.server_time + MAX_MESSAGE_LIFETIME_MS
    if ends <= now_ms:
        return False  # TTL deletion lags; expired is gone
    # A device linked later gets no earlier history.
    return message.server_time >= device_created_at


def _plan(stores: Stores, caller: Principal) -> list[Entry]:
    """Every conversation of the caller with messages after the device's cursor (and
    after the user joined), fewest waiting first: two queries (cursors, the user's
    conversations) and one batched read of heads per 100 conversations."""
    store = stores.conversations
    cursors = store.cursors(caller.device_id)
    mine = store.user_conversations(caller.user_id)
    starts = {cid: max(cursors.get(cid, 0), joined_seq) for cid, _kind, _role, joined_seq in mine}
    heads = store.get_many(list(starts))
    entries = [
        Entry(cid, start, heads[cid].last_seq, heads[cid].roster_version)
        for cid, start in starts.items()
        if cid in heads and heads[cid].last_seq > start
    ]
    return sorted(entries, key=lambda e: (e.head - e.start, e.conversation_id))


def _still_member(
    stores: Stores, caller: Principal, entries: list[Entry]
) -> tuple[list[Entry], list[Entry]]:
    """The token's entries this page may read, re-authorized, and those left for later
    pages (checked when they come up).

    Reads the memberships of only as many conversations as the page can fill
    (by the heads the plan recorded): one batched read. Only conversations the
    user is still a member of are kept, none from before the user joined.
    """
    wanted: list[Entry] = []
    count = 0
    for entry in entries:
        if count >= SYNC_PAGE_MESSAGES or len(wanted) >= SYNC_PAGE_CONVERSATIONS:
            break
        wanted.append(entry)
        count += entry.head - entry.start
    joined = stores.conversations.memberships(caller.user_id, [e.conversation_id for e in wanted])
    allowed = [
        replace(e, start=max(e.start, joined[e.conversation_id]))
        for e in wanted
        if e.conversation_id in joined
    ]
    return [e for e in allowed if e.start < e.head], entries[len(wanted) :]


def sync(stores: Stores, caller: Principal, request: SyncRequest, now_ms: int) -> Outcome:
    """Mail, then each conversation's messages after the device's cursor, one page.

    Mail and messages have budgets of their own, so a flooded mailbox never
    holds messages back. The first page plans (``_plan``): only conversations
    with messages after the cursor are queried. A page that does not hold
    everything answers a ``resume`` token (``sync_resume``); the next sync names
    it and reads on from where this page stopped, after re-reading the
    caller's membership of what it pages, instead of planning again.
    """
    limit(stores, "sync_device", caller.device_id, now_ms, request.id)
    store = stores.conversations
    device = caller.device or stores.directory.get_device(caller.device_id)
    created_at = device.created_at if device is not None else 0
    resume = (
        None
        if request.resume is None
        else sync_resume.decode(request.resume, caller.device_id, now_ms, request.id)
    )
    rest = False
    later: list[Entry] = []  # entries of the token this page has not re-authorized
    if resume is None or (not resume.entries and resume.rest):
        read_mail, plan = True, _plan(stores, caller)
    else:
        read_mail, rest = resume.mail_more, resume.rest
        plan, later = _still_member(stores, caller, list(resume.entries))
    mail = store.mail(caller.device_id, limit=SYNC_PAGE_MAIL + 1) if read_mail else []
    mail_more = len(mail) > SYNC_PAGE_MAIL
    mail = mail[:SYNC_PAGE_MAIL]

    budget, size = SYNC_PAGE_MESSAGES, 0
    messages: list[StoredMessage] = []
    through: dict[str, int] = {}
    done = 0  # plan entries read to their head
    left: Entry | None = None  # the entry this page stopped inside, from where it stopped
    for entry in plan:
        if budget <= 0 or size >= SYNC_PAGE_BYTES or len(through) >= SYNC_PAGE_CONVERSATIONS:
            break
        cid = entry.conversation_id
        want = min(budget, entry.head - entry.start)
        found = store.messages_after(cid, entry.start, limit=want, through=entry.head)
        taken: list[StoredMessage] = []
        for message in found:
            if size >= SYNC_PAGE_BYTES:
                break  # a page always takes its first message, however large
            taken.append(message)
            size += len(message.envelope)
        budget -= len(taken)
        # Fewer than asked: nothing else is left up to the head (expired, or TTL-deleted).
        finished = len(taken) == len(found) and (len(found) < want or found[-1].seq == entry.head)
        if finished:
            through[cid] = entry.head
            done += 1
        elif taken:
            through[cid] = taken[-1].seq
            left = replace(entry, start=taken[-1].seq)
        # The sending device has its own plaintext; its other devices get the copy.
        messages.extend(
            m for m in taken if m.sender_device != caller.device_id and _live(m, now_ms, created_at)
        )
        if not finished:
            break
    remaining = [
        *([left] if left is not None else []),
        *plan[done + (1 if left else 0) :],
        *later,
    ]
    rest = rest or len(remaining) > sync_resume.RESUME_WINDOW
    more = mail_more or bool(remaining) or rest
    # Each paged conversation's roster version as the plan read it with the head: a
    # device that was away learns the membership moved (a join, a leave, a new
    # device) before it reads what followed.
    versions = {e.conversation_id: e.roster_version for e in plan}
    rosters = {cid: versions[cid] for cid in through}
    header: SyncHeader = {
        "action": "sync",
        "id": request.id,
        "more": more,
        "through": through,
        "rosters": rosters,
    }
    if more:
        window = tuple(remaining[: sync_resume.RESUME_WINDOW])
        header["resume"] = sync_resume.encode(
            sync_resume.Resume(mail_more, window, rest), caller.device_id, now_ms
        )
    return Outcome(
        replies=paginate_lists(
            header,
            {
                "mail": [_mail_frame(m) for m in mail],
                "messages": [_message_frame(m) for m in messages],
            },
        )
    )


def ack(stores: Stores, caller: Principal, request: AckRequest, now_ms: int) -> Outcome:
    limit(stores, "ack_device", caller.device_id, now_ms, request.id)
    store = stores.conversations
    mine = {cid: joined for cid, _kind, _role, joined in store.user_conversations(caller.user_id)}
    cursors = store.cursors_of(caller.device_id, [c for c in request.cursors if c in mine])
    for cid, seq in request.cursors.items():
        # Only forward, and only in the caller's conversations: no write otherwise.
        if cid in mine and seq > cursors.get(cid, 0):
            store.advance_cursor(caller.device_id, cid, seq)
    if request.mail:
        store.delete_mail(caller.device_id, list(request.mail))
    device = caller.device or stores.directory.get_device(caller.device_id)
    created_at = device.created_at if device is not None else 0
    for ref in request.read:
        # A read reference counts only for a message this device could have
        # received: in its user's conversation, after the user joined and the
        # device existed, sent by someone else.
        if ref.conversation_id not in mine or ref.seq <= mine[ref.conversation_id]:
            continue
        for message in store.messages_after(ref.conversation_id, ref.seq - 1, limit=1):
            if (
                message.seq == ref.seq
                and message.burn_s
                and message.server_time >= created_at
                and message.sender_device != caller.device_id
            ):
                deadline = now_ms + message.burn_s * 1000
                store.start_burn(ref.conversation_id, ref.seq, deadline)
                if stores.files is not None:
                    for object_id in message.files:
                        stores.files.end_at(object_id, deadline)
    acked: AckedAnswer = {"action": "acked", "id": request.id}
    return Outcome(replies=[acked])
