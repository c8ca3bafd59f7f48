"""cdk-nag's AwsSolutions, NIST 800-53 R5 and Serverless packs run on every synth and
nothing is left unacknowledged."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk import Validations

from .conftest import Synthesized

pytestmark = pytest.mark.synth

PACKS = ("AwsSolutions", "NIST.800.53.R5", "Serverless")
_RULE = re.compile(
    r"^(AwsSolutions::AwsSolutions-[A-Z]+\d+|NIST\.800\.53\.R5::NIST\.800\.53\.R5-[A-Za-z0-9]+"
    r"|Serverless::Serverless-[A-Za-z0-9]+)(\[.+\])?$"
)


def _acknowledgments(synth: Synthesized) -> dict[tuple[str, str], str]:
    """(construct path, acknowledged id) -> reason, as recorded in construct metadata."""
    found: dict[tuple[str, str], str] = {}
    for construct in synth.stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in entry.data.items():
                    found[(construct.node.path, rule)] = reason
    return found


def _suppressed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for plugin in report["pluginReports"] for v in plugin.get("suppressedViolations", [])]


def test_nag_reports_no_unacknowledged_errors_or_warnings(synth: Synthesized) -> None:
    report = synth.validation_report()
    plugins = {p["pluginName"]: p for p in report["pluginReports"]}
    assert set(PACKS) <= set(plugins), "a cdk-nag pack did not run"
    for plugin in plugins.values():
        assert plugin["violations"] == [], plugin["violations"]
        assert plugin["conclusion"] == "success"


def test_every_acknowledgment_names_an_exact_rule_and_a_reason(synth: Synthesized) -> None:
    acknowledgments = _acknowledgments(synth)
    assert acknowledgments
    for (path, rule), reason in acknowledgments.items():
        assert _RULE.match(rule), (path, rule)
        assert reason.strip().endswith("."), (path, rule, reason)
        assert len(reason.split()) >= 6, (path, rule, reason)


def test_every_acknowledgment_is_used_and_sits_right_on_its_resource(
    synth: Synthesized,
) -> None:
    used = set()
    for violation in _suppressed(synth.validation_report()):
        for construct in violation["violatingConstructs"]:
            # The acknowledgment is on the L2 whose CloudFormation resource
            # broke the rule, never on a parent scope or the stack.
            assert construct["constructPath"] == f"{violation['acknowledgedAt']}/Resource"
        used.add((violation["acknowledgedAt"], violation["acknowledgedId"]))
    assert used == set(_acknowledgments(synth))
