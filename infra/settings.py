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
from typing import Any, TypeVar

__all__ = ["Settings", "SettingsError"]

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
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
    log_retention_days: int = 365
    access_log_retention_days: int = 365
    attachments_noncurrent_version_days: int = 30
    abort_incomplete_upload_days: int = 7
    ws_throttle_rate: float = 100.0
    ws_throttle_burst: int = 200
    http_throttle_rate: float = 50.0
    http_throttle_burst: int = 100
    # Multiplies every per-device/network/IP rate limit of docs/api.md.
    rate_limit_scale: float = 1.0
    # Version of the public AWSLambdaPowertoolsPythonV3 layer.
    powertools_layer_version: int = 38
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
            if getattr(self, key) not in LOG_RETENTION_DAYS:
                raise SettingsError(key, getattr(self, key), f"one of {LOG_RETENTION_DAYS}")
        for key in (
            "archive_retention_days",
            "attachments_noncurrent_version_days",
            "abort_incomplete_upload_days",
            "ws_throttle_burst",
            "http_throttle_burst",
            "powertools_layer_version",
        ):
            if getattr(self, key) < 1:
                raise SettingsError(key, getattr(self, key), "a positive integer")
        for key in ("ws_throttle_rate", "http_throttle_rate", "rate_limit_scale"):
            if getattr(self, key) <= 0:
                raise SettingsError(key, getattr(self, key), "a positive number")


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


def _str_tuple(key: str, raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise SettingsError(key, raw, "a list of stage names")


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
    "powertools_layer_version": _int,
    "apigw_cloudwatch_role": _bool,
}
