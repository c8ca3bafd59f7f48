"""Session fixtures shared by every suite: one local stack for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import SeededDevice, Stack, running_stack, seed_device


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_suite`` run last: they check what the whole session did."""
    items.sort(key=lambda item: item.get_closest_marker("after_suite") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``sotto local up`` in a subprocess, talked to over real sockets."""
    with running_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running


@pytest.fixture(scope="session")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second local stack at the deployment's default rate limits (``--rate-limit-scale 1``).

    Claims about scale and limits are tested here, where a raised limit
    cannot hide what a user would meet.
    """
    with running_stack(tmp_path_factory.mktemp("default-stack"), rate_limit_scale=1) as running:
        yield running


@pytest.fixture
def device(stack: Stack) -> SeededDevice:
    return seed_device(stack)
