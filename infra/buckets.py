"""S3 buckets, one per ``topology.BUCKETS`` entry, plus their access-log bucket.

The archive's bucket policy denies, to every principal: uploads in another
Object Lock mode than the stage's or with a shorter retention than its
default, under another KMS key than the ArchiveKey or with SSE-C; and, to all
but the compliance role, changes to the lock configuration, legal holds,
retention, and bypassing governance mode. moto enforces none of this, so the
template tests assert the statements themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra._nag import acknowledge
from infra.settings import Settings
from sotto import topology

__all__ = ["PRIVATE_BUCKET", "Buckets"]

# What every bucket of the stack is: no public access, ACLs off, TLS 1.2+ only, versioned.
PRIVATE_BUCKET: dict[str, Any] = {
    "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
    "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    "enforce_ssl": True,
    "minimum_tls_version": 1.2,
    "versioned": True,
}


class Buckets(Construct):
    """Private, TLS-only, versioned, SSE-KMS buckets; the archive is WORM.

    Buckets are always retained: S3 refuses to delete a bucket that holds
    objects, and Object Lock forbids emptying the archive before its time.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        keys: Mapping[str, kms.IKey],
        compliance_role: iam.IRole,
        replication_role: iam.IRole | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._keys = keys
        self._compliance = compliance_role
        self._replication = replication_role
        self.access_logs = self._build_access_logs_bucket()
        self.by_id: dict[str, s3.Bucket] = {
            spec.logical_id: self._build_bucket(spec) for spec in topology.BUCKETS
        }
        for spec in topology.BUCKETS:
            if spec.object_lock:
                self._protect_archive(self.by_id[spec.logical_id], self._keys[spec.kms_key])

    def __getitem__(self, logical_id: str) -> s3.Bucket:
        return self.by_id[logical_id]

    def _build_access_logs_bucket(self) -> s3.Bucket:
        # cdk-nag (S1) accepts this bucket without logs of its own: it is the
        # log destination, recognised by the logging service's bucket policy.
        bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            # S3 server access logging can only deliver to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            **PRIVATE_BUCKET,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(self._settings.access_log_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            bucket,
            "NIST.800.53.R5-S3DefaultEncryptionKMS",
            "S3 server access logging delivers only to buckets encrypted with SSE-S3, "
            "never SSE-KMS.",
        )
        acknowledge(
            bucket,
            "NIST.800.53.R5-S3BucketReplicationEnabled",
            "Access logs are operational records kept for a year in one region, not records "
            "of the agency.",
        )
        return bucket

    def _build_bucket(self, spec: topology.BucketSpec) -> s3.Bucket:
        lifecycle = [
            s3.LifecycleRule(
                id="abort-incomplete-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(
                    self._settings.abort_incomplete_upload_days
                ),
            )
        ]
        if not spec.object_lock:
            lifecycle.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(
                        self._settings.attachments_noncurrent_version_days
                    ),
                )
            )
            # The backstop only: a file is deleted when its record goes (its
            # message's end, the attachments function); no message outlives
            # MAX_MESSAGE_LIFETIME_MS (365 days).
            lifecycle.append(
                s3.LifecycleRule(
                    id="expire-attachments-backstop",
                    expiration=Duration.days(topology.ATTACHMENT_BACKSTOP_DAYS),
                )
            )
        mode, days = self._settings.archive_lock
        retention = (
            s3.ObjectLockRetention.compliance(Duration.days(days))
            if mode == "COMPLIANCE"
            else s3.ObjectLockRetention.governance(Duration.days(days))
        )
        bucket = s3.Bucket(
            self,
            spec.logical_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self._keys[spec.kms_key],
            bucket_key_enabled=True,
            **PRIVATE_BUCKET,
            object_lock_enabled=spec.object_lock or None,
            object_lock_default_retention=retention if spec.object_lock else None,
            replication_role=self._replication if spec.object_lock else None,
            replication_rules=self._replication_rules() if spec.object_lock else None,
            lifecycle_rules=lifecycle,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.logical_id}/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        if not (spec.object_lock and self._settings.archive_replica_bucket_arn):
            acknowledge(
                bucket,
                "NIST.800.53.R5-S3BucketReplicationEnabled",
                "Cross-region copies are opt-in by context (archive_replica_bucket_arn): the "
                "second region and its key belong to the agency; attachments expire anyway.",
            )
        return bucket

    def _replication_rules(self) -> list[s3.ReplicationRule] | None:
        settings = self._settings
        if self._replication is None or settings.archive_replica_bucket_arn is None:
            return None
        replica = s3.Bucket.from_bucket_arn(
            self, "ArchiveReplica", settings.archive_replica_bucket_arn
        )
        replica_key = kms.Key.from_key_arn(
            self, "ArchiveReplicaKey", str(settings.archive_replica_key_arn)
        )
        return [
            s3.ReplicationRule(
                destination=replica,
                kms_key=replica_key,
                sse_kms_encrypted_objects=True,
                priority=0,
                delete_marker_replication=False,
            )
        ]

    def _protect_archive(self, bucket: s3.Bucket, key: kms.IKey) -> None:
        mode, days = self._settings.archive_lock
        objects = bucket.arn_for_objects("*")
        everyone = iam.AnyPrincipal()
        present = "false"  # Null: false means the request carries the key
        for sid, conditions in (
            (
                "DenyOtherLockMode",
                {
                    "StringNotEquals": {"s3:object-lock-mode": mode},
                    "Null": {"s3:object-lock-mode": present},
                },
            ),
            (
                "DenyShorterRetention",
                {
                    "NumericLessThan": {"s3:object-lock-remaining-retention-days": str(days)},
                    "Null": {"s3:object-lock-remaining-retention-days": present},
                },
            ),
            (
                "DenyOtherEncryption",
                {
                    "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"},
                    "Null": {"s3:x-amz-server-side-encryption": present},
                },
            ),
            (
                "DenyOtherKey",
                {
                    "StringNotEquals": {
                        "s3:x-amz-server-side-encryption-aws-kms-key-id": key.key_arn
                    },
                    "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": present},
                },
            ),
            (
                "DenyCustomerKeys",
                {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": present}},
            ),
        ):
            bucket.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=sid,
                    effect=iam.Effect.DENY,
                    principals=[everyone],
                    actions=["s3:PutObject", "s3:PutObjectRetention"]
                    if sid == "DenyShorterRetention"
                    else ["s3:PutObject"],
                    resources=[objects],
                    conditions=conditions,
                )
            )
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyComplianceChangesLocks",
                effect=iam.Effect.DENY,
                principals=[everyone],
                actions=[
                    "s3:PutBucketObjectLockConfiguration",
                    "s3:PutObjectLegalHold",
                    "s3:PutObjectRetention",
                    "s3:BypassGovernanceRetention",
                ],
                resources=[bucket.bucket_arn, objects],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": self._compliance.role_arn}},
            )
        )
