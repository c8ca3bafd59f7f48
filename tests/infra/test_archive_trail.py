"""The archive bucket's every data event is on a CloudTrail trail (infra/trail.py): who
placed or released a legal hold, extended a lock, read a segment for an export, or
tried to delete one, recorded by AWS rather than by the tool the officer ran.

The local stack has no CloudTrail; the trail is proven in the template.
"""

from __future__ import annotations

from typing import Any

from sotto import topology

from .conftest import Synthesized
from .iam_policy import ACCOUNT, PolicyEvaluator, Request
from .test_keys_and_archive import _key_statements


def _trail(synth: Synthesized) -> dict[str, Any]:
    (trail,) = synth.of_type("AWS::CloudTrail::Trail").values()
    return dict(trail["Properties"])


def test_the_trail_records_every_data_event_of_the_archive_and_nothing_else(synth) -> None:
    trail = _trail(synth)
    (spec,) = [b for b in topology.BUCKETS if b.object_lock]
    archive = synth.logical_id(synth.stack.buckets[spec.logical_id])
    (selector,) = trail["EventSelectors"]
    assert selector["ReadWriteType"] == "All"  # holds and lock changes, and export reads
    assert selector["IncludeManagementEvents"] is False
    (resource,) = selector["DataResources"]
    assert resource["Type"] == "AWS::S3::Object"
    (value,) = resource["Values"]
    assert {"Fn::GetAtt": [archive, "Arn"]} in value["Fn::Join"][1]
    assert value["Fn::Join"][1][-1] == "/"  # every object of the bucket


def test_the_trail_is_validated_encrypted_and_queryable(synth) -> None:
    trail = _trail(synth)
    logs_key = {"Fn::GetAtt": [synth.logical_id(synth.stack.keys["LogsKey"]), "Arn"]}
    assert trail["IsLogging"] is True
    assert trail["EnableLogFileValidation"] is True  # CloudTrail's signed digest chain
    assert trail["KMSKeyId"] == logs_key
    assert "CloudWatchLogsLogGroupArn" in trail
    assert trail["S3BucketName"] == {"Ref": synth.logical_id(synth.stack.trail.bucket)}


def test_cloudtrail_may_encrypt_with_the_logs_key_for_this_accounts_trails_only(synth) -> None:
    (encrypts,) = [s for s in _key_statements(synth, "LogsKey") if s["Sid"] == "CloudTrailEncrypts"]
    evaluator = PolicyEvaluator(synth.template_dict)
    context = "kms:EncryptionContext:aws:cloudtrail:arn"
    ours = {
        context: f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/t",
        "aws:SourceAccount": ACCOUNT,
    }
    theirs = {
        context: "arn:aws:cloudtrail:us-east-1:999999999999:trail/t",
        "aws:SourceAccount": "999999999999",
    }
    assert evaluator.allows([encrypts], Request("kms:GenerateDataKey", "*", ours))
    assert not evaluator.allows([encrypts], Request("kms:GenerateDataKey", "*", theirs))
    assert not evaluator.allows([encrypts], Request("kms:Decrypt", "*", ours))


def test_govcloud_gets_the_same_trail(govcloud_synth) -> None:
    trail = _trail(govcloud_synth)
    assert trail["EnableLogFileValidation"] is True
    assert trail["EventSelectors"][0]["ReadWriteType"] == "All"
