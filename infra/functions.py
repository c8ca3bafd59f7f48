"""Lambda functions, one per ``topology.FUNCTIONS`` entry, each with its own role."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aws_cdk import AssetHashType, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import packaging
from infra._common import construct_name, data_removal_policy, log_retention
from infra._nag import acknowledge, nag_token_text
from infra.settings import Settings
from sotto import topology

__all__ = [
    "POWERTOOLS_LAYER_ACCOUNT",
    "RUNTIME",
    "ConnectionsEndpoint",
    "Functions",
]

# Newest Python that both aws-cdk-lib and the public Powertools V3 layer
# support; packaging.PYTHON_VERSION builds the dependency layer for it.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
POWERTOOLS_LAYER_ACCOUNT = "017000801446"

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
        connections: ConnectionsEndpoint,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._tables = tables
        self._data_key = data_key
        self._connections = connections
        self._code = self._build_code()
        self._layers = [self._build_powertools_layer(), self._build_dependency_layer()]
        self.by_name: dict[str, lambda_.Function] = {
            spec.name: self._build_function(spec) for spec in topology.FUNCTIONS
        }

    def __getitem__(self, name: str) -> lambda_.Function:
        return self.by_name[name]

    def _build_code(self) -> lambda_.Code:
        asset = packaging.stage_lambda_code()
        return lambda_.Code.from_asset(
            str(asset.path), asset_hash=asset.digest, asset_hash_type=AssetHashType.CUSTOM
        )

    def _build_powertools_layer(self) -> lambda_.ILayerVersion:
        python = RUNTIME.name.replace(".", "")  # python3.14 -> python314
        arn = (
            f"arn:aws:lambda:{Stack.of(self).region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"AWSLambdaPowertoolsPythonV3-{python}-arm64:{self._settings.powertools_layer_version}"
        )
        return lambda_.LayerVersion.from_layer_version_arn(self, "PowertoolsLayer", arn)

    def _build_dependency_layer(self) -> lambda_.LayerVersion:
        asset = packaging.build_dependency_layer()
        return lambda_.LayerVersion(
            self,
            "DependencyLayer",
            code=lambda_.Code.from_asset(
                str(asset.path), asset_hash=asset.digest, asset_hash_type=AssetHashType.CUSTOM
            ),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="Sotto handler dependencies (cryptography) for arm64",
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _build_function(self, spec: topology.FunctionSpec) -> lambda_.Function:
        name = construct_name(spec.name)
        log_group = logs.LogGroup(
            self,
            f"{name}Logs",
            retention=log_retention(self._settings.log_retention_days),
            removal_policy=data_removal_policy(self._settings),
        )
        role = self._build_role(spec, name, log_group)
        return lambda_.Function(
            self,
            # Not plain "Default": CDK treats a child with that id as its parent's default child.
            f"{name}Function",
            description=spec.purpose,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=spec.handler,
            code=self._code,
            layers=self._layers,
            role=role,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_seconds),
            environment=self._environment(spec),
            log_group=log_group,
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
        role = iam.Role(
            self,
            f"{name}Role",
            description=f"Sotto {self._settings.stage} {spec.name} function",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            inline_policies={"least-privilege": iam.PolicyDocument(statements=statements)},
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

    def _table_arn(self, target: str) -> str:
        logical_id, _, index = target.partition("/")
        arn = self._tables[logical_id].table_arn
        # Each index by name: no index/* wildcard.
        return f"{arn}/index/{index}" if index else arn


def _tables_of(spec: topology.FunctionSpec) -> list[str]:
    return list(dict.fromkeys(spec.tables_read + spec.tables_write))
