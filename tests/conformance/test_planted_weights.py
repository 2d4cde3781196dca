"""Planted bugs in the weights, gradients and whitening ops: each is caught, with its diagnosis."""

from __future__ import annotations

from conformance.api import check
from conformance.diagnosis import diagnose
from tests.conformance import planted_weights as planted
from tests.conformance.test_planted import lone_sample_case

DTYPES = ["float64", "float32"]


def _failing(result):
    assert result.failures, "the planted bug was not caught"
    return result.failures


def _bad_outputs(rows) -> set[str]:
    return {o["name"] for row in rows for o in row.outputs if not o["ok"]}


def _finite(rows):
    """The rows of cases whose input is finite and not zero (a NaN or a zero weight changes
    the diagnosis: non-finite values)."""
    return [r for r in rows if not r.case.endswith(("/nan", "/zero-weight"))]


def test_agc_clipping_by_the_tensor_norm():
    """Whole-tensor norms for unit-wise ones: the clipped gradient is wrong, no convention
    field explains it, the whole tensor taken as one unit does."""
    result = check(planted.agc_by_tensor_norm, "adaptive_grad_clip", dtypes=DTYPES)
    rows = _finite(_failing(result))
    assert _bad_outputs(rows) == {"y"}
    assert all(
        r.diagnosis.startswith(
            "explained by the whole tensor's norm and statistics instead of unit-wise"
        )
        for r in rows
    )
    assert check(planted.agc, "adaptive_grad_clip", dtypes=DTYPES).ok


def test_agc_with_units_inferred_from_the_rank():
    """The NFNets/optax units declared as normref's: diagnosed as ``unit_axes='by_rank'``."""
    rows = _finite(_failing(check(planted.agc_by_rank, "adaptive_grad_clip", dtypes=DTYPES)))
    assert all("unit_axes='by_rank'" in r.diagnosis for r in rows)
    found = diagnose(planted.agc_by_rank, "adaptive_grad_clip", dtypes=["float64"])
    assert {"unit_axes": "by_rank"} in [h.changed for h in found.explaining]
    assert {"optax preset", "nfnets preset"} <= {h.name for h in found.explaining}


def test_agc_at_its_clip_boundary_may_take_either_branch():
    """At the threshold the derivative has a kink: the other side's gradient differs by far
    more than rounding, and is within budget there only (the bound adds the branches'
    difference where rounding cannot tell the sides apart)."""
    boundary = check(
        planted.agc,
        "adaptive_grad_clip",
        vjp=planted.agc_vjp_clipping_at_the_threshold,
        dtypes=DTYPES,
        case="adaptive_grad_clip/clip-boundary",
    )
    assert boundary.ok
    assert max(float(o["max_ulps"]) for r in boundary.results for o in r.outputs) > 1e3
    typical = check(
        planted.agc,
        "adaptive_grad_clip",
        vjp=planted.agc_vjp_clipping_at_the_threshold,
        dtypes=DTYPES,
        case="adaptive_grad_clip/typical",
    )
    assert typical.ok


def test_weight_norm_without_the_unit_axis():
    """One norm for the whole tensor, as torch's ``dim=-1`` gives: caught in every case."""
    result = check(planted.weight_norm_whole_tensor, "weight_norm", dtypes=DTYPES)
    rows = _failing(result)
    assert _bad_outputs(rows) == {"y"}
    assert len(rows) > len(result.results) // 2


def _one_sample(rows):
    """The rows of groups of one sample, whose unbiased variance an implementation takes as
    0/0 (NaN, or an error) where normref's biased one is 0: explained by no convention."""
    return [r for r in rows if lone_sample_case(r.case)]


def test_weight_standardization_with_an_unbiased_variance():
    result = check(planted.weight_standardize_unbiased, "weight_standardize", dtypes=DTYPES)
    failing = _failing(result)
    for row in failing:
        if row not in _one_sample(failing):
            assert "correction=1" in row.diagnosis, row.diagnosis
    found = diagnose(planted.weight_standardize_unbiased, "weight_standardize", dtypes=DTYPES)
    assert found.closest.changed == {"correction": 1}
    assert all(lone_sample_case(label.split()[0]) for label in found.closest.failing)


def test_spectral_norm_iterating_u_first():
    """torch's parametrization order declared as normref's: diagnosed, and explained once
    declared."""
    rows = _finite(
        _failing(check(planted.spectral_norm_u_first, "spectral_norm_train", dtypes=["float64"]))
    )
    assert all("power_iteration_order='u_first'" in r.diagnosis for r in rows)
    assert _bad_outputs(rows) == {"y", "u", "v", "sigma"}
    found = diagnose(planted.spectral_norm_u_first, "spectral_norm_train", dtypes=["float64"])
    assert {"power_iteration_order": "u_first"} in [h.changed for h in found.explaining]


def test_global_norm_clipping_with_torchs_eps():
    rows = _finite(
        _failing(
            check(
                planted.clip_by_global_norm_plus_eps, "clip_by_global_norm", "optax", dtypes=DTYPES
            )
        )
    )
    assert all("global_norm_eps=1e-06" in r.diagnosis for r in rows)
    # float32 sees the difference only where the norm is comparable to 1e-6
    assert {r.case for r in rows if r.dtype == "float32"} == {"clip_by_global_norm/small-norm"}
    explained = check(
        planted.clip_by_global_norm_plus_eps, "clip_by_global_norm", "torch", dtypes=DTYPES
    )
    assert explained.ok
    assert {tuple(r.explained_by) for r in explained.findings} == {("global_norm_eps",)}


def test_zca_backward_without_the_symmetric_part():
    """``2 S`` for ``S + S^T``: the forward passes, the x-gradient fails in every case."""
    result = check(
        planted.zca_whiten,
        "zca_whiten",
        vjp=planted.zca_whiten_vjp_without_symmetric_part,
        dtypes=DTYPES,
    )
    rows = _failing(result)
    assert _bad_outputs(rows) == {"dx"}
    assert all(o["direction"] == "backward" for r in rows for o in r.outputs if not o["ok"])
    forward = check(planted.zca_whiten, "zca_whiten", dtypes=DTYPES)
    assert forward.ok


def test_zca_with_an_unbiased_covariance():
    result = check(planted.zca_whiten_unbiased, "zca_whiten", dtypes=DTYPES)
    failing = _finite(_failing(result))
    for row in failing:
        if row not in _one_sample(failing):
            assert "correction=1" in row.diagnosis, row.diagnosis
    found = diagnose(planted.zca_whiten_unbiased, "zca_whiten", dtypes=["float64"])
    assert found.closest.changed == {"correction": 1}
    assert all(lone_sample_case(label.split()[0]) for label in found.closest.failing)
