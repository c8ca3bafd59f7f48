"""The HTTP API: public enrollment/info routes and IAM-authorized admin routes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra._common import log_group
from infra._nag import acknowledge
from infra.settings import Settings
from sotto import topology

__all__ = ["ACCESS_LOG_FORMAT", "HttpApi"]

# No headers, no query strings, no bodies; for SigV4 callers, who they are.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTimeEpoch",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "sourceIp": "$context.identity.sourceIp",
    "caller": "$context.identity.userArn",
    "error": "$context.error.message",
    "integrationError": "$context.integrationErrorMessage",
    "integrationLatency": "$context.integrationLatency",
}


class HttpApi(Construct):
    """An HTTP API whose routes come from ``topology.HTTP_ROUTES``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        functions: Mapping[str, lambda_.IFunction],
        logs_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._logs_key = logs_key
        self.api = self._build_api()
        self._build_stage_settings()
        for spec in topology.HTTP_ROUTES:
            self._build_route(spec, functions[spec.function])

    @property
    def url(self) -> str:
        url = self.api.url
        assert url is not None  # the default stage exists
        return url

    def _build_api(self) -> apigwv2.HttpApi:
        return apigwv2.HttpApi(
            self,
            "Api",
            api_name=f"sotto-{self._settings.stage}-http",
            description="Sotto enrollment and admin API",
            create_default_stage=True,
        )

    def _build_stage_settings(self) -> None:
        access_logs = log_group(self, "AccessLogs", self._settings, self._logs_key)
        stage = self.api.default_stage
        assert stage is not None
        cfn = stage.node.default_child
        assert isinstance(cfn, apigwv2.CfnStage)
        cfn.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        cfn.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=self._settings.http_throttle_rate,
            throttling_burst_limit=self._settings.http_throttle_burst,
            detailed_metrics_enabled=True,
        )
        # The public routes (no credentials) get tighter per-route throttles.
        cfn.route_settings = {
            f"{route.method} {route.path}": {
                "ThrottlingRateLimit": self._settings.public_throttle_rate,
                "ThrottlingBurstLimit": self._settings.public_throttle_burst,
                "DetailedMetricsEnabled": True,
            }
            for route in topology.HTTP_ROUTES
            if not route.iam
        }

    def _build_route(self, spec: topology.HttpRouteSpec, function: lambda_.IFunction) -> None:
        name = _route_name(spec)
        routes = self.api.add_routes(
            path=spec.path,
            methods=[apigwv2.HttpMethod(spec.method)],
            integration=integrations.HttpLambdaIntegration(f"{name}Integration", function),
            authorizer=authorizers.HttpIamAuthorizer() if spec.iam else None,
        )
        if not spec.iam:
            for route in routes:
                acknowledge(
                    route,
                    "AwsSolutions-APIG4",
                    "A public route by design (enrollment and server info); the handler "
                    "authenticates whatever needs it from signed request content.",
                )


def _route_name(spec: topology.HttpRouteSpec) -> str:
    words = re.findall(r"[A-Za-z0-9]+", f"{spec.method} {spec.path}")
    return "".join(word.capitalize() for word in words)
