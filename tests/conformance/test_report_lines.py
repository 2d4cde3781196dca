"""What a report's lines say: the reference's share of the budget in the budget's unit, the
worst element at a finite exact value, diagnoses that name what explains a row, and a verdict
line that names every status present."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conformance.api import check
from conformance.checked.formats import unit_roundoff
from conformance.checked.ops import get_op
from conformance.reports.results import CaseResult, RunResult, Status
from conformance.reports.summary import ORDER, case_line, verdict
from normref.registry import REGISTRY


def _row(op: str, case: str, dtype: str) -> CaseResult:
    return check(REGISTRY[op].forward, op, dtypes=[dtype], case=f"{op}/{case}").results[0]


@pytest.mark.parametrize("case", ["typical", "mean-1e4"])
def test_the_reference_bound_is_a_share_of_the_budget_in_its_unit(case):
    """At float64 under normref's arithmetic the implementation's rounding bound is the
    reference's own, so an element's budget is the final rounding (half an ulp of the exact
    value, at most half an ulp of the terms' scale) plus twice the reference's bound, in ulps
    at the terms' scale: 2 R <= budget <= 2 R + 1/2. At float32 the reference's share is the
    ratio of the unit roundoffs, 2^-29, of the implementation's. |mean|/std = 1e4 is absorbed
    by the terms' scale (|x|/s is one of y's terms), so the share does not grow with it."""
    row = _row("layer_norm", case, "float64")
    for output in row.outputs:
        reference, budget = output["reference_bound_ulps"], output["budget_ulps"]
        assert 0 < 2 * reference <= budget <= 2 * reference + 0.5, output
    single = _row("layer_norm", case, "float32").outputs[0]
    ratio = unit_roundoff("float64") / unit_roundoff("float32")
    # the budget also holds the final rounding: the reference's share is below the ratio
    assert single["reference_bound_ulps"] <= ratio * single["budget_ulps"]
    line = case_line(row, row.outputs[0])
    assert "of the budget there, " in line
    assert "ulp is the float64 reference's own error bound" in line
    assert "reference good to" not in line


def test_the_reference_bound_never_exceeds_the_budget_of_a_batch_norm():
    """Batch norm's typical case at float64 once read "reference good to
    7215 ulp" beside a budget of 77 ulp; the reference's bound is part of the budget."""
    for output in _row("batch_norm", "typical", "float64").outputs:
        assert output["reference_bound_ulps"] <= output["budget_ulps"], output


def _unit_norm_replacing_nan(value: float, off_by: float = 1.0):
    """normref's unit-wise norm with its NaNs (units holding a NaN) replaced by ``value``, and
    the last element scaled by ``off_by``."""
    forward = get_op("unitwise_norm").spec.forward

    def unit_norm(*args, **kwargs):
        y = np.nan_to_num(np.asarray(forward(*args, **kwargs)), nan=value)
        y.flat[-1] *= off_by
        return y

    return unit_norm


def test_a_number_where_normref_gives_nan_is_said_so():
    result = check(
        _unit_norm_replacing_nan(1.5), "unitwise_norm", dtypes=["float64"], case="unitwise_norm/nan"
    )
    row = result.failures[0]
    output = row.worst()
    assert output["nonfinite_mismatches"] > 0
    line = case_line(row, output)
    assert "normref gives NaN there, got 1.5" in line
    assert "budget nan" not in line
    assert "values where normref gives NaN or infinity and the implementation" in row.diagnosis
    assert "where the exact result is finite" not in row.diagnosis


def test_the_worst_element_is_at_a_finite_exact_value_when_one_is_out_of_budget():
    """The last element is 1% off (far beyond a float64 budget); the NaN units are numbers too."""
    result = check(
        _unit_norm_replacing_nan(1.5, off_by=1.01),
        "unitwise_norm",
        dtypes=["float64"],
        case="unitwise_norm/nan",
    )
    output = result.failures[0].worst()
    assert np.isfinite(float(output["expected"]))
    assert np.isfinite(float(output["budget_ulps"]))
    assert float(output["actual"]) == pytest.approx(1.01 * float(output["expected"]))
    line = case_line(result.failures[0], output)
    assert f"{output['nonfinite_mismatches']} elements elsewhere where normref gives NaN" in line


def layer_norm_fast_variance(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Layer norm with the variance as E[x^2] - E[x]^2 (clamped at 0), in x's dtype."""
    mean = x.mean(axis=axes, keepdims=True)
    var = np.maximum((x * x).mean(axis=axes, keepdims=True) - mean * mean, 0)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y.astype(x.dtype)


def test_an_arithmetic_that_only_widens_the_budget_is_not_called_an_explanation():
    """|mean|/std = 1e4 leaves the fast variance in float32 no correct digit: only the fast
    variance's wider budget holds the row, and both of its forms do, each alone."""
    result = check(
        layer_norm_fast_variance, "layer_norm", dtypes=["float32"], case="layer_norm/mean-1e4"
    )
    assert result.failures[0].diagnosis == (
        "within the wider budget of any one of: variance_algorithm='fast' instead of the "
        "declared 'two_pass'; variance_algorithm='fast_clamped' instead of the declared "
        "'two_pass'; out of budget: y (forward)"
    )


def _run_with(counts: dict[Status, int]) -> RunResult:
    rows = [
        CaseResult("impl", "fw", "layer_norm", f"layer_norm/{i}", "edge", 0, "float32", s, "m")
        for s, n in counts.items()
        for i in range(n)
    ]
    return RunResult(rows)


@pytest.mark.parametrize("size", range(len(Status) + 1))
def test_the_verdict_line_names_exactly_the_statuses_present(size):
    """Every combination of statuses, each with a count of its own: the line names each present
    one with its count and no absent one."""
    for present in itertools.combinations(list(Status), size):
        counts = {s: 2 + ORDER.index(s) for s in present}
        line = verdict(_run_with(counts))
        for status in Status:
            if status in counts:
                assert f"{counts[status]} {status.label}" in line, (present, line)
            else:
                assert status.label not in line, (present, line)
        assert "every row" not in line
