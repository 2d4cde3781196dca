"""Hypothesis properties of the standardization family, driven by the registry's property names.

Each identity is exact in real arithmetic; the tolerances are float64
rounding (a few hundred ulps of the values involved) plus, for idempotence,
the effect of eps that the docstrings state.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normref.registry import OpSpec, Sample
from tests.registry_cases import draw, on_backend, op_params
from tests.support import Backend, assert_close_to_scale, assert_within

SEEDS = st.integers(0, 2**31 - 1)
SCALES = st.sampled_from([1e-4, 1e-2, 1.0, 1e2, 1e4])
U64 = np.finfo(np.float64).eps


def _canonical(spec: OpSpec, sample: Sample, values: np.ndarray) -> np.ndarray:
    """``values`` (shaped like x) as (G, M, D) groups of ``spec``'s partition of ``sample``."""
    import array_api_compat.numpy as xp

    return np.asarray(spec.partition(sample).to_canonical(xp, values))


def _group_var(spec: OpSpec, sample: Sample) -> np.ndarray:
    return _canonical(spec, sample, sample.args[spec.primary]).var(axis=1, keepdims=True)


def _scaled(spec: OpSpec, seed: int, scale: float) -> Sample:
    sample = spec.without_affine(draw(spec, seed))
    eps = sample.kwargs.get("eps")
    changes = {spec.primary: sample.args[spec.primary] * scale}
    if eps is not None:
        changes["eps"] = eps * scale**2
    return sample.replace(**changes)


def _run(spec: OpSpec, sample: Sample, backend: Backend) -> np.ndarray:
    return backend.to_numpy(spec.call(on_backend(sample, backend)))


@pytest.mark.parametrize("spec", op_params(needs="zero_mean"))
@given(seed=SEEDS, scale=SCALES)
def test_zero_mean(spec, seed, scale, standard_backend):
    sample = _scaled(spec, seed, scale)
    y = _canonical(spec, sample, _run(spec, sample, standard_backend))
    bound = 64 * U64 * np.abs(y).max(axis=1, keepdims=True) + 1e-300
    assert np.all(np.abs(y.mean(axis=1, keepdims=True)) <= bound)


@pytest.mark.parametrize("spec", op_params(needs="unit_variance"))
@given(seed=SEEDS, scale=SCALES)
def test_unit_variance(spec, seed, scale, standard_backend):
    """Each group's biased variance is v / (v + eps): 1 up to eps.

    Each output errs by at most ~130 u of its group's largest |y| <= sqrt(n - 1) < 10 (see
    tests/reference.py), so their mean square errs by at most 2 * 10 * 130 u ~ 6e-13,
    and NumPy's own variance adds a few u: 1e-12 (4500 u) bounds both.
    """
    sample = _scaled(spec, seed, scale)
    y = _canonical(spec, sample, _run(spec, sample, standard_backend))
    v = _group_var(spec, sample)
    expected = v / (v + sample.kwargs["eps"])
    assert_close_to_scale(
        y.var(axis=1, keepdims=True), expected, 1.0, rtol=1e-12, what=f"variance of {spec.name}"
    )


@pytest.mark.parametrize("spec", op_params(needs="unit_rms"))
@given(seed=SEEDS, scale=SCALES)
def test_unit_rms(spec, seed, scale, standard_backend):
    """Each group's mean square is q / (q + eps) (bounded as the variance above)."""
    sample = _scaled(spec, seed, scale)
    y = _canonical(spec, sample, _run(spec, sample, standard_backend))
    q = (_canonical(spec, sample, sample.args[spec.primary]) ** 2).mean(axis=1, keepdims=True)
    expected = q / (q + sample.kwargs["eps"])
    assert_close_to_scale(
        (y**2).mean(axis=1, keepdims=True),
        expected,
        1.0,
        rtol=1e-12,
        what=f"mean square of {spec.name}",
    )


@pytest.mark.parametrize("spec", op_params(needs="shift_invariant"))
@given(seed=SEEDS, scale=SCALES, shift=st.floats(-100, 100))
def test_shift_invariance(spec, seed, scale, shift, standard_backend):
    """Adding a constant to every group leaves the output unchanged.

    x + c is itself rounded, by up to ulp(|c| + |x|) / 2, which the output
    sees amplified by |dy/dx| ~ |y| / std: the tolerance is that error.
    """
    import array_api_compat.numpy as xp

    sample = _scaled(spec, seed, scale)
    part = spec.partition(sample)
    offsets = np.random.default_rng(seed).uniform(-1, 1, (part.G, 1, part.D)) * shift * scale
    constant = np.asarray(
        part.from_canonical(xp, np.broadcast_to(offsets, (part.G, part.M, part.D)))
    )
    shifted = sample.replace(**{spec.primary: sample.args[spec.primary] + constant})
    y0, y1 = _run(spec, sample, standard_backend), _run(spec, shifted, standard_backend)
    x_size = np.abs(shifted.args[spec.primary]).max()
    std = np.sqrt(_group_var(spec, sample)).min()
    y_size = np.abs(y0).max()
    assert_close_to_scale(
        y1,
        y0,
        64 * U64 * (x_size / std + 1) * y_size,
        rtol=1.0,
        what=f"{spec.name} after a per-group shift",
    )


@pytest.mark.parametrize("spec", op_params(needs="scale_invariant"))
@given(seed=SEEDS, scale=SCALES)
def test_scale_invariance(spec, seed, scale, standard_backend):
    """f(a x, eps = a^2 eps) = f(x, eps): the op sees only x relative to its spread.

    Scaling rounds each input once (u relative) and eps once; each side's own
    rounding is at most (ceil(log2 n) + 6) u of the output's largest magnitude
    (pairwise sums of the groups, <= 6 roundings per element); with n <= 64 in
    these samples both sides together stay below 2 * 16 u * max|f(x)| + 2 u: 64 u.
    """
    base = _run(spec, _scaled(spec, seed, 1.0), standard_backend)
    scaled = _run(spec, _scaled(spec, seed, scale), standard_backend)
    assert_close_to_scale(
        scaled, base, np.abs(base).max(), rtol=64 * U64, what=f"{spec.name} at scale {scale}"
    )


@pytest.mark.parametrize("spec", op_params(needs="idempotent"))
@given(seed=SEEDS, scale=SCALES)
def test_idempotent_up_to_eps(spec, seed, scale, standard_backend):
    """f(f(x)) = f(x) up to eps: the output's spread is 1 - O(eps / v), not exactly 1.

    For standardize: y has variance 1 - d with d = eps/(v + eps); applying again
    divides by sqrt(1 - d + eps), a relative change of at most (d + eps)/2 /
    (1 - d) for each element.
    """
    sample = _scaled(spec, seed, scale)
    once = _run(spec, sample, standard_backend)
    twice = _run(spec, sample.replace(**{spec.primary: once}), standard_backend)
    eps = sample.kwargs.get("eps", 0.0)
    if "unit_rms" in spec.properties:
        spread = (_canonical(spec, sample, sample.args[spec.primary]) ** 2).mean(axis=1).min()
    else:
        spread = _group_var(spec, sample).min()
    d = eps / (spread + eps)
    relative = (d + eps) / (2 * (1 - d))
    # plus rounding: the second pass recomputes statistics of values up to max|once|
    bound = relative * np.abs(once) + 256 * U64 * np.abs(once).max()
    assert_within(twice, once, bound, what=f"{spec.name} applied twice")
