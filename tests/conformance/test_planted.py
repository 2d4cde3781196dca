"""Planted bugs: each known-wrong implementation is reported as failing, with the right diagnosis."""

from __future__ import annotations

from conformance.api import check
from conformance.checked.cases import find_case
from conformance.diagnosis import diagnose
from conformance.reports.results import Status
from normref.registry import REGISTRY
from tests.conformance import planted

DTYPES = ["float64", "float32"]


def lone_sample_case(case_id: str) -> bool:
    """Whether the groups of case ``case_id`` hold one sample each: an unbiased variance of
    them is 0/0, where normref's biased one is 0."""
    case = find_case(case_id)
    spec = REGISTRY[case.op]
    return spec.partition is not None and spec.partition(case.sample).M == 1


def _failing(result):
    assert result.failures, "the planted bug was not caught"
    return result.failures


def test_unbiased_variance_in_the_normalization():
    """Explained by correction=1 everywhere but on groups of one sample, whose unbiased
    variance is 0/0: NaN, where normref's biased one is 0 (and the output beta)."""
    result = check(planted.layer_norm_unbiased, "layer_norm", dtypes=DTYPES)
    for row in _failing(result):
        assert any(o["name"] == "y" and not o["ok"] for o in row.outputs)
        if lone_sample_case(row.case):
            assert "non-finite values where the exact result is finite" in row.diagnosis
            continue
        assert "correction=1" in row.diagnosis, row.diagnosis
    found = diagnose(planted.layer_norm_unbiased, "layer_norm", dtypes=DTYPES)
    assert found.closest.changed == {"correction": 1}
    assert all(lone_sample_case(label.split()[0]) for label in found.closest.failing)


def test_eps_outside_the_square_root():
    result = check(planted.layer_norm_eps_outside, "layer_norm", dtypes=DTYPES)
    typical = next(r for r in _failing(result) if r.case == "layer_norm/typical")
    assert "eps_mode='add_std'" in typical.diagnosis
    found = diagnose(planted.layer_norm_eps_outside, "layer_norm", dtypes=DTYPES)
    assert {"eps_mode": "add_std"} in [h.changed for h in found.explaining]
    assert "eps_mode='add_std'" in found.verdict


def test_eps_argument_ignored():
    found = diagnose(planted.layer_norm_ignoring_eps, "layer_norm", dtypes=DTYPES)
    assert found.explaining[0].changed == {"fixed_eps": 1e-6}


def test_eps_argument_ignored_for_the_common_default():
    """An eps hard-coded at 1e-5 matches every case that passes 1e-5; the given-eps case (0.1)
    is the one that catches it."""
    result = check(planted.layer_norm_hard_coding_the_default_eps, "layer_norm", dtypes=DTYPES)
    assert {row.case for row in _failing(result)} == {"layer_norm/given-eps"}
    found = diagnose(planted.layer_norm_hard_coding_the_default_eps, "layer_norm", dtypes=DTYPES)
    assert found.explaining[0].changed == {"fixed_eps": 1e-5}


def test_wrong_momentum_meaning():
    """torch's layer, but momentum taken as flax's weight of the old value."""
    result = check(planted.batch_norm_train_old_weight, "batch_norm_train", "torch", dtypes=DTYPES)
    for row in _failing(result):
        assert "momentum_meaning='old_weight'" in row.diagnosis, row.diagnosis
        bad = {o["name"] for o in row.outputs if not o["ok"]}
        assert bad <= {"running_mean", "running_var"}
    found = diagnose(
        planted.batch_norm_train_old_weight, "batch_norm_train", convention="torch", dtypes=DTYPES
    )
    assert found.explaining[0].changed == {"momentum_meaning": "old_weight"}


def test_gradient_missing_its_mean_term():
    result = check(
        planted.layer_norm,
        "layer_norm",
        vjp=planted.layer_norm_vjp_without_mean_term,
        dtypes=DTYPES,
    )
    rows = _failing(result)
    assert {o["name"] for row in rows for o in row.outputs if not o["ok"]} == {"dx"}
    assert all(o["direction"] == "backward" for row in rows for o in row.outputs if not o["ok"])
    # On a well-conditioned input no arithmetic accounts for a missing term: the widest bound
    # of an arithmetic, the fast variance's, grows as (|mean|/std)^2 u, 100 u at |mean|/std = 10,
    # while the missing term, mean(g)/s, is of the order of dx itself. The term is named.
    conditioned = [r for r in rows if r.conditioning is not None and r.conditioning <= 10]
    assert {"layer_norm/typical", "layer_norm/outlier-1e4"} <= {r.case for r in conditioned}
    for row in conditioned:
        assert row.diagnosis.startswith("explained by dx lacks its mean term -mean(g)/s"), (
            row.case,
            row.dtype,
        )
        assert row.diagnosis.endswith(
            "out of budget: dx (backward); within budget: y, dgamma, dbeta"
        )
    found = diagnose(
        planted.layer_norm,
        "layer_norm",
        vjp=planted.layer_norm_vjp_without_mean_term,
        dtypes=DTYPES,
    )
    assert not found.explaining
    assert found.verdict.startswith("no convention explains")


def test_float16_overflow():
    """Squares summed in float16 overflow at float16-max: the float16 arithmetic accounts for
    every failing row (as normref computing in float16 gives them, or out of budget only where
    the squares overflow float16), and the evidence says so; float32 rows pass."""
    result = check(planted.layer_norm_in_input_dtype, "layer_norm", dtypes=["float16", "float32"])
    overflowing = [r for r in _failing(result) if r.case == "layer_norm/float16-max"]
    assert [r.dtype for r in overflowing] == ["float16"]
    assert overflowing[0].diagnosis.startswith(
        "within the wider budget of low_precision_compute='input' instead of the declared 'float32'"
    )
    assert "non-finite" in overflowing[0].diagnosis
    assert "float16 arithmetic overflows there" in overflowing[0].evidence
    assert not [r for r in result.failures if r.dtype == "float32"]


def test_a_broken_gradient_is_never_said_to_overflow():
    """A float64 implementation with a broken VJP, on inputs whose squares exceed float16's
    range: nothing is inferred from the input's magnitude; the diagnosis names what reproduces
    the rows."""
    result = check(
        planted.layer_norm,
        "layer_norm",
        vjp=planted.layer_norm_vjp_without_mean_term,
        dtypes=["float16"],
        case="layer_norm/float16-max",
    )
    (row,) = result.failures
    assert "overflow" not in row.diagnosis + (row.evidence or "")
    assert "out of budget: dx (backward)" in row.diagnosis


def test_the_right_implementation_passes():
    result = check(planted.layer_norm, "layer_norm", dtypes=["float16", *DTYPES])
    assert result.ok
    assert result.counts["pass"] > 0
    assert {r.status for r in result.results} <= {Status.PASS, Status.ACCEPTS}
    assert all(r.forward_only for r in result.results)
