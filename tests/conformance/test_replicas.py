"""Batch norm across 2 replicas (host devices, in a process the suite starts): flax, haiku
and equinox against the single-device reference, on a typical input and a mean of 1e4."""

from __future__ import annotations

import pytest

pytest.importorskip("flax", reason="flax is not installed (pip install -e '.[jax]')")

import importlib.util

from conformance.api import run
from conformance.reports.results import Status

FRAMEWORKS = [f for f in ("flax", "haiku", "equinox") if importlib.util.find_spec(f)]


@pytest.fixture(scope="module")
def rows():
    found = {}
    for case in ("batch_norm_train/typical", "batch_norm_train/mean-1e4"):
        result = run([*FRAMEWORKS, "torch"], dtypes=["float32"], case=case, replicas=2)
        found[case] = result
    return found


def _replicated(result):
    return {r.framework: r for r in result.results if r.implementation.endswith("(2 replicas)")}


def test_replicas_reproduce_the_single_device_batch_norm(rows):
    replicated = _replicated(rows["batch_norm_train/typical"])
    assert set(replicated) == set(FRAMEWORKS)
    for row in replicated.values():
        assert row.status is Status.PASS, (row.implementation, row.diagnosis)
        assert {o["name"] for o in row.outputs} >= {"y", "running_mean", "running_var", "dx"}


def test_a_large_mean_across_replicas(rows):
    """Merging E[x] and E[x^2] loses the variance of a mean of 1e4 in float32: flax clamps it
    (within its fast variance's budget), haiku does not (NaN); equinox's second pass does not
    lose it."""
    replicated = _replicated(rows["batch_norm_train/mean-1e4"])
    assert replicated["flax"].explained_by == {"variance_algorithm": "fast_clamped"}
    if "haiku" in replicated:
        assert replicated["haiku"].status is Status.FAIL
        assert "non-finite" in replicated["haiku"].diagnosis
    if "equinox" in replicated:
        assert replicated["equinox"].status is Status.PASS


def test_torch_sync_batch_norm_is_not_checked(rows):
    result = rows["batch_norm_train/typical"]
    (skipped,) = result.skipped
    assert skipped["framework"] == "torch (2 replicas)"
    assert "CUDA" in skipped["reason"]
    assert result.exit_code == 2
