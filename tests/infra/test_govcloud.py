"""The stack deploys in AWS GovCloud (US): a prod stage pinned to us-gov-west-1.

Pinned to a region, CDK writes the partition literally, so any ARN that
assumes the commercial partition, and any layer of another account, shows
in the template text. cfn-lint checks it against both GovCloud regions'
resource schemas (runtimes included).
"""

from __future__ import annotations

import json
import re

import pytest
from cfnlint.api import ManualArgs, lint_file

from sotto import topology

from .conftest import GOVCLOUD_CONTEXT, Synthesized
from .test_cfn_lint import ALLOWED_WARNINGS

pytestmark = pytest.mark.synth

GOVCLOUD_REGIONS = ["us-gov-west-1", "us-gov-east-1"]


def test_govcloud_template_names_no_arn_of_another_partition(
    govcloud_synth: Synthesized,
) -> None:
    text = json.dumps(govcloud_synth.template_dict)
    partitions = set(re.findall(r"arn:(aws[a-z-]*):", text))
    assert partitions == {"aws-us-gov"}, partitions
    assert "017000801446" not in text  # the public Powertools layer's account


def test_govcloud_functions_use_only_the_stacks_own_layer(govcloud_synth: Synthesized) -> None:
    (layer,) = govcloud_synth.of_type("AWS::Lambda::LayerVersion")
    for function in govcloud_synth.of_type("AWS::Lambda::Function").values():
        assert function["Properties"]["Layers"] == [{"Ref": layer}]


def test_govcloud_template_is_cfn_lint_clean_in_both_govcloud_regions(
    govcloud_synth: Synthesized,
) -> None:
    matches = lint_file(govcloud_synth.template_path, config=ManualArgs(regions=GOVCLOUD_REGIONS))
    findings = [
        str(m)
        for m in matches
        if m.rule.id.startswith("E")
        or (m.rule.id.startswith("W") and m.rule.id not in ALLOWED_WARNINGS)
    ]
    assert findings == []


def test_prod_stage_archive_is_worm_in_compliance_mode(govcloud_synth: Synthesized) -> None:
    (spec,) = [b for b in topology.BUCKETS if b.object_lock]
    bucket = govcloud_synth.logical_id(govcloud_synth.stack.buckets[spec.logical_id])
    props = govcloud_synth.resources[bucket]["Properties"]
    assert props["ObjectLockConfiguration"]["Rule"] == {
        "DefaultRetention": {
            "Mode": "COMPLIANCE",
            "Days": govcloud_synth.stack.settings.archive_retention_days,
        }
    }


def test_prod_stage_backup_vault_lock_becomes_immutable(govcloud_synth: Synthesized) -> None:
    (vault,) = govcloud_synth.of_type("AWS::Backup::BackupVault").values()
    lock = vault["Properties"]["LockConfiguration"]
    assert lock["ChangeableForDays"] >= 3
    assert lock["MinRetentionDays"] == govcloud_synth.stack.settings.backup_retention_days
    assert vault["DeletionPolicy"] == "Retain"


def test_prod_stage_admits_only_the_named_admin_principals(govcloud_synth: Synthesized) -> None:
    admin = govcloud_synth.logical_id(govcloud_synth.stack.functions["admin"])
    env = govcloud_synth.resources[admin]["Properties"]["Environment"]["Variables"]
    assert env["SOTTO_ADMIN_PRINCIPALS"] == ",".join(GOVCLOUD_CONTEXT["admin_principals"])


def test_archive_replicates_to_the_configured_bucket_under_its_key(
    govcloud_synth: Synthesized,
) -> None:
    (spec,) = [b for b in topology.BUCKETS if b.object_lock]
    bucket = govcloud_synth.logical_id(govcloud_synth.stack.buckets[spec.logical_id])
    replication = govcloud_synth.resources[bucket]["Properties"]["ReplicationConfiguration"]
    role = govcloud_synth.stack.access.replication
    assert role is not None
    assert replication["Role"] == {"Fn::GetAtt": [govcloud_synth.logical_id(role), "Arn"]}
    (rule,) = replication["Rules"]
    assert rule["Destination"]["Bucket"] == GOVCLOUD_CONTEXT["archive_replica_bucket_arn"]
    assert rule["Destination"]["EncryptionConfiguration"] == {
        "ReplicaKmsKeyID": GOVCLOUD_CONTEXT["archive_replica_key_arn"]
    }
    assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"] == {"Status": "Enabled"}


def test_replication_is_the_only_other_reader_of_the_archive_key(
    govcloud_synth: Synthesized,
) -> None:
    key = govcloud_synth.logical_id(govcloud_synth.stack.keys["ArchiveKey"])
    statements = govcloud_synth.resources[key]["Properties"]["KeyPolicy"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    access = govcloud_synth.stack.access
    assert access.replication is not None
    readers = [
        {"Fn::GetAtt": [govcloud_synth.logical_id(role), "Arn"]}
        for role in (access.compliance, access.replication)
    ]
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": readers}}
    (replication,) = [s for s in statements if s.get("Sid") == "ReplicationReadsThroughS3"]
    assert replication["Action"] == "kms:Decrypt"
    assert "kms:ViaService" in replication["Condition"]["StringEquals"]
