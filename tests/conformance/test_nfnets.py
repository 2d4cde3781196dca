"""The NFNets nonlinearities: jax.nn functions times the published gains, against the exact ones."""

from __future__ import annotations

import math
import re

import pytest

pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")

from conformance.api import run
from conformance.reports.results import Status
from normref.nonlinearities import NFNETS_PUBLISHED_GAMMAS


@pytest.fixture(scope="module")
def rows():
    """Every nonlinearity's own case, at float32."""
    result = run(["nfnets"], ops=["gamma_scaled_nonlinearity"], dtypes=["float32"])
    names = {f"gamma_scaled_nonlinearity/{n}" for n in (*NFNETS_PUBLISHED_GAMMAS, "gelu")}
    return {r.case.split("/")[1]: r for r in result.results if r.case in names}


def test_every_published_gain_differs_from_the_exact_one(rows):
    for name in NFNETS_PUBLISHED_GAMMAS:
        row = rows[name]
        assert row.status is Status.CONVENTION, (name, row.diagnosis)
        assert row.explained_by == {"nonlinearity_gammas": "nfnets_published"}
        assert row.forward_only
        assert f"gain of {name}:" in row.evidence


def test_relu_gain_differs_by_its_sampling_error(rows):
    """relu's exact gain is sqrt(2 / (1 - 1/pi)); the published one is 6.4e-4 above it."""
    exact = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))
    expected = NFNETS_PUBLISHED_GAMMAS["relu"] / exact - 1.0
    reported = float(re.search(r"relative difference ([-+0-9.e]+)", rows["relu"].evidence)[1])
    assert reported == pytest.approx(expected, rel=1e-3)
    assert 5e-4 < reported < 8e-4


def test_a_nonlinearity_without_a_published_gain_is_not_implemented(rows):
    """The published ``gelu`` is jax's tanh approximation (normref's ``gelu_tanh``): the exact
    erf form has no published gain."""
    assert rows["gelu"].status is Status.NOT_IMPLEMENTED
