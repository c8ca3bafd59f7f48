"""The synthesized template holds the whole topology, shaped as the issue asks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from sotto import topology

from .conftest import Synthesized

pytestmark = pytest.mark.synth

SCHEDULED = [spec for spec in topology.FUNCTIONS if spec.schedule]
EXPECTED_COUNTS = {
    "AWS::KMS::Key": len(topology.KEYS),
    "AWS::KMS::Alias": len(topology.KEYS),
    "AWS::DynamoDB::Table": len(topology.TABLES),
    # The topology's buckets plus their server-access-log bucket and the archive trail's.
    "AWS::S3::Bucket": len(topology.BUCKETS) + 2,
    "AWS::S3::BucketPolicy": len(topology.BUCKETS) + 2,
    "AWS::Lambda::Function": len(topology.FUNCTIONS),
    "AWS::Lambda::LayerVersion": 1,
    # One per route integration, plus the authorizer's.
    "AWS::Lambda::Permission": len(topology.WS_ROUTES) + len(topology.HTTP_ROUTES) + 1,
    # One per function, one per schedule, API Gateway's account-wide logging
    # role, the key-admin and compliance roles, AWS Backup's, and CloudTrail's delivery
    # to the trail's log group.
    "AWS::IAM::Role": len(topology.FUNCTIONS) + len(SCHEDULED) + 5,
    # The compliance role's archive access.
    "AWS::IAM::ManagedPolicy": 1,
    # CDK's inline policy of CloudTrail's delivery role (its log group only).
    "AWS::IAM::Policy": 1,
    "AWS::Backup::BackupVault": 1,
    "AWS::Backup::BackupPlan": 1,
    "AWS::Backup::BackupSelection": 1,
    # One per function, one access log per API, and the archive trail's.
    "AWS::Logs::LogGroup": len(topology.FUNCTIONS) + 3,
    "AWS::ApiGatewayV2::Api": 2,
    "AWS::ApiGatewayV2::Stage": 2,
    "AWS::ApiGatewayV2::Route": len(topology.WS_ROUTES) + len(topology.HTTP_ROUTES),
    "AWS::ApiGatewayV2::Integration": len(topology.WS_ROUTES) + len(topology.HTTP_ROUTES),
    "AWS::ApiGatewayV2::Authorizer": 1,
    "AWS::ApiGateway::Account": 1,
    "AWS::SQS::Queue": len(topology.QUEUES),
    # CDK's TLS-only policy of each queue.
    "AWS::SQS::QueuePolicy": len(topology.QUEUES),
    "AWS::Lambda::EventSourceMapping": sum(1 for f in topology.FUNCTIONS if f.stream_source),
    # The audit bus, and one EventBridge Scheduler schedule per scheduled function.
    "AWS::Events::EventBus": 1,
    "AWS::Scheduler::Schedule": len(SCHEDULED),
    # The archive bucket's data events (infra/trail.py).
    "AWS::CloudTrail::Trail": 1,
}


def _ws_api_id(synth: Synthesized) -> str:
    return synth.logical_id(synth.stack.websocket.api)


def _http_api_id(synth: Synthesized) -> str:
    return synth.logical_id(synth.stack.http_api.api)


def _routes(synth: Synthesized, api_id: str) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.of_type("AWS::ApiGatewayV2::Route").values()
        if r["Properties"]["ApiId"] == {"Ref": api_id}
    }


def _integration_function(synth: Synthesized, route: dict[str, Any]) -> str:
    """Logical id of the function behind a route's integration."""
    integration_id = route["Target"]["Fn::Join"][1][1]["Ref"]
    uri = synth.resources[integration_id]["Properties"]["IntegrationUri"]
    refs = [part for part in json.dumps(uri).split('"') if part.startswith("Functions")]
    assert refs, uri
    return refs[0]


def _function_id(synth: Synthesized, name: str) -> str:
    return synth.logical_id(synth.stack.functions[name])


def _stage(synth: Synthesized, api_id: str) -> dict[str, Any]:
    stages: list[dict[str, Any]] = [
        r["Properties"]
        for r in synth.of_type("AWS::ApiGatewayV2::Stage").values()
        if r["Properties"]["ApiId"] == {"Ref": api_id}
    ]
    (stage,) = stages
    return stage


# --- nothing disappears silently ---------------------------------------------------


@pytest.mark.parametrize(("resource_type", "count"), sorted(EXPECTED_COUNTS.items()))
def test_template_has_expected_count_of(template: Template, resource_type: str, count: int) -> None:
    template.resource_count_is(resource_type, count)


def test_template_has_no_resource_type_beyond_the_expected(synth: Synthesized) -> None:
    assert {r["Type"] for r in synth.resources.values()} == set(EXPECTED_COUNTS)


# --- WebSocket API -----------------------------------------------------------------


def test_websocket_api_selects_route_on_action_field(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Api",
        {
            "ProtocolType": "WEBSOCKET",
            "RouteSelectionExpression": f"$request.body.{topology.WS_ROUTE_SELECTION_FIELD}",
        },
    )


def test_websocket_routes_are_the_topology_routes(synth: Synthesized) -> None:
    routes = _routes(synth, _ws_api_id(synth))
    assert set(routes) == {spec.route_key for spec in topology.WS_ROUTES}
    for spec in topology.WS_ROUTES:
        assert _integration_function(synth, routes[spec.route_key]) == _function_id(
            synth, spec.function
        )


def test_websocket_authorizer_guards_connect_only(synth: Synthesized) -> None:
    routes = _routes(synth, _ws_api_id(synth))
    (authorizer_id,) = synth.of_type("AWS::ApiGatewayV2::Authorizer")
    for key, route in routes.items():
        if key == "$connect":
            assert route["AuthorizationType"] == "CUSTOM"
            assert route["AuthorizerId"] == {"Ref": authorizer_id}
        else:
            assert route["AuthorizationType"] == "NONE"
            assert "AuthorizerId" not in route


def test_websocket_authorizer_is_request_type_on_the_identity_header(synth: Synthesized) -> None:
    (authorizer,) = synth.of_type("AWS::ApiGatewayV2::Authorizer").values()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST"
    assert props["IdentitySource"] == [
        f"route.request.header.{topology.WS_AUTHORIZER_IDENTITY_HEADER}"
    ]
    assert _function_id(synth, topology.WS_AUTHORIZER) in json.dumps(props["AuthorizerUri"])


def test_websocket_stage_logs_access_without_headers_or_bodies(synth: Synthesized) -> None:
    stage = _stage(synth, _ws_api_id(synth))
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert fields["requestId"] == "$context.requestId"
    text = stage["AccessLogSettings"]["Format"].lower()
    for forbidden in ("authorization", "header", "body", "$input", "querystring"):
        assert forbidden not in text
    settings = stage["DefaultRouteSettings"]
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "OFF"


def test_websocket_stage_is_throttled_and_named_after_the_stage(synth: Synthesized) -> None:
    stage = _stage(synth, _ws_api_id(synth))
    settings = synth.stack.settings
    assert stage["StageName"] == settings.stage
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == settings.ws_throttle_rate
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == settings.ws_throttle_burst


def test_websocket_stage_waits_for_the_account_logging_role(synth: Synthesized) -> None:
    stage_id = synth.logical_id(synth.stack.websocket.stage)
    (account_id,) = synth.of_type("AWS::ApiGateway::Account")
    assert account_id in synth.resources[stage_id].get("DependsOn", [])


# --- HTTP API ----------------------------------------------------------------------


def test_http_routes_are_the_topology_routes(synth: Synthesized) -> None:
    routes = _routes(synth, _http_api_id(synth))
    assert set(routes) == {f"{r.method} {r.path}" for r in topology.HTTP_ROUTES}
    for spec in topology.HTTP_ROUTES:
        route = routes[f"{spec.method} {spec.path}"]
        assert _integration_function(synth, route) == _function_id(synth, spec.function)


def test_http_admin_routes_require_iam_and_others_do_not(synth: Synthesized) -> None:
    routes = _routes(synth, _http_api_id(synth))
    for spec in topology.HTTP_ROUTES:
        expected = "AWS_IAM" if spec.iam else "NONE"
        assert routes[f"{spec.method} {spec.path}"]["AuthorizationType"] == expected


def test_http_stage_logs_access_and_is_throttled(synth: Synthesized) -> None:
    stage = _stage(synth, _http_api_id(synth))
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert fields["requestId"] == "$context.requestId"
    assert "authorization" not in stage["AccessLogSettings"]["Format"].lower()
    settings = synth.stack.settings
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == settings.http_throttle_rate
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == settings.http_throttle_burst


def test_lambda_permissions_are_scoped_to_their_api(synth: Synthesized) -> None:
    apis = {_ws_api_id(synth), _http_api_id(synth)}
    for permission in synth.of_type("AWS::Lambda::Permission").values():
        props = permission["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com"
        assert any(api in json.dumps(props["SourceArn"]) for api in apis)


# --- tables ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", topology.TABLES, ids=lambda s: s.logical_id)
def test_table_matches_topology(synth: Synthesized, spec: topology.TableSpec) -> None:
    props = synth.resources[synth.logical_id(synth.stack.tables[spec.logical_id])]["Properties"]
    key_schema = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
    if spec.sort_key:
        key_schema.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
    assert props["KeySchema"] == key_schema
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == (
        spec.attributes
    )
    indexes = {ix["IndexName"]: ix for ix in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {ix.name for ix in spec.indexes}
    for ix in spec.indexes:
        schema = [{"AttributeName": ix.partition_key, "KeyType": "HASH"}]
        if ix.sort_key:
            schema.append({"AttributeName": ix.sort_key, "KeyType": "RANGE"})
        assert indexes[ix.name]["KeySchema"] == schema
        assert indexes[ix.name]["Projection"] == {"ProjectionType": "ALL"}
    if spec.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }
    if spec.stream:
        assert props["StreamSpecification"] == {"StreamViewType": spec.stream}
    else:
        assert "StreamSpecification" not in props


def test_tables_are_on_demand_with_pitr_under_the_data_key(synth: Synthesized) -> None:
    data_key = synth.logical_id(synth.stack.keys["DataKey"])
    for table in synth.of_type("AWS::DynamoDB::Table").values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {
            "SSEEnabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": {"Fn::GetAtt": [data_key, "Arn"]},
        }


def test_dev_stage_tables_are_unprotected_and_destroyed(synth: Synthesized) -> None:
    assert not synth.stack.settings.is_prod
    for table in synth.of_type("AWS::DynamoDB::Table").values():
        assert table["Properties"]["DeletionProtectionEnabled"] is False
        assert table["DeletionPolicy"] == "Delete"


# --- buckets and keys --------------------------------------------------------------


def _bucket(synth: Synthesized, logical_id: str) -> dict[str, Any]:
    resource: dict[str, Any] = synth.resources[synth.logical_id(synth.stack.buckets[logical_id])]
    return resource


@pytest.mark.parametrize("spec", topology.BUCKETS, ids=lambda s: s.logical_id)
def test_bucket_is_private_versioned_and_kms_encrypted(
    synth: Synthesized, spec: topology.BucketSpec
) -> None:
    bucket = _bucket(synth, spec.logical_id)
    props = bucket["Properties"]
    key = synth.logical_id(synth.stack.keys[spec.kms_key])
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["BucketKeyEnabled"] is True
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
    }
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"),
        True,
    )
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "LoggingConfiguration" in props
    assert bucket["DeletionPolicy"] == "Retain"


def test_buckets_deny_requests_without_tls(template: Template, synth: Synthesized) -> None:
    for spec in topology.BUCKETS:
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": synth.logical_id(synth.stack.buckets[spec.logical_id])},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_attachments_bucket_cleans_up_uploads_and_old_versions(synth: Synthesized) -> None:
    (spec,) = [b for b in topology.BUCKETS if not b.object_lock]
    rules = _bucket(synth, spec.logical_id)["Properties"]["LifecycleConfiguration"]["Rules"]
    settings = synth.stack.settings
    assert {
        "Id": "abort-incomplete-uploads",
        "AbortIncompleteMultipartUpload": {
            "DaysAfterInitiation": settings.abort_incomplete_upload_days
        },
        "Status": "Enabled",
    } in rules
    assert {
        "Id": "expire-noncurrent-versions",
        "NoncurrentVersionExpiration": {
            "NoncurrentDays": settings.attachments_noncurrent_version_days
        },
        "Status": "Enabled",
    } in rules


def test_dev_stage_archive_locks_in_governance_mode_for_a_day(synth: Synthesized) -> None:
    # Test stages must not create objects nobody can delete for seven years;
    # tests/infra/test_govcloud.py checks COMPLIANCE mode in a prod stage.
    (spec,) = [b for b in topology.BUCKETS if b.object_lock]
    props = _bucket(synth, spec.logical_id)["Properties"]
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {
            "DefaultRetention": {
                "Mode": "GOVERNANCE",
                "Days": synth.stack.settings.dev_archive_retention_days,
            }
        },
    }


def test_kms_keys_rotate_and_are_retained(synth: Synthesized) -> None:
    keys = synth.of_type("AWS::KMS::Key")
    assert keys
    for key in keys.values():
        assert key["Properties"]["EnableKeyRotation"] is True
        assert key["DeletionPolicy"] == "Retain"


def test_kms_aliases_come_from_topology_per_stage(synth: Synthesized) -> None:
    stage = synth.stack.settings.stage
    aliases = {
        a["Properties"]["AliasName"]: a["Properties"]["TargetKeyId"]
        for a in synth.of_type("AWS::KMS::Alias").values()
    }
    assert aliases == {
        f"alias/{spec.alias}/{stage}": {
            "Fn::GetAtt": [synth.logical_id(synth.stack.keys[spec.logical_id]), "Arn"]
        }
        for spec in topology.KEYS
    }


# --- outputs -----------------------------------------------------------------------


def test_outputs_give_endpoints_bucket_and_table_names(synth: Synthesized) -> None:
    outputs = synth.template_dict["Outputs"]
    expected = {"WebSocketUrl", "ConnectionsUrl", "HttpApiUrl"}
    expected |= {"ComplianceRoleArn", "KeyAdminRoleArn", "BackupVaultName", "AuditBusName"}
    expected |= {f"{b.logical_id}Name" for b in topology.BUCKETS}
    expected |= {f"{t.logical_id}Name" for t in topology.TABLES}
    assert set(outputs) == expected
    ws = json.dumps(outputs["WebSocketUrl"]["Value"])
    assert '"wss://"' in ws
    assert _ws_api_id(synth) in ws
    connections = outputs["ConnectionsUrl"]["Value"]["Fn::Join"][1]
    assert connections[0] == "https://"
    assert connections[-1] == f"/{synth.stack.settings.stage}/@connections"
    assert _http_api_id(synth) in json.dumps(outputs["HttpApiUrl"]["Value"])
    for spec in topology.BUCKETS:
        ref = {"Ref": synth.logical_id(synth.stack.buckets[spec.logical_id])}
        assert outputs[f"{spec.logical_id}Name"]["Value"] == ref
    for table in topology.TABLES:
        ref = {"Ref": synth.logical_id(synth.stack.tables[table.logical_id])}
        assert outputs[f"{table.logical_id}Name"]["Value"] == ref


def test_audit_events_go_to_their_own_bus_from_the_functions_that_record(
    synth: Synthesized,
) -> None:
    (bus_id, bus) = next(iter(synth.of_type("AWS::Events::EventBus").items()))
    assert bus["Properties"]["Name"] == f"sotto-{synth.stack.settings.stage}-audit"
    publishers = {spec.name for spec in topology.FUNCTIONS if spec.publishes_audit_events}
    assert publishers == {"admin", "enroll", "keys"}
    for spec in topology.FUNCTIONS:
        function = synth.resources[synth.logical_id(synth.stack.functions[spec.name])]
        role = synth.resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        statements = [
            s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
        ]
        put = [s for s in statements if "events:PutEvents" in json.dumps(s["Action"])]
        if spec.name in publishers:
            assert put == [
                {
                    "Sid": "PublishAuditEvents",
                    "Effect": "Allow",
                    "Action": "events:PutEvents",
                    "Resource": {"Fn::GetAtt": [bus_id, "Arn"]},
                }
            ]
        else:
            assert put == []


def test_the_sealer_runs_on_a_schedule_and_writes_only_audit_objects(synth: Synthesized) -> None:
    (schedule,) = synth.of_type("AWS::Scheduler::Schedule").values()
    sealer = synth.logical_id(synth.stack.functions["audit_sealer"])
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert schedule["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [sealer, "Arn"]}
    role = synth.resources[synth.resources[sealer]["Properties"]["Role"]["Fn::GetAtt"][0]]
    statements = {
        s["Sid"]: s
        for p in role["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
    }
    archive = synth.logical_id(synth.stack.buckets["ArchiveBucket"])
    assert statements["WriteArchivePrefixes"]["Action"] == "s3:PutObject"
    assert statements["WriteArchivePrefixes"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [archive, "Arn"]}, "/audit/*"]]
    }
    encrypt = statements["EncryptArchiveThroughS3"]
    assert encrypt["Action"] == "kms:GenerateDataKey"  # never Decrypt
    archive_key = synth.logical_id(synth.stack.keys["ArchiveKey"])
    assert encrypt["Resource"] == {"Fn::GetAtt": [archive_key, "Arn"]}
    invoke_role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    invoke = synth.resources[invoke_role_id]["Properties"]["Policies"][0]["PolicyDocument"]
    assert invoke["Statement"] == [
        {
            "Sid": "InvokeScheduledFunction",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": {"Fn::GetAtt": [sealer, "Arn"]},
        }
    ]
