"""The one definition of Sotto's server-side resources.

Both the CDK stack (``infra/``) and the local stack (``sotto.local``) build
their tables, buckets, keys, functions and routes from these declarations, so
what runs on a laptop is what deploys. A test compares the synthesized
CloudFormation template with the resources the local stack provisions.

This module is plain data: it imports nothing from AWS or the CDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ATTACHMENT_BACKSTOP_DAYS",
    "AUDIT_BUS",
    "AUDIT_EVENT_SOURCE",
    "BUCKETS",
    "CONVERSATION_ROUTES",
    "DYNAMODB_WRITE_ACTIONS",
    "FILE_ROUTES",
    "FUNCTIONS",
    "HTTP_ROUTES",
    "KEYS",
    "KEY_ROUTES",
    "MESSAGE_ROUTES",
    "QUEUES",
    "S3_BUCKET_ACTIONS",
    "TABLES",
    "WS_AUTHORIZER",
    "WS_AUTHORIZER_IDENTITY_HEADER",
    "WS_ROUTES",
    "WS_ROUTE_SELECTION_FIELD",
    "BucketSpec",
    "ConnectionMethod",
    "DynamoDBAction",
    "EventBusSpec",
    "FunctionSpec",
    "HttpRouteSpec",
    "IndexSpec",
    "KeySpec",
    "QueueSpec",
    "S3Action",
    "StreamSourceSpec",
    "TableSpec",
    "WsRouteSpec",
    "function",
    "queue",
    "table",
]

AttrType = Literal["S", "N", "B"]
StreamView = Literal["NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY"]
# DynamoDB actions a function role may be granted, as IAM names them (a
# transaction is authorized per item: PutItem, UpdateItem, DeleteItem,
# ConditionCheckItem). Scan is for the admin's few networks only.
DynamoDBAction = Literal[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "ConditionCheckItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
]
DYNAMODB_WRITE_ACTIONS: frozenset[str] = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
)
# S3 actions a function role may be granted on a bucket, as IAM names them.
# The bucket-level ones apply to the bucket ARN, the others to its objects.
# A presigned URL is authorized as the function that signed it: UploadPart is
# PutObject and a presigned GET is GetObject.
S3Action = Literal[
    "PutObject",
    "GetObject",
    "AbortMultipartUpload",
    "ListMultipartUploadParts",
    "DeleteObjectVersion",
    "ListBucketMultipartUploads",
    "ListBucketVersions",
]
S3_BUCKET_ACTIONS: frozenset[str] = frozenset({"ListBucketMultipartUploads", "ListBucketVersions"})
# @connections methods: POST pushes, GET describes, DELETE closes a socket.
ConnectionMethod = Literal["POST", "GET", "DELETE"]


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index (projection ALL)."""

    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table: on-demand, encrypted with the data key, PITR on."""

    logical_id: str
    # Environment variable through which handlers learn the physical name.
    env_var: str
    partition_key: str
    sort_key: str | None = None
    # Every key attribute, including the indexes', with its scalar type.
    attributes: dict[str, AttrType] = field(default_factory=dict)
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str | None = None
    stream: StreamView | None = None
    purpose: str = ""

    @property
    def index_names(self) -> tuple[str, ...]:
        return tuple(index.name for index in self.indexes)


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    env_var: str
    object_lock: bool
    purpose: str = ""
    # Logical id of the KEYS entry that encrypts the bucket (SSE-KMS).
    kms_key: str = "DataKey"


@dataclass(frozen=True)
class KeySpec:
    logical_id: str
    alias: str
    env_var: str
    purpose: str = ""


@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue (encrypted with the data key)."""

    logical_id: str
    env_var: str
    purpose: str = ""
    retention_days: int = 14


@dataclass(frozen=True)
class EventBusSpec:
    """An EventBridge bus; ``source`` is the one event source functions publish as."""

    logical_id: str
    env_var: str
    source: str
    purpose: str = ""


@dataclass(frozen=True)
class StreamSourceSpec:
    """A DynamoDB stream feeding a function, as a Lambda event source mapping does.

    ``filters`` are Lambda event filter patterns (JSON objects; a record
    matching any of them is delivered, the others are dropped unseen).
    Failures are reported per record (partial batch responses); a batch that
    raises is bisected; a record that keeps failing goes to
    ``on_failure_queue`` after ``max_retries`` and the shard moves on.
    """

    table: str
    filters: tuple[dict[str, Any], ...]
    on_failure_queue: str
    batch_size: int = 100
    max_retries: int = 5
    bisect_on_error: bool = True
    # How long records gather before a batch is sent (seconds).
    batching_window_s: int = 0


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function: ``handler`` is ``module.attribute`` under ``functions/``."""

    name: str
    handler: str
    # Logical ids of the tables the function may read, and may read and write.
    tables_read: tuple[str, ...] = ()
    tables_write: tuple[str, ...] = ()
    # Whether the function posts to / deletes WebSocket connections. Such a
    # function also deletes the record of a connection found gone (410).
    manages_connections: bool = False
    purpose: str = ""
    # Exactly what the role grants on each table it reaches: keys are table
    # logical ids, or "Table/index" for a Query on an index. Every table in
    # tables_read/tables_write needs an entry; write actions need tables_write.
    # tests/infra/test_iam_trace.py proves these against the calls handlers make.
    dynamodb_actions: Mapping[str, tuple[DynamoDBAction, ...]] = field(default_factory=dict)
    # The @connections methods a function that manages connections may use.
    connection_methods: tuple[ConnectionMethod, ...] = ("POST",)
    # Lambda sizing. Memory also buys CPU, which the signature checks on
    # every $connect need; API Gateway gives up on an integration after 29 s.
    memory_mb: int = 512
    timeout_seconds: int = 10
    # Invoked by a table's stream rather than by a route.
    stream_source: StreamSourceSpec | None = None
    # Buckets whose objects the function writes (s3:PutObject, and encrypts with the
    # bucket's key through S3 only); it never reads, deletes or changes locks.
    buckets_write: tuple[str, ...] = ()
    # Exactly what the role grants on each bucket it reaches (logical id ->
    # actions); SSE-KMS buckets also get their key, through S3 only.
    s3_actions: Mapping[str, tuple[S3Action, ...]] = field(default_factory=dict)
    # Reserved concurrency of a function anyone may invoke without credentials,
    # so a flood there cannot starve the rest (context reserve_public_concurrency).
    reserved_concurrency: int | None = None
    # Publishes events to the audit bus (events:PutEvents on that bus only).
    publishes_audit_events: bool = False
    # Object key prefixes it may PutObject into the archive (Object Lock) bucket.
    archive_prefixes: tuple[str, ...] = ()
    # Invoked on a schedule (an EventBridge rule's expression, e.g. "rate(1 hour)");
    # the local stack runs it on demand (POST /<stage>/@schedules/<name>).
    schedule: str | None = None

    def __post_init__(self) -> None:
        reached = {*self.tables_read, *self.tables_write}
        declared = {key.split("/", 1)[0] for key in self.dynamodb_actions}
        if reached != declared:
            raise ValueError(
                f"function {self.name}: dynamodb_actions must name exactly the tables it "
                f"reaches ({sorted(reached)}), not {sorted(declared)}"
            )
        for bucket_id in self.s3_actions:
            if bucket_id not in {b.logical_id for b in BUCKETS}:
                raise ValueError(f"function {self.name}: unknown bucket {bucket_id}")
        for key, actions in self.dynamodb_actions.items():
            table_id, _, index = key.partition("/")
            if index and (set(actions) != {"Query"} or index not in table(table_id).index_names):
                raise ValueError(f"function {self.name}: {key} must be a Query on a known index")
            writes = DYNAMODB_WRITE_ACTIONS.intersection(actions)
            if writes and table_id not in self.tables_write:
                raise ValueError(f"function {self.name}: {sorted(writes)} on read-only {key}")

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]


@dataclass(frozen=True)
class WsRouteSpec:
    route_key: str
    function: str


@dataclass(frozen=True)
class HttpRouteSpec:
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"]
    path: str
    function: str
    # Admin routes are authorized by IAM (SigV4); the others are public and
    # authenticate in the handler (enrollment codes, signed requests).
    iam: bool


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        logical_id="ConnectionsTable",
        env_var="SOTTO_CONNECTIONS_TABLE",
        partition_key="connection_id",
        attributes={"connection_id": "S", "device_id": "S"},
        indexes=(IndexSpec("by_device", "device_id", "connection_id"),),
        # $disconnect is best-effort, so every record also expires on its own
        # shortly after API Gateway's two-hour connection limit.
        ttl_attribute="expires_at",
        purpose="Open WebSocket connections and the device each one carries.",
    ),
    TableSpec(
        logical_id="DirectoryTable",
        env_var="SOTTO_DIRECTORY_TABLE",
        partition_key="pk",
        sort_key="sk",
        attributes={"pk": "S", "sk": "S"},
        ttl_attribute="expires_at",
        # Device links, revocations and suspensions reach conversation rosters
        # and open sockets through the stream (the ``rosters`` function).
        stream="NEW_AND_OLD_IMAGES",
        purpose="Networks, users, devices, their certified public keys and prekeys.",
    ),
    TableSpec(
        logical_id="MessagesTable",
        env_var="SOTTO_MESSAGES_TABLE",
        partition_key="pk",
        sort_key="sk",
        attributes={"pk": "S", "sk": "S"},
        ttl_attribute="expires_at",
        # The retention archiver consumes new ciphertext from the stream.
        stream="NEW_IMAGE",
        purpose="Ciphertext envelopes and per-device mailboxes, ordered per conversation.",
    ),
    TableSpec(
        logical_id="GuardsTable",
        env_var="SOTTO_GUARDS_TABLE",
        partition_key="pk",
        attributes={"pk": "S"},
        # Every item is short-lived: a used nonce outlives its token's
        # freshness window, a rate counter its window.
        ttl_attribute="expires_at",
        purpose="Used connect-token nonces and rate-limit counters.",
    ),
    TableSpec(
        logical_id="AuditTable",
        env_var="SOTTO_AUDIT_TABLE",
        partition_key="pk",
        sort_key="sk",
        attributes={"pk": "S", "sk": "S"},
        # No TTL: the audit trail is kept; sealed segments go to the archive.
        purpose="Each network's hash-chained audit log and its head.",
    ),
)


def table(logical_id: str) -> TableSpec:
    for spec in TABLES:
        if spec.logical_id == logical_id:
            return spec
    raise KeyError(logical_id)


# Objects of the attachments bucket expire after this many days whatever
# happens (lifecycle backstop): a message lives at most 365 days on the server.
ATTACHMENT_BACKSTOP_DAYS = 366

BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(
        logical_id="AttachmentsBucket",
        env_var="SOTTO_ATTACHMENTS_BUCKET",
        object_lock=False,
        purpose="Client-encrypted attachment chunks, uploaded through presigned URLs.",
    ),
    BucketSpec(
        logical_id="ArchiveBucket",
        env_var="SOTTO_ARCHIVE_BUCKET",
        object_lock=True,
        purpose="WORM retention archive with hash-chained manifests.",
        kms_key="ArchiveKey",
    ),
)

QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(
        logical_id="RosterFailuresQueue",
        env_var="SOTTO_ROSTER_FAILURES_QUEUE",
        purpose="Directory stream records the rosters function gave up on, for an operator.",
    ),
    QueueSpec(
        logical_id="ArchiveFailuresQueue",
        env_var="SOTTO_ARCHIVE_FAILURES_QUEUE",
        purpose="Messages stream records the archiver gave up on: each one a gap verify names.",
    ),
    QueueSpec(
        logical_id="AttachmentFailuresQueue",
        env_var="SOTTO_ATTACHMENT_FAILURES_QUEUE",
        purpose="Removed file records whose objects the attachments function could not delete.",
    ),
)

# The directory changes that move rosters or must close sockets: a device
# created (enrollment, link), a device revoked, a user suspended.
_DIRECTORY_CHANGES: tuple[dict[str, Any], ...] = (
    {"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": ["DEVICE"]}}}},
    {
        "eventName": ["MODIFY"],
        "dynamodb": {"Keys": {"sk": {"S": ["DEVICE"]}}, "NewImage": {"status": {"S": ["revoked"]}}},
    },
    {
        "eventName": ["MODIFY"],
        "dynamodb": {"Keys": {"sk": {"S": ["USER"]}}, "NewImage": {"status": {"S": ["suspended"]}}},
    },
)

# Audit events go to the agency's security monitoring through this bus.
AUDIT_EVENT_SOURCE = "sotto"
AUDIT_BUS = EventBusSpec(
    logical_id="AuditBus",
    env_var="SOTTO_AUDIT_BUS",
    source=AUDIT_EVENT_SOURCE,
    purpose="Sotto's audit events (source 'sotto') for security monitoring.",
)

# What the archive keeps, as it is first written: envelopes, key distributions
# to retention devices, and the signed membership operations.
_ARCHIVED_RECORDS: tuple[dict[str, Any], ...] = (
    {
        "eventName": ["INSERT"],
        "dynamodb": {
            "Keys": {"pk": {"S": [{"prefix": "CONV#"}]}, "sk": {"S": [{"prefix": "MSG#"}]}}
        },
    },
    {
        "eventName": ["INSERT"],
        "dynamodb": {
            "Keys": {"pk": {"S": [{"prefix": "CONV#"}]}, "sk": {"S": [{"prefix": "LOG#"}]}}
        },
    },
    {"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "MAIL#rtn-"}]}}}},
)

# A file record leaves the messages table (TTL at its message's end, or an
# explicit delete): its object goes too.
_FILE_REMOVED: tuple[dict[str, Any], ...] = (
    {"eventName": ["REMOVE"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "FILE#"}]}}}},
)

KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        logical_id="DataKey",
        alias="sotto/data",
        env_var="SOTTO_DATA_KEY_ID",
        purpose="Encrypts the tables, their streams and the attachments bucket at rest.",
    ),
    KeySpec(
        logical_id="ArchiveKey",
        alias="sotto/archive",
        env_var="SOTTO_ARCHIVE_KEY_ID",
        purpose="Encrypts the archive and wraps the retention identity; compliance role only.",
    ),
    KeySpec(
        logical_id="LogsKey",
        alias="sotto/logs",
        env_var="SOTTO_LOGS_KEY_ID",
        purpose="Encrypts every CloudWatch log group of the stage.",
    ),
)

# Appending to a network's audit chain: read the head, move it and put the entry
# in one transaction (and the network's index entry with its first).
_AUDIT_APPEND: tuple[DynamoDBAction, ...] = ("GetItem", "PutItem", "UpdateItem")

# $disconnect, and any push that meets 410 Gone, forget the connection: the
# record (DeleteItem) and its place in the device's presence (UpdateItem).
_FORGET_CONNECTION: tuple[DynamoDBAction, ...] = ("DeleteItem", "UpdateItem")
# WebSocket routes answer their caller, and cut off one no longer in good standing.
_ANSWER_OR_CUT_OFF: tuple[ConnectionMethod, ...] = ("POST", "DELETE")

FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        name="authorizer",
        handler="sotto_server.handlers.authorizer.handler",
        tables_read=("DirectoryTable",),
        tables_write=("GuardsTable",),
        dynamodb_actions={"DirectoryTable": ("GetItem",), "GuardsTable": ("PutItem",)},
        purpose="$connect REQUEST authorizer: verifies the device-signed connect token.",
        reserved_concurrency=50,
    ),
    FunctionSpec(
        name="connect",
        handler="sotto_server.handlers.connect.handler",
        # Re-reads the device and user after recording the connection, so a
        # revocation racing the upgrade cannot leave a socket open.
        tables_read=("DirectoryTable",),
        tables_write=("ConnectionsTable",),
        dynamodb_actions={
            "DirectoryTable": ("BatchGetItem",),
            "ConnectionsTable": ("PutItem", *_FORGET_CONNECTION),
        },
        purpose="Records the connection with the device the authorizer vouched for.",
    ),
    FunctionSpec(
        name="disconnect",
        handler="sotto_server.handlers.disconnect.handler",
        tables_write=("ConnectionsTable",),
        dynamodb_actions={"ConnectionsTable": _FORGET_CONNECTION},
        purpose="Removes the connection record.",
    ),
    FunctionSpec(
        name="default",
        handler="sotto_server.handlers.default.handler",
        # Every frame first checks its device and user are still active.
        tables_read=("DirectoryTable",),
        tables_write=("ConnectionsTable",),
        dynamodb_actions={
            "DirectoryTable": ("BatchGetItem",),
            "ConnectionsTable": _FORGET_CONNECTION,
        },
        manages_connections=True,
        # DELETE: a caller found revoked or suspended loses its socket.
        connection_methods=_ANSWER_OR_CUT_OFF,
        purpose="Answers unknown actions and malformed frames with an error frame.",
    ),
    FunctionSpec(
        name="ping",
        handler="sotto_server.handlers.ping.handler",
        # Every frame first checks its device and user are still active.
        tables_read=("DirectoryTable",),
        tables_write=("ConnectionsTable",),
        dynamodb_actions={
            "DirectoryTable": ("BatchGetItem",),
            "ConnectionsTable": _FORGET_CONNECTION,
        },
        manages_connections=True,
        # DELETE: a caller found revoked or suspended loses its socket.
        connection_methods=_ANSWER_OR_CUT_OFF,
        purpose="Answers ping with pong through @connections.",
    ),
    FunctionSpec(
        name="keys",
        handler="sotto_server.handlers.keys.handler",
        tables_write=("DirectoryTable", "GuardsTable", "ConnectionsTable", "AuditTable"),
        dynamodb_actions={
            # Taking one-time prekeys: batched reads, a counter transaction, batched deletes;
            # a link approval checks the approver in its transaction.
            "DirectoryTable": (
                *("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem"),
                *("BatchWriteItem", "ConditionCheckItem"),
            ),
            "GuardsTable": ("UpdateItem",),
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            # A device revoked by its own user loses every socket (as by an admin).
            "ConnectionsTable/by_device": ("Query",),
            "AuditTable": _AUDIT_APPEND,
        },
        manages_connections=True,
        connection_methods=_ANSWER_OR_CUT_OFF,
        publishes_audit_events=True,
        purpose=(
            "Key directory: prekeys, key bundles, devices, finding users, linking devices, "
            "a user's own device revocations."
        ),
    ),
    FunctionSpec(
        name="conversations",
        handler="sotto_server.handlers.conversations.handler",
        tables_read=("DirectoryTable",),
        tables_write=("MessagesTable", "ConnectionsTable", "GuardsTable"),
        dynamodb_actions={
            "DirectoryTable": ("GetItem", "BatchGetItem", "Query"),
            "MessagesTable": (
                *("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem"),
                "ConditionCheckItem",
            ),
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            "GuardsTable": ("UpdateItem",),
        },
        manages_connections=True,
        connection_methods=_ANSWER_OR_CUT_OFF,
        purpose="Conversations: direct conversations and rooms, moderation, leaving, rosters.",
    ),
    FunctionSpec(
        name="messages",
        handler="sotto_server.handlers.messages.handler",
        tables_read=("DirectoryTable",),
        tables_write=("MessagesTable", "ConnectionsTable", "GuardsTable"),
        dynamodb_actions={
            "DirectoryTable": ("GetItem", "BatchGetItem"),
            "MessagesTable": (
                *("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem"),
                "BatchWriteItem",
            ),
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            # The send counter rides in the message's transaction.
            "GuardsTable": ("UpdateItem",),
        },
        manages_connections=True,
        connection_methods=_ANSWER_OR_CUT_OFF,
        # Fan-out to a large room's online devices takes longer than a lookup.
        timeout_seconds=29,
        memory_mb=1024,
        purpose=(
            "Messages: distribute chain keys, send (within the sender's policy), sync, "
            "acknowledge, the caller's policy; fan-out."
        ),
    ),
    FunctionSpec(
        name="files",
        handler="sotto_server.handlers.files.handler",
        tables_read=("DirectoryTable",),
        tables_write=("MessagesTable", "ConnectionsTable", "GuardsTable"),
        dynamodb_actions={
            # The caller's standing (BatchGetItem); the network's retention, whose
            # archive copy caps an upload's size while it is on (GetItem).
            "DirectoryTable": ("BatchGetItem", "GetItem"),
            # Upload records (FILE#), the conversation, membership and roster it
            # names, and the message a download refers to.
            "MessagesTable": ("GetItem", "PutItem", "UpdateItem", "DeleteItem"),
            "ConnectionsTable": _FORGET_CONNECTION,
            "GuardsTable": ("UpdateItem",),
        },
        # Create, complete and abort multipart uploads and list their parts; sign
        # UploadPart URLs (PutObject) and download URLs (GetObject).
        s3_actions={
            "AttachmentsBucket": (
                *("PutObject", "GetObject", "AbortMultipartUpload"),
                "ListMultipartUploadParts",
            )
        },
        manages_connections=True,
        connection_methods=_ANSWER_OR_CUT_OFF,
        # S3 may take seconds to assemble a large object (CompleteMultipartUpload).
        timeout_seconds=29,
        purpose="Files: start, page, complete and abort uploads; presigned download URLs.",
    ),
    FunctionSpec(
        name="attachments",
        handler="sotto_server.handlers.attachments.handler",
        # Only its own stream: the removed item's key names the object.
        s3_actions={
            "AttachmentsBucket": (
                *("AbortMultipartUpload", "DeleteObjectVersion"),
                *("ListBucketMultipartUploads", "ListBucketVersions"),
            )
        },
        timeout_seconds=60,
        stream_source=StreamSourceSpec(
            table="MessagesTable",
            filters=_FILE_REMOVED,
            on_failure_queue="AttachmentFailuresQueue",
        ),
        purpose=(
            "Messages stream: a file record removed (its message expired or burnt, an "
            "abandoned or aborted upload) deletes every version of its object."
        ),
    ),
    FunctionSpec(
        name="rosters",
        handler="sotto_server.handlers.rosters.handler",
        tables_read=("DirectoryTable",),
        tables_write=("MessagesTable", "ConnectionsTable"),
        dynamodb_actions={
            "DirectoryTable": ("GetItem", "Query"),
            "MessagesTable": ("GetItem", "Query", "UpdateItem", "ConditionCheckItem"),
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            "ConnectionsTable/by_device": ("Query",),
        },
        manages_connections=True,
        # It only closes sockets (a revoked device's, a suspended user's).
        connection_methods=("DELETE",),
        # A user's conversations are walked in one invocation (a few thousand
        # conditional writes at most); a retry repeats only what is left.
        timeout_seconds=300,
        stream_source=StreamSourceSpec(
            table="DirectoryTable",
            filters=_DIRECTORY_CHANGES,
            on_failure_queue="RosterFailuresQueue",
            batch_size=10,
        ),
        purpose=(
            "Directory stream: linked devices join, revoked devices leave their user's rosters; "
            "sockets of revoked devices and suspended users are closed again."
        ),
    ),
    FunctionSpec(
        name="archiver",
        handler="sotto_server.handlers.archiver.handler",
        # Senders' certificates and identities go into the archive with their messages.
        tables_read=("DirectoryTable",),
        # The archive's chain head and per-record markers (``ARCHIVE#`` items).
        tables_write=("MessagesTable",),
        dynamodb_actions={
            "DirectoryTable": ("GetItem", "BatchGetItem"),
            # Query: a conversation's membership log, backfilled on first sight.
            "MessagesTable": ("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem"),
        },
        buckets_write=("ArchiveBucket",),
        # Files the archived messages name: read (HeadObject for the size, CopyObject's
        # source) under the file prefix only; the copy itself is a PutObject above.
        s3_actions={"AttachmentsBucket": ("GetObject",)},
        timeout_seconds=120,
        memory_mb=1024,
        stream_source=StreamSourceSpec(
            table="MessagesTable",
            filters=_ARCHIVED_RECORDS,
            on_failure_queue="ArchiveFailuresQueue",
            batch_size=90,
            max_retries=10,
            batching_window_s=1,
        ),
        purpose=(
            "Messages stream: envelopes (and copies of their files), retention key "
            "distributions and membership operations of retaining networks into "
            "hash-chained, Object-Locked archive segments."
        ),
    ),
    FunctionSpec(
        name="info",
        handler="sotto_server.handlers.info.handler",
        purpose="Public HTTP: protocol version and suites this deployment speaks.",
        reserved_concurrency=5,
    ),
    FunctionSpec(
        name="enroll",
        handler="sotto_server.handlers.enroll.handler",
        tables_write=("DirectoryTable", "GuardsTable", "ConnectionsTable", "AuditTable"),
        # Public: it may create users, devices and links, never delete or scan.
        dynamodb_actions={
            "DirectoryTable": ("GetItem", "PutItem", "UpdateItem"),
            "GuardsTable": ("UpdateItem",),
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            "AuditTable": _AUDIT_APPEND,
        },
        manages_connections=True,
        publishes_audit_events=True,
        purpose="Public HTTP: enrollment with an invite code, and new-device link requests.",
        reserved_concurrency=10,
    ),
    FunctionSpec(
        name="admin",
        handler="sotto_server.handlers.admin.handler",
        # Rosters follow revocations through the directory stream (``rosters``).
        tables_write=("DirectoryTable", "ConnectionsTable", "AuditTable"),
        dynamodb_actions={
            # Scan: listing networks (few; no index paid on every write for it).
            # BatchGetItem: policy documents; DeleteItem: leaving a security group.
            "DirectoryTable": (
                *("GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem"),
                *("DeleteItem", "ConditionCheckItem"),
            ),
            # Suspension and revocation close every socket of the device: its
            # presence item and its connection records.
            "ConnectionsTable": ("BatchGetItem", *_FORGET_CONNECTION),
            "ConnectionsTable/by_device": ("Query",),
            # Records every administrative action; Query: reading the log.
            "AuditTable": (*_AUDIT_APPEND, "Query"),
        },
        manages_connections=True,
        # DELETE: suspension and revocation close sockets at once; POST: a
        # changed policy is pushed to the online devices it concerns.
        connection_methods=("POST", "DELETE"),
        publishes_audit_events=True,
        purpose="IAM-authorized HTTP admin API: networks, invites, users, devices, policy, audit.",
    ),
    FunctionSpec(
        name="audit_sealer",
        handler="sotto_server.handlers.audit_sealer.handler",
        tables_write=("AuditTable",),
        dynamodb_actions={"AuditTable": ("GetItem", "Query", "UpdateItem")},
        archive_prefixes=("audit/",),
        schedule="rate(1 hour)",
        timeout_seconds=300,
        purpose="Scheduled: seals each network's new audit entries into the archive.",
    ),
)


def queue(logical_id: str) -> QueueSpec:
    for spec in QUEUES:
        if spec.logical_id == logical_id:
            return spec
    raise KeyError(logical_id)


def function(name: str) -> FunctionSpec:
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# WebSocket routes of the key directory; each frame names one in "action".
KEY_ROUTES = (
    "publish_prekeys",
    "prekey_status",
    "fetch_bundles",
    "list_devices",
    "lookup_user",
    "link_create",
    "link_pending",
    "link_approve",
    "revoke_device",
    "retention",
)

CONVERSATION_ROUTES = (
    "create_conversation",
    "add_members",
    "remove_members",
    "leave",
    "set_role",
    "membership_log",
    "identities",
    "list_conversations",
    "conversation_devices",
)
# ``policy``: the caller's effective policy, read where sends are checked against it.
MESSAGE_ROUTES = ("distribute", "send", "sync", "ack", "policy")
FILE_ROUTES = (
    "file_policy",
    "file_upload_start",
    "file_upload_parts",
    "file_upload_complete",
    "file_upload_abort",
    "file_download",
)

WS_ROUTES: tuple[WsRouteSpec, ...] = (
    WsRouteSpec("$connect", "connect"),
    WsRouteSpec("$disconnect", "disconnect"),
    WsRouteSpec("$default", "default"),
    WsRouteSpec("ping", "ping"),
    *(WsRouteSpec(route, "keys") for route in KEY_ROUTES),
    *(WsRouteSpec(route, "conversations") for route in CONVERSATION_ROUTES),
    *(WsRouteSpec(route, "messages") for route in MESSAGE_ROUTES),
    *(WsRouteSpec(route, "files") for route in FILE_ROUTES),
)

# The $connect authorizer, and where it finds the token.
WS_AUTHORIZER = "authorizer"
WS_AUTHORIZER_IDENTITY_HEADER = "Authorization"
# API Gateway selects the route from this JSON field of each text frame.
WS_ROUTE_SELECTION_FIELD = "action"

HTTP_ROUTES: tuple[HttpRouteSpec, ...] = (
    HttpRouteSpec("GET", "/v1/info", "info", iam=False),
    HttpRouteSpec("POST", "/v1/enroll/lookup", "enroll", iam=False),
    HttpRouteSpec("POST", "/v1/enroll", "enroll", iam=False),
    HttpRouteSpec("POST", "/v1/link/requests", "enroll", iam=False),
    HttpRouteSpec("POST", "/v1/link/status", "enroll", iam=False),
    HttpRouteSpec("POST", "/v1/admin/networks", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/networks", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/networks/{network_id}/invites", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/networks/{network_id}/users", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/networks/{network_id}/retention", "admin", iam=True),
    HttpRouteSpec("PUT", "/v1/admin/networks/{network_id}/retention", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/networks/{network_id}/retention/disable", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/networks/{network_id}/retention/rotate", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/users/{user_id}", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/users/{user_id}/suspend", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/users/{user_id}/reinstate", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/devices/{device_id}", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/devices/{device_id}/revoke", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/networks/{network_id}/policy", "admin", iam=True),
    HttpRouteSpec("PUT", "/v1/admin/networks/{network_id}/policy", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/networks/{network_id}/groups", "admin", iam=True),
    HttpRouteSpec(
        "PUT", "/v1/admin/networks/{network_id}/groups/{group}/policy", "admin", iam=True
    ),
    HttpRouteSpec(
        "POST", "/v1/admin/networks/{network_id}/groups/{group}/members", "admin", iam=True
    ),
    HttpRouteSpec(
        "POST", "/v1/admin/networks/{network_id}/groups/{group}/members/remove", "admin", iam=True
    ),
    HttpRouteSpec("GET", "/v1/admin/users/{user_id}/policy", "admin", iam=True),
    HttpRouteSpec("GET", "/v1/admin/networks/{network_id}/invites", "admin", iam=True),
    HttpRouteSpec("POST", "/v1/admin/networks/{network_id}/invites/bulk", "admin", iam=True),
    HttpRouteSpec(
        "POST", "/v1/admin/networks/{network_id}/invites/{user_id}/revoke", "admin", iam=True
    ),
    HttpRouteSpec(
        "POST", "/v1/admin/networks/{network_id}/invites/{user_id}/reissue", "admin", iam=True
    ),
    HttpRouteSpec("GET", "/v1/admin/networks/{network_id}/audit", "admin", iam=True),
)
