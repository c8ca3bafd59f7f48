"""The Sotto stack: composes keys, tables, buckets, functions and both APIs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_events as events
from constructs import Construct

from infra.access import Access
from infra.backup import Backups
from infra.buckets import Buckets
from infra.functions import Functions
from infra.http_api import HttpApi
from infra.keys import Keys
from infra.settings import Settings
from infra.streams import Queues, StreamSources
from infra.tables import Tables
from infra.trail import ArchiveTrail
from infra.websocket import WebSocket
from sotto import topology

__all__ = ["SottoStack"]


class SottoStack(Stack):
    """One deployable stage of Sotto."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"Sotto end-to-end encrypted messaging ({settings.stage})",
            termination_protection=settings.is_prod,
            **kwargs,
        )
        self.settings = settings
        self.access = Access(self, "Access", settings=settings)
        self.keys = Keys(self, "Keys", settings=settings, access=self.access)
        data_key, logs_key = self.keys["DataKey"], self.keys["LogsKey"]
        self.tables = Tables(self, "Tables", settings=settings, key=data_key)
        self.backups = Backups(
            self, "Backups", settings=settings, tables=self.tables.by_id, key=data_key
        )
        self.buckets = Buckets(
            self,
            "Buckets",
            settings=settings,
            keys=self.keys.by_id,
            compliance_role=self.access.compliance,
            replication_role=self.access.replication,
        )
        archive = next(spec for spec in topology.BUCKETS if spec.object_lock)
        self.access.grant_archive(
            self.buckets[archive.logical_id],
            self.keys[archive.kms_key],
            heads=self.tables["MessagesTable"],
            heads_key=data_key,
        )
        self.access.grant_replication(self.buckets[archive.logical_id])
        self.trail = ArchiveTrail(
            self,
            "Trail",
            settings=settings,
            archive=self.buckets[archive.logical_id],
            logs_key=logs_key,
            access_logs=self.buckets.access_logs,
        )
        self.queues = Queues(self, "Queues", settings=settings, key=data_key)
        self.websocket = WebSocket(self, "WebSocket", settings=settings, logs_key=logs_key)
        # Audit events (source "sotto") for the agency's security monitoring to subscribe to.
        self.audit_bus = events.EventBus(
            self,
            topology.AUDIT_BUS.logical_id,
            event_bus_name=f"sotto-{settings.stage}-audit",
            description=topology.AUDIT_BUS.purpose,
        )
        self.functions = Functions(
            self,
            "Functions",
            settings=settings,
            tables=self.tables.by_id,
            data_key=data_key,
            logs_key=logs_key,
            connections=self.websocket.connections,
            queues=self.queues.by_id,
            audit_bus=self.audit_bus,
            archive=self.buckets[archive.logical_id],
            archive_key=self.keys[archive.kms_key],
            buckets=self.buckets.by_id,
            keys=self.keys.by_id,
        )
        self.streams = StreamSources(
            self,
            "Streams",
            tables=self.tables.by_id,
            queues=self.queues.by_id,
            functions=self.functions.by_name,
        )
        self.websocket.add_routes(self.functions.by_name)
        self.http_api = HttpApi(
            self, "Http", settings=settings, functions=self.functions.by_name, logs_key=logs_key
        )
        self._build_outputs()

    def _build_outputs(self) -> None:
        stage = self.websocket.stage
        CfnOutput(self, "WebSocketUrl", value=stage.url, description="Clients connect here")
        CfnOutput(
            self,
            "ConnectionsUrl",
            value=f"{stage.callback_url}/@connections",
            description="@connections management API (SigV4) of the WebSocket stage",
        )
        CfnOutput(
            self, "HttpApiUrl", value=self.http_api.url, description="Enrollment and admin API"
        )
        CfnOutput(
            self,
            "ComplianceRoleArn",
            value=self.access.compliance.role_arn,
            description="Assume to read the archive and manage legal holds",
        )
        CfnOutput(
            self,
            "KeyAdminRoleArn",
            value=self.access.key_admin.role_arn,
            description="Assume to administer (never use) the stage's KMS keys",
        )
        CfnOutput(self, "BackupVaultName", value=self.backups.vault.backup_vault_name)
        CfnOutput(
            self,
            "AuditBusName",
            value=self.audit_bus.event_bus_name,
            description="EventBridge bus of Sotto's audit events (source 'sotto')",
        )
        for spec in topology.BUCKETS:
            CfnOutput(
                self, f"{spec.logical_id}Name", value=self.buckets[spec.logical_id].bucket_name
            )
        for table in topology.TABLES:
            CfnOutput(
                self, f"{table.logical_id}Name", value=self.tables[table.logical_id].table_name
            )
