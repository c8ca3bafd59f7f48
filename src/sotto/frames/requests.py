"""Typed models of every request: WebSocket frames and HTTP JSON bodies.

The one definition of each route's request shape. The server parses every
frame with these (``sotto_server.logic.requests`` adds its refusals) and the
SDK checks every frame it sends with the same models (``sotto.client.session``),
so a client bug is a local error, not a server ``bad_request``.

Every model forbids unknown fields and bounds every string and list, so a
request that parses is one the logic can trust in shape (not in meaning).
Binary fields are base64url without padding, decoded here with their size
bounded before any parser sees them. Validators are built when a model is
first used (``defer_build``), not at import: a Lambda builds only its own.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = [
    "MAX_BULK_INVITES",
    "MAX_BUNDLES_PER_CALL",
    "MAX_DISTRIBUTIONS_PER_CALL",
    "MAX_IDENTITIES_PER_CALL",
    "MAX_ONE_TIME_PREKEYS_PER_CALL",
    "MAX_ROOM_ADD",
    "MAX_ROOM_CREATE",
    "AckRequest",
    "AddMembersRequest",
    "BulkInviteRequest",
    "BulkInviteRow",
    "ConversationDevicesRequest",
    "CreateConversationRequest",
    "CreateNetworkRequest",
    "DeviceRef",
    "DistributeRequest",
    "EnrollLookupRequest",
    "EnrollRequest",
    "FetchBundlesRequest",
    "FileDownloadRequest",
    "FilePolicyRequest",
    "FileUploadAbortRequest",
    "FileUploadCompleteRequest",
    "FileUploadPartsRequest",
    "FileUploadStartRequest",
    "FrameModel",
    "GroupMembersRequest",
    "GroupRequest",
    "IdentitiesRequest",
    "InviteRequest",
    "LeaveRequest",
    "LinkApproveRequest",
    "LinkCreateRequest",
    "LinkPendingRequest",
    "LinkRequest",
    "LinkStatusRequest",
    "ListConversationsRequest",
    "ListDevicesRequest",
    "LookupUserRequest",
    "MembershipLogRequest",
    "PingRequest",
    "PolicyRequest",
    "PolicySettingsRequest",
    "PrekeyStatusRequest",
    "PublishPrekeysRequest",
    "ReadRef",
    "ReissueInviteRequest",
    "RemoveMembersRequest",
    "RetentionEnableRequest",
    "RetentionIdentityRequest",
    "RetentionRotateRequest",
    "RevokeDeviceRequest",
    "SendRequest",
    "SetRoleRequest",
    "SyncRequest",
    "request_model",
    "requests_by_action",
]

RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# Invite and link codes as people type them: case, dashes and spaces are forgiven.
Code = Annotated[str, StringConstraints(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9 -]+$")]
Handle = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9._-]+$")]
# A file's object id: 32 lowercase hex digits, random (logic/files.py).
ObjectId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
MessageIdHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
# 2**62: beyond any policy; the policy's limit is checked in logic.
FileSize = Annotated[int, Field(ge=1, lt=2**62)]
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")

# Upper bounds of the wire encodings (docs/protocol.md), with headroom.
MAX_IDENTITY_KEY = 4096
MAX_DEVICE_CERTIFICATE = 8192
MAX_PREKEY_CERTIFICATE = 4096
MAX_DEVICE_KEY = 256
MAX_DISTRIBUTION = 4096
# docs/protocol.md: a 64 KiB padded body plus header, digest and signature.
MAX_ENVELOPE = 70 * 1024
MAX_DISTRIBUTIONS_PER_CALL = 40
# A membership change is one transaction (at most 100 actions, three per
# member: membership, the user's index entry, the user's count): a room
# starts with its creator and up to 31 others, and changes by up to 32
# members per call.
MAX_ROOM_CREATE = 31
MAX_ROOM_ADD = 32
# A membership operation carries its signer's certificate and at most 32 entries.
MAX_OPERATION = 16 * 1024
MAX_IDENTITIES_PER_CALL = 100
# A publish is one DynamoDB transaction (at most 100 actions): the signed
# prekey, the counter and up to 98 one-time prekeys.
MAX_ONE_TIME_PREKEYS_PER_CALL = 98
# Devices per bundle fetch (the answer comes in parts under the frame limit).
MAX_BUNDLES_PER_CALL = 100


def _decoder(max_bytes: int) -> Any:
    def decode(value: object) -> bytes:
        if not isinstance(value, str) or not _B64URL.match(value):
            raise ValueError("must be base64url without padding")
        if len(value) > (max_bytes * 4 + 2) // 3:
            raise ValueError(f"must decode to at most {max_bytes} bytes")
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise ValueError("must be base64url without padding") from None

    return BeforeValidator(decode)


IdentityKeyField = Annotated[bytes, _decoder(MAX_IDENTITY_KEY), Field(min_length=1)]
DeviceCertificateField = Annotated[bytes, _decoder(MAX_DEVICE_CERTIFICATE), Field(min_length=1)]
PrekeyField = Annotated[bytes, _decoder(MAX_PREKEY_CERTIFICATE), Field(min_length=1)]
DeviceKeyField = Annotated[bytes, _decoder(MAX_DEVICE_KEY), Field(min_length=1)]


class _Model(BaseModel):
    # defer_build: a model's validator is built when a frame first needs it, not
    # at import (cold start: each function builds only the models it uses).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class _Frame(_Model):
    id: RequestId | None = None


class PingRequest(_Frame):
    action: Literal["ping"]
    # Echoed back so a client can measure round trips with its own clock.
    payload: Annotated[str, Field(max_length=256)] | None = None


class PublishPrekeysRequest(_Frame):
    action: Literal["publish_prekeys"]
    signed_prekey: PrekeyField | None = None
    one_time_prekeys: Annotated[
        list[PrekeyField], Field(max_length=MAX_ONE_TIME_PREKEYS_PER_CALL)
    ] = []


class PrekeyStatusRequest(_Frame):
    action: Literal["prekey_status"]


class DeviceRef(_Model):
    user_id: Id
    device_id: Id


class FetchBundlesRequest(_Frame):
    action: Literal["fetch_bundles"]
    devices: Annotated[list[DeviceRef], Field(min_length=1, max_length=MAX_BUNDLES_PER_CALL)]


class ListDevicesRequest(_Frame):
    action: Literal["list_devices"]
    user_id: Id


class LookupUserRequest(_Frame):
    """A user of the caller's network by handle, or a user id's handle: exactly one."""

    action: Literal["lookup_user"]
    handle: Handle | None = None
    user_id: Id | None = None

    @model_validator(mode="after")
    def _one(self) -> LookupUserRequest:
        if (self.handle is None) == (self.user_id is None):
            raise ValueError("give exactly one of handle and user_id")
        return self


class LinkCreateRequest(_Frame):
    action: Literal["link_create"]


class LinkPendingRequest(_Frame):
    action: Literal["link_pending"]
    link_id: Id


class LinkApproveRequest(_Frame):
    action: Literal["link_approve"]
    link_id: Id
    certificate: DeviceCertificateField


ChainIdField = Annotated[bytes, _decoder(16), Field(min_length=16, max_length=16)]
DistributionField = Annotated[bytes, _decoder(MAX_DISTRIBUTION), Field(min_length=1)]
EnvelopeField = Annotated[bytes, _decoder(MAX_ENVELOPE), Field(min_length=1)]
MailId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[0-9a-f#]+$")]


OperationField = Annotated[bytes, _decoder(MAX_OPERATION), Field(min_length=1)]


class CreateConversationRequest(_Frame):
    """A conversation and its signed creation operation (docs/protocol.md §15)."""

    action: Literal["create_conversation"]
    conversation_id: Id
    op: OperationField


class _MembershipChange(_Frame):
    conversation_id: Id
    op: OperationField


class AddMembersRequest(_MembershipChange):
    action: Literal["add_members"]


class RemoveMembersRequest(_MembershipChange):
    action: Literal["remove_members"]


class LeaveRequest(_MembershipChange):
    action: Literal["leave"]


class SetRoleRequest(_MembershipChange):
    action: Literal["set_role"]


class MembershipLogRequest(_Frame):
    action: Literal["membership_log"]
    conversation_id: Id
    # The operations after this seq (-1: from the creation operation on).
    after: Annotated[int, Field(ge=-1, lt=2**32)] = -1


class IdentitiesRequest(_Frame):
    action: Literal["identities"]
    user_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_IDENTITIES_PER_CALL)]


class ListConversationsRequest(_Frame):
    action: Literal["list_conversations"]


class ConversationDevicesRequest(_Frame):
    action: Literal["conversation_devices"]
    conversation_id: Id


class DistributeRequest(_Frame):
    action: Literal["distribute"]
    conversation_id: Id
    chain_id: ChainIdField
    distributions: Annotated[
        list[DistributionField], Field(min_length=1, max_length=MAX_DISTRIBUTIONS_PER_CALL)
    ]


class SendRequest(_Frame):
    action: Literal["send"]
    conversation_id: Id
    envelope: EnvelopeField
    to_user: Id | None = None
    # The uploads this message refers to (docs/api.md, Files): at most one.
    files: Annotated[list[ObjectId], Field(max_length=1)] = []


class SyncRequest(_Frame):
    action: Literal["sync"]
    # The last page's continuation (logic/sync_resume.py); checked there, not trusted.
    resume: Annotated[str, StringConstraints(min_length=1, max_length=16_384)] | None = None


class ReadRef(_Model):
    conversation_id: Id
    seq: Annotated[int, Field(ge=1, lt=2**40)]


class AckRequest(_Frame):
    action: Literal["ack"]
    cursors: Annotated[dict[Id, Annotated[int, Field(ge=0, lt=2**40)]], Field(max_length=100)] = {}
    mail: Annotated[list[MailId], Field(max_length=500)] = []
    read: Annotated[list[ReadRef], Field(max_length=200)] = []


class FilePolicyRequest(_Frame):
    action: Literal["file_policy"]


class FileUploadStartRequest(_Frame):
    action: Literal["file_upload_start"]
    conversation_id: Id
    size: FileSize  # bytes of the encrypted stream


class FileUploadPartsRequest(_Frame):
    action: Literal["file_upload_parts"]
    object_id: ObjectId
    first: Annotated[int, Field(ge=1, le=10_000)] = 1
    count: Annotated[int, Field(ge=0, le=32)] = 16
    # Also list the parts S3 already holds (resuming an upload).
    held: bool = False


class FileUploadCompleteRequest(_Frame):
    action: Literal["file_upload_complete"]
    object_id: ObjectId
    part_count: Annotated[int, Field(ge=1, le=10_000)]
    # SHA-256 over the parts' ETags in order, each followed by a newline (hex).
    etags_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class FileUploadAbortRequest(_Frame):
    action: Literal["file_upload_abort"]
    object_id: ObjectId


class FileDownloadRequest(_Frame):
    action: Literal["file_download"]
    conversation_id: Id
    message_id: MessageIdHex
    object_id: ObjectId


class EnrollLookupRequest(_Model):
    code: Code


class EnrollRequest(_Model):
    code: Code
    identity_key: IdentityKeyField
    device_certificate: DeviceCertificateField
    signed_prekey: PrekeyField


class LinkRequest(_Model):
    code: Code
    device_id: Id
    device_key: DeviceKeyField


class LinkStatusRequest(_Model):
    code: Code


class CreateNetworkRequest(_Model):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]


# KMS ciphertext of a few hundred bytes of key (CiphertextBlob is at most 6 KiB).
WrappedKeyField = Annotated[bytes, _decoder(6144), Field(min_length=1)]


class RetentionEnableRequest(_Model):
    """A first enable carries the new identity; a re-enable carries none of it."""

    years: Annotated[int, Field(ge=1, le=100)] = 7
    officer_identity: IdentityKeyField | None = None
    certificate: DeviceCertificateField | None = None
    prekey: PrekeyField | None = None
    wrapped_device_key: WrappedKeyField | None = None
    wrapped_officer_key: WrappedKeyField | None = None


class RetentionRotateRequest(_Model):
    previous_generation: Annotated[int, Field(ge=1)]
    certificate: DeviceCertificateField
    prekey: PrekeyField
    wrapped_device_key: WrappedKeyField
    years: Annotated[int, Field(ge=1, le=100)] | None = None


class RetentionIdentityRequest(_Frame):
    action: Literal["retention"]


class InviteRequest(_Model):
    handle: Handle
    # Seconds; from one minute to thirty days.
    ttl_s: Annotated[int, Field(ge=60, le=30 * 24 * 3600)] = 7 * 24 * 3600


InviteTtl = Annotated[int, Field(ge=60, le=30 * 24 * 3600)]
# Rows per bulk request: the CLI sends a CSV in parts of this many.
MAX_BULK_INVITES = 100


class ReissueInviteRequest(_Model):
    ttl_s: InviteTtl = 7 * 24 * 3600


class BulkInviteRow(_Model):
    """One CSV row, bounded here and checked field by field in the logic, so one bad row
    is reported as refused while the others are invited."""

    # The CSV line it came from, echoed in the report.
    row: Annotated[int, Field(ge=0, lt=10**7)] = 0
    handle: Annotated[str, StringConstraints(max_length=64)]
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    group: Annotated[str, StringConstraints(max_length=64)] = ""


class BulkInviteRequest(_Model):
    invites: Annotated[list[BulkInviteRow], Field(min_length=1, max_length=MAX_BULK_INVITES)]
    ttl_s: InviteTtl = 7 * 24 * 3600


class RevokeDeviceRequest(_Frame):
    """A device revokes itself or another device of its user, signed by the user's identity."""

    action: Literal["revoke_device"]
    # A DeviceRevocation (docs/protocol.md) signed by the user's identity key.
    revocation: Annotated[bytes, _decoder(MAX_DEVICE_CERTIFICATE), Field(min_length=1)]


GroupName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9._-]*$")
]


class PolicySettingsRequest(_Model):
    """Knobs to set in one policy document; a knob given as null stops constraining."""

    max_expiry_s: Annotated[int, Field(ge=1, le=365 * 24 * 3600)] | None = None
    max_burn_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] | None = None
    files_allowed: bool | None = None
    max_file_bytes: Annotated[int, Field(ge=1, le=5 * 1024**3)] | None = None
    location_allowed: bool | None = None
    calls_allowed: bool | None = None
    read_receipts: Literal["disabled", "enabled", "forced"] | None = None
    max_devices: Annotated[int, Field(ge=1, le=100)] | None = None


class GroupRequest(_Model):
    name: GroupName


class GroupMembersRequest(_Model):
    user_ids: Annotated[list[Id], Field(min_length=1, max_length=100)]


class PolicyRequest(_Frame):
    action: Literal["policy"]


FrameModel = _Frame


@functools.cache
def requests_by_action() -> dict[str, type[_Frame]]:
    """Every WebSocket request model by the ``action`` it answers to (built on first use:
    the server never needs it)."""
    found: dict[str, type[_Frame]] = {}
    pending: list[type[_Frame]] = [_Frame]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            action = model.model_fields.get("action")
            if action is not None:
                names: tuple[str, ...] = getattr(action.annotation, "__args__", ())
                found.update((name, model) for name in names)
    return found


def request_model(action: str) -> type[_Frame] | None:
    """The model of a WebSocket request ``action``, or None for an action no route takes."""
    return requests_by_action().get(action)
