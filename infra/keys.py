"""Customer-managed KMS keys, one per ``topology.KEYS`` entry."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.settings import Settings
from sotto import topology

__all__ = ["Keys"]


class Keys(Construct):
    """The data key (tables, streams, attachments) and the archive key."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self.by_id: dict[str, kms.Key] = {
            spec.logical_id: self._build_key(spec) for spec in topology.KEYS
        }

    def __getitem__(self, logical_id: str) -> kms.Key:
        return self.by_id[logical_id]

    def _build_key(self, spec: topology.KeySpec) -> kms.Key:
        return kms.Key(
            self,
            spec.logical_id,
            description=f"Sotto {self._settings.stage}: {spec.purpose}",
            # Aliases are unique per account and region, and one account may
            # hold several stages.
            alias=f"alias/{spec.alias}/{self._settings.stage}",
            enable_key_rotation=True,
            # Always kept: retained tables, buckets and backups stay readable
            # only while their key exists.
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )
