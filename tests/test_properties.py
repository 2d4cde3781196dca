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
from tests.registry_cases import draw, on_backend, op_params, output
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


def _spread(spec: OpSpec, sample: Sample) -> np.ndarray:
    """Each group's squared spread: its mean square for RMS ops and for ops without groups
    (spectral norm), else its biased variance."""
    if spec.partition is None:
        return np.mean(sample.args[spec.primary] ** 2)
    if "unit_rms" in spec.properties:
        return (_canonical(spec, sample, sample.args[spec.primary]) ** 2).mean(
            axis=1, keepdims=True
        )
    return _group_var(spec, sample)


def _scaled(spec: OpSpec, seed: int, scale: float) -> Sample:
    sample = spec.without_affine(draw(spec, seed))
    eps = sample.kwargs.get("eps")
    changes = {spec.primary: sample.args[spec.primary] * scale}
    if eps is not None:
        changes["eps"] = eps * scale**2
    return sample.replace(**changes)


def _run(spec: OpSpec, sample: Sample, backend: Backend) -> np.ndarray:
    return backend.to_numpy(output(spec, on_backend(sample, backend)))


def _input_rounding_bound(spec: OpSpec, sample: Sample, y: np.ndarray) -> float:
    """What rounding each input once (by u of max|x|) moves an output ``y`` of ``sample`` by.

    A standardizing op sees x relative to its group's spread s (the standard
    deviation, or the root mean square for RMS ops), so an input error of
    u |x| reaches y as u |x| / s times |y|; each side's own rounding adds
    at most (ceil(log2 n) + 6) u of max|y| (pairwise sums over n <= 64 values,
    <= 6 roundings per element). 64 u * (max|x| / min s + 1) * max|y| covers
    both sides.
    """
    x_size = np.abs(sample.args[spec.primary]).max()
    return 64 * U64 * (x_size / np.sqrt(_spread(spec, sample)).min() + 1) * np.abs(y).max()


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
    q = _spread(spec, sample)
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
    assert_close_to_scale(
        y1,
        y0,
        _input_rounding_bound(spec, shifted, y0),
        rtol=1.0,
        what=f"{spec.name} after a per-group shift",
    )


@pytest.mark.parametrize("spec", op_params(needs="scale_invariant"))
@given(seed=SEEDS, scale=SCALES)
def test_scale_invariance(spec, seed, scale, standard_backend):
    """f(a x, eps = a^2 eps) = f(x, eps): the op sees only x relative to its spread.

    Scaling rounds each input once, by u of |x| (not of its deviation from the
    mean, which is what the output sees), and eps once by u; the tolerance is
    that error (see :func:`_input_rounding_bound`).
    """
    unscaled = _scaled(spec, seed, 1.0)
    base = _run(spec, unscaled, standard_backend)
    scaled = _run(spec, _scaled(spec, seed, scale), standard_backend)
    assert_close_to_scale(
        scaled,
        base,
        _input_rounding_bound(spec, unscaled, base),
        rtol=1.0,
        what=f"{spec.name} at scale {scale}",
    )


@pytest.mark.parametrize("spec", op_params(needs="idempotent"))
@given(seed=SEEDS, scale=SCALES)
def test_idempotent_up_to_eps(spec, seed, scale, standard_backend):
    """f(f(x)) = f(x) up to eps: the output's spread is 1 - O(eps / v), not exactly 1.

    For standardize: y = f(a x, a^2 eps) has variance 1 - d with d = a^2 eps/(v + a^2 eps)
    (v the scaled input's); applying f again, with the unscaled eps as y is of unit
    spread, divides by sqrt(1 - d + eps), a relative change of at most (d + eps)/2 /
    (1 - d) for each element.
    """
    sample = _scaled(spec, seed, scale)
    once = _run(spec, sample, standard_backend)
    changes = {spec.primary: once}
    eps = sample.kwargs.get("eps")
    if eps is not None:
        changes["eps"] = eps / scale**2
    twice = _run(spec, sample.replace(**changes), standard_backend)
    d = (eps or 0.0) / (_spread(spec, sample).min() + (eps or 0.0))
    relative = (d + changes.get("eps", 0.0)) / (2 * (1 - d))
    # plus rounding: the second pass recomputes statistics of values up to max|once|
    bound = relative * np.abs(once) + 256 * U64 * np.abs(once).max()
    assert_within(twice, once, bound, what=f"{spec.name} applied twice")
