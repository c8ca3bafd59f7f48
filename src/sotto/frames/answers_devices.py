"""Typed answers of the key directory's routes: prekeys, devices, users, links, retention.

| Request            | Answer (each part)       |
| ------------------ | ------------------------ |
| ``ping``           | ``PongAnswer``           |
| ``publish_prekeys``| ``PrekeysPublishedAnswer`` |
| ``prekey_status``  | ``PrekeyStatusAnswer``   |
| ``list_devices``   | ``DevicesPart``          |
| ``lookup_user``    | ``UserAnswer``           |
| ``link_create``    | ``LinkCreatedAnswer``    |
| ``link_pending``   | ``LinkPendingAnswer``    |
| ``link_approve``   | ``LinkApprovedAnswer``   |
| ``revoke_device``  | ``DeviceRevokedAnswer``  |
| ``retention``      | ``RetentionAnswer``      |

Push: ``LinkRequestedPush``. Binary fields are base64url strings.
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from .shapes import strict

__all__ = [
    "DeviceItem",
    "DeviceRevokedAnswer",
    "DevicesHeader",
    "DevicesPart",
    "LinkApprovedAnswer",
    "LinkCreatedAnswer",
    "LinkPendingAnswer",
    "LinkRequestedPush",
    "PongAnswer",
    "PrekeyStatusAnswer",
    "PrekeysPublishedAnswer",
    "RetentionAnswer",
    "RetentionFields",
    "UserAnswer",
]


class PongAnswer(TypedDict):
    action: Literal["pong"]
    id: str | None
    payload: str | None
    server_time: int


class PrekeysPublishedAnswer(TypedDict):
    action: Literal["prekeys_published"]
    id: str | None
    one_time_prekeys: int  # how many the server holds now


class PrekeyStatusAnswer(TypedDict):
    action: Literal["prekey_status"]
    id: str | None
    one_time_prekeys: int
    signed_prekey_expires_at: int | None


class DeviceItem(TypedDict):
    device_id: str
    certificate: str  # base64url DeviceCertificate
    status: str  # active or revoked


class DevicesHeader(TypedDict):
    action: Literal["devices"]
    id: str | None
    user_id: str
    identity_key: str  # base64url IdentityPublicKey


class DevicesPart(DevicesHeader):
    part: NotRequired[int]
    final: NotRequired[bool]
    devices: list[DeviceItem]


class UserAnswer(TypedDict):
    action: Literal["user"]
    id: str | None
    user_id: str
    handle: str
    status: str
    identity_key: str  # base64url IdentityPublicKey


class LinkCreatedAnswer(TypedDict):
    action: Literal["link_created"]
    id: str | None
    link_id: str
    code: str
    expires_at: int


class LinkPendingAnswer(TypedDict):
    """The link's state; once a new device asked, its id and key (base64url)."""

    action: Literal["link_pending"]
    id: str | None
    link_id: str
    state: str  # open, requested, approved or expired
    device_id: NotRequired[str]
    device_key: NotRequired[str]


class LinkApprovedAnswer(TypedDict):
    action: Literal["link_approved"]
    id: str | None
    device_id: str


class DeviceRevokedAnswer(TypedDict):
    action: Literal["device_revoked"]
    id: str | None
    device_id: str


class RetentionFields(TypedDict):
    """A network's public retention identity (``logic.retention.identity_frame``): while
    ``enabled``, the years, the officer's identity key, the retention device's certificate
    and its signed prekey (all present together)."""

    network_id: str
    enabled: bool
    years: NotRequired[int]
    officer_identity: NotRequired[str]
    certificate: NotRequired[str]
    prekey: NotRequired[str]


class RetentionAnswer(RetentionFields):
    action: Literal["retention"]
    id: str | None


class LinkRequestedPush(TypedDict):
    action: Literal["link_requested"]
    link_id: str


strict(
    PongAnswer,
    PrekeysPublishedAnswer,
    PrekeyStatusAnswer,
    DeviceItem,
    DevicesHeader,
    DevicesPart,
    UserAnswer,
    LinkCreatedAnswer,
    LinkPendingAnswer,
    LinkApprovedAnswer,
    DeviceRevokedAnswer,
    RetentionFields,
    RetentionAnswer,
    LinkRequestedPush,
)
