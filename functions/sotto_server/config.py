"""Typed settings read from the environment once per execution environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from sotto import topology

__all__ = ["Settings", "settings"]


@dataclass(frozen=True)
class Settings:
    stage: str
    tables: dict[str, str]

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
    return Settings(stage=os.environ.get("SOTTO_STAGE", "dev"), tables=tables)
