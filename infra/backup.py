"""AWS Backup of the tables that hold records: the directory and the messages.

Point-in-time recovery covers 35 days of mistakes; a backup plan with a
locked vault also covers a deleted table or a malicious operator: in prod
stages the vault lock becomes immutable (compliance mode) after its grace
period, so nobody, root included, can delete recovery points early. Dev
stages lock in governance mode, which an authorized principal may lift.
The connections and guards tables hold only short-lived items and are not
backed up.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_backup as backup
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra._common import service_principal
from infra._nag import acknowledge
from infra.settings import Settings

__all__ = ["BACKED_UP_TABLES", "Backups"]

BACKED_UP_TABLES = ("DirectoryTable", "MessagesTable", "AuditTable")
# Compliance-mode vault locks become immutable after this grace period.
_LOCK_GRACE_DAYS = 3


class Backups(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        tables: Mapping[str, dynamodb.ITable],
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.vault = self._build_vault(key)
        self.plan = self._build_plan()
        self.plan.add_selection(
            "Tables",
            resources=[
                backup.BackupResource.from_dynamo_db_table(tables[t]) for t in BACKED_UP_TABLES
            ],
            role=self._build_role(),
            allow_restores=False,
        )

    def _build_vault(self, key: kms.IKey) -> backup.BackupVault:
        days = self._settings.backup_retention_days
        return backup.BackupVault(
            self,
            "Vault",
            encryption_key=key,
            lock_configuration=backup.LockConfiguration(
                min_retention=Duration.days(days),
                changeable_for=Duration.days(_LOCK_GRACE_DAYS) if self._settings.is_prod else None,
            ),
            removal_policy=RemovalPolicy.RETAIN
            if self._settings.is_prod
            else RemovalPolicy.DESTROY,
        )

    def _build_plan(self) -> backup.BackupPlan:
        return backup.BackupPlan(
            self,
            "Plan",
            backup_vault=self.vault,
            backup_plan_rules=[
                backup.BackupPlanRule(
                    rule_name="daily",
                    schedule_expression=events.Schedule.cron(hour="5", minute="0"),
                    delete_after=Duration.days(self._settings.backup_retention_days),
                )
            ],
        )

    def _build_role(self) -> iam.Role:
        role = iam.Role(
            self,
            "Role",
            description=f"Sotto {self._settings.stage}: AWS Backup of the record tables",
            assumed_by=service_principal(self, "backup.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSBackupServiceRolePolicyForBackup"
                )
            ],
        )
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSBackupServiceRolePolicyForBackup]",
            "AWS Backup's own service policy, maintained by AWS as the service changes; the "
            "selection limits it to the two record tables.",
        )
        return role
