"""Settings come from CDK context, typed and checked, with safe prod defaults."""

from __future__ import annotations

from typing import Any

import pytest

from infra.app import cdk_json_context
from infra.settings import Settings, SettingsError


def _from(context: dict[str, Any]) -> Settings:
    return Settings.from_context(context.get)


def test_cdk_json_defaults_parse_into_a_dev_stage() -> None:
    settings = _from(cdk_json_context())
    assert settings.stage == "dev"
    assert not settings.is_prod
    assert not settings.protect_tables
    assert settings.stack_name == "Sotto-dev"


PROD_PRINCIPALS = {
    key: "arn:aws:iam::123456789012:role/Named"
    for key in ("compliance_principals", "key_admin_principals", "admin_principals")
}


def test_prod_stage_protects_tables_unless_told_otherwise() -> None:
    assert _from({"stage": "prod", **PROD_PRINCIPALS}).protect_tables
    assert not _from(
        {"stage": "prod", **PROD_PRINCIPALS, "deletion_protection": "false"}
    ).protect_tables
    assert _from({"stage": "dev", "deletion_protection": True}).protect_tables


def test_command_line_strings_are_parsed() -> None:
    settings = _from(
        {
            "stage": "staging",
            "prod_stages": "prod,staging",
            **PROD_PRINCIPALS,
            "archive_retention_days": "3653",
            "ws_throttle_rate": "12.5",
            "apigw_cloudwatch_role": "false",
        }
    )
    assert settings.is_prod
    assert settings.archive_retention_days == 3653
    assert settings.ws_throttle_rate == 12.5
    assert settings.apigw_cloudwatch_role is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stage", "Prod!"),
        ("log_retention_days", 42),
        ("archive_retention_days", "0"),
        ("ws_throttle_burst", "many"),
        ("apigw_cloudwatch_role", "maybe"),
        ("prod_stages", 7),
    ],
)
def test_settings_reject_bad_context_value_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as excinfo:
        _from({key: value})
    assert key in str(excinfo.value)


def test_prod_stage_refuses_log_retention_below_omb_m_21_31() -> None:
    with pytest.raises(SettingsError, match="M-21-31"):
        _from({"stage": "prod", **PROD_PRINCIPALS, "log_retention_days": 90})
    assert _from({"stage": "dev", "log_retention_days": 30}).log_retention_days == 30


def test_archive_lock_is_compliance_in_prod_and_governance_for_a_day_elsewhere() -> None:
    assert _from({"stage": "prod", **PROD_PRINCIPALS}).archive_lock == ("COMPLIANCE", 2557)
    assert _from({"stage": "dev"}).archive_lock == ("GOVERNANCE", 1)


def test_principal_lists_parse_from_the_command_line_and_refuse_wildcards() -> None:
    role = "arn:aws-us-gov:iam::123456789012:role/RecordsOfficer"
    settings = _from({"compliance_principals": f"{role}, arn:aws:iam::123456789012:user/ann"})
    assert settings.compliance_principals == (role, "arn:aws:iam::123456789012:user/ann")
    with pytest.raises(SettingsError, match="no wildcards"):
        _from({"admin_principals": ["arn:aws:iam::123456789012:role/*"]})
    with pytest.raises(SettingsError, match="no wildcards"):
        _from({"key_admin_principals": "*"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("python_runtime", "3.9"),
        ("region", "mars-1"),
        ("account", "12345"),
        ("archive_replica_bucket_arn", "arn:aws:s3:::replica"),
    ],
)
def test_deployment_target_settings_are_checked(key: str, value: object) -> None:
    with pytest.raises(SettingsError) as excinfo:
        _from({key: value})
    assert excinfo.value.key == key


def test_runtime_falls_back_one_python_version_by_context() -> None:
    assert _from({}).python_runtime == "3.14"
    assert _from({"python_runtime": "3.13"}).python_runtime == "3.13"


@pytest.mark.parametrize(
    "key", ["compliance_principals", "key_admin_principals", "admin_principals"]
)
def test_prod_stage_must_name_its_principals(key: str) -> None:
    named = {
        k: ["arn:aws:iam::123456789012:role/Named"]
        for k in ("compliance_principals", "key_admin_principals", "admin_principals")
    }
    assert _from({"stage": "prod", **named}).is_prod
    with pytest.raises(SettingsError) as excinfo:
        _from({"stage": "prod", **named, key: []})
    assert excinfo.value.key == key
