"""Small helpers shared by the constructs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.settings import Settings

__all__ = [
    "construct_name",
    "data_removal_policy",
    "log_group",
    "log_retention",
    "service_principal",
]


def construct_name(name: str) -> str:
    """``"default"`` -> ``"Default"``, ``"$connect"`` -> ``"Connect"``: names as construct ids."""
    words = name.strip("$").replace("-", "_").split("_")
    return "".join(word[:1].upper() + word[1:] for word in words)


def service_principal(scope: Construct, service: str) -> iam.ServicePrincipal:
    """An AWS service acting for this account only (``aws:SourceAccount``: no confused deputy)."""
    return iam.ServicePrincipal(
        service, conditions={"StringEquals": {"aws:SourceAccount": Stack.of(scope).account}}
    )


def data_removal_policy(settings: Settings) -> RemovalPolicy:
    """Keep tables and logs of prod stages when the stack goes; drop those of dev stages."""
    return RemovalPolicy.RETAIN if settings.is_prod else RemovalPolicy.DESTROY


def log_retention(days: int) -> logs.RetentionDays:
    return _RETENTION[days]


def log_group(
    scope: Construct, construct_id: str, settings: Settings, key: kms.IKey
) -> logs.LogGroup:
    """A log group under the stage's logs key, kept as long as the stage says."""
    return logs.LogGroup(
        scope,
        construct_id,
        retention=log_retention(settings.log_retention_days),
        encryption_key=key,
        removal_policy=data_removal_policy(settings),
    )


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
