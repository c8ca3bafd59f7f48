"""The AWS side of the local stack: a moto server provisioned from topology.

Tables, buckets and keys are created from the same declarations the CDK stack
uses (``sotto.topology``), with the same keys, indexes, TTL, streams,
encryption and bucket settings, so handlers meet the same resources here as
in the cloud.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import boto3

from sotto import topology

from .events import LOCAL_ACCESS_KEY, REGION
from .moto_speedups import fast_moto

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        GlobalSecondaryIndexTypeDef,
        KeySchemaElementTypeDef,
    )
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client

__all__ = ["LOCAL_CREDENTIALS", "LocalResources", "MotoServer", "provision", "table_shape"]

# moto accepts any credentials; these make boto3 sign requests as it would in AWS.
LOCAL_CREDENTIALS = {
    "aws_access_key_id": LOCAL_ACCESS_KEY,
    "aws_secret_access_key": "local-secret-not-a-real-key",
    "region_name": REGION,
}
# The bucket defaults of cdk.json's context, which a test holds equal. The
# local stage is not a prod stage: its archive locks in GOVERNANCE mode for a
# day, as a deployed dev stage's does.
ARCHIVE_LOCK_MODE: Literal["GOVERNANCE"] = "GOVERNANCE"
ARCHIVE_RETENTION_DAYS = 1
NONCURRENT_VERSION_DAYS = 30
ABORT_INCOMPLETE_UPLOAD_DAYS = 7


class _OneAtATime:
    """A WSGI wrapper that lets one request into moto at a time.

    moto's backends are not thread-safe: concurrent requests can fail with
    "dictionary changed size during iteration" or interleave a conditional
    check with another write. Real DynamoDB applies each conditional write and
    transaction atomically, which is what the handlers rely on (single-use
    invites, one-time prekeys), so the stand-in must too.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self.lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        refusal = presigned_refusal(environ.get("QUERY_STRING", ""), time.time())
        if refusal is not None:
            body = (
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                f"<Message>{refusal}</Message></Error>"
            ).encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [body]
        with self.lock:
            return list(self._app(environ, start_response))


# S3 refuses a presigned URL after X-Amz-Expires seconds (at most 7 days); moto
# does not check, so the local stack does, as S3 answers.
MAX_PRESIGNED_S = 7 * 24 * 3600


def presigned_refusal(query: str, now: float) -> str | None:
    """Why S3 would refuse this presigned request's query string (None: not presigned, or fine)."""
    params = urllib.parse.parse_qs(query)
    if "Signature" in params and "Expires" in params:  # SigV2: an absolute epoch
        try:
            return "Request has expired" if now > int(params["Expires"][0]) else None
        except ValueError:
            return "Expires must be an integer"
    if "X-Amz-Expires" not in params and "X-Amz-Signature" not in params:
        return None
    try:
        signed = datetime.strptime(params["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(params["X-Amz-Expires"][0])
    except (KeyError, ValueError):
        return "Query-string authentication requires X-Amz-Date and X-Amz-Expires"
    if not 1 <= expires <= MAX_PRESIGNED_S:
        return "X-Amz-Expires must be between 1 and 604800 seconds"
    if now > signed.timestamp() + expires:
        return "Request has expired"
    return None


class MotoServer:
    """moto on 127.0.0.1, on a port the OS chooses, serving one request at a time."""

    def __init__(self, port: int = 0, *, speedups: bool = True) -> None:
        # moto is heavy to import; only the local stack needs it.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # werkzeug would print a line for every AWS request the handlers make.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
        self.lock = app.lock  # held, moto is still: a consistent snapshot (local/state.py)
        self._server = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = ""
        self._speedups = fast_moto() if speedups else contextlib.nullcontext()

    def start(self) -> str:
        self._speedups.__enter__()  # for the life of the server: the local stack owns its moto
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host!s}:{port}"
        return self.endpoint

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._speedups.__exit__(None, None, None)


@dataclass(frozen=True)
class LocalResources:
    """Physical names, keyed by logical id, and the environment handlers need."""

    tables: dict[str, str]
    buckets: dict[str, str]
    keys: dict[str, str]
    queues: dict[str, str]  # queue URLs
    buses: dict[str, str]  # event bus names

    def environment(self) -> dict[str, str]:
        env = {spec.env_var: self.queues[spec.logical_id] for spec in topology.QUEUES}
        env[topology.AUDIT_BUS.env_var] = self.buses[topology.AUDIT_BUS.logical_id]
        for spec in topology.TABLES:
            env[spec.env_var] = self.tables[spec.logical_id]
        for bucket in topology.BUCKETS:
            env[bucket.env_var] = self.buckets[bucket.logical_id]
        for key in topology.KEYS:
            env[key.env_var] = self.keys[key.logical_id]
        return env


def _clients(endpoint: str) -> tuple[DynamoDBClient, S3Client, KMSClient]:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
        region_name=LOCAL_CREDENTIALS["region_name"],
    )
    return (
        session.client("dynamodb", endpoint_url=endpoint),
        session.client("s3", endpoint_url=endpoint),
        session.client("kms", endpoint_url=endpoint),
    )


def provision(endpoint: str, stage: str = "local") -> LocalResources:
    dynamodb, s3, kms = _clients(endpoint)
    keys = {spec.logical_id: _create_key(kms, spec, stage) for spec in topology.KEYS}
    tables = {
        spec.logical_id: _create_table(dynamodb, spec, stage, keys["DataKey"])
        for spec in topology.TABLES
    }
    buckets = {spec.logical_id: _create_bucket(s3, spec, stage, keys) for spec in topology.BUCKETS}
    queues = {spec.logical_id: _create_queue(endpoint, spec, stage) for spec in topology.QUEUES}
    buses = {topology.AUDIT_BUS.logical_id: _create_bus(endpoint, topology.AUDIT_BUS, stage)}
    return LocalResources(tables=tables, buckets=buckets, keys=keys, queues=queues, buses=buses)


def _create_bus(endpoint: str, spec: topology.EventBusSpec, stage: str) -> str:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
        region_name=LOCAL_CREDENTIALS["region_name"],
    )
    name = f"sotto-{stage}-{spec.logical_id.lower()}"
    session.client("events", endpoint_url=endpoint).create_event_bus(Name=name)
    return name


def _create_queue(endpoint: str, spec: topology.QueueSpec, stage: str) -> str:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=LOCAL_CREDENTIALS["aws_secret_access_key"],
        region_name=LOCAL_CREDENTIALS["region_name"],
    )
    answer = session.client("sqs", endpoint_url=endpoint).create_queue(
        QueueName=f"sotto-{stage}-{spec.logical_id}",
        Attributes={"MessageRetentionPeriod": str(spec.retention_days * 86400)},
    )
    return str(answer["QueueUrl"])


def _create_key(kms: KMSClient, spec: topology.KeySpec, stage: str) -> str:
    key = kms.create_key(Description=spec.purpose)["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    # Aliases are unique per account and region, so each stage gets its own (as in infra/).
    kms.create_alias(AliasName=f"alias/{spec.alias}/{stage}", TargetKeyId=key["KeyId"])
    return key["Arn"]


def _create_table(
    dynamodb: DynamoDBClient, spec: topology.TableSpec, stage: str, key_arn: str
) -> str:
    name = f"sotto-{stage}-{spec.logical_id}"
    args: dict[str, Any] = {
        "TableName": name,
        "KeySchema": _key_schema(spec.partition_key, spec.sort_key),
        "AttributeDefinitions": [
            {"AttributeName": attr, "AttributeType": kind}
            for attr, kind in sorted(spec.attributes.items())
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn},
    }
    if spec.indexes:
        indexes: list[GlobalSecondaryIndexTypeDef] = [
            {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.partition_key, index.sort_key),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in spec.indexes
        ]
        args["GlobalSecondaryIndexes"] = indexes
    if spec.stream:
        args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec.stream}
    dynamodb.create_table(**args)
    if spec.ttl_attribute:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
    dynamodb.update_continuous_backups(
        TableName=name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    return name


def _key_schema(partition_key: str, sort_key: str | None) -> list[KeySchemaElementTypeDef]:
    schema: list[KeySchemaElementTypeDef] = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return schema


def _create_bucket(
    s3: S3Client, spec: topology.BucketSpec, stage: str, keys: dict[str, str]
) -> str:
    name = f"sotto-{stage}-{spec.logical_id.lower()}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=spec.object_lock)
    key_arn = keys[spec.kms_key]
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if not spec.object_lock:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "abort-incomplete-uploads-and-old-versions",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {
                            "DaysAfterInitiation": ABORT_INCOMPLETE_UPLOAD_DAYS
                        },
                        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
                    },
                    {
                        "ID": "expire-attachments-backstop",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "Expiration": {"Days": topology.ATTACHMENT_BACKSTOP_DAYS},
                    },
                ]
            },
        )
    else:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {
                    "DefaultRetention": {
                        "Mode": ARCHIVE_LOCK_MODE,
                        "Days": ARCHIVE_RETENTION_DAYS,
                    }
                },
            },
        )
    return name


def table_shape(description: dict[str, Any], ttl_attribute: str | None) -> dict[str, Any]:
    """The parts of a table that must match between local and deployed.

    ``description`` is DynamoDB's DescribeTable ``Table``; the result is plain
    data comparable with the same shape read from a CloudFormation template.
    """
    definitions: list[AttributeDefinitionTypeDef] = description["AttributeDefinitions"]
    stream = description.get("StreamSpecification") or {}
    return {
        "keys": {k["KeyType"]: k["AttributeName"] for k in description["KeySchema"]},
        "attributes": {a["AttributeName"]: a["AttributeType"] for a in definitions},
        "indexes": {
            index["IndexName"]: {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            for index in description.get("GlobalSecondaryIndexes", [])
        },
        "ttl": ttl_attribute,
        "stream": stream.get("StreamViewType") if stream.get("StreamEnabled") else None,
        "billing": description.get("BillingModeSummary", {}).get("BillingMode"),
    }
