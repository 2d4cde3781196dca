"""A user's own function: every array type, autograd backward, declared conventions, crashes."""

from __future__ import annotations

import pytest

from conformance.api import check
from conformance.checked.cases import cases_for
from conformance.reports.results import Status
from tests.conformance import planted


def test_torch_tensors_and_autograd():
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    result = check(
        planted.layer_norm_torch, "layer_norm", array_type="torch", dtypes=["float32", "float64"]
    )
    assert result.ok
    assert not any(r.forward_only for r in result.results)
    typical = next(r for r in result.results if r.case == "layer_norm/typical")
    assert {o["name"] for o in typical.outputs} == {"y", "dx", "dgamma", "dbeta"}


def test_jax_arrays_and_jax_vjp():
    pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    result = check(
        planted.layer_norm_jax,
        "layer_norm",
        array_type="jax",
        dtypes=["float32"],
        case="layer_norm/outlier-1e4",
    )
    (row,) = result.results
    assert row.status is Status.PASS
    assert {o["name"] for o in row.outputs} == {"y", "dx", "dgamma", "dbeta"}


def test_the_declared_convention_explains_a_difference():
    """A torch-like layer differs from normref's biased running variance, as torch declares."""
    result = check(planted.batch_norm_train_torch, "batch_norm_train", "torch", dtypes=["float64"])
    assert result.ok
    findings = result.findings
    assert findings
    assert all(r.explained_by == {"running_var_correction": 1} for r in findings)


def test_an_exception_fails_its_row_only():
    result = check(planted.layer_norm_crashing_on_size_one, "layer_norm", dtypes=["float32"])
    shapes = {c.id: c.sample.args["x"].shape for c in cases_for("layer_norm")}
    assert result.failures
    for row in result.results:
        if row.kind == "error":  # refusing an input normref refuses is right
            assert row.status is Status.REFUSES
            continue
        crashed = 1 in shapes[row.case]
        assert (row.status is Status.FAIL) == crashed, row.case
        if crashed:
            assert "RuntimeError: cannot normalize" in row.traceback
