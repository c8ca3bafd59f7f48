"""The code asset and the dependency layer are built without Docker, deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import aws_lambda as lambda_

from infra import packaging
from infra.functions import RUNTIMES
from sotto import topology

ROOT = Path(__file__).resolve().parents[2]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_runtimes_and_layer_builds_agree_on_python_versions() -> None:
    assert set(RUNTIMES) == set(packaging.PYTHON_VERSIONS)
    assert packaging.PYTHON_VERSIONS[0] == packaging.PYTHON_VERSION
    for version, runtime in RUNTIMES.items():
        assert runtime.name == f"python{version}"
        assert runtime.family == lambda_.RuntimeFamily.PYTHON


def test_dependency_layer_refuses_a_python_it_has_no_runtime_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        packaging.build_dependency_layer(tmp_path, python_version="3.9")


def test_lambda_asset_holds_handlers_and_only_the_runtime_part_of_sotto(tmp_path: Path) -> None:
    asset = packaging.stage_lambda_code(tmp_path)
    files = _files(asset.path)
    assert "sotto/__init__.py" in files
    assert "sotto/topology.py" in files
    assert "sotto/protocol/__init__.py" in files
    assert not any(f.startswith(("sotto/local/", "sotto/cli")) for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    # Every handler module present in the source tree is in the asset.
    for spec in topology.FUNCTIONS:
        module = spec.module.replace(".", "/") + ".py"
        if (ROOT / "functions" / module).exists():
            assert module in files


# Imports every module of the staged handler package with the source tree off the path,
# then names each ``sotto`` module loaded from anywhere but the asset.
_IMPORT_FROM_ASSET = """
import importlib, pathlib, sys
asset = pathlib.Path(sys.argv[1]).resolve()
sys.path[:] = [str(asset)] + [
    p for p in sys.path
    if p and not any((pathlib.Path(p) / n).exists() for n in ('sotto', 'sotto_server'))
]
for path in sorted((asset / 'sotto_server').rglob('*.py')):
    parts = path.relative_to(asset).with_suffix('').parts
    importlib.import_module('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))
stray = [n for n, m in sys.modules.items() if n.split('.')[0] in ('sotto', 'sotto_server')
         and not pathlib.Path(m.__file__ or '').resolve().is_relative_to(asset)]
print(' '.join(stray))
"""


def test_lambda_asset_imports_every_handler_module_from_itself(tmp_path: Path) -> None:
    # GIVEN the asset alone (what Lambda unpacks) and the installed dependencies
    asset = packaging.stage_lambda_code(tmp_path)
    files = _files(asset.path)
    assert {"sotto/frames/__init__.py", "sotto/frames/requests.py"} <= files
    # WHEN every handler and logic module is imported from it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_FROM_ASSET, str(asset.path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    # THEN each one imports, and nothing of sotto came from outside the asset
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_lambda_asset_is_staged_once_per_content(tmp_path: Path) -> None:
    first = packaging.stage_lambda_code(tmp_path)
    (first.path / "sotto" / "topology.py").touch()  # mtimes do not matter
    second = packaging.stage_lambda_code(tmp_path)
    assert second == first
    assert len(list((tmp_path / "lambda").iterdir())) == 1


def test_layer_requirements_pin_cryptography() -> None:
    lines = packaging.LAYER_REQUIREMENTS.read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert "cryptography" in pins
    assert int(pins["cryptography"].split(".")[0]) >= 47


@pytest.mark.synth
def test_dependency_layer_holds_aarch64_cryptography_pydantic_and_powertools(synth: object) -> None:
    # The session synth built (or reused) the layer; building again is a cache hit.
    layer = packaging.build_dependency_layer()
    python = layer.path / "python"
    (rust,) = (python / "cryptography" / "hazmat" / "bindings").glob("_rust*.so")
    (core,) = (python / "pydantic_core").glob("_pydantic_core*.so")
    for binary in (rust, core):
        header = binary.read_bytes()[:20]
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == 0xB7  # EM_AARCH64
    # pydantic-core has no stable-ABI wheel: it must be the runtime's own CPython.
    assert f"cpython-{packaging.PYTHON_VERSION.replace('.', '')}" in core.name
    # Powertools is bundled: no public layer of another partition is needed.
    assert (python / "aws_lambda_powertools" / "logging" / "logger.py").is_file()
    assert not (python / "bin").exists()
