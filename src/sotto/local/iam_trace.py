"""Record, as IAM sees them, the AWS requests each Lambda function makes.

moto enforces no IAM, so a handler that calls something its role does not
grant works here and fails in AWS. The local stack therefore records every
request the handlers send through boto3's default session (the one their
``boto3.client(...)`` calls use), in IAM's terms: the action each request is
authorized as (a ``TransactWriteItems`` is one ``PutItem``/``UpdateItem``/...
per item), the resource by logical id, and the function and route that made
it. ``tests/infra/test_iam_trace.py`` checks every record against that
function's role in the synthesized template.

Lambda runs each function in a process of its own; the local stack runs all
of them in one. Which function is running travels in a context variable set
by ``sotto.local.lambdas``, and :func:`carry_context_into_pools` makes every
task a handler hands to a thread pool (fan-out) run in its submitter's
context, so those requests are attributed too. A request made outside any
invocation is recorded with function ``None``: the check fails on it.

Each distinct record is appended once, as a JSON line, to
``DATA_DIR/iam-trace.jsonl`` when first seen, so the file is complete even if
the stack is killed.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TRACE_FILE",
    "IamRecorder",
    "Invocation",
    "TracedCall",
    "carry_context_into_pools",
    "invoking",
    "read_trace",
]

TRACE_FILE = "iam-trace.jsonl"


@dataclass(frozen=True)
class Invocation:
    function: str
    route: str


@dataclass(frozen=True)
class TracedCall:
    """One IAM authorization: ``action`` on ``resource`` by ``function`` serving ``route``.

    ``resource`` names the target without physical names: ``table:<logical id>``,
    ``table:<logical id>/index/<name>``, ``connections:<METHOD>``, ``bus:<logical id>``,
    ``bucket:<logical id>``, ``object:<logical id>/<key>`` or
    ``key:<logical id>/s3`` (a KMS key S3 uses on the caller's behalf). An
    ``action`` of ``None`` records that the route ran (so a function that
    calls nothing, such as ``info``, still shows as exercised).
    """

    function: str | None
    route: str
    action: str | None = None
    resource: str | None = None


_CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "sotto_local_invocation", default=None
)


@contextmanager
def invoking(invocation: Invocation) -> Iterator[None]:
    """Attribute the requests made in this context (and its pool tasks) to ``invocation``."""
    token = _CURRENT.set(invocation)
    try:
        yield
    finally:
        _CURRENT.reset(token)


_ORIGINAL_SUBMIT = ThreadPoolExecutor.submit
_patched = False


def carry_context_into_pools() -> None:
    """Run every ``ThreadPoolExecutor`` task in a copy of its submitter's context.

    Only the local stack calls this (for its own process): in Lambda the
    function is the process, so there is nothing to carry.
    """
    global _patched
    if _patched:
        return

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return _ORIGINAL_SUBMIT(self, contextvars.copy_context().run, fn, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign, assignment]
    _patched = True


# DynamoDB operations that IAM authorizes as one action per request.
_DYNAMODB_SINGLE = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "DescribeTable",
}
# A transaction is authorized per item, as the item's own action.
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
# S3 operations as IAM authorizes them: (action, on the bucket rather than an object).
# A presigned URL is recorded when it is signed: its request runs as the signer.
_S3_ACTIONS = {
    "CreateMultipartUpload": ("PutObject", False),
    "UploadPart": ("PutObject", False),
    "CompleteMultipartUpload": ("PutObject", False),
    "PutObject": ("PutObject", False),
    "GetObject": ("GetObject", False),
    "HeadObject": ("GetObject", False),
    "AbortMultipartUpload": ("AbortMultipartUpload", False),
    "ListParts": ("ListMultipartUploadParts", False),
    "ListMultipartUploads": ("ListBucketMultipartUploads", True),
    "ListObjectVersions": ("ListBucketVersions", True),
}
# What the caller must be allowed on an SSE-KMS bucket's key for each S3 operation.
# One PUT only generates a data key; a multipart upload also decrypts it for each part.
_MULTIPART = ("kms:GenerateDataKey", "kms:Decrypt")
_S3_KMS = {
    "PutObject": ("kms:GenerateDataKey",),
    "CreateMultipartUpload": _MULTIPART,
    "UploadPart": _MULTIPART,
    "CompleteMultipartUpload": _MULTIPART,
    "GetObject": ("kms:Decrypt",),
    "HeadObject": ("kms:Decrypt",),
}
_CONNECTION_METHODS = {
    "PostToConnection": "POST",
    "GetConnection": "GET",
    "DeleteConnection": "DELETE",
}


class IamRecorder:
    """Installs on a boto3 session; appends each new :class:`TracedCall` to ``path``."""

    def __init__(
        self,
        path: Path,
        tables: Mapping[str, str],
        buckets: Mapping[str, tuple[str, str]] | None = None,
        buses: Mapping[str, str] | None = None,
    ) -> None:
        """``tables``: physical table name -> logical id; ``buckets``: physical
        bucket name -> (logical id, logical id of its SSE-KMS key); ``buses``:
        physical name -> logical id."""
        self.path = path
        self._tables = dict(tables)
        self._buckets = dict(buckets or {})
        self._buses = dict(buses or {})
        self._seen: set[TracedCall] = set()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def install(self, session: Any) -> None:
        events = session.events
        # provide-client-params sees the caller's own parameters, before serialization.
        events.register("provide-client-params", self._on_request)

    def invoked(self, invocation: Invocation) -> None:
        self._record(TracedCall(invocation.function, invocation.route))

    def _on_request(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        invocation = _CURRENT.get()
        function = invocation.function if invocation else None
        route = invocation.route if invocation else ""
        service = model.service_model.service_name
        for action, resource in self._authorizations(service, model.name, params):
            self._record(TracedCall(function, route, action, resource))

    def _authorizations(
        self, service: str, operation: str, params: Mapping[str, Any]
    ) -> Iterator[tuple[str, str]]:
        if service == "dynamodb":
            yield from self._dynamodb(operation, params)
        elif service == "s3" and operation in ("DeleteObject", "CopyObject", *_S3_ACTIONS):
            yield from self._s3(operation, params)
        elif service == "apigatewaymanagementapi":
            yield "execute-api:ManageConnections", f"connections:{_CONNECTION_METHODS[operation]}"
        elif service == "events" and operation == "PutEvents":
            for entry in params.get("Entries", []):
                bus = str(entry.get("EventBusName", "default"))
                yield "events:PutEvents", f"bus:{self._buses.get(bus, bus)}"
        elif service == "s3" and operation == "PutObject" and params["Bucket"] in self._buckets:
            # Object keys matter: a grant names the prefixes a function may write.
            yield "s3:PutObject", f"bucket:{self._buckets[params['Bucket']]}/{params['Key']}"
        else:
            # Not mapped to IAM resources yet: the check cannot grant it by accident.
            yield f"{service}:{operation}", f"{service}:*"

    def _dynamodb(self, operation: str, params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        if operation in _DYNAMODB_SINGLE:
            resource = self._table(params["TableName"])
            if params.get("IndexName"):
                resource += f"/index/{params['IndexName']}"
            yield f"dynamodb:{operation}", resource
        elif operation in ("BatchGetItem", "BatchWriteItem"):
            for table in params["RequestItems"]:
                yield f"dynamodb:{operation}", self._table(table)
        elif operation in ("TransactWriteItems", "TransactGetItems"):
            for entry in params["TransactItems"]:
                ((kind, item),) = entry.items()
                yield f"dynamodb:{_TRANSACT_ACTIONS[kind]}", self._table(item["TableName"])
        else:
            yield f"dynamodb:{operation}", "table:*"

    def _s3(self, operation: str, params: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        bucket, key_id = self._buckets.get(params["Bucket"], (params["Bucket"], "*"))
        if operation == "DeleteObject":
            # Deleting a version is its own action; without one it is a delete marker.
            action = "DeleteObjectVersion" if params.get("VersionId") else "DeleteObject"
            yield f"s3:{action}", f"object:{bucket}/{params['Key']}"
            return
        if operation == "CopyObject":
            # Read the source (and decrypt it with its key), write the target (a new data key).
            source = params["CopySource"]
            if isinstance(source, str):  # "bucket/key", the other form boto3 takes
                name, _, rest = source.lstrip("/").partition("/")
                source = {"Bucket": name, "Key": rest}
            source_bucket, source_key_id = self._buckets.get(
                source["Bucket"], (source["Bucket"], "*")
            )
            yield "s3:GetObject", f"object:{source_bucket}/{source['Key']}"
            yield "kms:Decrypt", f"key:{source_key_id}/s3"
            yield "s3:PutObject", f"object:{bucket}/{params['Key']}"
            yield "kms:GenerateDataKey", f"key:{key_id}/s3"
            return
        action, on_bucket = _S3_ACTIONS[operation]
        yield (
            f"s3:{action}",
            f"bucket:{bucket}" if on_bucket else f"object:{bucket}/{params['Key']}",
        )
        for kms_action in _S3_KMS.get(operation, ()):
            yield kms_action, f"key:{key_id}/s3"

    def _table(self, name: str) -> str:
        return f"table:{self._tables.get(name, name)}"

    def _record(self, call: TracedCall) -> None:
        with self._lock:
            if call in self._seen:
                return
            self._seen.add(call)
            with self.path.open("a") as out:
                out.write(json.dumps(asdict(call), sort_keys=True) + "\n")


def read_trace(path: Path) -> list[TracedCall]:
    return [
        TracedCall(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()
    ]
