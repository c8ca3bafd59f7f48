"""Build the Lambda code asset and the dependency layer, without Docker.

Both land under ``build/`` in directories named by a hash of what went into
them, so a repeated synth reuses them (no copy, no pip run) and the CDK asset
hash only changes when the content does. Directories are filled under a
temporary name and renamed into place, so concurrent synths (pytest and
``cdk synth`` at once) never see half a directory.

``python -m infra.packaging`` builds both and prints where (``make layer``).
This module imports nothing from the CDK.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LAYER_PLATFORMS",
    "LAYER_REQUIREMENTS",
    "PYTHON_VERSION",
    "PYTHON_VERSIONS",
    "BuiltAsset",
    "build_dependency_layer",
    "stage_lambda_code",
]

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build"

# The default Lambda runtime, and the ones a deployment may fall back to
# (context python_runtime) where a region lacks the newest; infra.functions
# picks the matching CDK Runtime and a test holds the two together.
PYTHON_VERSION = "3.14"
PYTHON_VERSIONS = ("3.14", "3.13", "3.12")
# What the handlers import beyond the runtime (boto3): Powertools, pydantic, cryptography.
LAYER_REQUIREMENTS = ROOT / "infra" / "layer-requirements.txt"
# Lambda's python3.12+ runs on Amazon Linux 2023 (glibc 2.34); accept wheels
# built for any manylinux that old or older.
LAYER_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
# Bump to rebuild every cached layer after changing how it is built.
_LAYER_RECIPE = "1"

# (source, destination inside the asset). Only what handlers import at run
# time: never sotto.local, sotto.cli or the client. A test imports every handler
# module from the staged asset alone.
_LAMBDA_SOURCES = (
    (ROOT / "functions" / "sotto_server", "sotto_server"),
    (ROOT / "src" / "sotto" / "__init__.py", "sotto/__init__.py"),
    (ROOT / "src" / "sotto" / "topology.py", "sotto/topology.py"),
    (ROOT / "src" / "sotto" / "auditchain.py", "sotto/auditchain.py"),
    (ROOT / "src" / "sotto" / "frames", "sotto/frames"),
    (ROOT / "src" / "sotto" / "protocol", "sotto/protocol"),
)
_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class BuiltAsset:
    """A directory ready for ``Code.from_asset`` and the hash that names it."""

    path: Path
    digest: str


def stage_lambda_code(build_dir: Path = BUILD_DIR) -> BuiltAsset:
    """Copy the handler package and the parts of ``sotto`` it imports into one tree."""
    files = sorted(_lambda_files())
    digest = hashlib.sha256()
    for dest, src in files:
        digest.update(dest.encode() + b"\0")
        digest.update(hashlib.sha256(src.read_bytes()).digest())
    key = digest.hexdigest()
    target = build_dir / "lambda" / key[:24]
    if not target.is_dir():
        with _staging_dir(target) as tmp:
            for dest, src in files:
                out = tmp / dest
                out.parent.mkdir(parents=True, exist_ok=True)
                # copyfile, not copy2: content only, so nothing but content matters.
                shutil.copyfile(src, out)
    return BuiltAsset(target, key)


def build_dependency_layer(
    build_dir: Path = BUILD_DIR, python_version: str = PYTHON_VERSION
) -> BuiltAsset:
    """pip-install the layer requirements for arm64 Lambda, once per requirements hash."""
    if python_version not in PYTHON_VERSIONS:
        raise ValueError(f"python {python_version}: expected one of {PYTHON_VERSIONS}")
    requirements = LAYER_REQUIREMENTS.read_bytes()
    recipe = "\0".join((_LAYER_RECIPE, python_version, *LAYER_PLATFORMS)).encode()
    key = hashlib.sha256(recipe + b"\0" + requirements).hexdigest()
    target = build_dir / "layer" / key[:24]
    if not target.is_dir():
        with _staging_dir(target) as tmp:
            _pip_install(tmp / "python", python_version)
    return BuiltAsset(target, key)


def _lambda_files() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for src, dest in _LAMBDA_SOURCES:
        if src.is_file():
            found.append((dest, src))
            continue
        if not src.is_dir():
            # Another part of the tree may still be being written; stage what is there.
            continue
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                    continue
                path = Path(dirpath) / name
                found.append(((Path(dest) / path.relative_to(src)).as_posix(), path))
    return found


def _pip_install(target: Path, python_version: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        # Bytecode embeds timestamps; Lambda compiles on first import anyway.
        "--no-compile",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        *(arg for platform in LAYER_PLATFORMS for arg in ("--platform", platform)),
        "--target",
        str(target),
        "--requirement",
        str(LAYER_REQUIREMENTS),
    ]
    subprocess.run(command, check=True)  # noqa: S603 - fixed argv, no shell
    # Console scripts are useless in a layer and hold absolute paths.
    shutil.rmtree(target / "bin", ignore_errors=True)


class _staging_dir:
    """A temporary sibling of ``target`` renamed onto it on success."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = Path("")

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}-", dir=self.target.parent))
        # mkdtemp makes it 0700; Lambda's sandbox user must be able to read it.
        self.tmp.chmod(0o755)
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.tmp.rename(self.target)
                return
            except OSError:
                if not self.target.is_dir():
                    raise
                # Another process finished the same content first; use theirs.
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    code = stage_lambda_code()
    layer = build_dependency_layer()
    print(f"lambda code: {code.path.relative_to(ROOT)}")
    print(f"dependency layer: {layer.path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
