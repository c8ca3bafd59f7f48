"""Deployment settings, read once from CDK context.

Defaults live in ``cdk.json``; override any of them per deployment, e.g.
``npx cdk deploy -c stage=prod -c archive_retention_days=3653``. Values given
on the command line arrive as strings, so every field is parsed and checked
here, once, and the constructs only ever see typed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from infra.packaging import PYTHON_VERSION, PYTHON_VERSIONS

__all__ = ["LockMode", "Settings", "SettingsError"]

LockMode = Literal["COMPLIANCE", "GOVERNANCE"]

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_ACCOUNT = re.compile(r"^\d{12}$")
# An IAM principal ARN in any partition: a role, a user or an account root.
_PRINCIPAL_ARN = re.compile(
    r"^arn:aws(-[a-z-]+)?:iam::\d{12}:(root|role/[\w+=,.@/-]+|user/[\w+=,.@/-]+)$"
)
# OMB M-21-31: event logs kept 12 months in active storage.
OMB_M_21_31_HOT_DAYS = 365
# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    *(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731),
    *(1096, 1827, 2192, 2557, 2922, 3288, 3653),
)

T = TypeVar("T")


class SettingsError(ValueError):
    """A context value is missing its expected shape."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(key, value, expected)
        self.key = key
        self.value = value
        self.expected = expected

    def __str__(self) -> str:
        return f"context {self.key}={self.value!r}: expected {self.expected}"


@dataclass(frozen=True)
class Settings:
    """Everything a deployment may tune; see ``cdk.json`` for the defaults."""

    stage: str = "dev"
    # Stages whose data must survive `cdk destroy` and mistakes.
    prod_stages: tuple[str, ...] = ("prod",)
    # None: on in prod stages, off elsewhere.
    deletion_protection: bool | None = None
    # Default COMPLIANCE retention of every archived object (cannot be
    # shortened or removed once an object is written, not even by root).
    archive_retention_days: int = 2557
    # Every log group; prod stages may not go below OMB M-21-31's 12 months.
    log_retention_days: int = 365
    access_log_retention_days: int = 365
    attachments_noncurrent_version_days: int = 30
    abort_incomplete_upload_days: int = 7
    ws_throttle_rate: float = 100.0
    ws_throttle_burst: int = 200
    http_throttle_rate: float = 50.0
    http_throttle_burst: int = 100
    # Per-route throttles of the unauthenticated entry points ($connect, whose
    # authorizer verifies signatures, and the public HTTP routes).
    public_throttle_rate: float = 20.0
    public_throttle_burst: int = 40
    # Multiplies every per-device/network/IP rate limit of docs/api.md.
    rate_limit_scale: float = 1.0
    # The Lambda Python runtime; fall back (3.13, 3.12) where a region lacks the newest.
    python_runtime: str = PYTHON_VERSION
    # Pin the stack to one account/region (e.g. us-gov-west-1): ARNs then name
    # the partition literally. Unset: environment-agnostic (from the credentials).
    region: str | None = None
    account: str | None = None
    # Reserved concurrency of the public functions, so a flood of unauthenticated
    # requests cannot take the account's concurrency from the messaging routes.
    reserve_public_concurrency: bool = True
    # IAM principals (role/user ARNs) that may assume the compliance role (archive
    # decrypt, legal holds) and the key-admin role, and role ARNs whose callers the
    # admin API admits. Empty by default: nobody until named.
    compliance_principals: tuple[str, ...] = ()
    key_admin_principals: tuple[str, ...] = ()
    admin_principals: tuple[str, ...] = ()
    # Who deploys: CloudFormation's execution role must keep administering the
    # keys it created. None: the CDK bootstrap's default role for this environment.
    deployment_role_arn: str | None = None
    # Archive Object Lock retention in stages outside prod_stages (GOVERNANCE
    # mode there, so test objects can be removed by an authorized principal).
    dev_archive_retention_days: int = 1
    # AWS Backup of the directory and messages tables.
    backup_retention_days: int = 35
    # Optional cross-region copy of the archive: an Object Lock bucket and its
    # KMS key in another region, created by the organisation.
    archive_replica_bucket_arn: str | None = None
    archive_replica_key_arn: str | None = None
    # API Gateway writes WebSocket logs through one role per account and
    # region; turn off if the organisation already manages that setting.
    apigw_cloudwatch_role: bool = True

    @property
    def is_prod(self) -> bool:
        return self.stage in self.prod_stages

    @property
    def protect_tables(self) -> bool:
        return self.is_prod if self.deletion_protection is None else self.deletion_protection

    @property
    def stack_name(self) -> str:
        return f"Sotto-{self.stage}"

    @property
    def archive_lock(self) -> tuple[LockMode, int]:
        """Default Object Lock mode and days of the archive: WORM for real in prod stages."""
        if self.is_prod:
            return "COMPLIANCE", self.archive_retention_days
        return "GOVERNANCE", self.dev_archive_retention_days

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> Settings:
        """Read every field from ``get(key)`` (``node.try_get_context``); None keeps the default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f.name)
            if raw is not None:
                values[f.name] = _PARSERS[f.name](f.name, raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not _STAGE_NAME.match(self.stage):
            raise SettingsError("stage", self.stage, "lowercase letters, digits, '-' (<= 16)")
        for key in ("log_retention_days", "access_log_retention_days"):
            days = getattr(self, key)
            if days not in LOG_RETENTION_DAYS:
                raise SettingsError(key, days, f"one of {LOG_RETENTION_DAYS}")
            if self.is_prod and days < OMB_M_21_31_HOT_DAYS:
                raise SettingsError(key, days, ">= 365 in a prod stage (OMB M-21-31)")
        for key in (
            "archive_retention_days",
            "attachments_noncurrent_version_days",
            "abort_incomplete_upload_days",
            "ws_throttle_burst",
            "http_throttle_burst",
            "public_throttle_burst",
            "dev_archive_retention_days",
            "backup_retention_days",
        ):
            if getattr(self, key) < 1:
                raise SettingsError(key, getattr(self, key), "a positive integer")
        for key in ("ws_throttle_rate", "http_throttle_rate", "public_throttle_rate"):
            if getattr(self, key) <= 0:
                raise SettingsError(key, getattr(self, key), "a positive number")
        if self.rate_limit_scale <= 0:
            raise SettingsError("rate_limit_scale", self.rate_limit_scale, "a positive number")
        if self.python_runtime not in PYTHON_VERSIONS:
            raise SettingsError("python_runtime", self.python_runtime, f"one of {PYTHON_VERSIONS}")
        if self.region is not None and not _REGION.match(self.region):
            raise SettingsError("region", self.region, "a region name such as us-gov-west-1")
        if self.account is not None and not _ACCOUNT.match(self.account):
            raise SettingsError("account", self.account, "a 12-digit account id")
        for key in ("compliance_principals", "key_admin_principals", "admin_principals"):
            for arn in getattr(self, key):
                if not _PRINCIPAL_ARN.match(arn):
                    raise SettingsError(key, arn, "IAM role, user or root ARNs (no wildcards)")
            if self.is_prod and not getattr(self, key):
                # Dev stages fall back to the account (roles) or nobody (admin API).
                raise SettingsError(key, (), "at least one principal ARN in a prod stage")
        if self.deployment_role_arn is not None and not _PRINCIPAL_ARN.match(
            self.deployment_role_arn
        ):
            raise SettingsError("deployment_role_arn", self.deployment_role_arn, "a role ARN")
        if (self.archive_replica_bucket_arn is None) != (self.archive_replica_key_arn is None):
            raise SettingsError(
                "archive_replica_bucket_arn",
                self.archive_replica_bucket_arn,
                "set together with archive_replica_key_arn",
            )


def _str(key: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise SettingsError(key, raw, "a string")
    return raw


def _int(key: str, raw: object) -> int:
    if isinstance(raw, bool):
        raise SettingsError(key, raw, "an integer")
    try:
        return int(str(raw), 10)
    except ValueError:
        raise SettingsError(key, raw, "an integer") from None


def _float(key: str, raw: object) -> float:
    if isinstance(raw, bool):
        raise SettingsError(key, raw, "a number")
    try:
        return float(str(raw))
    except ValueError:
        raise SettingsError(key, raw, "a number") from None


def _bool(key: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "1", "yes"):
        return True
    if str(raw).lower() in ("false", "0", "no"):
        return False
    raise SettingsError(key, raw, "true or false")


def _optional_bool(key: str, raw: object) -> bool | None:
    return None if str(raw).lower() in ("", "auto", "none") else _bool(key, raw)


def _optional_str(key: str, raw: object) -> str | None:
    return _str(key, raw).strip() or None


def _str_tuple(key: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise SettingsError(key, raw, "a list of strings (or one comma-separated string)")


_PARSERS: Mapping[str, Callable[[str, object], Any]] = {
    "stage": _str,
    "prod_stages": _str_tuple,
    "deletion_protection": _optional_bool,
    "archive_retention_days": _int,
    "log_retention_days": _int,
    "access_log_retention_days": _int,
    "attachments_noncurrent_version_days": _int,
    "abort_incomplete_upload_days": _int,
    "ws_throttle_rate": _float,
    "ws_throttle_burst": _int,
    "http_throttle_rate": _float,
    "http_throttle_burst": _int,
    "rate_limit_scale": _float,
    "public_throttle_rate": _float,
    "public_throttle_burst": _int,
    "python_runtime": _str,
    "region": _optional_str,
    "account": _optional_str,
    "reserve_public_concurrency": _bool,
    "apigw_cloudwatch_role": _bool,
    "compliance_principals": _str_tuple,
    "key_admin_principals": _str_tuple,
    "admin_principals": _str_tuple,
    "deployment_role_arn": _optional_str,
    "dev_archive_retention_days": _int,
    "backup_retention_days": _int,
    "archive_replica_bucket_arn": _optional_str,
    "archive_replica_key_arn": _optional_str,
}
