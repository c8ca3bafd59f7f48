from __future__ import annotations

from collections.abc import Iterator

import pytest

from .stack import Stack, SeededDevice, running_stack, seed_device


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running


@pytest.fixture
def device(stack: Stack) -> SeededDevice:
    return seed_device(stack)
