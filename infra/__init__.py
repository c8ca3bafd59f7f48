"""Sotto's CDK app: one stage-able stack built from ``sotto.topology``.

``infra.app.build_app`` builds it; ``infra.packaging`` builds its code assets
and imports nothing from the CDK (``make layer``).
"""

import os

# jsii prints an end-of-life banner on every start under Node 20; silence it
# before any submodule starts the jsii runtime.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

__all__: list[str] = []
