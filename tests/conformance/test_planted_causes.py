"""Structural bugs, each named: the words the report uses for the cause, on every failing row.

Each planted implementation (``planted``, ``planted_weights``) is wrong in one structural way
that no convention describes. Where a cause reproduces every failing row of finite input,
the row's diagnosis names it ("explained by ..."; a row whose input holds a NaN, which an
implementation may propagate otherwise, says the cause named for the others does not
reproduce it); the blocked kernel's failure is localized by index instead. float64 alone
(float32 for the lower precision) keeps them quick: a structural error is far outside its
budget at any dtype.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.api import check
from conformance.checked.cases import Case, case_seed
from conformance.diagnosis import diagnose
from conformance.reports.summary import case_line
from normref.registry import Sample
from tests.conformance import planted, planted_weights

F64 = ["float64"]


def _named(result, words: str, *, lead: str = "explained by") -> None:
    """Every failing row names the cause with ``words``: as its explanation, or, for a row whose
    input is not finite, as what explains the others."""
    assert result.failures, "the planted bug was not caught"
    for row in result.failures:
        first = row.diagnosis.split("; ")[0]
        assert words in first, (row.case, row.diagnosis)
        assert first.startswith((lead, "not reproduced on this row")), (
            row.case,
            row.diagnosis,
        )


@pytest.mark.parametrize(
    ("op", "fn", "vjp", "words"),
    [
        ("layer_norm", planted.layer_norm, planted.layer_norm_vjp_without_mean_term, "mean term"),
        (
            "layer_norm",
            planted.layer_norm,
            planted.layer_norm_vjp_without_variance_term,
            "variance term",
        ),
        (
            "batch_norm",
            planted.batch_norm,
            planted.batch_norm_vjp_without_variance_term,
            "variance term",
        ),
        ("layer_norm", planted.layer_norm, planted.layer_norm_vjp_swapped, "swapped"),
        (
            "layer_norm",
            planted.layer_norm,
            planted.layer_norm_vjp_dgamma_over_the_normalized_axes,
            "dgamma summed over the wrong axes",
        ),
    ],
)
def test_a_wrong_backward_is_named(op, fn, vjp, words):
    result = check(fn, op, vjp=vjp, dtypes=F64)
    _named(result, words)
    for row in result.failures:
        assert "out of budget: d" in row.diagnosis  # a gradient, not the forward
        assert "(forward)" not in row.diagnosis.split("out of budget:")[1].split(";")[0]
    # the report names both functions: a failing gradient comes from the VJP
    assert result.failures[0].implementation == (
        f"tests.conformance.planted:{fn.__name__} with VJP tests.conformance.planted:{vjp.__name__}"
    )


def test_a_gradient_summed_over_the_wrong_axes_has_their_numbers_in_the_evidence():
    result = check(
        planted.layer_norm,
        "layer_norm",
        vjp=planted.layer_norm_vjp_dgamma_over_the_normalized_axes,
        dtypes=F64,
        case="layer_norm/typical",
    )
    (row,) = result.failures
    assert "over the normalized axes instead of the other axes" in row.diagnosis
    assert row.evidence == "dgamma: summed over axes (2) instead of (0, 1)"


@pytest.mark.parametrize(
    ("op", "fn", "words"),
    [
        ("group_norm", planted.group_norm_interleaved, "interleaved"),
        ("rms_norm", planted.rms_norm_subtracting_the_mean, "mean subtracted"),
        ("instance_norm", planted.instance_norm_over_the_batch_too, "wrong axes"),
        ("weight_standardize", planted_weights.weight_standardize_ignoring_out_axis, "axes"),
        ("adaptive_grad_clip", planted_weights.agc_inverted, "inverted"),
        ("adaptive_grad_clip", planted_weights.agc_by_tensor_norm, "unit-wise"),
        ("zca_whiten", planted_weights.zca_whiten_returning_pca, "rotation"),
        ("adaptive_grad_clip", planted_weights.agc_without_eps_floor, "eps"),
    ],
)
def test_a_wrong_forward_is_named(op, fn, words):
    _named(check(fn, op, dtypes=F64), words)


def test_instance_norm_over_the_batch_says_which_axes():
    (row,) = check(
        planted.instance_norm_over_the_batch_too,
        "instance_norm",
        dtypes=F64,
        case="instance_norm/typical",
    ).failures
    assert "over the normalized axes and the other axes instead of the normalized axes" in (
        row.diagnosis
    )
    assert row.evidence == "y: statistics over axes (0, 2) instead of axes (2)"


def test_zca_returning_pca_is_named_pca_where_its_columns_match():
    (row,) = check(
        planted_weights.zca_whiten_returning_pca,
        "zca_whiten",
        dtypes=F64,
        case="zca_whiten/typical",
    ).failures
    assert "the PCA-whitened result" in row.diagnosis


def test_float32_computed_in_float16_is_named_a_lower_precision():
    """The arithmetic only widens the budget: "within the wider budget of", never "explained
    by"; where the squares overflow float16 the evidence says so."""
    result = check(planted.layer_norm_float32_in_float16, "layer_norm", dtypes=["float32"])
    _named(
        result,
        "computing in float16, a lower precision than the float32 input's",
        lead="within the wider budget of",
    )
    overflowing = next(r for r in result.failures if r.case == "layer_norm/float16-max")
    assert "float16 arithmetic overflows there" in overflowing.evidence


def _large_cases(sizes: tuple[int, ...]) -> list[Case]:
    """Layer-norm cases whose groups are longer than the planted kernel's block of 64."""
    cases = []
    for size in sizes:
        name = f"group-{size}"
        seed = case_seed("layer_norm", name, 0)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((3, size))
        sample = Sample(
            {"x": x, "gamma": rng.standard_normal(size), "beta": rng.standard_normal(size)},
            {"axes": (-1,), "eps": 1e-5},
        )
        description = f"groups of {size} along the last axis"
        cases.append(Case(f"layer_norm/{name}", "layer_norm", "edge", description, seed, sample))
    return cases


def test_a_blocked_kernel_dropping_its_tail_is_localized_by_index():
    """Groups of 100 and 72: the elements past the last whole block of 64 are wrong, those below
    within budget; no cause is named for it."""
    result = check(
        planted.layer_norm_blocked, "layer_norm", dtypes=F64, cases=_large_cases((100, 72))
    )
    assert len(result.failures) == 2
    for row in result.failures:
        assert row.diagnosis.startswith("no convention field or structural hypothesis")
        assert row.evidence == (
            "y: elements at index >= 64 along axis 1 (the normalized axis) are wrong; below it "
            "within budget"
        )
        assert "index >= 64 along axis 1 (the normalized axis)" in case_line(row, row.worst())
    assert check(planted.layer_norm_blocked, "layer_norm", dtypes=F64).ok  # groups below 64


def test_diagnose_names_the_cause_that_reproduces_every_failing_row():
    found = diagnose(
        planted.layer_norm, "layer_norm", vjp=planted.layer_norm_vjp_without_mean_term, dtypes=F64
    )
    assert not found.explained
    assert found.verdict.startswith(
        "no convention explains tests.conformance.planted:layer_norm with VJP "
        "tests.conformance.planted:layer_norm_vjp_without_mean_term; explained by dx lacks its "
        "mean term"
    )
    assert "out of budget: dx (backward); within budget in every failing row: y, dgamma, dbeta" in (
        found.verdict
    )
    assert "\n" not in found.verdict


def test_diagnose_tries_pairs_of_changes():
    """haiku's RMSNorm differs from normref in two fields at once: no single change explains
    it, the pair does, and the verdict says a pair is needed."""
    found = diagnose(
        planted.rms_norm_fixed_eps_in_float16, "rms_norm", dtypes=["float16", "float32"]
    )
    assert found.verdict == (
        "tests.conformance.planted:rms_norm_fixed_eps_in_float16 is explained by a pair of "
        "changes, no single one: normref with low_precision_compute='input' and fixed_eps=1e-05"
    )
