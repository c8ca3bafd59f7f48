"""Customer-managed KMS keys, one per ``topology.KEYS`` entry, with explicit key policies.

No key carries the default "account root may do kms:*" statement, through
which any principal whose IAM policy allows ``kms:Decrypt`` could read the
archive. Instead, per key:

- KeyAdministration: the key-admin role and CloudFormation's execution role
  may manage the key (policy, rotation, deletion), never use it.
- DataKey: principals of this account may use it only through DynamoDB, S3,
  SQS and AWS Backup (``kms:ViaService``, ``kms:CallerAccount``); their IAM
  policies say which (function roles: ``infra/functions.py``).
- ArchiveKey: only the compliance role decrypts; principals of this account
  may only encrypt through S3 (the archiver's SSE-KMS writes); an explicit
  deny stops every other principal's decrypt, re-encrypt and grants.
- LogsKey: CloudWatch Logs of this account and region encrypts log groups,
  and CloudTrail the archive trail's log files (``infra/trail.py``).
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.access import Access
from infra.settings import Settings
from sotto import topology

__all__ = ["ADMIN_ACTIONS", "Keys"]

# Key administration without use: no Encrypt, Decrypt, ReEncrypt,
# GenerateDataKey or CreateGrant.
ADMIN_ACTIONS = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:RotateKeyOnDemand",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateKeyDescription",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ListGrants",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
_USE = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey")


class Keys(Construct):
    """The data key (tables, streams, attachments, backups), the archive key and the logs key."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, access: Access
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._access = access
        self.by_id: dict[str, kms.Key] = {
            spec.logical_id: self._build_key(spec) for spec in topology.KEYS
        }

    def __getitem__(self, logical_id: str) -> kms.Key:
        return self.by_id[logical_id]

    def _build_key(self, spec: topology.KeySpec) -> kms.Key:
        statements = [self._administration(), *_USAGE[spec.logical_id](self)]
        return kms.Key(
            self,
            spec.logical_id,
            description=f"Sotto {self._settings.stage}: {spec.purpose}",
            # Aliases are unique per account and region, and one account may
            # hold several stages.
            alias=f"alias/{spec.alias}/{self._settings.stage}",
            enable_key_rotation=True,
            policy=iam.PolicyDocument(statements=statements),
            # Always kept: retained tables, buckets and backups stay readable
            # only while their key exists.
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )

    def _administration(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="KeyAdministration",
            principals=[
                iam.ArnPrincipal(self._access.key_admin.role_arn),
                iam.ArnPrincipal(self._access.deployment_role_arn),
            ],
            actions=list(ADMIN_ACTIONS),
            resources=["*"],
        )

    def _account_via(
        self, sid: str, actions: list[str], services: list[str]
    ) -> iam.PolicyStatement:
        stack = Stack.of(self)
        return iam.PolicyStatement(
            sid=sid,
            principals=[iam.AccountRootPrincipal()],
            actions=actions,
            resources=["*"],
            conditions={
                "StringEquals": {
                    "kms:ViaService": [f"{s}.{stack.region}.{stack.url_suffix}" for s in services],
                    "kms:CallerAccount": stack.account,
                }
            },
        )

    def _data_key_usage(self) -> list[iam.PolicyStatement]:
        return [
            # SQS: queues of stream consumers are encrypted with this key too.
            self._account_via(
                "UseThroughDynamoDBS3SQSAndBackup",
                [*_USE, "kms:CreateGrant"],
                ["dynamodb", "s3", "sqs", "backup"],
            ),
            iam.PolicyStatement(
                sid="DynamoDBDescribesKey",
                principals=[iam.ServicePrincipal("dynamodb.amazonaws.com")],
                actions=["kms:DescribeKey"],
                resources=["*"],
            ),
        ]

    def _archive_key_usage(self) -> list[iam.PolicyStatement]:
        compliance = self._access.compliance.role_arn
        readers = [compliance]
        replicate: list[iam.PolicyStatement] = []
        if self._access.replication is not None:
            readers.append(self._access.replication.role_arn)
            replicate.append(
                iam.PolicyStatement(
                    sid="ReplicationReadsThroughS3",
                    principals=[iam.ArnPrincipal(self._access.replication.role_arn)],
                    actions=["kms:Decrypt"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": f"s3.{Stack.of(self).region}."
                            f"{Stack.of(self).url_suffix}"
                        }
                    },
                )
            )
        return [
            *replicate,
            iam.PolicyStatement(
                sid="ComplianceRoleDecrypts",
                principals=[iam.ArnPrincipal(compliance)],
                # Encrypt: the retention identity's private key is wrapped under this key.
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=["*"],
            ),
            self._account_via(
                "ArchiverEncryptsThroughS3Only",
                ["kms:GenerateDataKey", "kms:DescribeKey"],
                ["s3"],
            ),
            iam.PolicyStatement(
                sid="NobodyElseDecrypts",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["kms:Decrypt", "kms:ReEncrypt*", "kms:CreateGrant"],
                resources=["*"],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": readers}},
            ),
        ]

    def _logs_key_usage(self) -> list[iam.PolicyStatement]:
        stack = Stack.of(self)
        log_groups = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        trails = stack.format_arn(
            service="cloudtrail", region="*", resource="trail", resource_name="*"
        )
        return [
            iam.PolicyStatement(
                sid="CloudWatchLogsEncrypts",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.{stack.url_suffix}")],
                actions=list(_USE),
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            ),
            # The archive trail's log files (infra/trail.py): CloudTrail of this account
            # encrypts them, for this account's trails only.
            iam.PolicyStatement(
                sid="CloudTrailEncrypts",
                principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:GenerateDataKey*"],
                resources=["*"],
                conditions={
                    "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": trails},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            ),
            iam.PolicyStatement(
                sid="CloudTrailDescribes",
                principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
                actions=["kms:DescribeKey"],
                resources=["*"],
            ),
        ]


_USAGE = {
    "DataKey": Keys._data_key_usage,
    "ArchiveKey": Keys._archive_key_usage,
    "LogsKey": Keys._logs_key_usage,
}
