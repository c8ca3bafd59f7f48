"""The API Gateway WebSocket API: stage, access logs, routes and the $connect authorizer."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra._common import construct_name, log_group, service_principal
from infra._nag import acknowledge
from infra.functions import ConnectionsEndpoint
from infra.settings import Settings
from sotto import topology

__all__ = ["ACCESS_LOG_FORMAT", "WebSocket"]

# One JSON line per connect, message and disconnect. Deliberately no request
# headers (the Authorization header carries the connect token) and no
# message bodies (ciphertext, but still nobody's business).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTimeEpoch",
    "eventType": "$context.eventType",
    "routeKey": "$context.routeKey",
    "connectionId": "$context.connectionId",
    "messageId": "$context.messageId",
    "sourceIp": "$context.identity.sourceIp",
    "status": "$context.status",
    "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
    "integrationError": "$context.integration.error",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
}


class WebSocket(Construct):
    """Build the API and stage first (functions need their address), then ``add_routes``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, logs_key: kms.IKey
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._logs_key = logs_key
        self.api = self._build_api()
        self.access_logs = self._build_access_logs()
        self.stage = self._build_stage()

    @property
    def connections(self) -> ConnectionsEndpoint:
        """The @connections endpoint of this stage (boto3's endpoint URL) and its IAM resources."""

        def manage_arn(method: topology.ConnectionMethod) -> str:
            # IAM's resource for @connections is API/STAGE/METHOD/@connections/ID.
            return Stack.of(self).format_arn(
                service="execute-api",
                resource=self.api.api_id,
                resource_name=f"{self.stage.stage_name}/{method}/@connections/*",
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            )

        return ConnectionsEndpoint(
            url=self.stage.callback_url,
            manage_arn=manage_arn,
            websocket_url=self.stage.url,
            audience=f"{self.api.api_id}/{self.stage.stage_name}",
        )

    def add_routes(self, functions: Mapping[str, lambda_.IFunction]) -> None:
        authorizer = authorizers.WebSocketLambdaAuthorizer(
            "ConnectAuthorizer",
            functions[topology.WS_AUTHORIZER],
            identity_source=[f"route.request.header.{topology.WS_AUTHORIZER_IDENTITY_HEADER}"],
        )
        for spec in topology.WS_ROUTES:
            self._build_route(spec, functions[spec.function], authorizer)

    def _build_api(self) -> apigwv2.WebSocketApi:
        return apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"sotto-{self._settings.stage}",
            description="Sotto end-to-end encrypted messaging socket",
            route_selection_expression=f"$request.body.{topology.WS_ROUTE_SELECTION_FIELD}",
        )

    def _build_access_logs(self) -> logs.LogGroup:
        return log_group(self, "AccessLogs", self._settings, self._logs_key)

    def _build_stage(self) -> apigwv2.WebSocketStage:
        stage = apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=self._settings.stage,
            auto_deploy=True,
        )
        cfn = stage.node.default_child
        assert isinstance(cfn, apigwv2.CfnStage)
        cfn.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        cfn.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=self._settings.ws_throttle_rate,
            throttling_burst_limit=self._settings.ws_throttle_burst,
            # Execution logs and data traces would record frames; access logs suffice.
            logging_level="OFF",
            data_trace_enabled=False,
            detailed_metrics_enabled=True,
        )
        # WAF cannot attach to WebSocket APIs: the unauthenticated $connect
        # (whose authorizer verifies a signature) gets a tighter throttle of its own.
        cfn.route_settings = {
            "$connect": {
                "ThrottlingRateLimit": self._settings.public_throttle_rate,
                "ThrottlingBurstLimit": self._settings.public_throttle_burst,
                "LoggingLevel": "OFF",
                "DataTraceEnabled": False,
                "DetailedMetricsEnabled": True,
            }
        }
        if self._settings.apigw_cloudwatch_role:
            stage.node.add_dependency(self._build_account_logging_role())
        return stage

    def _build_account_logging_role(self) -> apigw.CfnAccount:
        # API Gateway delivers WebSocket logs through a single role set per
        # account and region. Retained: another stage may rely on it.
        role = iam.Role(
            self,
            "ApiGatewayLogsRole",
            assumed_by=service_principal(self, "apigateway.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
                )
            ],
        )
        role.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-wide logging role is meant to carry exactly this "
            "AWS-maintained policy, which AWS updates as log delivery changes.",
        )
        account = apigw.CfnAccount(self, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
        account.apply_removal_policy(RemovalPolicy.RETAIN)
        return account

    def _build_route(
        self,
        spec: topology.WsRouteSpec,
        function: lambda_.IFunction,
        authorizer: authorizers.WebSocketLambdaAuthorizer,
    ) -> None:
        is_connect = spec.route_key == "$connect"
        route = self.api.add_route(
            spec.route_key,
            integration=integrations.WebSocketLambdaIntegration(
                f"{construct_name(spec.route_key)}Integration", function
            ),
            authorizer=authorizer if is_connect else None,
        )
        if not is_connect:
            acknowledge(
                route,
                "AwsSolutions-APIG4",
                "API Gateway runs WebSocket authorizers on $connect only; every later frame "
                "rides the connection that the $connect authorizer admitted.",
            )
