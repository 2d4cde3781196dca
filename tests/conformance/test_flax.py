"""The flax adapter end to end, on the cases that show its findings."""

from __future__ import annotations

import pytest

pytest.importorskip("flax", reason="flax is not installed (pip install -e '.[jax]')")

from conformance.api import run
from conformance.results import Status


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
