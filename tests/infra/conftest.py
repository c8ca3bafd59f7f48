"""Synthesize the app once per session; every template test shares it.

The app is built exactly as ``app.py`` builds it (cdk.json context, cdk-nag
on), so the template under test is the one that deploys. Synthesis fails on
any unacknowledged cdk-nag finding before a single test runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import Stack
from aws_cdk.assertions import Template
from constructs import IConstruct

from infra.app import build_app
from infra.stack import SottoStack


@dataclass(frozen=True)
class Synthesized:
    stack: SottoStack
    outdir: Path
    template_path: Path
    template_dict: dict[str, Any]
    template: Template

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template_dict["Resources"]
        return resources

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == resource_type}

    def logical_id(self, construct: IConstruct) -> str:
        """Logical id of an L2's CloudFormation resource (or of an L1)."""
        cfn = construct.node.default_child or construct
        stack = Stack.of(construct)
        logical_id = stack.resolve(stack.get_logical_id(cfn))  # type: ignore[arg-type]
        assert isinstance(logical_id, str)
        return logical_id

    def validation_report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.outdir / "validation-report.json").read_text())
        return report


# A prod stage pinned to GovCloud, with the principals a prod stage must name.
GOVCLOUD_ACCOUNT = "123456789012"
GOVCLOUD_CONTEXT: dict[str, Any] = {
    "stage": "prod",
    "region": "us-gov-west-1",
    "account": GOVCLOUD_ACCOUNT,
    "compliance_principals": [f"arn:aws-us-gov:iam::{GOVCLOUD_ACCOUNT}:role/RecordsOfficer"],
    "key_admin_principals": [f"arn:aws-us-gov:iam::{GOVCLOUD_ACCOUNT}:role/KeyCustodian"],
    "admin_principals": [f"arn:aws-us-gov:iam::{GOVCLOUD_ACCOUNT}:role/SottoAdmin"],
    # The optional cross-region copy of the archive, into the other GovCloud region.
    "archive_replica_bucket_arn": "arn:aws-us-gov:s3:::agency-sotto-archive-replica",
    "archive_replica_key_arn": (
        f"arn:aws-us-gov:kms:us-gov-east-1:{GOVCLOUD_ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
    ),
}


def _synthesize(
    tmp_path_factory: pytest.TempPathFactory, context: dict[str, Any] | None = None
) -> Synthesized:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(outdir=str(outdir), context=context)
    assembly = app.synth()
    artifact = assembly.get_stack_by_name(stack.stack_name)
    template_dict: dict[str, Any] = artifact.template
    return Synthesized(
        stack=stack,
        outdir=outdir,
        template_path=Path(artifact.template_full_path),
        template_dict=template_dict,
        template=Template.from_json(template_dict),
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The default (cdk.json) stage: dev, environment-agnostic."""
    return _synthesize(tmp_path_factory)


@pytest.fixture(scope="session")
def govcloud_synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """A prod stage pinned to us-gov-west-1 (a second synth: ~8 s)."""
    return _synthesize(tmp_path_factory, GOVCLOUD_CONTEXT)


@pytest.fixture(scope="session")
def template(synth: Synthesized) -> Template:
    return synth.template


@pytest.fixture(scope="session")
def template_dict(synth: Synthesized) -> dict[str, Any]:
    return synth.template_dict


# The IAM trace check leaves here the grants no traced request used.
UNUSED_GRANTS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    unused = config.stash.get(UNUSED_GRANTS, None)
    if unused is None:
        return
    terminalreporter.section("IAM grants never used by a traced request")
    for line in unused or ["(none)"]:
        terminalreporter.write_line(line)
