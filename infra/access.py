"""The people-facing roles: key administration and compliance (archive decrypt, holds).

Both are assumable only by the principals named in context
(``key_admin_principals``, ``compliance_principals``). A prod stage refuses
to synthesize without them (``infra/settings.py``); a dev stage without them trusts this account's
IAM (any principal an IAM policy lets call ``sts:AssumeRole`` on the role), so
that a test stage needs no setup. Neither role can do the other's job: the
key-admin role may change key policies and rotation but never use a key; the
compliance role may decrypt the archive but never administer a key.
"""

from __future__ import annotations

from aws_cdk import Duration, Fn, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra._common import service_principal
from infra._nag import acknowledge, nag_token_text
from infra.settings import Settings

__all__ = ["Access"]


class Access(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.key_admin = self._build_role(
            "KeyAdminRole",
            "key_admin_principals",
            settings.key_admin_principals,
            "administers the stage's KMS keys (policies, rotation, deletion); never uses them",
        )
        self.compliance = self._build_role(
            "ComplianceRole",
            "compliance_principals",
            settings.compliance_principals,
            "reads and decrypts the retention archive and manages its legal holds",
        )
        # S3 replication reads (decrypts) archived objects to copy them: the
        # one principal besides the compliance role the archive key lets do so.
        self.replication: iam.Role | None = None
        if settings.archive_replica_bucket_arn:
            self.replication = iam.Role(
                self,
                "ArchiveReplicationRole",
                description=f"Sotto {settings.stage}: copies the archive to its replica region",
                assumed_by=service_principal(self, "s3.amazonaws.com"),
            )

    @property
    def deployment_role_arn(self) -> str:
        """CloudFormation's execution role: it must keep administering the keys it made."""
        if self._settings.deployment_role_arn:
            return self._settings.deployment_role_arn
        synthesizer = Stack.of(self).synthesizer
        arn = getattr(synthesizer, "cloud_formation_execution_role_arn", None)
        if not isinstance(arn, str):
            raise ValueError("set context deployment_role_arn: the synthesizer names no role")
        return Fn.sub(arn)  # ${AWS::Partition}, ${AWS::AccountId}, ${AWS::Region}

    def _build_role(
        self, construct_id: str, context_key: str, principals: tuple[str, ...], purpose: str
    ) -> iam.Role:
        trusted: iam.IPrincipal = (
            iam.CompositePrincipal(*(iam.ArnPrincipal(arn) for arn in principals))
            if principals
            else iam.AccountRootPrincipal()
        )
        return iam.Role(
            self,
            construct_id,
            description=f"Sotto {self._settings.stage}: {purpose}",
            assumed_by=trusted,
            max_session_duration=Duration.hours(1),
        )

    def grant_replication(self, bucket: s3.IBucket) -> None:
        """What S3 replication of the archive needs, under the replication role."""
        settings = self._settings
        if self.replication is None or settings.archive_replica_bucket_arn is None:
            return
        replica = settings.archive_replica_bucket_arn
        stack = Stack.of(self)
        # Attached from the policy's side (Roles), so the role does not depend on it.
        policy = iam.ManagedPolicy(
            self,
            "ArchiveReplicationPolicy",
            roles=[self.replication],
            statements=[
                iam.PolicyStatement(
                    actions=["s3:GetReplicationConfiguration", "s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    actions=[
                        "s3:GetObjectVersionForReplication",
                        "s3:GetObjectVersionAcl",
                        "s3:GetObjectVersionTagging",
                        "s3:GetObjectRetention",
                        "s3:GetObjectLegalHold",
                    ],
                    resources=[bucket.arn_for_objects("*")],
                ),
                iam.PolicyStatement(
                    actions=["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                    resources=[f"{replica}/*"],
                ),
                iam.PolicyStatement(
                    actions=["kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[str(settings.archive_replica_key_arn)],
                    conditions={
                        "StringLike": {"kms:ViaService": f"s3.*.{stack.url_suffix}"},
                    },
                ),
            ],
        )
        for resource in (bucket.arn_for_objects("*"), f"{replica}/*"):
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::{nag_token_text(policy, resource)}]",
                "Replication copies every archived object; only the archive and its replica "
                "bucket are named.",
            )

    def _head_statements(
        self, heads: dynamodb.ITable | None, heads_key: kms.IKey | None
    ) -> list[iam.PolicyStatement]:
        if heads is None or heads_key is None:
            return []
        stack = Stack.of(self)
        return [
            iam.PolicyStatement(
                sid="ReadArchiveHeads",
                actions=["dynamodb:GetItem"],
                resources=[heads.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ARCHIVE#*"]}},
            ),
            iam.PolicyStatement(
                sid="ReadArchiveHeadsThroughDynamoDB",
                actions=["kms:Decrypt"],
                resources=[heads_key.key_arn],
                conditions={
                    "StringEquals": {
                        "kms:ViaService": f"dynamodb.{stack.region}.{stack.url_suffix}",
                        "kms:CallerAccount": stack.account,
                    }
                },
            ),
        ]

    def grant_archive(
        self,
        bucket: s3.IBucket,
        key: kms.IKey,
        heads: dynamodb.ITable | None = None,
        heads_key: kms.IKey | None = None,
    ) -> None:
        """The compliance role reads the archive and manages holds (decrypt: the key policy);
        with ``heads``, it also reads each network's archive chain head (``ARCHIVE#`` items
        only), which ``sotto records verify`` checks the segments against."""
        # Attached from the policy's side (Roles): the archive key's policy names
        # the role, so the role must not depend on the archive bucket.
        policy = iam.ManagedPolicy(
            self,
            "ComplianceArchivePolicy",
            roles=[self.compliance],
            statements=[
                iam.PolicyStatement(
                    sid="ListArchive",
                    actions=["s3:ListBucket", "s3:ListBucketVersions"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadArchiveAndHolds",
                    actions=[
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:GetObjectRetention",
                        "s3:GetObjectLegalHold",
                        "s3:PutObjectLegalHold",
                        "s3:PutObjectRetention",
                    ],
                    resources=[bucket.arn_for_objects("*")],
                ),
                iam.PolicyStatement(
                    sid="ArchiveLockConfiguration",
                    actions=[
                        "s3:GetBucketObjectLockConfiguration",
                        "s3:PutBucketObjectLockConfiguration",
                    ],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="DescribeArchiveKey", actions=["kms:DescribeKey"], resources=[key.key_arn]
                ),
                *self._head_statements(heads, heads_key),
            ],
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::{nag_token_text(policy, bucket.arn_for_objects('*'))}]",
            "The compliance officer reads and holds any archived object; the archive "
            "bucket is the only resource named.",
        )
