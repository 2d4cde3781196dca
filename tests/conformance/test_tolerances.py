"""The error bounds hold for real implementations of each arithmetic, and not for others.

A bound that a genuine implementation of its arithmetic exceeds is wrong, and
so is one wide enough to hide a different arithmetic: normref itself supplies
those implementations (correctly rounded; two-pass in the input's dtype;
modelling flax's fast variance with ``precision="flax"``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.adapters.function import function_binding
from conformance.api import check
from conformance.bounds.budgets import budget_ulps
from conformance.checked.cases import find_case, prepare
from conformance.checked.models import NORMREF
from conformance.judging.reference import expected
from conformance.judging.runner import run_bindings
from conformance.reports.results import Status
from normref.registry import REGISTRY


def _normref(precision):
    bindings = []
    for name, spec in REGISTRY.items():

        def forward(*args, _spec=spec, **kwargs):
            return _spec.forward(*args, **kwargs, precision=precision)

        def vjp(*args, _spec=spec, **kwargs):
            return _spec.vjp(*args, **kwargs, precision=precision)

        bindings.append(function_binding(forward, name, vjp=vjp, label=f"normref.{name}"))
    return bindings


def test_correctly_rounded_results_are_within_budget_everywhere():
    """normref's highest precision rounds its float64 result once: every row passes."""
    results = run_bindings(_normref("highest"), ["float16", "float32", "float64"])
    statuses = {r.status for r in results}
    assert statuses == {Status.PASS, Status.REFUSES}, [
        (r.case, r.dtype, r.diagnosis) for r in results if r.status is Status.FAIL
    ]


TIGHTNESS = 0.02
"""The least share of its budget that real arithmetic uses, at worst over an op's cases."""


def test_a_two_pass_implementation_in_the_input_dtype_is_within_budget_and_uses_it():
    """normref's native precision is a two-pass implementation in float32 / float64.

    Every row is within budget; and the budgets are not vacuous: for every op, at
    worst over its cases and outputs, this arithmetic uses at least :data:`TIGHTNESS`
    of the budget, so no op's budgets are 50 times or more what a genuine
    float32 implementation errs (docs/conformance-tolerances.md states the shares).
    """
    results = run_bindings(_normref("native"), ["float32", "float64"])
    failing = [(r.case, r.dtype, r.diagnosis) for r in results if r.status is Status.FAIL]
    assert not failing
    # an op without arithmetic in the input's dtype (precision="native" computes in float64
    # there) uses none of its budget: its budgets' tightness is not measured by this run
    used: dict[str, float] = {
        name: 0.0 for name, spec in REGISTRY.items() if spec.capabilities.native_precision
    }
    for row in results:
        if row.op not in used:
            continue
        for output in row.outputs:
            share = float(output["used"])
            if not math.isnan(share):  # NaN where both sides are NaN
                used[row.op] = max(used[row.op], share)
    loose = {op: round(share, 4) for op, share in used.items() if share < TIGHTNESS}
    assert not loose, f"budgets the arithmetic uses less than {TIGHTNESS} of: {loose}"


def test_fast_variance_is_out_of_the_two_pass_budget_and_within_its_own():
    """normref modelling flax (E[x^2] - E[x]^2 in float32) on |mean|/std = 1e4."""

    def flax_like(*args, **kwargs):
        return REGISTRY["layer_norm"].forward(*args, **kwargs, precision="flax")

    result = check(flax_like, "layer_norm", "flax", dtypes=["float32"], case="layer_norm/mean-1e4")
    row = result.results[0]
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"variance_algorithm": "fast_clamped"}
    assert max(float(o["used"]) for o in row.baseline) > 10


@pytest.mark.parametrize(
    ("kind", "name", "dtype", "n", "summed", "budget"),
    [
        # 0.5 for the final rounding, then (reductions x u_stats + constant x u_elementwise) / u_out
        ("standardizing", "y", "float32", 5, 0, 0.5 + 5 + 7),
        ("standardizing", "y", "float16", 5, 0, 0.5 + 5 * 2.0**-13 + 7),
        ("standardizing", "dx", "float64", 8, 0, 0.5 + 2 * (3 * 8 + 14)),
        ("rms_scaling", "dgamma", "bfloat16", 4, 20, 0.5 + 20 * 2.0**-16 + 4),
        ("centering", "y", "float32", 10, 0, 0.5 + 10 + 1),
    ],
)
def test_budget_table(kind, name, dtype, n, summed, budget):
    """The part of a budget that depends only on the sizes, from the operation counts by hand
    (the float64 reference's share is included; it is below 1e-8 ulp except for float64)."""
    assert budget_ulps(kind, name, dtype, n=n, summed=summed) == pytest.approx(budget, rel=1e-7)


def test_errors_of_two_sample_groups_are_measured_against_their_terms():
    """Each output of a group of two is ±1 whatever x is: the x-gradient is ~0 by cancellation,
    so the unit errors are measured in is the terms' magnitude, not the result's."""
    result = expected(prepare(find_case("layer_norm/two-sample-groups"), "float32"), NORMREF)
    dx, scale = np.abs(result.values["dx"]), result.terms.outputs["dx"].scale()
    assert np.all(dx <= 1e-3 * scale)


def test_the_rows_state_their_conditioning():
    """A case with |mean|/std = 1e4 states about that (the reference's share of the budget,
    which the terms' scale keeps the same, is tested in test_report_lines.py)."""
    typical = check(
        REGISTRY["layer_norm"].forward, "layer_norm", dtypes=["float64"], case="layer_norm/typical"
    ).results[0]
    shifted = check(
        REGISTRY["layer_norm"].forward, "layer_norm", dtypes=["float64"], case="layer_norm/mean-1e4"
    ).results[0]
    assert shifted.conditioning > 1e3 * typical.conditioning
