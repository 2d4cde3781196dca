"""Shared fixtures: the array backend under test, and a deterministic hypothesis profile."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.support import BACKEND_FACTORIES, Backend

settings.register_profile(
    "normref",
    database=None,
    derandomize=True,
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile("normref")


def _backend_params() -> list:
    params = []
    for name, (factory, available, reason) in BACKEND_FACTORIES.items():
        marks = [] if available() else [pytest.mark.skip(reason=reason)]
        params.append(pytest.param(factory, id=name, marks=marks))
    return params


@pytest.fixture(scope="session", params=_backend_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every array library normref must run on (skipped with a reason when absent)."""
    return request.param()


@pytest.fixture(
    scope="session", params=[p for p in _backend_params() if p.id in ("numpy", "array_api_strict")]
)
def standard_backend(request: pytest.FixtureRequest) -> Backend:
    """The two namespaces every test must pass on: NumPy and array-api-strict."""
    return request.param()
