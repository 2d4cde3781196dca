"""The flax adapter end to end, on the cases that show its findings."""

from __future__ import annotations

import pytest

pytest.importorskip("flax", reason="flax is not installed (pip install -e '.[jax]')")

from conformance.api import run
from conformance.reports.results import Status


def _rows(case: str, dtype: str):
    op = case.split("/")[0]
    return run(["flax"], ops=[op], dtypes=[dtype], case=case).results


def test_fast_variance_loses_accuracy_on_a_large_mean():
    (row,) = _rows("layer_norm/mean-1e4", "float32")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"variance_algorithm": "fast_clamped"}
    assert "normref modelling this arithmetic (precision='flax')" in row.evidence
    assert max(float(o["used"]) for o in row.baseline) > 1


def test_bfloat16_input_gives_a_float32_output():
    (row,) = _rows("layer_norm/typical", "bfloat16")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"output_dtype": "promote"}
    y = next(o for o in row.outputs if o["name"] == "y")
    assert (y["dtype"], y["expected_dtype"]) == ("float32", "float32")
    baseline = next(o for o in row.baseline if o["name"] == "y")
    assert baseline["problem"] == "dtype float32, expected bfloat16"


def test_layer_norm_default_eps():
    (row,) = _rows("layer_norm/default-eps", "float32")
    assert row.explained_by == {"layer_norm_eps": 1e-6}


def test_batch_norm_with_mutable_batch_stats():
    """flax's momentum weighs the old value and its running variance is biased: with the
    momentum translated by the adapter, the update is normref's."""
    (row,) = _rows("batch_norm_train/typical", "float64")
    assert row.status is Status.PASS
    assert {o["name"] for o in row.outputs} >= {"y", "running_mean", "running_var", "dx"}


def test_weight_norm_puts_1e_12_inside_the_root():
    """flax's WeightNorm is v rsqrt(sum(v^2) + 1e-12): 1e-13 relative, seen in float64; on a
    zero unit its gradient is g dy / 1e-6 where normref's (without eps) is 0."""
    (row,) = _rows("weight_norm/typical", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"weight_norm_eps": 1e-12}
    (zero,) = _rows("weight_norm/zero-unit", "float32")
    assert zero.explained_by == {"weight_norm_eps": 1e-12}
    assert {o["name"] for o in zero.baseline} >= {"dv"}


def test_spectral_norm_normalizes_with_eps_added():
    """flax's SpectralNorm: u and sigma in batch_stats, each vector normalized by
    rsqrt(|x|^2 + 1e-12) (torch: x / max(|x|, 1e-12))."""
    (row,) = _rows("spectral_norm_train/typical", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"l2_eps_mode": "add"}
    assert {o["name"] for o in row.outputs} == {"y", "u", "sigma", "dw"}
