"""The local stack's tables equal the synthesized template's (keys, indexes, TTL, streams).

Both are built from ``sotto.topology``; this test catches either side drifting
from it, or from the other.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from sotto import topology
from sotto.local.aws import table_shape

pytestmark = pytest.mark.synth

TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")


def template_table(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """The table resource whose CloudFormation logical id is CDK's for ``logical_id``."""
    # CDK names a resource by its construct path plus an 8-digit hash.
    pattern = re.compile(rf"^[A-Za-z0-9]*{logical_id}[0-9A-F]{{8}}$")
    found = [
        resource
        for name, resource in template["Resources"].items()
        if resource["Type"] in TABLE_TYPES and pattern.match(name)
    ]
    assert len(found) == 1, f"expected one table for {logical_id}, found {len(found)}"
    table: dict[str, Any] = found[0]
    return table


def shape_from_template(resource: dict[str, Any]) -> dict[str, Any]:
    props = resource["Properties"]
    stream = props.get("StreamSpecification") or {}
    ttl = props.get("TimeToLiveSpecification") or {}
    billing = props.get("BillingMode", "PROVISIONED")
    return {
        "keys": {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]},
        "attributes": {
            a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]
        },
        "indexes": {
            index["IndexName"]: {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            for index in props.get("GlobalSecondaryIndexes", [])
        },
        "ttl": ttl.get("AttributeName") if ttl.get("Enabled") else None,
        "stream": stream.get("StreamViewType"),
        "billing": billing,
    }


def local_shapes(stack) -> dict[str, dict[str, Any]]:
    dynamodb = stack.client("dynamodb")
    shapes = {}
    for spec in topology.TABLES:
        name = stack.table(spec.logical_id)
        description = dynamodb.describe_table(TableName=name)["Table"]
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        enabled = ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        shapes[spec.logical_id] = table_shape(
            description, ttl.get("AttributeName") if enabled else None
        )
    return shapes


def test_local_tables_equal_the_synthesized_tables(stack, template_dict):
    local = local_shapes(stack)
    deployed = {
        spec.logical_id: shape_from_template(template_table(template_dict, spec.logical_id))
        for spec in topology.TABLES
    }
    assert local == deployed


def test_every_template_table_is_declared_in_topology(template_dict):
    tables = [r for r in template_dict["Resources"].values() if r["Type"] in TABLE_TYPES]
    assert len(tables) == len(topology.TABLES)


def test_local_tables_have_pitr_and_customer_key(stack):
    dynamodb = stack.client("dynamodb")
    data_key = stack.endpoints["resources"]["keys"]["DataKey"]
    for spec in topology.TABLES:
        name = stack.table(spec.logical_id)
        backups = dynamodb.describe_continuous_backups(TableName=name)
        pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
        sse = dynamodb.describe_table(TableName=name)["Table"]["SSEDescription"]
        assert sse["SSEType"] == "KMS"
        assert sse["KMSMasterKeyArn"] == data_key


def test_local_bucket_policy_defaults_equal_cdk_context():
    import json
    from pathlib import Path

    from sotto.local import aws

    context = json.loads((Path(__file__).parents[2] / "cdk.json").read_text())["context"]
    assert context["dev_archive_retention_days"] == aws.ARCHIVE_RETENTION_DAYS
    assert aws.ARCHIVE_LOCK_MODE == "GOVERNANCE"  # "local" is not a prod stage
    assert context["attachments_noncurrent_version_days"] == aws.NONCURRENT_VERSION_DAYS
    assert context["abort_incomplete_upload_days"] == aws.ABORT_INCOMPLETE_UPLOAD_DAYS
