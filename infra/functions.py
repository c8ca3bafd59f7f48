"""Lambda functions, one per ``topology.FUNCTIONS`` entry, each with its own role.

Every function runs on one code asset and one dependency layer the project
builds itself (Powertools, pydantic, cryptography): no layer of another
account or partition, so the stack deploys unchanged in AWS GovCloud (US).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aws_cdk import AssetHashType, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import packaging
from infra._common import construct_name, service_principal
from infra._common import log_group as log_group_for
from infra._nag import acknowledge, nag_token_text
from infra.settings import Settings
from infra.streams import stream_statements
from sotto import topology

__all__ = ["ADMIN_PRINCIPALS_ENV", "RUNTIMES", "ConnectionsEndpoint", "Functions"]

# One per packaging.PYTHON_VERSIONS (context python_runtime); a test holds them together.
RUNTIMES = {
    "3.14": lambda_.Runtime.PYTHON_3_14,
    "3.13": lambda_.Runtime.PYTHON_3_13,
    "3.12": lambda_.Runtime.PYTHON_3_12,
}
ARCHITECTURE = lambda_.Architecture.ARM_64
# The caller ARNs the admin API admits (handlers/admin.py reads it).
ADMIN_PRINCIPALS_ENV = "SOTTO_ADMIN_PRINCIPALS"

# DynamoDB uses the table's key on the caller's behalf: reads decrypt, writes
# also encrypt. Granted only through DynamoDB, only for callers of this account.
_KMS_READ = ("kms:Decrypt", "kms:DescribeKey")
_KMS_WRITE = ("kms:Encrypt", "kms:GenerateDataKey")


@dataclass(frozen=True)
class ConnectionsEndpoint:
    """Where the @connections API of the WebSocket stage lives, and its IAM resources."""

    url: str
    # The execute-api:ManageConnections resource of one method (POST, GET, DELETE).
    manage_arn: Callable[[topology.ConnectionMethod], str]
    # Where clients connect, and the audience ("API_ID/STAGE") their tokens name.
    websocket_url: str
    audience: str


class Functions(Construct):
    """arm64 functions on one code asset, the Powertools layer and the dependency layer."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        tables: Mapping[str, dynamodb.ITable],
        data_key: kms.IKey,
        logs_key: kms.IKey,
        connections: ConnectionsEndpoint,
        queues: Mapping[str, sqs.IQueue],
        audit_bus: events.IEventBus,
        archive: s3.IBucket,
        archive_key: kms.IKey,
        buckets: Mapping[str, s3.IBucket] | None = None,
        keys: Mapping[str, kms.IKey] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._queues = queues
        self._audit_bus = audit_bus
        self._archive = archive
        self._archive_key = archive_key
        self._buckets = dict(buckets or {})
        self._keys = dict(keys or {})
        self._settings = settings
        self._tables = tables
        self._data_key = data_key
        self._logs_key = logs_key
        self._connections = connections
        self._runtime = RUNTIMES[settings.python_runtime]
        self._code = self._build_code()
        self._layers = [self._build_dependency_layer()]
        self.by_name: dict[str, lambda_.Function] = {
            spec.name: self._build_function(spec) for spec in topology.FUNCTIONS
        }
        self.schedules = {
            spec.name: self._build_schedule(spec, self.by_name[spec.name])
            for spec in topology.FUNCTIONS
            if spec.schedule
        }

    def _build_schedule(
        self, spec: topology.FunctionSpec, function: lambda_.Function
    ) -> scheduler.CfnSchedule:
        """An EventBridge Scheduler schedule invoking the function, with a role that may
        invoke exactly that function."""
        assert spec.schedule is not None
        name = construct_name(spec.name)
        role = iam.Role(
            self,
            f"{name}ScheduleRole",
            description=f"Sotto {self._settings.stage} schedule of {spec.name}",
            assumed_by=service_principal(self, "scheduler.amazonaws.com"),
            inline_policies={
                "invoke": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="InvokeScheduledFunction",
                            actions=["lambda:InvokeFunction"],
                            resources=[function.function_arn],
                        )
                    ]
                )
            },
        )
        acknowledge(
            role,
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "One role per schedule with its own inline policy: it invokes one function and "
            "nothing else may attach it.",
        )
        return scheduler.CfnSchedule(
            self,
            f"{name}Schedule",
            description=f"Runs {spec.name}: {spec.purpose}",
            schedule_expression=spec.schedule,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=function.function_arn,
                role_arn=role.role_arn,
                # A run carries no data: a failed one is simply done by the next.
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=2),
            ),
        )

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.by_name[name]

    def _build_code(self) -> lambda_.Code:
        asset = packaging.stage_lambda_code()
        return lambda_.Code.from_asset(
            str(asset.path), asset_hash=asset.digest, asset_hash_type=AssetHashType.CUSTOM
        )

    def _build_dependency_layer(self) -> lambda_.LayerVersion:
        asset = packaging.build_dependency_layer(python_version=self._settings.python_runtime)
        return lambda_.LayerVersion(
            self,
            "DependencyLayer",
            code=lambda_.Code.from_asset(
                str(asset.path), asset_hash=asset.digest, asset_hash_type=AssetHashType.CUSTOM
            ),
            compatible_runtimes=[self._runtime],
            compatible_architectures=[ARCHITECTURE],
            description="Sotto handler dependencies (Powertools, pydantic, cryptography), arm64",
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _build_function(self, spec: topology.FunctionSpec) -> lambda_.Function:
        name = construct_name(spec.name)
        log_group = log_group_for(self, f"{name}Logs", self._settings, self._logs_key)
        role = self._build_role(spec, name, log_group)
        reserved = spec.reserved_concurrency if self._settings.reserve_public_concurrency else None
        function = lambda_.Function(
            self,
            # Not plain "Default": CDK treats a child with that id as its parent's default child.
            f"{name}Function",
            description=spec.purpose,
            runtime=self._runtime,
            architecture=ARCHITECTURE,
            handler=spec.handler,
            code=self._code,
            layers=self._layers,
            role=role,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_seconds),
            environment=self._environment(spec),
            log_group=log_group,
            reserved_concurrent_executions=reserved,
        )
        # Active tracing set on the resource: Tracing.ACTIVE would add the X-Ray
        # grant as a separate policy; the role's own inline policy carries it.
        cfn = function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        cfn.tracing_config = lambda_.CfnFunction.TracingConfigProperty(mode="Active")
        self._acknowledge(function, spec, reserved)
        return function

    def _acknowledge(
        self, function: lambda_.Function, spec: topology.FunctionSpec, reserved: int | None
    ) -> None:
        acknowledge(
            function,
            "NIST.800.53.R5-LambdaInsideVPC",
            "The function reaches only AWS APIs (DynamoDB, @connections) over TLS with SigV4; "
            "it has no private network resource to reach.",
        )
        acknowledge(
            function,
            "NIST.800.53.R5-LambdaDLQ",
            "API Gateway invokes it synchronously; a failed request is answered, never "
            "queued for retry.",
        )
        acknowledge(
            function,
            "Serverless-LambdaDLQ",
            "API Gateway invokes it synchronously; a failed request is answered, never "
            "queued for retry.",
        )
        if reserved is None:
            acknowledge(
                function,
                "NIST.800.53.R5-LambdaConcurrency",
                "Authenticated routes share the account's concurrency; API Gateway's stage "
                "throttles and per-device rate limits bound them instead.",
            )

    def _environment(self, spec: topology.FunctionSpec) -> dict[str, str]:
        env = {
            "POWERTOOLS_SERVICE_NAME": "sotto",
            "POWERTOOLS_METRICS_NAMESPACE": "Sotto",
            "SOTTO_STAGE": self._settings.stage,
            "SOTTO_WEBSOCKET_URL": self._connections.websocket_url,
            "SOTTO_WS_AUDIENCE": self._connections.audience,
            "SOTTO_RATE_LIMIT_SCALE": str(self._settings.rate_limit_scale),
        }
        for logical_id in _tables_of(spec):
            env[topology.table(logical_id).env_var] = self._tables[logical_id].table_name
        if spec.manages_connections:
            # boto3 reads this per-service endpoint, so handlers just call
            # boto3.client("apigatewaymanagementapi"), here and locally.
            env["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] = self._connections.url
        for logical_id in spec.buckets_write:
            bucket_spec = next(b for b in topology.BUCKETS if b.logical_id == logical_id)
            key_spec = next(k for k in topology.KEYS if k.logical_id == bucket_spec.kms_key)
            env[bucket_spec.env_var] = self._buckets[logical_id].bucket_name
            env[key_spec.env_var] = self._keys[bucket_spec.kms_key].key_arn
        if any(route.iam and route.function == spec.name for route in topology.HTTP_ROUTES):
            env[ADMIN_PRINCIPALS_ENV] = ",".join(self._settings.admin_principals)
        if spec.publishes_audit_events:
            env[topology.AUDIT_BUS.env_var] = self._audit_bus.event_bus_name
        if spec.archive_prefixes:
            archive = next(b for b in topology.BUCKETS if b.object_lock)
            env[archive.env_var] = self._archive.bucket_name
        return env

    def _build_role(
        self, spec: topology.FunctionSpec, name: str, log_group: logs.ILogGroup
    ) -> iam.Role:
        statements = [
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        ]
        statements += self._table_statements(spec)
        statements += self._bucket_statements(spec)
        if spec.stream_source is not None:
            if not spec.tables_write:
                raise ValueError(f"{spec.name}: a stream-fed function writes what it derives")
            statements += stream_statements(spec.stream_source, self._tables, self._queues)
        if spec.manages_connections:
            statements.append(
                iam.PolicyStatement(
                    sid="ManageConnections",
                    actions=["execute-api:ManageConnections"],
                    resources=[
                        self._connections.manage_arn(method) for method in spec.connection_methods
                    ],
                )
            )
        statements += self._audit_statements(spec)
        statements.append(
            iam.PolicyStatement(
                sid="WriteTraces",
                actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
                resources=["*"],
            )
        )
        role = iam.Role(
            self,
            f"{name}Role",
            description=f"Sotto {self._settings.stage} {spec.name} function",
            assumed_by=service_principal(self, "lambda.amazonaws.com"),
            inline_policies={"least-privilege": iam.PolicyDocument(statements=statements)},
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level "
            "permissions; nothing else in the policy uses a wildcard resource.",
        )
        acknowledge(
            role,
            "Serverless-LambdaStarPermissions",
            "The only wildcard is X-Ray's, whose two write actions have no resource-level "
            "permissions.",
        )
        acknowledge(
            role,
            "NIST.800.53.R5-IAMNoInlinePolicy",
            "One role per function with its own inline least-privilege policy: nothing to "
            "share, and nothing another role could attach.",
        )
        for prefix in spec.archive_prefixes:
            objects = self._archive.arn_for_objects(f"{prefix}*")
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{nag_token_text(role, objects)}]",
                "Segment names are made per sealing; the grant is PutObject only, under this "
                "one prefix of the archive bucket, whose Object Lock keeps what is written.",
            )
        for logical_id in spec.buckets_write:
            objects = self._buckets[logical_id].arn_for_objects("*")
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{nag_token_text(role, objects)}]",
                "Segment object names are made at run time (network, number, manifest hash); "
                "the grant is PutObject only, on this one bucket's objects.",
            )
        for method in spec.connection_methods if spec.manages_connections else ():
            manage_arn = self._connections.manage_arn(method)
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{nag_token_text(role, manage_arn)}]",
                "Connection ids are minted per socket at run time; the grant is pinned to this "
                "API's own stage, one method and its @connections path only.",
            )
        return role

    def _audit_statements(self, spec: topology.FunctionSpec) -> list[iam.PolicyStatement]:
        """Publishing to the audit bus; writing (never reading) archive prefixes."""
        statements = []
        if spec.publishes_audit_events:
            statements.append(
                iam.PolicyStatement(
                    sid="PublishAuditEvents",
                    actions=["events:PutEvents"],
                    resources=[self._audit_bus.event_bus_arn],
                )
            )
        if spec.archive_prefixes:
            stack = Stack.of(self)
            statements += [
                iam.PolicyStatement(
                    sid="WriteArchivePrefixes",
                    actions=["s3:PutObject"],
                    resources=[
                        self._archive.arn_for_objects(f"{p}*") for p in spec.archive_prefixes
                    ],
                ),
                # SSE-KMS under the archive key, through S3 only; never decrypt.
                iam.PolicyStatement(
                    sid="EncryptArchiveThroughS3",
                    actions=["kms:GenerateDataKey"],
                    resources=[self._archive_key.key_arn],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": f"s3.{stack.region}.{stack.url_suffix}",
                            "kms:CallerAccount": stack.account,
                        }
                    },
                ),
            ]
        return statements

    def _table_statements(self, spec: topology.FunctionSpec) -> list[iam.PolicyStatement]:
        """One statement per table (or index) with exactly the actions the function declares."""
        statements = [
            iam.PolicyStatement(
                sid=construct_name(target.replace("/", "_")),
                actions=[f"dynamodb:{action}" for action in actions],
                resources=[self._table_arn(target)],
            )
            for target, actions in spec.dynamodb_actions.items()
        ]
        if spec.dynamodb_actions:
            stack = Stack.of(self)
            statements.append(
                iam.PolicyStatement(
                    sid="UseDataKeyThroughDynamoDB",
                    actions=list(_KMS_READ + _KMS_WRITE if spec.tables_write else _KMS_READ),
                    resources=[self._data_key.key_arn],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": f"dynamodb.{stack.region}.{stack.url_suffix}",
                            "kms:CallerAccount": stack.account,
                        }
                    },
                )
            )
        return statements

    def _bucket_statements(self, spec: topology.FunctionSpec) -> list[iam.PolicyStatement]:
        """Write-only on each bucket's objects, and its key only through S3 and only to
        encrypt: no function role may decrypt with the archive key (nor read the archive)."""
        statements: list[iam.PolicyStatement] = []
        stack = Stack.of(self)
        for logical_id in spec.buckets_write:
            bucket_spec = next(b for b in topology.BUCKETS if b.logical_id == logical_id)
            bucket = self._buckets[logical_id]
            statements.append(
                iam.PolicyStatement(
                    sid=f"Write{logical_id}",
                    actions=["s3:PutObject"],
                    resources=[bucket.arn_for_objects("*")],
                )
            )
            statements.append(
                iam.PolicyStatement(
                    sid=f"Encrypt{logical_id}ThroughS3",
                    actions=["kms:GenerateDataKey"],
                    resources=[self._keys[bucket_spec.kms_key].key_arn],
                    conditions={
                        "StringEquals": {
                            "kms:ViaService": f"s3.{stack.region}.{stack.url_suffix}",
                            "kms:CallerAccount": stack.account,
                        }
                    },
                )
            )
        return statements

    def _table_arn(self, target: str) -> str:
        logical_id, _, index = target.partition("/")
        arn = self._tables[logical_id].table_arn
        # Each index by name: no index/* wildcard.
        return f"{arn}/index/{index}" if index else arn


def _tables_of(spec: topology.FunctionSpec) -> list[str]:
    return list(dict.fromkeys(spec.tables_read + spec.tables_write))
