"""A CloudTrail trail of every data event on the archive bucket.

The records officer's work happens outside Sotto's functions: legal holds,
lock extensions and exports are S3 calls made with the compliance role's
credentials (``sotto records``). Only AWS can say who made them, so the
stack records them itself rather than trusting the agency's account to: a
trail of the archive bucket's S3 data events (reads and writes: who placed
or released a hold, extended a lock, exported, or tried to delete), with
log file validation (a digest chain CloudTrail signs), files encrypted
under the logs key, and a copy in a CloudWatch log group for queries.
Management events are left to the agency's own account trail.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra._common import log_group
from infra._nag import acknowledge
from infra.buckets import PRIVATE_BUCKET
from infra.settings import Settings

__all__ = ["ArchiveTrail"]


class ArchiveTrail(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        archive: s3.IBucket,
        logs_key: kms.IKey,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "TrailBucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=logs_key,
            bucket_key_enabled=True,
            **PRIVATE_BUCKET,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="trail/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(settings.log_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.bucket,
            "NIST.800.53.R5-S3BucketReplicationEnabled",
            "CloudTrail's log file validation makes any change to these files evident; the "
            "agency's own account trail is where a second region's copy belongs.",
        )
        self.trail = cloudtrail.Trail(
            self,
            "ArchiveTrail",
            bucket=self.bucket,
            encryption_key=logs_key,
            enable_file_validation=True,
            include_global_service_events=False,
            is_multi_region_trail=False,
            management_events=cloudtrail.ReadWriteType.NONE,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=log_group(self, "TrailLogs", settings, logs_key),
        )
        acknowledge(
            self.trail.node.find_child("LogsRole").node.find_child("DefaultPolicy"),
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "CDK's Trail gives CloudTrail's delivery role one inline policy: CreateLogStream and "
            "PutLogEvents on this trail's log group only; it belongs to that role alone.",
        )
        self.trail.add_s3_event_selector(
            [cloudtrail.S3EventSelector(bucket=archive)],
            include_management_events=False,
            read_write_type=cloudtrail.ReadWriteType.ALL,
        )
