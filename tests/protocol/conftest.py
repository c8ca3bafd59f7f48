from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from .helpers import Party, make_party

settings.register_profile(
    "protocol", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("protocol")


@pytest.fixture(scope="session")
def alice_template() -> Party:
    return make_party("alice")


@pytest.fixture
def alice() -> Party:
    return make_party("alice")


@pytest.fixture
def bob() -> Party:
    return make_party("bob")


@pytest.fixture
def carol() -> Party:
    return make_party("carol")
