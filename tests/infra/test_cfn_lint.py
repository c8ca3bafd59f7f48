"""cfn-lint finds no errors in the synthesized template."""

from __future__ import annotations

import pytest
from cfnlint.api import ManualArgs, lint_file

from .conftest import Synthesized

pytestmark = pytest.mark.synth

# CDK adds an explicit DependsOn from each function to its role next to the
# implied one; cfn-lint notes the redundancy. Harmless, and not ours to change.
ALLOWED_WARNINGS = {"W3005"}


def test_cfn_lint_finds_no_errors_or_unexpected_warnings(synth: Synthesized) -> None:
    # The environment-agnostic template, for a commercial and both GovCloud regions.
    regions = ["us-east-1", "us-gov-west-1", "us-gov-east-1"]
    matches = lint_file(synth.template_path, config=ManualArgs(regions=regions))
    errors = [str(m) for m in matches if m.rule.id.startswith("E")]
    warnings = [
        str(m) for m in matches if m.rule.id.startswith("W") and m.rule.id not in ALLOWED_WARNINGS
    ]
    assert errors == []
    assert warnings == []
