"""Recording audit events: into the network's hash chain, then to EventBridge.

``record`` is the one way any route writes the audit log. The chain is the
truth: an event is appended under a conditional write on the head (so two
writers cannot fork it), and only then published (source ``sotto``) as a
courtesy to the agency's monitoring; a failed publish is logged, never
raised, and never loses the entry. Entries name the actor (the IAM
principal ARN of an admin call, the device of a WebSocket or link call,
``anonymous`` with its source IP for public routes), the time, the network,
the subject, the outcome and a few details; never a code, key or plaintext.

Events (``event``): network.created, invite.created, invite.revoked,
invite.reissued, invite.locked, enrollment.succeeded, enrollment.failed,
link.requested, link.approved, device.revoked, user.suspended,
user.reinstated, policy.set, group.created, group.policy_set,
group.member_added, group.member_removed; retention.* and export.* from the
retention routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sotto.auditchain import GENESIS, encode_body, entry_hash

if TYPE_CHECKING:
    from sotto.frames.answers_http import AuditPage

from ..dal._single_table import Conflict
from ..dal.audit import AuditHead, StoredEntry

__all__ = [
    "AUDIT_PAGE",
    "Actor",
    "AuditEvent",
    "AuditLog",
    "AuditReader",
    "Publisher",
    "read_page",
    "record",
]

ActorKind = Literal["iam", "device", "anonymous", "system"]
Outcome = Literal["success", "refused", "failed"]
# Enough for every writer of a busy network to get in, each a few ms apart.
_APPEND_ATTEMPTS = 25


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    # The principal ARN, the device id, the source IP, or the function's name.
    id: str
    user_id: str = ""

    def to_json(self) -> dict[str, str]:
        value = {"kind": self.kind, "id": self.id}
        if self.user_id:
            value["user_id"] = self.user_id
        return value


@dataclass(frozen=True)
class AuditEvent:
    network_id: str
    event: str
    actor: Actor
    subject: Mapping[str, str]
    outcome: Outcome = "success"
    detail: Mapping[str, Any] = field(default_factory=dict)

    def fields(self, at_ms: int) -> dict[str, Any]:
        return {
            "at": at_ms,
            "network_id": self.network_id,
            "event": self.event,
            "actor": self.actor.to_json(),
            "subject": dict(self.subject),
            "outcome": self.outcome,
            "detail": dict(self.detail),
        }


class AuditLog(Protocol):
    def head(self, network_id: str) -> AuditHead | None: ...

    def append(self, network_id: str, after: AuditHead | None, entry: StoredEntry) -> None: ...


class Publisher(Protocol):
    def __call__(self, entry: StoredEntry, fields: Mapping[str, Any]) -> None: ...


def record(
    log: AuditLog,
    event: AuditEvent,
    now_ms: int,
    *,
    publish: Publisher | None = None,
) -> StoredEntry:
    """Append ``event`` to its network's chain (retrying on a moved head), then publish it."""
    fields = event.fields(now_ms)
    for attempt in range(_APPEND_ATTEMPTS):
        head = log.head(event.network_id)
        seq = 1 if head is None else head.seq + 1
        body = encode_body(seq, GENESIS if head is None else head.hash, fields)
        entry = StoredEntry(event.network_id, seq, body, entry_hash(body))
        try:
            log.append(event.network_id, head, entry)
        except Conflict:
            time.sleep(min(0.005 * (attempt + 1), 0.05))
            continue
        if publish is not None:
            publish(entry, json.loads(body))
        return entry
    raise RuntimeError(f"the audit log of {event.network_id} kept moving; event not recorded")


# Entries per page of the admin listing (the CLI pages until ``next_after`` is null).
AUDIT_PAGE = 500


def read_page(store: AuditReader, network_id: str, after_seq: int) -> AuditPage:
    """One page of a network's log from ``after_seq``, with its head (for ``--verify``)."""
    head = store.head(network_id)
    through = head.seq if head is not None else 0
    entries = store.entries(
        network_id, after_seq=after_seq, through=min(through, after_seq + AUDIT_PAGE)
    )
    last = entries[-1].seq if entries else after_seq
    return {
        "network_id": network_id,
        "head": None
        if head is None
        else {"seq": head.seq, "hash": head.hash, "sealed_seq": head.sealed_seq},
        "entries": [{"seq": e.seq, "body": e.body, "hash": e.hash} for e in entries],
        "next_after": last if entries and last < through else None,
    }


class AuditReader(AuditLog, Protocol):
    def entries(
        self, network_id: str, *, after_seq: int = 0, through: int | None = None
    ) -> list[StoredEntry]: ...
