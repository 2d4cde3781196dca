"""The haiku adapter end to end: BatchNorm's unclamped fast variance, statistics in float16,
SpectralNorm's eps inside the root, a planted eps."""

from __future__ import annotations

import pytest

pytest.importorskip("haiku", reason="dm-haiku is not installed (pip install -e '.[haiku]')")

from conformance.api import run
from conformance.reports.results import Status
from tests.conformance.planted import planted_eps_row


def _rows(case: str, dtype: str):
    return run(["haiku"], dtypes=[dtype], case=case).results


def test_batch_norm_fast_variance_goes_negative_on_a_large_mean():
    """E[x^2] - E[x]^2 in float32 with |mean|/std = 1e4 is negative here: rsqrt gives NaN. In
    float64 it is only inaccurate, within the fast variance's budget."""
    (row,) = _rows("batch_norm/mean-1e4", "float32")
    assert row.status is Status.FAIL
    assert "non-finite values where the exact result is finite" in row.diagnosis
    (row,) = _rows("batch_norm/mean-1e4", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"variance_algorithm": "fast"}


def test_batch_norm_training_step_with_debiased_averages():
    (row,) = _rows("batch_norm_train/typical", "float32")
    assert row.status is Status.PASS
    assert {o["name"] for o in row.outputs} >= {"y", "running_mean", "running_var", "dx"}


def test_rms_norm_squares_float16_in_float16():
    """RMSNorm squares float16 input in float16: values near 6e4 overflow, and its gradient is
    not finite where the exact one is."""
    (row,) = _rows("rms_norm/float16-max", "float16")
    assert row.status is Status.FAIL
    assert "dx: non-finite values where the exact result is finite" in row.diagnosis


def test_spectral_norm_puts_eps_inside_the_root():
    (row,) = _rows("spectral_norm_train/given-eps", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"l2_eps_mode": "add"}
    assert {o["name"] for o in row.outputs} == {"y", "u", "sigma", "dw"}


def test_a_wrong_eps_fails():
    from conformance.adapters.haiku import ADAPTER

    row = planted_eps_row(ADAPTER, "haiku.LayerNorm", "layer_norm/given-eps")
    assert row.status is Status.FAIL
