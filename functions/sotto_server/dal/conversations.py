"""The messages table: conversations, their ordered ciphertext, mailboxes and cursors.

Single-table layout (access patterns in docs/architecture.md)::

    pk                     sk                   item
    CONV#<cid>             META                 kind, network, next_seq, roster_version
    CONV#<cid>             MEMBER#<user_id>     role, joined_seq
    CONV#<cid>             ROSTER               devices: string set "user_id/device_id"
    CONV#<cid>             CHAIN#<device_id>    the sender's current chain and who received it
    CONV#<cid>             MSG#<seq:012d>       one envelope, stored once for all members
    CONV#<cid>             MID#<message_id>     seq of a message id: idempotent sends
    CONV#<cid>             POS#<device>#<chain>#<iteration:010d>
                                                the one message sent at that chain position
    CONV#<cid>             LOG#<seq:08d>        a signed membership operation (protocol §15)
    CONV#<cid>             LOGSTATE             the verified membership state after the last one
    USERCONV#<user_id>     CONV#<cid>           a user's conversations
    MAIL#<device_id>       M#<mail_id>          one item for one device (distribution, receipt);
                                                the id is derived from what it carries
    USERCONV#<user_id>     COUNT                how many conversations the user is in
    CURSOR#<device_id>     CONV#<cid>           the last seq a device acknowledged

A message is one transaction (counter, message, message id, chain position)
whatever the room size: gap-free order, since seq N+1 cannot commit before
seq N.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ._single_table import (
    Conflict,
    Item,
    SingleTableStore,
    error_code,
    key,
    number,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        TransactWriteItemTypeDef,
        UpdateTypeDef,
    )

__all__ = [
    "MAX_MESSAGE_LIFETIME_MS",
    "Conversation",
    "ConversationsStore",
    "LogAppend",
    "Mail",
    "MailDraft",
    "Member",
    "StoredMessage",
    "mail_id_of",
]

# Mail nobody collects is dropped after this long (the sender's chain is
# rotated long before).
MAIL_TTL_SECONDS = 30 * 24 * 3600
# The server keeps a message at most this long (the network policy's longest expiry).
MAX_MESSAGE_LIFETIME_MS = 365 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Member:
    user_id: str
    role: str
    joined_seq: int


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    kind: str
    network_id: str
    created_by: str
    created_at: int
    last_seq: int
    roster_version: int
    member_count: int


@dataclass(frozen=True)
class StoredMessage:
    conversation_id: str
    seq: int
    envelope: bytes
    sender_device: str
    message_id: str
    server_time: int
    expires_at: int  # ms; 0 = never
    burn_s: int
    # Object ids of the uploads the message refers to (dal/files.py).
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogAppend:
    """A membership operation to store at ``seq``, with the verified state after it."""

    seq: int
    operation: bytes
    state: bytes


@dataclass(frozen=True)
class MailDraft:
    """A mail item to store: ``about`` is the chain id or message id it carries."""

    device_id: str
    conversation_id: str
    kind: str
    data: bytes
    from_device: str
    about: bytes


def mail_id_of(draft: MailDraft) -> str:
    digest = hashlib.sha256(b"sotto-mail-v1")
    for part in (draft.kind, draft.conversation_id, draft.from_device):
        digest.update(len(part).to_bytes(2, "big") + part.encode())
    digest.update(draft.about)
    # The data too: a redistribution of the same chain is new mail, a retried frame is not.
    digest.update(hashlib.sha256(draft.data).digest())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Mail:
    device_id: str
    mail_id: str
    conversation_id: str
    kind: str
    data: bytes
    from_device: str
    server_time: int


def _conversation(cid: str, item: Item) -> Conversation:
    return Conversation(
        conversation_id=cid,
        kind=item["kind"]["S"],
        network_id=item["network_id"]["S"],
        created_by=item["created_by"]["S"],
        created_at=int(item["created_at"]["N"]),
        last_seq=int(item["next_seq"]["N"]) - 1,
        roster_version=int(item["roster_version"]["N"]),
        member_count=int(item["member_count"]["N"]),
    )


def _message(cid: str, item: Item) -> StoredMessage:
    return StoredMessage(
        conversation_id=cid,
        seq=int(item["sk"]["S"].removeprefix("MSG#")),
        envelope=item["envelope"]["B"],
        sender_device=item["sender_device"]["S"],
        message_id=item["message_id"]["S"],
        server_time=int(item["server_time"]["N"]),
        expires_at=int(item["expires_at_ms"]["N"]),
        burn_s=int(item["burn_s"]["N"]),
        files=tuple(sorted(item.get("files", {}).get("SS", []))),
    )


class ConversationsStore(SingleTableStore):
    # -- reading -------------------------------------------------------------

    def get(self, cid: str) -> Conversation | None:
        item = self._get(f"CONV#{cid}", "META")
        return None if item is None else _conversation(cid, item)

    def get_many(self, cids: Sequence[str]) -> dict[str, Conversation]:
        """Many conversations' META items, one consistent request per 100."""
        items = self._batch_get([(f"CONV#{cid}", "META") for cid in cids])
        return {
            pk.removeprefix("CONV#"): _conversation(pk.removeprefix("CONV#"), item)
            for (pk, _), item in items.items()
        }

    def log_state(self, cid: str) -> bytes | None:
        """The membership state after the last stored operation (docs/protocol.md §15.4)."""
        item = self._get(f"CONV#{cid}", "LOGSTATE")
        return None if item is None else item["state"]["B"]

    def log_operations(self, cid: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """The stored membership operations after seq ``after``, in order."""
        items = self._query(f"CONV#{cid}", "LOG#", start=f"LOG#{after + 1:08d}", limit=limit)
        return [(int(i["sk"]["S"].removeprefix("LOG#")), i["op"]["B"]) for i in items]

    def _log_items(self, cid: str, log: LogAppend) -> list[TransactWriteItemTypeDef]:
        """Store an operation at its seq, once, and move the state on from the one before."""
        state_put: Any = {
            "TableName": self._table,
            "Item": {
                **key(f"CONV#{cid}", "LOGSTATE"),
                "state": {"B": log.state},
                "seq": number(log.seq),
            },
        }
        if log.seq == 0:
            state_put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            state_put["ConditionExpression"] = "seq = :before"
            state_put["ExpressionAttributeValues"] = {":before": number(log.seq - 1)}
        return [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"CONV#{cid}", f"LOG#{log.seq:08d}"),
                        "op": {"B": log.operation},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": state_put},
        ]

    def member(self, cid: str, user_id: str) -> Member | None:
        item = self._get(f"CONV#{cid}", f"MEMBER#{user_id}")
        if item is None:
            return None
        return Member(user_id, item["role"]["S"], int(item["joined_seq"]["N"]))

    def members(self, cid: str) -> list[Member]:
        return [
            Member(i["sk"]["S"].removeprefix("MEMBER#"), i["role"]["S"], int(i["joined_seq"]["N"]))
            for i in self._query(f"CONV#{cid}", "MEMBER#")
        ]

    def roster(self, cid: str) -> set[str]:
        """The conversation's devices, as "user_id/device_id"."""
        item = self._get(f"CONV#{cid}", "ROSTER")
        return set(item["devices"]["SS"]) if item and "devices" in item else set()

    def chain(self, cid: str, device_id: str) -> tuple[bytes, set[str]] | None:
        """The sender device's current chain id and the devices it was given to."""
        item = self._get(f"CONV#{cid}", f"CHAIN#{device_id}")
        if item is None:
            return None
        return item["chain_id"]["B"], set(item.get("devices", {}).get("SS", []))

    def user_conversations(self, user_id: str) -> list[tuple[str, str, str, int]]:
        """(conversation_id, kind, role, joined_seq) of every conversation of a user."""
        return [
            (
                i["sk"]["S"].removeprefix("CONV#"),
                i["kind"]["S"],
                i["role"]["S"],
                int(i["joined_seq"]["N"]),
            )
            for i in self._query(f"USERCONV#{user_id}", "CONV#")
        ]

    def message_by_id(self, cid: str, message_id: str) -> StoredMessage | None:
        item = self._get(f"CONV#{cid}", f"MID#{message_id}")
        if item is None:
            return None
        stored = self._get(f"CONV#{cid}", f"MSG#{int(item['seq']['N']):012d}")
        return None if stored is None else _message(cid, stored)

    def messages_after(
        self, cid: str, seq: int, limit: int, *, through: int | None = None
    ) -> list[StoredMessage]:
        """Messages after ``seq`` (up to ``through`` inclusive, if given), in seq order."""
        end = None if through is None else f"MSG#{through:012d}"
        items = self._query(
            f"CONV#{cid}", "MSG#", start=f"MSG#{seq + 1:012d}", end=end, limit=limit
        )
        return [_message(cid, item) for item in items]

    def memberships(self, user_id: str, cids: Sequence[str]) -> dict[str, int]:
        """The seq the user joined at, for each of ``cids`` it is a member of (batched reads)."""
        items = self._batch_get([(f"CONV#{cid}", f"MEMBER#{user_id}") for cid in cids])
        return {
            pk.removeprefix("CONV#"): int(item["joined_seq"]["N"])
            for (pk, _), item in items.items()
        }

    def cursors(self, device_id: str) -> dict[str, int]:
        return {
            i["sk"]["S"].removeprefix("CONV#"): int(i["seq"]["N"])
            for i in self._query(f"CURSOR#{device_id}", "CONV#")
        }

    def cursors_of(self, device_id: str, cids: Sequence[str]) -> dict[str, int]:
        """The device's cursors in the named conversations (batched reads)."""
        items = self._batch_get([(f"CURSOR#{device_id}", f"CONV#{cid}") for cid in cids])
        return {sk.removeprefix("CONV#"): int(item["seq"]["N"]) for (_, sk), item in items.items()}

    def mail(self, device_id: str, limit: int) -> list[Mail]:
        return [
            Mail(
                device_id=device_id,
                mail_id=i["sk"]["S"].removeprefix("M#"),
                conversation_id=i["conversation_id"]["S"],
                kind=i["kind"]["S"],
                data=i["data"]["B"],
                from_device=i["from_device"]["S"],
                server_time=int(i["server_time"]["N"]),
            )
            for i in self._query(f"MAIL#{device_id}", "M#", limit=limit)
        ]

    # -- conversations and rosters -------------------------------------------------

    def create(
        self,
        conversation: Conversation,
        members: Sequence[Member],
        devices: set[str],
        *,
        max_per_user: int,
        log: LogAppend,
    ) -> None:
        """A new conversation with its members, roster and creation operation; Conflict if
        the id exists.

        Conflict("too_many_conversations:<user_id>") if a member already
        belongs to ``max_per_user`` conversations.
        """
        cid = conversation.conversation_id
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"CONV#{cid}", "META"),
                        "kind": {"S": conversation.kind},
                        "network_id": {"S": conversation.network_id},
                        "created_by": {"S": conversation.created_by},
                        "created_at": number(conversation.created_at),
                        "next_seq": number(1),
                        "roster_version": number(1),
                        "member_count": number(len(members)),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._roster_put(cid, devices),
            *self._log_items(cid, log),
        ]
        reasons = {0: "conversation_exists", 2: "conversation_exists", 3: "conversation_exists"}
        for member in members:
            reasons[len(items) + 2] = f"too_many_conversations:{member.user_id}"
            items.extend(self._joins(cid, conversation.kind, member, max_per_user))
        self._transact(items, reasons)

    def _roster_put(self, cid: str, devices: set[str]) -> TransactWriteItemTypeDef:
        item: Item = key(f"CONV#{cid}", "ROSTER")
        if devices:
            item["devices"] = {"SS": sorted(devices)}
        return {"Put": {"TableName": self._table, "Item": item}}

    def _joins(
        self, cid: str, kind: str, member: Member, max_per_user: int
    ) -> list[TransactWriteItemTypeDef]:
        """A member joins: its membership, its user's index entry, its user's count."""
        return [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"CONV#{cid}", f"MEMBER#{member.user_id}"),
                        "role": {"S": member.role},
                        "joined_seq": number(member.joined_seq),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"USERCONV#{member.user_id}", f"CONV#{cid}"),
                        "kind": {"S": kind},
                        "role": {"S": member.role},
                        "joined_seq": number(member.joined_seq),
                    },
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": key(f"USERCONV#{member.user_id}", "COUNT"),
                    "UpdateExpression": "ADD conversations :one",
                    "ConditionExpression": (
                        "attribute_not_exists(conversations) OR conversations < :max"
                    ),
                    "ExpressionAttributeValues": {":one": number(1), ":max": number(max_per_user)},
                }
            },
        ]

    def _leaves(self, cid: str, user_id: str) -> list[TransactWriteItemTypeDef]:
        return [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": key(f"CONV#{cid}", f"MEMBER#{user_id}"),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": key(f"USERCONV#{user_id}", f"CONV#{cid}"),
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": key(f"USERCONV#{user_id}", "COUNT"),
                    "UpdateExpression": "ADD conversations :minus_one",
                    "ExpressionAttributeValues": {":minus_one": number(-1)},
                }
            },
        ]

    def _membership_moved(
        self, conversation: Conversation, members_delta: int
    ) -> TransactWriteItemTypeDef:
        """META: the roster version moves, conditional on nothing stored or changed meanwhile."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": key(f"CONV#{conversation.conversation_id}", "META"),
                "UpdateExpression": "ADD roster_version :one, member_count :n",
                "ConditionExpression": "roster_version = :version AND next_seq = :next",
                "ExpressionAttributeValues": {
                    ":one": number(1),
                    ":n": number(members_delta),
                    ":version": number(conversation.roster_version),
                    ":next": number(conversation.last_seq + 1),
                },
            }
        }

    def add_members(
        self,
        conversation: Conversation,
        members: Sequence[Member],
        devices: set[str],
        *,
        max_per_user: int,
        log: LogAppend,
    ) -> None:
        """Add members and their devices; the roster version moves so chains rotate.

        Conditional on the roster version and the next seq as read, so the
        members' ``joined_seq`` is exactly the last message before they joined:
        Conflict("roster_changed") otherwise, or "too_many_conversations:<user>".
        """
        cid = conversation.conversation_id
        items: list[TransactWriteItemTypeDef] = [self._membership_moved(conversation, len(members))]
        if devices:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"CONV#{cid}", "ROSTER"),
                        "UpdateExpression": "ADD devices :d",
                        "ExpressionAttributeValues": {":d": {"SS": sorted(devices)}},
                    }
                }
            )
        reasons = {
            0: "roster_changed",
            len(items): "roster_changed",
            len(items) + 1: "roster_changed",
        }
        items.extend(self._log_items(cid, log))
        for member in members:
            reasons[len(items)] = "roster_changed"  # already a member: someone added them first
            reasons[len(items) + 2] = f"too_many_conversations:{member.user_id}"
            items.extend(self._joins(cid, conversation.kind, member, max_per_user))
        self._transact(items, reasons)

    def remove_members(
        self,
        conversation: Conversation,
        user_ids: Sequence[str],
        devices: set[str],
        *,
        log: LogAppend,
    ) -> None:
        """Remove members and their devices (a removal or a leave); the roster version moves.

        Conditional like ``add_members``: Conflict("roster_changed") if the
        conversation moved since it was read (the caller reads and retries).
        """
        cid = conversation.conversation_id
        items: list[TransactWriteItemTypeDef] = [
            self._membership_moved(conversation, -len(user_ids))
        ]
        if devices:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"CONV#{cid}", "ROSTER"),
                        "UpdateExpression": "DELETE devices :d",
                        "ExpressionAttributeValues": {":d": {"SS": sorted(devices)}},
                    }
                }
            )
        items.extend(self._log_items(cid, log))
        for user_id in user_ids:
            items.extend(self._leaves(cid, user_id))
        self._transact(items, {i: "roster_changed" for i in range(len(items))})

    def set_role(
        self, conversation: Conversation, user_id: str, role: str, *, log: LogAppend
    ) -> None:
        """A member's role changes (in the conversation and in the user's index)."""
        cid = conversation.conversation_id
        self._transact(
            [
                *self._log_items(cid, log),
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"CONV#{cid}", f"MEMBER#{user_id}"),
                        "UpdateExpression": "SET #r = :r",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": {"#r": "role"},
                        "ExpressionAttributeValues": {":r": {"S": role}},
                    }
                },
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(f"USERCONV#{user_id}", f"CONV#{cid}"),
                        "UpdateExpression": "SET #r = :r",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": {"#r": "role"},
                        "ExpressionAttributeValues": {":r": {"S": role}},
                    }
                },
            ],
            {0: "log_moved", 1: "log_moved", 2: "not_a_member", 3: "not_a_member"},
        )

    def roster_add(self, cid: str, user_id: str, device_id: str) -> bool:
        """A member's new device joins the roster; False if it is there already.

        One transaction, conditional on the user still being a member and on
        the conversation's next seq as read: the device's cursor starts at the
        last message stored before it joined, so it is never served a message
        whose chain could not have reached it. Sends are conditional on the
        roster version, so none slips in between.
        """
        entry = f"{user_id}/{device_id}"
        for _ in range(20):
            conversation = self.get(cid)
            if conversation is None:
                return False
            try:
                self._transact(
                    [
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": key(f"CONV#{cid}", "ROSTER"),
                                "UpdateExpression": "ADD devices :d",
                                "ConditionExpression": (
                                    "attribute_not_exists(devices) OR NOT contains(devices, :e)"
                                ),
                                "ExpressionAttributeValues": {
                                    ":d": {"SS": [entry]},
                                    ":e": {"S": entry},
                                },
                            }
                        },
                        self._roster_moved(conversation),
                        {
                            "ConditionCheck": {
                                "TableName": self._table,
                                "Key": key(f"CONV#{cid}", f"MEMBER#{user_id}"),
                                "ConditionExpression": "attribute_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": key(f"CURSOR#{device_id}", f"CONV#{cid}"),
                                "UpdateExpression": "SET seq = if_not_exists(seq, :start)",
                                "ExpressionAttributeValues": {
                                    ":start": number(conversation.last_seq)
                                },
                            }
                        },
                    ],
                    {0: "present", 1: "moved", 2: "not_a_member"},
                )
            except Conflict as conflict:
                if conflict.reason in ("present", "not_a_member"):
                    return False
                continue  # a message or another change landed: read again
            return True
        raise Conflict("conversation_busy")

    def roster_remove(self, cid: str, user_id: str, device_id: str) -> bool:
        """A revoked device leaves the roster; False if it was not there."""
        entry = f"{user_id}/{device_id}"
        try:
            self._transact(
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": key(f"CONV#{cid}", "ROSTER"),
                            "UpdateExpression": "DELETE devices :d",
                            "ConditionExpression": "contains(devices, :e)",
                            "ExpressionAttributeValues": {
                                ":d": {"SS": [entry]},
                                ":e": {"S": entry},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": key(f"CONV#{cid}", "META"),
                            "UpdateExpression": "ADD roster_version :one",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":one": number(1)},
                        }
                    },
                ],
                {0: "absent", 1: "absent"},
            )
        except Conflict:
            return False
        return True

    def _roster_moved(self, conversation: Conversation) -> TransactWriteItemTypeDef:
        """Move the roster version, conditional on nothing having been stored meanwhile."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": key(f"CONV#{conversation.conversation_id}", "META"),
                "UpdateExpression": "ADD roster_version :one",
                "ConditionExpression": "next_seq = :next",
                "ExpressionAttributeValues": {
                    ":one": number(1),
                    ":next": number(conversation.last_seq + 1),
                },
            }
        }

    # -- chains, messages, mail ----------------------------------------------------

    def record_distribution(
        self, cid: str, device_id: str, chain_id: bytes, recipients: set[str]
    ) -> None:
        """Note that ``recipients`` got the device's chain ``chain_id``.

        A new chain id replaces the record; the same one accumulates recipients
        over the several frames a large room's distribution takes, which may
        be stored concurrently: each step is conditional on what it found, so
        no frame's recipients are lost to another's.
        """
        chain_key = key(f"CONV#{cid}", f"CHAIN#{device_id}")
        values: dict[str, AttributeValueTypeDef] = {
            ":d": {"SS": sorted(recipients)},
            ":c": {"B": chain_id},
        }
        for _ in range(3):
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=chain_key,
                    UpdateExpression="ADD devices :d",
                    ConditionExpression="chain_id = :c",
                    ExpressionAttributeValues=values,
                )
                return
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={**chain_key, "chain_id": values[":c"], "devices": values[":d"]},
                    ConditionExpression="attribute_not_exists(chain_id) OR chain_id <> :c",
                    ExpressionAttributeValues={":c": values[":c"]},
                )
                return
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                # Another frame of this chain recorded it first: add to what it wrote.
        raise RuntimeError("the chain record kept changing under this distribution")

    def put_mail(self, items: Sequence[MailDraft], now_ms: int) -> list[Mail]:
        """Store mail items, 25 per batch; the same item stored again replaces itself.

        A mail id is derived from what the item is (kind, conversation,
        sender device, and the chain or message it carries) and its
        recipient is its partition: a repeated key distribution or receipt
        overwrites the first copy instead of adding another.
        """
        stored: list[Mail] = []
        requests: list[Any] = []
        for draft in items:
            mail_id = mail_id_of(draft)
            stored.append(
                Mail(
                    draft.device_id,
                    mail_id,
                    draft.conversation_id,
                    draft.kind,
                    draft.data,
                    draft.from_device,
                    now_ms,
                )
            )
            requests.append(
                {
                    "PutRequest": {
                        "Item": {
                            **key(f"MAIL#{draft.device_id}", f"M#{mail_id}"),
                            "conversation_id": {"S": draft.conversation_id},
                            "kind": {"S": draft.kind},
                            "data": {"B": draft.data},
                            "from_device": {"S": draft.from_device},
                            "server_time": number(now_ms),
                            "expires_at": number(now_ms // 1000 + MAIL_TTL_SECONDS),
                        }
                    }
                }
            )
        for start in range(0, len(requests), 25):
            self._batch_write(requests[start : start + 25])
        return stored

    def delete_mail(self, device_id: str, mail_ids: Sequence[str]) -> None:
        # Once each: BatchWriteItem refuses a batch naming a key twice, and a device
        # may well acknowledge a mail item twice (a retried distribute pushes it again).
        requests = [
            {"DeleteRequest": {"Key": key(f"MAIL#{device_id}", f"M#{mail_id}")}}
            for mail_id in dict.fromkeys(mail_ids)
        ]
        for start in range(0, len(requests), 25):
            self._batch_write(requests[start : start + 25])

    def position_claim(
        self, cid: str, device_id: str, chain_id: bytes, iteration: int, message_id: str, ttl: int
    ) -> TransactWriteItemTypeDef:
        """The item that claims a chain position for one message (``append``, ``claim``).

        A device's chain position carries one message, ever: a second message
        at a position already used means the device's state is older than its
        last send (a keystore restored from a backup), and its recipients could
        not open it (they used that step's key). Conflict("position_used").
        """
        return {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **key(f"CONV#{cid}", f"POS#{device_id}#{chain_id.hex()}#{iteration:010d}"),
                    "message_id": {"S": message_id},
                    "expires_at": number(ttl),
                },
                "ConditionExpression": "attribute_not_exists(pk) OR message_id = :m",
                "ExpressionAttributeValues": {":m": {"S": message_id}},
            }
        }

    def claim(self, item: TransactWriteItemTypeDef) -> None:
        """One ``position_claim`` on its own (a mailbox send stores no message)."""
        put = item["Put"]
        try:
            self._client.put_item(
                TableName=put["TableName"],
                Item=put["Item"],
                ConditionExpression=put["ConditionExpression"],
                ExpressionAttributeValues=put["ExpressionAttributeValues"],
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            raise Conflict("position_used") from None

    def append(
        self,
        conversation: Conversation,
        message: StoredMessage,
        *,
        charge: UpdateTypeDef | None = None,
        attach: Sequence[TransactWriteItemTypeDef] = (),
        position: TransactWriteItemTypeDef | None = None,
    ) -> StoredMessage:
        """Store a message at the next seq, once per message id; returns what is stored.

        ``charge`` is a rate counter's conditional update (``GuardsStore``),
        committed with the message or not at all: Conflict("rate_limited").
        Conditional on the roster version the sender's chain was checked
        against: a roster change in between raises Conflict("roster_changed")
        (the caller checks the chain again), so no message is stored for a
        device its chain did not reach. Retries when another sender took the
        seq first; a repeated message id returns the message stored the first
        time. ``attach`` ties uploads to the message in the same transaction
        (``FilesStore.attach_item``): Conflict("file_unavailable") if one lost.
        ``position`` (``position_claim``) commits with it: Conflict("position_used").
        """
        cid = conversation.conversation_id
        next_seq = conversation.last_seq + 1
        for _ in range(20):
            stored = replace(message, seq=next_seq)
            items = self._append_items(stored, conversation.roster_version)
            reasons = {0: "seq_taken", 2: "duplicate"}
            if charge is not None:
                # The sender's rate counter rides in the same transaction: one write.
                reasons[len(items)] = "rate_limited"
                items.append({"Update": charge})
            for extra in attach:
                reasons[len(items)] = "file_unavailable"
                items.append(extra)
            if position is not None:
                reasons[len(items)] = "position_used"
                items.append(position)
            try:
                self._transact(items, reasons)
            except Conflict as conflict:
                if conflict.reason in ("rate_limited", "file_unavailable", "position_used"):
                    raise
                if conflict.reason == "duplicate":
                    existing = self.message_by_id(cid, message.message_id)
                    if existing is not None:
                        return existing
                current = self.get(cid)
                if current is not None and current.roster_version != conversation.roster_version:
                    raise Conflict("roster_changed") from None
                next_seq = (current.last_seq if current else next_seq) + 1
                continue
            return stored
        raise Conflict("conversation_busy")

    def _append_items(
        self, message: StoredMessage, roster_version: int
    ) -> list[TransactWriteItemTypeDef]:
        cid = message.conversation_id
        # A message without expiry still leaves the server after its maximum
        # lifetime (clients keep their own history): storage is bounded.
        ends = message.expires_at or message.server_time + MAX_MESSAGE_LIFETIME_MS
        ttl = {"expires_at": number(ends // 1000 + 1)}
        return [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": key(f"CONV#{cid}", "META"),
                    "UpdateExpression": "SET next_seq = :next",
                    "ConditionExpression": "next_seq = :seq AND roster_version = :version",
                    "ExpressionAttributeValues": {
                        ":seq": number(message.seq),
                        ":next": number(message.seq + 1),
                        ":version": number(roster_version),
                    },
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"CONV#{cid}", f"MSG#{message.seq:012d}"),
                        "envelope": {"B": message.envelope},
                        "sender_device": {"S": message.sender_device},
                        "message_id": {"S": message.message_id},
                        "server_time": number(message.server_time),
                        "expires_at_ms": number(message.expires_at),
                        "burn_s": number(message.burn_s),
                        **({"files": {"SS": list(message.files)}} if message.files else {}),
                        **ttl,
                    },
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key(f"CONV#{cid}", f"MID#{message.message_id}"),
                        "seq": number(message.seq),
                        **ttl,
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]

    def advance_cursor(self, device_id: str, cid: str, seq: int) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"CURSOR#{device_id}", f"CONV#{cid}"),
                UpdateExpression="SET seq = :seq",
                ConditionExpression="attribute_not_exists(seq) OR seq < :seq",
                ExpressionAttributeValues={":seq": number(seq)},
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise  # an older ack arriving late changes nothing

    def start_burn(self, cid: str, seq: int, deadline_ms: int) -> None:
        """Bring a message's end forward to ``deadline_ms`` (never later than it was)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(f"CONV#{cid}", f"MSG#{seq:012d}"),
                UpdateExpression="SET expires_at_ms = :d, expires_at = :ttl",
                ConditionExpression=(
                    "attribute_exists(pk) AND burn_s > :zero "
                    "AND (expires_at_ms = :zero OR expires_at_ms > :d)"
                ),
                ExpressionAttributeValues={
                    ":d": number(deadline_ms),
                    ":ttl": number(deadline_ms // 1000 + 1),
                    ":zero": number(0),
                },
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
