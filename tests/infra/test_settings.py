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


def test_prod_stage_protects_tables_unless_told_otherwise() -> None:
    assert _from({"stage": "prod"}).protect_tables
    assert not _from({"stage": "prod", "deletion_protection": "false"}).protect_tables
    assert _from({"stage": "dev", "deletion_protection": True}).protect_tables


def test_command_line_strings_are_parsed() -> None:
    settings = _from(
        {
            "stage": "staging",
            "prod_stages": "prod,staging",
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
