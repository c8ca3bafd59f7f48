"""Typed answers and pushes of the core routes: one shape per frame, both sides.

The server builds these frames as the typed dicts below (mypy holds every
literal to its shape) and the SDK parses what arrives with ``parse``, the
same shapes checked at run time: a frame missing a field, or with one of
the wrong type, is a ``ShapeError`` naming it, never a ``KeyError`` deep
in the client. Fields a shape does not name are dropped, not refused: a
newer server may add some (docs/api.md).

Binary fields are base64url strings here, as on the wire; the client decodes
them where it uses them. A multi-part answer (``sotto.frames``, "Answers in
parts") is parsed part by part: every part is a whole frame of its shape.

| Request          | Answer (each part)  |
| ---------------- | ------------------- |
| ``send``         | ``SentAnswer``      |
| ``sync``         | ``SyncPart``        |
| ``ack``          | ``AckedAnswer``     |
| ``distribute``   | ``DistributedAnswer`` |
| ``fetch_bundles``| ``BundlesPart``     |
| ``policy``       | ``PolicyAnswer``    |

Pushes (no ``id``): ``MailPush``, ``MessagePush``, ``MembershipPush``,
``PrekeysLowPush``, ``PolicyPush`` (``PUSHES``, by action).

The other routes' shapes are in ``answers_conversations``, ``answers_devices``
and ``answers_files`` (the HTTP routes' bodies in ``answers_http`` and
``answers_admin``, named by ``answers_http.HTTP_ANSWERS``);
``ANSWERS`` names the shape of every WebSocket route's answer, and ``PUSHES``
of every push. ``parse`` and ``ShapeError`` live in ``shapes`` (re-exported).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

# typing_extensions' TypedDict: pydantic needs it on Python 3.11.
from typing_extensions import TypedDict

from . import answers_conversations as _conversations
from . import answers_devices as _devices
from . import answers_files as _files
from .shapes import ShapeError, parse, strict

__all__ = [
    "ANSWERS",
    "PUSHES",
    "AckedAnswer",
    "Bundle",
    "BundlesHeader",
    "BundlesPart",
    "DistributedAnswer",
    "MailItem",
    "MailPush",
    "MembershipPush",
    "MessageItem",
    "MessagePush",
    "PolicyAnswer",
    "PolicyFields",
    "PolicyPush",
    "PrekeysLowPush",
    "SentAnswer",
    "ShapeError",
    "SyncHeader",
    "SyncPart",
    "Unavailable",
    "parse",
]

# A knob's value in an effective policy (sotto_server.logic.policy.KNOBS).
PolicyValue = bool | int | str | None


class MailItem(TypedDict):
    """One mailbox item: a chain key distribution or a to-one-member envelope."""

    mail_id: str
    conversation_id: str
    kind: str  # "distribution" or "envelope"
    data: str  # base64url
    from_device: str
    server_time: int


class MessageItem(TypedDict):
    """One stored conversation message."""

    conversation_id: str
    seq: int
    envelope: str  # base64url
    server_time: int


class MailPush(MailItem):
    action: Literal["mail"]


class MessagePush(MessageItem):
    action: Literal["message"]


class MembershipPush(TypedDict):
    """A conversation's membership log moved; ``op`` is the signed operation (base64url)."""

    action: Literal["membership"]
    conversation_id: str
    kind: str
    change: str
    users: list[str]
    by: str
    roster_version: int
    seq: int
    op: str


class PrekeysLowPush(TypedDict):
    action: Literal["prekeys_low"]
    one_time_prekeys: int


class PolicyFields(TypedDict):
    """A user's effective policy (``sotto_server.logic.policy.EffectivePolicy.to_json``)."""

    network_id: str
    user_id: str
    policy: dict[str, PolicyValue]
    sources: dict[str, str]
    groups: list[str]
    version: int


class PolicyPush(PolicyFields):
    action: Literal["policy"]


class PolicyAnswer(PolicyPush):
    id: str | None


class SentAnswer(TypedDict):
    """A stored message (``seq``), or mail to one member's devices (``mailbox``, no seq)."""

    action: Literal["sent"]
    id: str | None
    conversation_id: str
    message_id: str
    server_time: int
    seq: NotRequired[int]
    mailbox: NotRequired[bool]


class AckedAnswer(TypedDict):
    action: Literal["acked"]
    id: str | None


class DistributedAnswer(TypedDict):
    action: Literal["distributed"]
    id: str | None
    chain_id: str  # base64url
    count: int


class SyncHeader(TypedDict):
    """What every part of a sync answer repeats; ``resume`` while ``more``."""

    action: Literal["sync"]
    id: str | None
    more: bool
    through: dict[str, int]
    rosters: dict[str, int]
    resume: NotRequired[str]


class SyncPart(SyncHeader):
    # Absent once the parts are joined (sotto.frames.join_parts).
    part: NotRequired[int]
    final: NotRequired[bool]
    mail: list[MailItem]
    messages: list[MessageItem]


class Bundle(TypedDict):
    user_id: str
    device_id: str
    kind: str
    prekey: str  # base64url PrekeyCertificate


class Unavailable(TypedDict):
    user_id: str
    device_id: str
    reason: str  # unknown, revoked, no_prekey


class BundlesHeader(TypedDict):
    action: Literal["bundles"]
    id: str | None


class BundlesPart(BundlesHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    bundles: list[Bundle]
    unavailable: list[Unavailable]


strict(
    MailItem,
    MessageItem,
    MailPush,
    MessagePush,
    MembershipPush,
    PrekeysLowPush,
    PolicyFields,
    PolicyPush,
    PolicyAnswer,
    SentAnswer,
    AckedAnswer,
    DistributedAnswer,
    SyncHeader,
    SyncPart,
    Bundle,
    Unavailable,
    BundlesHeader,
    BundlesPart,
)

# The answer shape of each WebSocket request action (each part of it): every route.
ANSWERS: dict[str, type[Any]] = {
    "send": SentAnswer,
    "sync": SyncPart,
    "ack": AckedAnswer,
    "distribute": DistributedAnswer,
    "fetch_bundles": BundlesPart,
    "policy": PolicyAnswer,
    # answers_conversations
    "create_conversation": _conversations.ConversationAnswer,
    "add_members": _conversations.ConversationAnswer,
    "remove_members": _conversations.ConversationAnswer,
    "set_role": _conversations.ConversationAnswer,
    "leave": _conversations.LeftAnswer,
    "list_conversations": _conversations.ConversationsPart,
    "conversation_devices": _conversations.ConversationDevicesPart,
    "membership_log": _conversations.MembershipLogPart,
    "identities": _conversations.IdentitiesPart,
    # answers_devices
    "ping": _devices.PongAnswer,
    "publish_prekeys": _devices.PrekeysPublishedAnswer,
    "prekey_status": _devices.PrekeyStatusAnswer,
    "list_devices": _devices.DevicesPart,
    "lookup_user": _devices.UserAnswer,
    "link_create": _devices.LinkCreatedAnswer,
    "link_pending": _devices.LinkPendingAnswer,
    "link_approve": _devices.LinkApprovedAnswer,
    "revoke_device": _devices.DeviceRevokedAnswer,
    "retention": _devices.RetentionAnswer,
    # answers_files
    "file_policy": _files.FilePolicyAnswer,
    "file_upload_start": _files.FileUploadStartedAnswer,
    "file_upload_parts": _files.FileUploadPartsPart,
    "file_upload_complete": _files.FileUploadCompletedAnswer,
    "file_upload_abort": _files.FileUploadAbortedAnswer,
    "file_download": _files.FileDownloadAnswer,
}
# The shape of each push by its action.
PUSHES: dict[str, type[Any]] = {
    "mail": MailPush,
    "message": MessagePush,
    "membership": MembershipPush,
    "prekeys_low": PrekeysLowPush,
    "policy": PolicyPush,
    "link_requested": _devices.LinkRequestedPush,
}
