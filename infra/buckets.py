"""S3 buckets, one per ``topology.BUCKETS`` entry, plus their access-log bucket."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.settings import Settings
from sotto import topology

__all__ = ["Buckets"]


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
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._keys = keys
        self.access_logs = self._build_access_logs_bucket()
        self.by_id: dict[str, s3.Bucket] = {
            spec.logical_id: self._build_bucket(spec) for spec in topology.BUCKETS
        }

    def __getitem__(self, logical_id: str) -> s3.Bucket:
        return self.by_id[logical_id]

    def _build_access_logs_bucket(self) -> s3.Bucket:
        # cdk-nag (S1) accepts this bucket without logs of its own: it is the
        # log destination, recognised by the logging service's bucket policy.
        return s3.Bucket(
            self,
            "AccessLogsBucket",
            # S3 server access logging can only deliver to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(self._settings.access_log_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

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
        return s3.Bucket(
            self,
            spec.logical_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self._keys[spec.kms_key],
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_lock_enabled=spec.object_lock or None,
            object_lock_default_retention=(
                s3.ObjectLockRetention.compliance(
                    Duration.days(self._settings.archive_retention_days)
                )
                if spec.object_lock
                else None
            ),
            lifecycle_rules=lifecycle,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{spec.logical_id}/",
            removal_policy=RemovalPolicy.RETAIN,
        )
