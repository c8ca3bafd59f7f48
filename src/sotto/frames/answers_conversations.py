"""Typed answers of the conversation routes (docs/api.md, Messaging).

| Request                                   | Answer (each part)          |
| ----------------------------------------- | --------------------------- |
| ``create_conversation``, ``add_members``, | ``ConversationAnswer``      |
| ``remove_members``, ``set_role``          |                             |
| ``leave``                                 | ``LeftAnswer``              |
| ``list_conversations``                    | ``ConversationsPart``       |
| ``conversation_devices``                  | ``ConversationDevicesPart`` |
| ``membership_log``                        | ``MembershipLogPart``       |
| ``identities``                            | ``IdentitiesPart``          |

Binary fields are base64url strings, as on the wire. ``part`` and ``final``
are absent from a whole answer and from parts once joined
(``sotto.frames.join_parts``).
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from .shapes import strict

__all__ = [
    "ConversationAnswer",
    "ConversationDevicesHeader",
    "ConversationDevicesPart",
    "ConversationInfo",
    "ConversationMember",
    "ConversationsHeader",
    "ConversationsPart",
    "IdentitiesHeader",
    "IdentitiesPart",
    "LeftAnswer",
    "ListedConversation",
    "LogOperation",
    "MembershipLogHeader",
    "MembershipLogPart",
    "RosterDevice",
    "RosterMember",
    "SignerIdentity",
    "UnknownUser",
    "UserIdentity",
]


class ConversationMember(TypedDict):
    user_id: str
    role: str  # member or moderator


class ConversationInfo(TypedDict):
    """A conversation as it is after the request (``log_seq``: its log's head, -1 if none)."""

    conversation_id: str
    kind: str  # direct, room or self
    members: list[ConversationMember]
    roster_version: int
    last_seq: int
    created_at: int
    log_seq: int


class ConversationAnswer(TypedDict):
    action: Literal["conversation"]
    id: str | None
    conversation: ConversationInfo


class LeftAnswer(TypedDict):
    action: Literal["left"]
    id: str | None
    conversation_id: str


class ListedConversation(TypedDict):
    conversation_id: str
    kind: str
    role: str
    roster_version: int
    member_count: int
    last_seq: int


class ConversationsHeader(TypedDict):
    action: Literal["conversations"]
    id: str | None


class ConversationsPart(ConversationsHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    conversations: list[ListedConversation]


class RosterMember(TypedDict):
    """A member with the identity the directory binds (the handle: a name to show)."""

    user_id: str
    role: str
    handle: str
    identity_key: str  # base64url IdentityPublicKey


class RosterDevice(TypedDict):
    user_id: str
    device_id: str
    certificate: str  # base64url DeviceCertificate


class ConversationDevicesHeader(TypedDict):
    action: Literal["conversation_devices"]
    id: str | None
    conversation_id: str
    roster_version: int


class ConversationDevicesPart(ConversationDevicesHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    members: list[RosterMember]
    devices: list[RosterDevice]


class LogOperation(TypedDict):
    seq: int
    op: str  # base64url MembershipOperation


class SignerIdentity(TypedDict):
    user_id: str
    identity_key: str  # base64url IdentityPublicKey


class MembershipLogHeader(TypedDict):
    """``more`` while operations past this page remain: ask again ``after`` its last seq."""

    action: Literal["membership_log"]
    id: str | None
    conversation_id: str
    head_seq: int
    more: bool


class MembershipLogPart(MembershipLogHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    operations: list[LogOperation]
    identities: list[SignerIdentity]


class UserIdentity(TypedDict):
    user_id: str
    handle: str
    identity_key: str  # base64url IdentityPublicKey


class UnknownUser(TypedDict):
    user_id: str


class IdentitiesHeader(TypedDict):
    action: Literal["identities"]
    id: str | None


class IdentitiesPart(IdentitiesHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    identities: list[UserIdentity]
    unknown: list[UnknownUser]


strict(
    ConversationMember,
    ConversationInfo,
    ConversationAnswer,
    LeftAnswer,
    ListedConversation,
    ConversationsHeader,
    ConversationsPart,
    RosterMember,
    RosterDevice,
    ConversationDevicesHeader,
    ConversationDevicesPart,
    LogOperation,
    SignerIdentity,
    MembershipLogHeader,
    MembershipLogPart,
    UserIdentity,
    UnknownUser,
    IdentitiesHeader,
    IdentitiesPart,
)
