"""Functions: runtime, layers, environment, and one least-privilege role each."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import packaging
from infra.functions import ADMIN_PRINCIPALS_ENV
from sotto import topology

from .conftest import Synthesized

pytestmark = pytest.mark.synth

FUNCTION_IDS = [spec.name for spec in topology.FUNCTIONS]


def _function(synth: Synthesized, spec: topology.FunctionSpec) -> dict[str, Any]:
    props: dict[str, Any] = synth.resources[synth.logical_id(synth.stack.functions[spec.name])][
        "Properties"
    ]
    return props


def _role(synth: Synthesized, spec: topology.FunctionSpec) -> dict[str, Any]:
    role_id = _function(synth, spec)["Role"]["Fn::GetAtt"][0]
    role: dict[str, Any] = synth.resources[role_id]
    return role


def _statements(synth: Synthesized, spec: topology.FunctionSpec) -> list[dict[str, Any]]:
    (policy,) = _role(synth, spec)["Properties"]["Policies"]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _resources(statement: dict[str, Any]) -> list[Any]:
    resources = statement["Resource"]
    return resources if isinstance(resources, list) else [resources]


def _table_ids(synth: Synthesized, logical_ids: tuple[str, ...]) -> set[str]:
    return {synth.logical_id(synth.stack.tables[t]) for t in logical_ids}


def _granted_tables(statement: dict[str, Any]) -> set[str]:
    found = set()
    for resource in _resources(statement):
        text = json.dumps(resource)
        found |= {part for part in text.split('"') if part.startswith("Tables")}
    return found


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_runs_handler_on_arm64_newest_python(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    props = _function(synth, spec)
    assert props["Handler"] == spec.handler
    assert props["Runtime"] == f"python{synth.stack.settings.python_runtime}"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == spec.memory_mb
    assert props["Timeout"] == spec.timeout_seconds


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_uses_only_the_stacks_own_dependency_layer(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    (dependency_layer,) = synth.of_type("AWS::Lambda::LayerVersion")
    # No public layer of another account (Powertools' lives in the commercial partition).
    assert _function(synth, spec)["Layers"] == [{"Ref": dependency_layer}]


def test_dependency_layer_bundles_powertools_and_pydantic() -> None:
    pins = {
        line.split("==")[0]
        for line in packaging.LAYER_REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert {"aws-lambda-powertools", "pydantic", "pydantic-core", "cryptography"} <= pins


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_traces_actively_and_public_ones_reserve_concurrency(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    props = _function(synth, spec)
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props.get("ReservedConcurrentExecutions") == spec.reserved_concurrency
    public = {r.function for r in topology.HTTP_ROUTES if not r.iam} | {topology.WS_AUTHORIZER}
    assert (spec.reserved_concurrency is not None) == (spec.name in public)


def test_dependency_layer_targets_the_function_runtime_and_arm64(synth: Synthesized) -> None:
    (layer,) = synth.of_type("AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == [
        f"python{synth.stack.settings.python_runtime}"
    ]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_environment_names_its_tables_and_nothing_else(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    env = _function(synth, spec)["Environment"]["Variables"]
    expected: dict[str, Any] = {
        "POWERTOOLS_SERVICE_NAME": "sotto",
        "POWERTOOLS_METRICS_NAMESPACE": "Sotto",
        "SOTTO_STAGE": synth.stack.settings.stage,
        "SOTTO_RATE_LIMIT_SCALE": str(synth.stack.settings.rate_limit_scale),
    }
    ws_api = synth.logical_id(synth.stack.websocket.api)
    stage = synth.stack.settings.stage
    assert env.pop("SOTTO_WS_AUDIENCE") == {"Fn::Join": ["", [{"Ref": ws_api}, f"/{stage}"]]}
    websocket_url = json.dumps(env.pop("SOTTO_WEBSOCKET_URL"))
    assert websocket_url.startswith('{"Fn::Join": ["", ["wss://", {"Ref": "' + ws_api)
    for table in {*spec.tables_read, *spec.tables_write}:
        expected[topology.table(table).env_var] = {
            "Ref": synth.logical_id(synth.stack.tables[table])
        }
    for written in spec.buckets_write:
        bucket_spec = next(b for b in topology.BUCKETS if b.logical_id == written)
        key_spec = next(k for k in topology.KEYS if k.logical_id == bucket_spec.kms_key)
        expected[bucket_spec.env_var] = {"Ref": synth.logical_id(synth.stack.buckets[written])}
        expected[key_spec.env_var] = {
            "Fn::GetAtt": [synth.logical_id(synth.stack.keys[bucket_spec.kms_key]), "Arn"]
        }
    for bucket_id in spec.s3_actions:
        bucket = next(b for b in topology.BUCKETS if b.logical_id == bucket_id)
        expected[bucket.env_var] = {"Ref": synth.logical_id(synth.stack.buckets[bucket_id])}
        key = next(k for k in topology.KEYS if k.logical_id == bucket.kms_key)
        expected[key.env_var] = {
            "Fn::GetAtt": [synth.logical_id(synth.stack.keys[bucket.kms_key]), "Arn"]
        }
    if any(route.iam and route.function == spec.name for route in topology.HTTP_ROUTES):
        expected[ADMIN_PRINCIPALS_ENV] = ",".join(synth.stack.settings.admin_principals)
    if spec.publishes_audit_events:
        expected["SOTTO_AUDIT_BUS"] = {"Ref": synth.logical_id(synth.stack.audit_bus)}
    if spec.archive_prefixes:
        archive = synth.logical_id(synth.stack.buckets["ArchiveBucket"])
        expected["SOTTO_ARCHIVE_BUCKET"] = {"Ref": archive}
    if spec.manages_connections:
        expected["AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"] = {
            "Fn::Join": [
                "",
                [
                    "https://",
                    {"Ref": ws_api},
                    ".execute-api.",
                    {"Ref": "AWS::Region"},
                    ".",
                    {"Ref": "AWS::URLSuffix"},
                    f"/{synth.stack.settings.stage}",
                ],
            ]
        }
    assert env == expected


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_logs_to_its_own_retained_log_group(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    log_group_id = _function(synth, spec)["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synth.resources[log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == synth.stack.settings.log_retention_days
    (logs,) = [s for s in _statements(synth, spec) if s["Sid"] == "WriteOwnLogs"]
    assert _resources(logs) == [{"Fn::GetAtt": [log_group_id, "Arn"]}]


# --- least privilege ---------------------------------------------------------------


def test_every_function_has_a_role_of_its_own(synth: Synthesized) -> None:
    roles = [_function(synth, spec)["Role"]["Fn::GetAtt"][0] for spec in topology.FUNCTIONS]
    assert len(set(roles)) == len(roles)


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_role_has_only_inline_actions_without_wildcards(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    role = _role(synth, spec)["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        }
    ]
    assert "ManagedPolicyArns" not in role
    for statement in _statements(synth, spec):
        assert statement["Effect"] == "Allow"
        assert all("*" not in action for action in _actions(statement)), statement
        if statement["Sid"] == "WriteTraces":  # X-Ray has no resource-level permissions
            assert sorted(_actions(statement)) == [
                "xray:PutTelemetryRecords",
                "xray:PutTraceSegments",
            ]
            continue
        assert "*" not in _resources(statement), statement
    # No separate AWS::IAM::Policy attaches more to the role.
    role_id = _function(synth, spec)["Role"]["Fn::GetAtt"][0]
    assert role_id not in json.dumps(synth.of_type("AWS::IAM::Policy"))


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_role_grants_exactly_its_declared_dynamodb_actions(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    granted: dict[str, set[str]] = {}
    for statement in _statements(synth, spec):
        actions = {a for a in _actions(statement) if a.startswith("dynamodb:")}
        for resource in _resources(statement) if actions else ():
            if "StreamArn" in json.dumps(resource):
                continue  # a stream's reader is the Lambda service, not the handler
            granted.setdefault(json.dumps(resource, sort_keys=True), set()).update(actions)
    expected: dict[str, set[str]] = {}
    for target, declared in spec.dynamodb_actions.items():
        logical_id, _, index = target.partition("/")
        arn: Any = {"Fn::GetAtt": [synth.logical_id(synth.stack.tables[logical_id]), "Arn"]}
        if index:
            arn = {"Fn::Join": ["", [arn, f"/index/{index}"]]}
        expected[json.dumps(arn, sort_keys=True)] = {f"dynamodb:{a}" for a in declared}
    assert granted == expected


def test_public_enrollment_may_not_delete_scan_or_batch_write_the_directory() -> None:
    actions = set(topology.function("enroll").dynamodb_actions["DirectoryTable"])
    assert not actions & {"DeleteItem", "BatchWriteItem", "Scan"}


def test_only_the_admin_function_may_scan() -> None:
    scanners = {
        s.name for s in topology.FUNCTIONS for a in s.dynamodb_actions.values() if "Scan" in a
    }
    assert scanners == {"admin"}


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_uses_data_key_only_through_dynamodb_of_this_account(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    kms = [
        s
        for s in _statements(synth, spec)
        if any(a.startswith("kms:") for a in _actions(s))
        # A bucket's key through S3: test_keys_and_archive.py and the file objects test.
        and "ThroughS3" not in str(s.get("Sid", ""))
    ]
    if not spec.dynamodb_actions:
        assert kms == []
        return
    (statement,) = kms
    data_key = synth.logical_id(synth.stack.keys["DataKey"])
    assert _resources(statement) == [{"Fn::GetAtt": [data_key, "Arn"]}]
    encrypt = {"kms:Encrypt", "kms:GenerateDataKey"} & set(_actions(statement))
    assert bool(encrypt) == bool(spec.tables_write)
    assert statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {
                "Fn::Join": [
                    "",
                    ["dynamodb.", {"Ref": "AWS::Region"}, ".", {"Ref": "AWS::URLSuffix"}],
                ]
            },
            "kms:CallerAccount": {"Ref": "AWS::AccountId"},
        }
    }


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_function_reaches_file_objects_only_as_topology_declares(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    # Archive writes (segments, sealed audit) are the archive's: test_keys_and_archive.py.
    statements = [
        s for s in _statements(synth, spec) if not str(s.get("Sid", "")).startswith("Write")
    ]
    s3 = sorted(a for s in statements for a in _actions(s) if a.startswith("s3:"))
    declared = sorted(f"s3:{a}" for actions in spec.s3_actions.values() for a in actions)
    assert s3 == declared
    through_s3 = [s for s in statements if s.get("Sid") == "UseDataKeyThroughS3AttachmentsBucket"]
    reads_or_writes = {"PutObject", "GetObject"} & set(spec.s3_actions.get("AttachmentsBucket", ()))
    assert bool(through_s3) == bool(reads_or_writes)
    for statement in through_s3:
        # SSE-KMS on the caller's behalf, through S3 only: never a direct use of the key.
        assert statement["Condition"]["StringEquals"]["kms:ViaService"] == {
            "Fn::Join": ["", ["s3.", {"Ref": "AWS::Region"}, ".", {"Ref": "AWS::URLSuffix"}]]
        }
    for statement in statements:
        object_actions = [
            a
            for a in _actions(statement)
            if a.startswith("s3:") and a[3:] not in topology.S3_BUCKET_ACTIONS
        ]
        if object_actions:
            (resource,) = _resources(statement)
            assert resource["Fn::Join"][1][-1] == "/f/*"  # the file prefix, not the whole bucket


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=FUNCTION_IDS)
def test_connection_managers_may_use_only_their_methods_on_this_stage(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    manage = [s for s in _statements(synth, spec) if "execute-api:ManageConnections" in _actions(s)]
    if not spec.manages_connections:
        assert manage == []
        return
    (statement,) = manage
    assert _actions(statement) == ["execute-api:ManageConnections"]
    methods = []
    for resource in _resources(statement):
        parts = resource["Fn::Join"][1]
        assert {"Ref": synth.logical_id(synth.stack.websocket.api)} in parts
        stage, method, rest = parts[-1].lstrip("/").split("/", 2)
        assert (stage, rest) == (synth.stack.settings.stage, "@connections/*")
        methods.append(method)
    assert sorted(methods) == sorted(spec.connection_methods)


def test_only_who_revokes_or_cuts_off_may_close_sockets() -> None:
    """The admin API (suspend, revoke), the directory stream's second sweep, and each
    WebSocket route function for a caller its standing check refuses; nobody else."""
    closers = {
        s.name
        for s in topology.FUNCTIONS
        if s.manages_connections and "DELETE" in s.connection_methods
    }
    frame_routes = {r.function for r in topology.WS_ROUTES if not r.route_key.startswith("$")}
    assert closers == {"admin", "rosters", "default"} | frame_routes
    assert "enroll" not in closers


def test_function_spec_refuses_a_table_without_declared_actions() -> None:
    with pytest.raises(ValueError, match="dynamodb_actions must name exactly"):
        topology.FunctionSpec(name="new", handler="m.h", tables_read=("DirectoryTable",))


def test_function_spec_refuses_writes_to_a_read_only_table() -> None:
    with pytest.raises(ValueError, match="read-only"):
        topology.FunctionSpec(
            name="new",
            handler="m.h",
            tables_read=("DirectoryTable",),
            dynamodb_actions={"DirectoryTable": ("GetItem", "PutItem")},
        )


def test_function_spec_refuses_an_unknown_index() -> None:
    with pytest.raises(ValueError, match="known index"):
        topology.FunctionSpec(
            name="new",
            handler="m.h",
            tables_read=("ConnectionsTable",),
            dynamodb_actions={
                "ConnectionsTable": ("GetItem",),
                "ConnectionsTable/nope": ("Query",),
            },
        )
