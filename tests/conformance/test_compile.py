"""--compile: framework layers also run compiled (torch.compile, jax.jit), as implementations of
their own; a compile that fails is a reported row, and the report says what differs from eager."""

from __future__ import annotations

import time

import pytest

from conformance.adapters import arrays
from conformance.api import run
from conformance.reports.compiled import compiled_differences
from conformance.reports.results import Status

CASE = "layer_norm/typical"


def _compiled_rows(result):
    return [r for r in result.results if r.implementation.endswith(" (compiled)")]


def test_torch_layers_run_through_torch_compile():
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    result = run(["torch"], case=CASE, dtypes=["float32"], compile=True)
    compiled = _compiled_rows(result)
    assert {r.implementation for r in compiled} == {
        "torch.nn.functional.layer_norm (compiled)",
        "torch.nn.LayerNorm (compiled)",
    }
    assert {r.status for r in compiled} == {Status.PASS}
    assert compiled_differences(result) == [
        "compiled kernels: the same verdict as eager on all 2 rows"
    ]


def test_jax_layers_run_through_jax_jit():
    pytest.importorskip("flax", reason="flax is not installed (pip install -e '.[jax]')")
    result = run(["flax"], case=CASE, dtypes=["float32"], compile=True)
    compiled = _compiled_rows(result)
    assert [r.implementation for r in compiled] == ["flax.linen.LayerNorm (compiled)"]
    assert {r.status for r in compiled} == {Status.PASS}


def test_a_compile_that_fails_is_a_failing_row_with_its_reason(monkeypatch):
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

    def refuse(_kind, _fn):
        msg = "no C++ compiler for inductor"
        raise RuntimeError(msg)

    monkeypatch.setattr(arrays.TorchKind, "compiled", refuse)
    result = run(["torch"], case=CASE, dtypes=["float32"], compile=True)
    compiled = _compiled_rows(result)
    assert {r.status for r in compiled} == {Status.FAIL}
    assert all("no C++ compiler for inductor" in r.diagnosis for r in compiled)
    eager = [r for r in result.results if r not in compiled]
    assert {r.status for r in eager} == {Status.PASS}


def test_compile_time_is_not_counted_in_a_rows_time(monkeypatch):
    """A compile that takes a second (here a stand-in that sleeps, then runs eagerly) is left
    out of the row's time, and in the run's time."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

    def slow_compile(_kind, fn):
        time.sleep(1.0)
        return fn

    monkeypatch.setattr(arrays.TorchKind, "compiled", slow_compile)
    result = run(["torch"], case=CASE, dtypes=["float32"], compile=True)
    compiled = _compiled_rows(result)
    assert {r.status for r in compiled} == {Status.PASS}
    assert all(r.seconds < 1.0 for r in compiled), [r.seconds for r in compiled]
    assert result.seconds >= 2.0
