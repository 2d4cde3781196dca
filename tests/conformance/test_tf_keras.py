"""The tf-keras adapter end to end: the fused kernel's unbiased moving variance, the float32
decay of float64 moving statistics, a planted eps."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("tf_keras") is None:
    pytest.skip("tf-keras is not installed (pip install -e '.[tf-keras]')", allow_module_level=True)

from conformance.api import run
from conformance.reports.results import Status
from tests.conformance.planted import planted_eps_row

FUSED = "tf_keras.layers.BatchNormalization (training, fused=True)"
UNFUSED = "tf_keras.layers.BatchNormalization (training, fused=False)"


def test_fused_kernel_updates_with_the_unbiased_variance():
    """drawn-3 has rank 4 with its channels at 1: the fused kernel takes it."""
    rows = {
        r.implementation: r
        for r in run(["tf-keras"], dtypes=["float32"], case="batch_norm_train/drawn-3").results
    }
    assert rows[FUSED].status is Status.CONVENTION
    assert rows[FUSED].explained_by == {"running_var_correction": 1}
    assert rows[UNFUSED].status is Status.PASS


def test_fused_kernel_lacks_other_layouts():
    rows = run(["tf-keras"], dtypes=["float32"], case="batch_norm_train/typical").results
    fused = next(r for r in rows if r.implementation == FUSED)
    assert fused.status is Status.NOT_IMPLEMENTED


def test_float64_moving_statistics_take_a_float32_decay():
    (row,) = [
        r
        for r in run(["tf-keras"], dtypes=["float64"], case="batch_norm_train/typical").results
        if r.implementation == UNFUSED
    ]
    assert row.status is Status.FAIL
    assert {o["name"] for o in row.outputs if not o["ok"]} <= {"running_mean", "running_var"}


def test_a_wrong_eps_fails():
    from conformance.adapters.tf_keras import ADAPTER

    label = "tf_keras.layers.BatchNormalization (training)"
    row = planted_eps_row(ADAPTER, label, "batch_norm/given-eps")
    assert row.status is Status.FAIL
