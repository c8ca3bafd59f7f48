"""Key policies and the archive bucket policy, as written in the template.

moto enforces neither key policies nor Object Lock compliance, so these
tests read the statements themselves and evaluate them (``iam_policy``)
against the requests an attacker, an admin or the archiver would send.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.keys import ADMIN_ACTIONS
from sotto import topology

from .conftest import Synthesized
from .iam_policy import ACCOUNT, PolicyEvaluator, Request

pytestmark = pytest.mark.synth

_USE = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant"}
ADMIN_ELSEWHERE = f"arn:aws:iam::{ACCOUNT}:role/AccountAdministrator"
_TLS = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3"}


def _key_statements(synth: Synthesized, logical_id: str) -> list[dict[str, Any]]:
    key = synth.resources[synth.logical_id(synth.stack.keys[logical_id])]
    statements: list[dict[str, Any]] = key["Properties"]["KeyPolicy"]["Statement"]
    return statements


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _root(principal: Any) -> bool:
    return "iam::" in str(principal) and ":root" in str(principal)


def _role_arn(synth: Synthesized, role: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(role), "Arn"]}


@pytest.mark.parametrize("spec", topology.KEYS, ids=lambda s: s.logical_id)
def test_no_key_lets_an_iam_policy_alone_grant_its_use(
    synth: Synthesized, spec: topology.KeySpec
) -> None:
    for statement in _key_statements(synth, spec.logical_id):
        actions = set(_list(statement["Action"]))
        assert "kms:*" not in actions
        principal = statement["Principal"]
        if statement["Effect"] == "Allow" and _root(principal.get("AWS")):
            # The account may delegate use to IAM only through a named AWS service.
            condition = statement["Condition"]["StringEquals"]
            assert "kms:ViaService" in condition, statement
            assert condition["kms:CallerAccount"] == {"Ref": "AWS::AccountId"}


@pytest.mark.parametrize("spec", topology.KEYS, ids=lambda s: s.logical_id)
def test_key_is_administered_by_the_key_admin_and_deployment_roles_who_cannot_use_it(
    synth: Synthesized, spec: topology.KeySpec
) -> None:
    (admin,) = [
        s for s in _key_statements(synth, spec.logical_id) if s["Sid"] == "KeyAdministration"
    ]
    assert set(_list(admin["Action"])) == set(ADMIN_ACTIONS)
    assert not {a.rstrip("*") for a in ADMIN_ACTIONS} & _USE
    principals = _list(admin["Principal"]["AWS"])
    assert _role_arn(synth, synth.stack.access.key_admin) in principals
    assert {"Fn::Sub": synth.stack.synthesizer.cloud_formation_execution_role_arn} in principals  # type: ignore[attr-defined]


def test_only_the_compliance_role_decrypts_the_archive(synth: Synthesized) -> None:
    statements = _key_statements(synth, "ArchiveKey")
    compliance = _role_arn(synth, synth.stack.access.compliance)
    decrypters = [
        s for s in statements if s["Effect"] == "Allow" and "kms:Decrypt" in _list(s["Action"])
    ]
    assert [s["Principal"] for s in decrypters] == [{"AWS": compliance}]
    evaluator = PolicyEvaluator(synth.template_dict)
    compliance_arn = evaluator.resolve(compliance)
    for action in ("kms:Decrypt", "kms:ReEncryptFrom", "kms:CreateGrant"):
        for who, denied in ((ADMIN_ELSEWHERE, True), (compliance_arn, False)):
            request = Request(action, "*", {"aws:PrincipalArn": who})
            assert evaluator.denies(statements, request) is denied, (action, who)


def test_the_account_may_encrypt_to_the_archive_only_through_s3(synth: Synthesized) -> None:
    statements = _key_statements(synth, "ArchiveKey")
    (archiver,) = [s for s in statements if s["Sid"] == "ArchiverEncryptsThroughS3Only"]
    assert set(_list(archiver["Action"])) == {"kms:GenerateDataKey", "kms:DescribeKey"}
    evaluator = PolicyEvaluator(synth.template_dict)
    through_s3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:CallerAccount": ACCOUNT}
    direct = {"kms:CallerAccount": ACCOUNT}
    assert evaluator.allows([archiver], Request("kms:GenerateDataKey", "*", through_s3))
    assert not evaluator.allows([archiver], Request("kms:GenerateDataKey", "*", direct))


def test_logs_key_serves_cloudwatch_logs_of_this_account_and_region(synth: Synthesized) -> None:
    (logs,) = [s for s in _key_statements(synth, "LogsKey") if s["Sid"] == "CloudWatchLogsEncrypts"]
    assert "logs." in str(logs["Principal"]["Service"])
    evaluator = PolicyEvaluator(synth.template_dict)
    ours = {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:x"}
    theirs = {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:999999999999:log-group:x"
    }
    assert evaluator.allows([logs], Request("kms:GenerateDataKey", "*", ours))
    assert not evaluator.allows([logs], Request("kms:GenerateDataKey", "*", theirs))


def test_every_log_group_is_encrypted_with_the_logs_key(synth: Synthesized) -> None:
    key = {"Fn::GetAtt": [synth.logical_id(synth.stack.keys["LogsKey"]), "Arn"]}
    groups = synth.of_type("AWS::Logs::LogGroup")
    assert groups
    assert all(g["Properties"]["KmsKeyId"] == key for g in groups.values())


# --- the archive bucket policy ----------------------------------------------------


def _archive(synth: Synthesized) -> tuple[PolicyEvaluator, list[dict[str, Any]], str, str]:
    (spec,) = [b for b in topology.BUCKETS if b.object_lock]
    bucket_id = synth.logical_id(synth.stack.buckets[spec.logical_id])
    (policy,) = [
        p
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    evaluator = PolicyEvaluator(synth.template_dict)
    bucket_arn = evaluator.resolve({"Fn::GetAtt": [bucket_id, "Arn"]})
    key_arn = evaluator.resolve(
        {"Fn::GetAtt": [synth.logical_id(synth.stack.keys[spec.kms_key]), "Arn"]}
    )
    return evaluator, policy["Properties"]["PolicyDocument"]["Statement"], bucket_arn, key_arn


def _put(bucket_arn: str, **context: str) -> Request:
    return Request("s3:PutObject", f"{bucket_arn}/segment/1", {**_TLS, **context})


def test_archive_accepts_an_upload_under_the_default_lock_and_archive_key(
    synth: Synthesized,
) -> None:
    evaluator, statements, bucket, key = _archive(synth)
    mode, days = synth.stack.settings.archive_lock
    plain = _put(bucket)
    explicit = _put(
        bucket,
        **{
            "s3:object-lock-mode": mode,
            "s3:object-lock-remaining-retention-days": str(days),
            "s3:x-amz-server-side-encryption": "aws:kms",
            "s3:x-amz-server-side-encryption-aws-kms-key-id": key,
        },
    )
    assert not evaluator.denies(statements, plain)
    assert not evaluator.denies(statements, explicit)


@pytest.mark.parametrize(
    "header",
    [
        {"s3:object-lock-mode": "OTHER"},
        {"s3:object-lock-remaining-retention-days": "0"},
        {"s3:x-amz-server-side-encryption": "AES256"},
        {"s3:x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:1:key/x"},
        {"s3:x-amz-server-side-encryption-customer-algorithm": "AES256"},
    ],
    ids=["lock-mode", "shorter-retention", "sse-s3", "other-kms-key", "sse-c"],
)
def test_archive_denies_uploads_that_weaken_the_lock_or_the_encryption(
    synth: Synthesized, header: dict[str, str]
) -> None:
    evaluator, statements, bucket, _ = _archive(synth)
    if header.get("s3:object-lock-mode") == "OTHER":
        mode, _days = synth.stack.settings.archive_lock
        header = {"s3:object-lock-mode": "GOVERNANCE" if mode == "COMPLIANCE" else "COMPLIANCE"}
    assert evaluator.denies(statements, _put(bucket, **header))


@pytest.mark.parametrize(
    "action",
    [
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutObjectLegalHold",
        "s3:PutObjectRetention",
        "s3:BypassGovernanceRetention",
    ],
)
def test_only_the_compliance_role_changes_locks_and_holds(synth: Synthesized, action: str) -> None:
    evaluator, statements, bucket, _ = _archive(synth)
    compliance = evaluator.resolve(_role_arn(synth, synth.stack.access.compliance))
    resource = bucket if action == "s3:PutBucketObjectLockConfiguration" else f"{bucket}/segment/1"
    for who, denied in ((ADMIN_ELSEWHERE, True), (compliance, False)):
        context = {"aws:PrincipalArn": who, **_TLS}
        assert evaluator.denies(statements, Request(action, resource, context)) is denied, who


def test_compliance_role_is_assumable_only_by_the_named_principals_or_in_dev_the_account(
    synth: Synthesized,
) -> None:
    role = synth.resources[synth.logical_id(synth.stack.access.compliance)]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    named = synth.stack.settings.compliance_principals
    if named:
        assert set(_list(trust["Principal"]["AWS"])) == set(named)
    else:
        assert not synth.stack.settings.is_prod
        assert _root(trust["Principal"]["AWS"])
    assert role["MaxSessionDuration"] == 3600


def _function_statements(synth: Synthesized, spec: topology.FunctionSpec) -> list[dict[str, Any]]:
    evaluator = PolicyEvaluator(synth.template_dict)
    function = synth.resources[synth.logical_id(synth.stack.functions[spec.name])]
    return evaluator.role_statements(function["Properties"]["Role"]["Fn::GetAtt"][0])


@pytest.mark.parametrize("spec", topology.FUNCTIONS, ids=lambda s: s.name)
def test_no_function_role_may_decrypt_with_the_archive_key_or_read_the_archive(
    synth: Synthesized, spec: topology.FunctionSpec
) -> None:
    evaluator = PolicyEvaluator(synth.template_dict)
    statements = _function_statements(synth, spec)
    key = evaluator.resolve(
        {"Fn::GetAtt": [synth.logical_id(synth.stack.keys["ArchiveKey"]), "Arn"]}
    )
    bucket = evaluator.resolve(
        {"Fn::GetAtt": [synth.logical_id(synth.stack.buckets["ArchiveBucket"]), "Arn"]}
    )
    via_s3 = {"kms:ViaService": "s3.us-east-1.amazonaws.com", "kms:CallerAccount": ACCOUNT}
    for action in ("kms:Decrypt", "kms:ReEncryptFrom", "kms:CreateGrant"):
        assert not evaluator.allows(statements, Request(action, key, via_s3)), action
    for action in ("s3:GetObject", "s3:DeleteObject", "s3:PutObjectRetention"):
        segment = f"{bucket}/networks/net-x/segments/000000000001-ab.json"
        assert not evaluator.allows(statements, Request(action, segment)), action
        assert not evaluator.allows(statements, Request("s3:PutObjectLegalHold", segment))
    writes = evaluator.allows(
        statements, Request("s3:PutObject", f"{bucket}/networks/net-x/segments/1.json")
    )
    assert writes == ("ArchiveBucket" in spec.buckets_write)
    # Encrypting happens through S3 only, never by calling KMS directly.
    direct = {"kms:CallerAccount": ACCOUNT}
    assert not evaluator.allows(statements, Request("kms:GenerateDataKey", key, direct))
    assert evaluator.allows(statements, Request("kms:GenerateDataKey", key, via_s3)) == writes


def test_the_compliance_role_reads_archive_heads_and_no_other_item(synth: Synthesized) -> None:
    policies = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in synth.resources.values()
        if r["Type"] == "AWS::IAM::ManagedPolicy"
        and any(
            s.get("Sid") == "ReadArchiveHeads"
            for s in r["Properties"]["PolicyDocument"]["Statement"]
        )
    ]
    (statements,) = policies
    (heads,) = [s for s in statements if s["Sid"] == "ReadArchiveHeads"]
    assert heads["Action"] == "dynamodb:GetItem"
    messages = synth.logical_id(synth.stack.tables["MessagesTable"])
    assert heads["Resource"] == {"Fn::GetAtt": [messages, "Arn"]}
    assert heads["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ARCHIVE#*"]}
    }
    evaluator = PolicyEvaluator(synth.template_dict)
    table = evaluator.resolve({"Fn::GetAtt": [messages, "Arn"]})
    for action in ("dynamodb:Query", "dynamodb:Scan", "dynamodb:PutItem"):
        assert not evaluator.allows(statements, Request(action, table)), action
