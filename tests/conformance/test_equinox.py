"""The equinox adapter end to end: GroupNorm's parameter gradients reduced in float16, the
batch-mode BatchNorm, SpectralNorm iterating u first, a planted eps."""

from __future__ import annotations

import pytest

pytest.importorskip("equinox", reason="equinox is not installed (pip install -e '.[equinox]')")

from conformance.api import run
from conformance.reports.results import Status
from tests.conformance.planted import planted_eps_row


def _rows(case: str, dtype: str):
    return run(["equinox"], dtypes=[dtype], case=case).results


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_group_norm_sums_parameter_gradients_in_the_input_dtype(dtype: str):
    """The weight is broadcast before it is cast to float32, so the transpose of the broadcast,
    a sum, runs in the input's dtype: d beta is out of the float32 budget."""
    (row,) = _rows("group_norm/odd-3", dtype)
    assert row.status is Status.FAIL
    assert {o["name"] for o in row.outputs if not o["ok"]} == {"dbeta"}
    assert "low_precision_compute='input'" in row.diagnosis
    (passing,) = _rows("group_norm/odd-3", "float32")
    assert passing.status is Status.PASS


def test_batch_norm_training_step():
    (row,) = _rows("batch_norm_train/mean-1e4", "float32")
    assert row.status is Status.PASS
    assert {o["name"] for o in row.outputs} >= {"y", "running_mean", "running_var", "dx"}


def test_spectral_norm_iterates_u_first():
    (row,) = _rows("spectral_norm_train/typical", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"power_iteration_order": "u_first"}


def test_weight_norm_of_a_zero_unit_is_nan():
    (row,) = _rows("weight_norm/zero-unit", "float32")
    assert row.explained_by == {"zero_norm": "ieee"}


def test_a_wrong_eps_fails():
    from conformance.adapters.equinox import ADAPTER

    row = planted_eps_row(ADAPTER, "equinox.nn.LayerNorm", "layer_norm/given-eps")
    assert row.status is Status.FAIL
