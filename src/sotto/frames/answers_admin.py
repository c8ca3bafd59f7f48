"""Typed JSON bodies of the admin HTTP routes' answers (docs/api.md, Admin).

Every route below is under ``/v1/admin``; ``answers_http.HTTP_ANSWERS`` names
each HTTP route's answer type (these, the public routes' and the audit page).

| Route                                        | Answer                                           |
| -------------------------------------------- | ------------------------------------------------ |
| ``POST /networks``                           | ``NetworkAnswer``                                |
| ``GET /networks``                            | ``NetworksAnswer``                               |
| ``POST /networks/{network_id}/invites``      | ``InviteAnswer``                                 |
| ``GET /networks/{network_id}/invites``       | ``InvitesAnswer``                                |
| ``POST /networks/{network_id}/invites/bulk`` | ``BulkInviteAnswer``                             |
| ``POST .../invites/{user_id}/revoke``        | ``InviteRevokedAnswer``                          |
| ``POST .../invites/{user_id}/reissue``       | ``InviteAnswer``                                 |
| ``GET /networks/{network_id}/users``         | ``UsersAnswer``                                  |
| ``GET /networks/{network_id}/retention``     | ``RetentionOffAnswer``, ``RetentionAdminAnswer`` |
| ``PUT /networks/{network_id}/retention``     | ``RetentionAdminAnswer``                         |
| ``POST .../retention/disable``               | ``RetentionAdminAnswer``                         |
| ``POST .../retention/rotate``                | ``RetentionAdminAnswer``                         |
| ``GET /networks/{network_id}/policy``        | ``NetworkPolicyAnswer``                          |
| ``PUT /networks/{network_id}/policy``        | ``PolicySetAnswer``                              |
| ``POST /networks/{network_id}/groups``       | ``GroupCreatedAnswer``                           |
| ``PUT .../groups/{group}/policy``            | ``PolicySetAnswer``                              |
| ``POST .../groups/{group}/members``          | ``GroupMembersAddedAnswer``                      |
| ``POST .../groups/{group}/members/remove``   | ``GroupMembersRemovedAnswer``                    |
| ``GET /users/{user_id}``                     | ``AdminUserAnswer``                              |
| ``POST /users/{user_id}/suspend``            | ``AdminUserAnswer``                              |
| ``POST /users/{user_id}/reinstate``          | ``AdminUserAnswer``                              |
| ``GET /users/{user_id}/policy``              | ``answers.PolicyFields``                         |
| ``GET /devices/{device_id}``                 | ``AdminDeviceAnswer``                            |
| ``POST /devices/{device_id}/revoke``         | ``AdminDeviceAnswer``                            |

A network's retention answers ``RetentionOffAnswer`` (``status`` off) until
it is first enabled. Binary fields are base64url strings, as on the wire. The
``*Fields`` types are what the server's logic builds; the handler adds the
rest (``pushed``, the policy's ``retention``).
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from .answers import PolicyValue
from .shapes import strict

__all__ = [
    "AdminDeviceAnswer",
    "AdminUserAnswer",
    "BulkInviteAnswer",
    "BulkRefusal",
    "GroupCreatedAnswer",
    "GroupMembersAddedAnswer",
    "GroupMembersRemovedAnswer",
    "GroupPolicyItem",
    "InviteAnswer",
    "InviteItem",
    "InviteRevokedAnswer",
    "InvitesAnswer",
    "MemberRefusal",
    "NetworkAnswer",
    "NetworkPolicyAnswer",
    "NetworkPolicyFields",
    "NetworksAnswer",
    "PolicyRetention",
    "PolicySetAnswer",
    "PolicySetFields",
    "RetentionAdminAnswer",
    "RetentionGenerationItem",
    "RetentionOffAnswer",
    "UserDeviceItem",
    "UserItem",
    "UsersAnswer",
]


class NetworkAnswer(TypedDict):
    network_id: str
    name: str
    created_at: int


class NetworksAnswer(TypedDict):
    networks: list[NetworkAnswer]


class InviteAnswer(TypedDict):
    """A new invite and its one-time code (shown only in this answer); a bulk row's
    display name and security groups when it named them."""

    code: str
    network_id: str
    user_id: str
    handle: str
    expires_at: int
    display_name: NotRequired[str]
    groups: NotRequired[list[str]]


class InviteItem(TypedDict):
    """A pending invite as listed (never its code)."""

    user_id: str
    handle: str
    display_name: str  # "" when none
    groups: str  # comma-separated, "" when none (a table cell)
    state: str  # pending, expired or locked
    failed_attempts: int
    created_at: int
    expires_at: int


class InvitesAnswer(TypedDict):
    network_id: str
    invites: list[InviteItem]


class InviteRevokedAnswer(TypedDict):
    network_id: str
    user_id: str
    handle: str
    revoked: bool


class BulkRefusal(TypedDict):
    row: int  # the CSV line it came from (0 when the request did not say)
    handle: str
    reason: str


class BulkInviteAnswer(TypedDict):
    network_id: str
    created: list[InviteAnswer]
    refused: list[BulkRefusal]


class UserItem(TypedDict):
    user_id: str
    handle: str
    status: str  # active or suspended


class UsersAnswer(TypedDict):
    network_id: str
    users: list[UserItem]


class UserDeviceItem(TypedDict):
    device_id: str
    status: str  # active or revoked


class AdminUserAnswer(TypedDict):
    user_id: str
    network_id: str
    handle: str
    status: str  # active or suspended
    created_at: int
    identity_key: str  # base64url IdentityPublicKey
    devices: list[UserDeviceItem]


class AdminDeviceAnswer(TypedDict):
    device_id: str
    user_id: str
    network_id: str
    status: str  # active or revoked
    created_at: int
    signing_key: str  # base64url DER SubjectPublicKeyInfo
    certificate: str  # base64url DeviceCertificate ("" for a device seeded without one)


class RetentionOffAnswer(TypedDict):
    """A network whose retention was never enabled."""

    network_id: str
    status: Literal["off"]


class RetentionGenerationItem(TypedDict):
    generation: int
    device_id: str
    certificate: str  # base64url DeviceCertificate
    prekey: str  # base64url PrekeyCertificate
    wrapped_device_key: str  # base64url KMS ciphertext under the archive key
    created_at: int


class RetentionAdminAnswer(TypedDict):
    """A network's retention identity: its current generation, then every generation."""

    network_id: str
    status: Literal["enabled", "disabled"]
    years: int
    officer_identity: str  # base64url IdentityPublicKey
    wrapped_officer_key: str  # base64url KMS ciphertext under the archive key
    generation: int
    device_id: str
    certificate: str
    prekey: str
    updated_at: int
    generations: list[RetentionGenerationItem]


class GroupPolicyItem(TypedDict):
    name: str
    policy: dict[str, PolicyValue]
    members: list[str]


class NetworkPolicyFields(TypedDict):
    """The network's policy documents: its default and each security group's."""

    network_id: str
    version: int
    network: dict[str, PolicyValue]
    groups: list[GroupPolicyItem]


class PolicyRetention(TypedDict):
    """Not a knob: required exactly while the network's retention is enabled."""

    required: bool
    years: NotRequired[int]


class NetworkPolicyAnswer(NetworkPolicyFields):
    retention: PolicyRetention


class PolicySetFields(TypedDict):
    """A policy document as set: the network default's (``group`` None) or a group's."""

    network_id: str
    group: str | None
    policy: dict[str, PolicyValue]


class PolicySetAnswer(PolicySetFields):
    pushed: int  # sockets pushed the new effective policy


class GroupCreatedAnswer(TypedDict):
    network_id: str
    group: str
    policy: dict[str, PolicyValue]
    members: list[str]


class MemberRefusal(TypedDict):
    user_id: str
    reason: str


class GroupMembersAddedAnswer(TypedDict):
    network_id: str
    group: str
    added: list[str]
    refused: list[MemberRefusal]
    pushed: int


class GroupMembersRemovedAnswer(TypedDict):
    network_id: str
    group: str
    removed: list[str]
    refused: list[MemberRefusal]
    pushed: int


strict(
    NetworkAnswer,
    NetworksAnswer,
    InviteAnswer,
    InviteItem,
    InvitesAnswer,
    InviteRevokedAnswer,
    BulkRefusal,
    BulkInviteAnswer,
    UserItem,
    UsersAnswer,
    UserDeviceItem,
    AdminUserAnswer,
    AdminDeviceAnswer,
    RetentionOffAnswer,
    RetentionGenerationItem,
    RetentionAdminAnswer,
    GroupPolicyItem,
    NetworkPolicyFields,
    PolicyRetention,
    NetworkPolicyAnswer,
    PolicySetFields,
    PolicySetAnswer,
    GroupCreatedAnswer,
    MemberRefusal,
    GroupMembersAddedAnswer,
    GroupMembersRemovedAnswer,
)
