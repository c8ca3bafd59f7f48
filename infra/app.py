"""Build the CDK app: settings from context, the stack, and cdk-nag on every synth."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks, ServerlessChecks

from infra.settings import Settings
from infra.stack import SottoStack

__all__ = ["build_app", "cdk_json_context"]

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` block of cdk.json, so ``python app.py`` equals ``cdk synth``."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def build_app(
    *, outdir: str | None = None, context: Mapping[str, Any] | None = None
) -> tuple[App, SottoStack]:
    """The app with one stage of Sotto; ``context`` overrides cdk.json (the CLI's -c wins)."""
    app = App(outdir=outdir, context={**cdk_json_context(), **(context or {})})
    settings = Settings.from_context(app.node.try_get_context)
    env = Environment(account=settings.account, region=settings.region)
    stack = SottoStack(app, settings.stack_name, settings=settings, env=env)
    # Every finding fails the synth unless acknowledged next to its resource.
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True),
        NIST80053R5Checks(app, verbose=True),
        ServerlessChecks(app, verbose=True),
    )
    return app, stack
