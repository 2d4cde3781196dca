"""The optax adapter end to end, on the cases that show its findings."""

from __future__ import annotations

import pytest

pytest.importorskip("optax", reason="optax is not installed (pip install -e '.[jax]')")

from conformance.api import run
from conformance.reports.results import Status


def _rows(case: str, dtype: str = "float64"):
    return {r.implementation: r for r in run(["optax"], dtypes=[dtype], case=case).results}


def test_unitwise_norm_of_a_rank_3_weight_reduces_axis_0_only():
    """optax infers units from the rank: a rank-3 kernel (in, heads, out) has one unit per
    (head, out) pair, where normref has one per output unit."""
    (row,) = _rows("unitwise_norm/typical").values()
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"unit_axes": "by_rank"}
    assert row.forward_only


def test_adaptive_grad_clip():
    """With its default units, optax's AGC differs on rank-3 weights; with the fan-in given
    as ``axis`` it is normref's, forward and backward."""
    rows = _rows("adaptive_grad_clip/typical")
    default = rows["optax.adaptive_grad_clip"]
    assert default.status is Status.CONVENTION
    assert default.explained_by == {"unit_axes": "by_rank"}
    given = rows["optax.adaptive_grad_clip (axis: the fan-in)"]
    assert given.status is Status.PASS
    assert {o["name"] for o in given.outputs} == {"y", "dgrad", "dparam"}


def test_adaptive_grad_clip_gradient_is_nan_for_a_zero_gradient_unit():
    """optax's AGC differentiated by jax: the norm's sqrt has no derivative at 0, and its NaN
    reaches the gradient through the branch that ``where`` discards. normref's derivative of
    an unclipped unit is the identity."""
    rows = _rows("adaptive_grad_clip/zero-gradient-unit")
    for row in rows.values():
        assert row.status is Status.FAIL
        assert "dgrad: non-finite values where the exact result is finite" in row.diagnosis
        assert {o["name"] for o in row.outputs if not o["ok"]} == {"dgrad"}


def test_clip_by_global_norm_has_no_eps():
    """optax scales by max_norm / norm: normref's default (eps = 0), even at a norm of 4e-6."""
    for case in ("clip_by_global_norm/typical", "clip_by_global_norm/small-norm"):
        (row,) = _rows(case, "float32").values()
        assert row.status is Status.PASS, row.diagnosis


@pytest.mark.parametrize("case", ["HWIO-kernel", "dense-kernel"])
def test_centralize_centres_along_the_leading_axis_whatever_the_layout(case):
    """optax's ``centralize`` averages axes 1..ndim-1: for flax's HWIO kernel that centres each
    kernel row, for its (in, out) kernel each input unit, not the output units."""
    (row,) = _rows(f"gradient_centralize/{case}").values()
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"centralize_axes": "leading"}
    assert {o["name"] for o in row.outputs} == {"y", "dgrad"}


def test_centralize_is_normrefs_where_the_units_lead():
    """Every case with its units on axis 0 (torch's layouts) passes, forward and backward;
    every other case passes or differs by that convention alone."""
    from conformance.checked.cases import find_case

    rows = run(["optax"], dtypes=["float64"], ops=["gradient_centralize"]).results
    leading = 0
    for row in rows:
        sample = find_case(row.case).sample
        if sample.kwargs["out_axis"] % sample.args["grad"].ndim == 0:
            leading += 1
            assert row.status is Status.PASS, (row.case, row.diagnosis)
        else:
            assert row.status is Status.PASS or row.explained_by == {
                "centralize_axes": "leading"
            }, (row.case, row.status, row.diagnosis)
    assert leading
