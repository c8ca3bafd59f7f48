"""The protocol package imports only the standard library and ``cryptography``."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import sotto.protocol

PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in NAMES:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


# cryptography's Rust extension registers its OpenSSL bindings as ``_openssl``.
ALLOWED_THIRD_PARTY = {"cryptography", "_openssl", "_cffi_backend"}


def _protocol_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(sotto.protocol.__path__, prefix="sotto.protocol.")
    ]


def test_protocol_package_imports_only_stdlib_and_cryptography():
    names = ["sotto.protocol", *_protocol_modules()]
    assert len(names) > 10, names  # the walk found the modules (the test can fail)
    code = PROBE.replace("NAMES", repr(names))
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = json.loads(out)
    stdlib = sys.stdlib_module_names
    foreign = [
        name
        for name in loaded
        if name.split(".")[0] not in stdlib
        and name.split(".")[0] not in ALLOWED_THIRD_PARTY
        and not (name == "sotto" or name.startswith("sotto.protocol"))
    ]
    assert foreign == [], f"sotto.protocol pulled in {foreign}"
