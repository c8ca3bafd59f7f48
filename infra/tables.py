"""DynamoDB tables, one per ``topology.TABLES`` entry."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra._common import data_removal_policy
from infra._nag import acknowledge
from infra.backup import BACKED_UP_TABLES
from infra.settings import Settings
from sotto import topology

__all__ = ["Tables"]

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
_STREAM_VIEWS = {
    "NEW_IMAGE": dynamodb.StreamViewType.NEW_IMAGE,
    "OLD_IMAGE": dynamodb.StreamViewType.OLD_IMAGE,
    "NEW_AND_OLD_IMAGES": dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
    "KEYS_ONLY": dynamodb.StreamViewType.KEYS_ONLY,
}


class Tables(Construct):
    """On-demand tables under the data key, with PITR, TTL and their streams."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._key = key
        self.by_id: dict[str, dynamodb.Table] = {
            spec.logical_id: self._build_table(spec) for spec in topology.TABLES
        }

    def __getitem__(self, logical_id: str) -> dynamodb.Table:
        return self.by_id[logical_id]

    def _build_table(self, spec: topology.TableSpec) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            spec.logical_id,
            partition_key=self._attribute(spec, spec.partition_key),
            sort_key=self._attribute(spec, spec.sort_key) if spec.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self._key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=spec.ttl_attribute,
            stream=_STREAM_VIEWS[spec.stream] if spec.stream else None,
            deletion_protection=self._settings.protect_tables,
            removal_policy=data_removal_policy(self._settings),
        )
        if spec.logical_id not in BACKED_UP_TABLES:
            acknowledge(
                table,
                "NIST.800.53.R5-DynamoDBInBackupPlan",
                "It holds only short-lived items (open sockets, nonces, rate windows) that "
                "expire within hours; point-in-time recovery covers it.",
            )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=self._attribute(spec, index.partition_key),
                sort_key=self._attribute(spec, index.sort_key) if index.sort_key else None,
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    @staticmethod
    def _attribute(spec: topology.TableSpec, name: str) -> dynamodb.Attribute:
        return dynamodb.Attribute(name=name, type=_ATTRIBUTE_TYPES[spec.attributes[name]])
