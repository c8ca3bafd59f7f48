"""Typed settings read from the environment once per execution environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

from sotto import topology

__all__ = ["Settings", "settings"]


@dataclass(frozen=True)
class Settings:
    stage: str
    tables: dict[str, str]
    rate_limit_scale: float = 1.0
    # Where clients connect, and the audience their connect tokens name.
    websocket_url: str = ""
    audience: str = ""
    buckets: dict[str, str] = field(default_factory=dict)
    # The key SSE-KMS uploads name (the attachments bucket's default key).
    data_key_id: str = ""

    def bucket_name(self, logical_id: str) -> str:
        try:
            return self.buckets[logical_id]
        except KeyError:
            env_var = next(b.env_var for b in topology.BUCKETS if b.logical_id == logical_id)
            raise RuntimeError(f"{env_var} is not set for this function") from None

    def table_name(self, logical_id: str) -> str:
        try:
            return self.tables[logical_id]
        except KeyError:
            env_var = topology.table(logical_id).env_var
            raise RuntimeError(f"{env_var} is not set for this function") from None


@cache
def settings() -> Settings:
    tables = {
        spec.logical_id: os.environ[spec.env_var]
        for spec in topology.TABLES
        if os.environ.get(spec.env_var)
    }
    buckets = {
        spec.logical_id: os.environ[spec.env_var]
        for spec in topology.BUCKETS
        if os.environ.get(spec.env_var)
    }
    data_key = next(k for k in topology.KEYS if k.logical_id == "DataKey")
    scale = float(os.environ.get("SOTTO_RATE_LIMIT_SCALE", "1") or "1")
    if not 0 < scale <= 10_000:
        raise RuntimeError("SOTTO_RATE_LIMIT_SCALE must be in (0, 10000]")
    return Settings(
        stage=os.environ.get("SOTTO_STAGE", "dev"),
        tables=tables,
        rate_limit_scale=scale,
        websocket_url=os.environ.get("SOTTO_WEBSOCKET_URL", ""),
        audience=os.environ.get("SOTTO_WS_AUDIENCE", ""),
        buckets=buckets,
        data_key_id=os.environ.get(data_key.env_var, ""),
    )
