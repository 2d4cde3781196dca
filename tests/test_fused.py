"""The fused NumPy path (numba kernels): the generic path's results, wherever it is taken.

On the ``numpy`` backend the registry-driven tests already run every layer
through the fused path, and the generic path on every other backend. These
tests add inputs long enough for pairwise sums of several pieces and more
groups than chunks of work, compare the two paths element by element, check
the fused gradients against finite differences on those inputs, and check
where the fused path is taken and where it is not.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[fast]')")

import normref
from conformance.checked.formats import ulp
from normref import _fused
from normref._fused import MAX_CHUNKS, kernels
from normref._fused.threads import thread_count
from normref.registry import REGISTRY, OpSpec, Sample
from tests.support import assert_close_to_scale, assert_within, fd_jvp, spy_on

U64 = float(np.finfo(np.float64).eps)
U32 = float(np.finfo(np.float32).eps)


def _registry_sample(name: str, shape: tuple[int, ...], **fixed) -> Callable[[int], Sample]:
    return lambda seed: REGISTRY[name].sample(np.random.default_rng(seed), shape).replace(**fixed)


def _channels_last(seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 7, 9, 5))
    params = {"gamma": 1.0 + 0.5 * rng.standard_normal(5), "beta": rng.standard_normal(5)}
    return Sample({"x": x, **params}, {"eps": 1e-5, "axis": -1})


# Groups longer than a piece (kernels.PIECE = 256 samples), rows longer and shorter than a
# piece, parameters varying inside a group (group norm), and more groups than MAX_CHUNKS.
CASES = [
    pytest.param("batch_norm", _registry_sample("batch_norm", (4, 3, 20, 20)), id="batch_norm"),
    pytest.param("batch_norm", _channels_last, id="batch_norm_channels_last"),
    pytest.param(
        "instance_norm", _registry_sample("instance_norm", (3, 4, 17, 19)), id="instance_norm"
    ),
    pytest.param(
        "group_norm", _registry_sample("group_norm", (3, 8, 9, 9), num_groups=4), id="group_norm"
    ),
    pytest.param(
        "ghost_batch_norm",
        _registry_sample("ghost_batch_norm", (8, 3, 10, 10), virtual_batch_size=4),
        id="ghost_batch_norm",
    ),
    pytest.param("layer_norm", _registry_sample("layer_norm", (130, 300)), id="layer_norm"),
    pytest.param("rms_norm", _registry_sample("rms_norm", (70, 513)), id="rms_norm"),
]
EPS_MODES = ["add", "max", "add_std"]


def _as(sample: Sample, dtype: str, **changes) -> Sample:
    def convert(value):
        return value.astype(dtype) if isinstance(value, np.ndarray) else value

    return Sample({k: convert(v) for k, v in sample.args.items()}, sample.kwargs).replace(**changes)


def _both_paths(spec: OpSpec, sample: Sample, dy: np.ndarray):
    """(y, grads) through the fused path and through the generic path."""
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            results.append((spec.call(sample), spec.call_vjp(dy, sample)))
    return results


def _term_scales(spec: OpSpec, sample: Sample, dy: np.ndarray) -> dict[str, float]:
    """Float64 sizes of the terms that make up each result, for comparisons relative to them.

    ``y = gamma x_hat + beta``; ``dx = (gamma dy - mean(gamma dy)) / s + (x - mu) k`` with
    every term at most ``|gamma| |dy| (1 + |x_hat|) / s``; a parameter's gradient is a sum of
    ``dy x_hat`` or ``dy`` over some elements, at most the sum over all of them.
    """
    wide = _as(sample, "float64")
    with _fused.enabled(False):
        x_hat = np.asarray(spec.call(spec.without_affine(wide)))
        s_min = float(np.min(np.std(wide.args["x"])))  # unit-normal data: s is about 1
    gamma = wide.args.get("gamma")
    gamma_max = 1.0 if gamma is None else float(np.max(np.abs(gamma)))
    dy_max = float(np.max(np.abs(dy)))
    terms = float(np.sum(np.abs(dy) * (1.0 + np.abs(x_hat))))
    return {
        "y": float(np.max(np.abs(spec.call(wide)))) + 1.0,
        "x": gamma_max * dy_max * (1.0 + float(np.max(np.abs(x_hat)))) / s_min,
        "gamma": terms,
        "beta": terms,
    }


def _compare(spec, fused, generic, scales, *, rtol: float, ulps_of: str | None, what: str):
    """Each result of the two paths within ``rtol`` of its term scale (plus an ulp of ``ulps_of``)."""
    (y_f, grads_f), (y_g, grads_g) = fused, generic

    def close(a, b, scale, name):
        bound = rtol * scale + (0.0 if ulps_of is None else ulp(b, ulps_of))
        assert_within(np.asarray(a), np.asarray(b), bound, what=f"{what}: {name}")

    close(y_f, y_g, scales["y"], "y")
    for name in spec.differentiable:
        a, b = getattr(grads_f, name), getattr(grads_g, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype or b.dtype == np.float64, name
            close(a, b, scales[name], f"d{name}")


# Both paths compute the same float64 quantities and differ only in the order of their sums:
# pairwise, each within about (PIECE / 4 + log2 n) u64 ~ 1e-14 of the sum of the terms'
# magnitudes, for the groups here (n <= 2000). 1e-12 of the term scale leaves a factor 100
# for the conditioning of unit-normal data.
FLOAT64_RTOL = 1e-12


@pytest.mark.parametrize(("name", "make"), CASES)
@pytest.mark.parametrize("eps_mode", EPS_MODES)
@pytest.mark.parametrize("with_affine", [True, False])
def test_float64_fused_matches_generic(name, make, eps_mode, with_affine):
    spec = REGISTRY[name]
    sample = _as(make(0), "float64", eps_mode=eps_mode)
    if not with_affine:
        sample = spec.without_affine(sample)
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape)
    _compare(
        spec,
        *_both_paths(spec, sample, dy),
        _term_scales(spec, sample, dy),
        rtol=FLOAT64_RTOL,
        ulps_of=None,
        what=f"{name} {eps_mode}",
    )


@pytest.mark.parametrize(("name", "make"), CASES)
def test_highest_float32_fused_matches_generic(name, make):
    """Both round the float64 result once: at most one float32 ulp apart.

    Two float64 values that agree to FLOAT64_RTOL of their scale round to the same float32
    or to neighbours; outputs that are small by cancellation (gradients) also carry the float64
    difference itself.
    """
    spec = REGISTRY[name]
    sample = _as(make(0), "float32")
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape).astype(np.float32)
    _compare(
        spec,
        *_both_paths(spec, sample, dy),
        _term_scales(spec, sample, dy),
        rtol=FLOAT64_RTOL,
        ulps_of="float32",
        what=f"{name} float32 highest",
    )


# float32 native: each path's sums err by at most about (PIECE / 8 + log2 n) u32 ~ 45 u32 of the
# terms' magnitudes (NumPy's pairwise and BLAS dot sums are bounded alike); the mean, the
# variance and the divisor each pass that on to the output with a factor of order one on
# unit-normal data, plus a few roundings of the final arithmetic: 256 u32 of the term scale.
NATIVE_FLOAT32_RTOL = 256 * U32


@pytest.mark.parametrize(("name", "make"), CASES)
def test_native_float32_fused_is_as_accurate_as_generic(name, make):
    """Both paths compute in float32 and stay within the float32 bound of the exact result."""
    spec = REGISTRY[name]
    sample = _as(make(0), "float32", precision="native")
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape).astype(np.float32)
    scales = _term_scales(spec, sample, dy)
    exact = _both_paths(spec, _as(sample, "float64", precision="highest"), dy.astype(np.float64))
    for label, result in zip(("fused", "generic"), _both_paths(spec, sample, dy), strict=True):
        assert result[0].dtype == np.float32
        _compare(
            spec,
            result,
            exact[1],
            scales,
            rtol=NATIVE_FLOAT32_RTOL,
            ulps_of=None,
            what=f"{name} native float32, {label} path",
        )


# The centring (mean-only batch norm, gradient centralization): groups longer than a piece
# (batch norm's channels), units of a weight's fan-in, and more units than MAX_CHUNKS.
CENTRING_CASES = [
    pytest.param(
        "mean_only_batch_norm", _registry_sample("mean_only_batch_norm", (4, 3, 20, 20)), id="mobn"
    ),
    pytest.param(
        "gradient_centralize",
        _registry_sample("gradient_centralize", (3 * MAX_CHUNKS + 1, 5, 3, 3), out_axis=0),
        id="gradient_centralize",
    ),
]


CENTRING_PRECISIONS = [
    pytest.param("float64", "highest", FLOAT64_RTOL, None, id="float64"),
    pytest.param("float32", "highest", FLOAT64_RTOL, "float32", id="float32-highest"),
    pytest.param("float32", "native", NATIVE_FLOAT32_RTOL, None, id="float32-native"),
]


def compare_centring_paths(name, make, dtype, precision, rtol, ulps_of):
    """``y = x - mean + beta`` and ``dx = dy - mean(dy)``, ``d_beta = sum dy``, on both paths.

    Each result is within ``rtol`` of the sizes of its terms: ``max |x| + max |beta|`` for
    ``y``, ``max |dy|`` for ``dx``, ``sum |dy|`` for ``beta``'s gradient (float64: the two
    paths' sums in other orders; float32 in ``"highest"``: both round those once, so an ulp
    more; float32 in ``"native"``: each path's float32 sums, as for the layers above).
    """
    spec = REGISTRY[name]
    sample = _as(make(0), dtype, precision=precision)
    primary = spec.differentiable[0]
    x = sample.args[primary]
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    beta = sample.args.get("beta")
    beta_max = 0.0 if beta is None else float(np.max(np.abs(beta)))
    scales = {
        "y": float(np.max(np.abs(x))) + beta_max,
        primary: float(np.max(np.abs(dy))),
        "beta": float(np.sum(np.abs(dy), dtype=np.float64)),
    }
    _compare(
        spec,
        *_both_paths(spec, sample, dy),
        scales,
        rtol=rtol,
        ulps_of=ulps_of,
        what=f"{name} {dtype} {precision}",
    )


@pytest.mark.parametrize(("name", "make"), CENTRING_CASES)
@pytest.mark.parametrize(("dtype", "precision", "rtol", "ulps_of"), CENTRING_PRECISIONS)
def test_the_centring_fused_matches_generic(name, make, dtype, precision, rtol, ulps_of):
    compare_centring_paths(name, make, dtype, precision, rtol, ulps_of)


def _scaled_ws_scales(sample: Sample, dy: np.ndarray) -> dict[str, float]:
    """Float64 sizes of Scaled WS's terms, as :func:`_term_scales` for a layer.

    ``y = a x_hat`` with ``a = gamma g / sqrt(N)`` per unit; ``dw`` is the standardize
    backward of ``a dy``, each term at most ``|a| |dy| (1 + |x_hat|) / s``; ``d_gain`` a sum of
    ``(gamma / sqrt(N)) dy x_hat`` over a unit, at most the sum over all units.
    """
    wide = _as(sample, "float64")
    w, gain, out_axis = wide.args["w"], wide.args["gain"], wide.kwargs["out_axis"]
    fan_in = tuple(a for a in range(w.ndim) if a != out_axis % w.ndim)
    x_hat = (w - np.mean(w, axis=fan_in, keepdims=True)) / np.std(w, axis=fan_in, keepdims=True)
    per_unit = wide.kwargs["gamma"] / math.sqrt(w.size / w.shape[out_axis])
    a = per_unit * (1.0 if gain is None else float(np.max(np.abs(gain))))
    s_min = float(np.min(np.std(w, axis=fan_in)))
    terms = per_unit * float(np.sum(np.abs(dy) * np.abs(x_hat)))
    return {
        "y": a * float(np.max(np.abs(x_hat))),
        "w": a * float(np.max(np.abs(dy))) * (1.0 + float(np.max(np.abs(x_hat)))) / s_min,
        "gain": terms,
    }


@pytest.mark.parametrize("with_gain", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scaled_ws_fused_matches_generic(with_gain, dtype):
    """The constant factor gamma / sqrt(N) of Scaled WS, applied in float64 on both paths.

    float64: the paths differ in the order of their sums alone (FLOAT64_RTOL, as above);
    float32 in ``"highest"``: both round those float64 values once, at most one float32 ulp
    apart (plus the float64 difference).
    """
    spec = REGISTRY["scaled_weight_standardize"]
    sample = _as(_registry_sample(spec.name, (12, 5, 7, 9))(0), dtype)
    if not with_gain:
        sample = sample.replace(gain=None)
    dy = np.random.default_rng(1).standard_normal(sample.args["w"].shape).astype(dtype)
    _compare(
        spec,
        *_both_paths(spec, sample, dy),
        _scaled_ws_scales(sample, dy),
        rtol=FLOAT64_RTOL,
        ulps_of=None if dtype == "float64" else "float32",
        what=f"scaled WS {dtype}, gain {with_gain}",
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("eps_mode", EPS_MODES)
@pytest.mark.parametrize(
    ("op", "correction"), [("standardize", 0), ("standardize", 1), ("rms_scale", 0)]
)
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_the_kernels_factors_are_the_array_formulas_bit_for_bit(
    dtype, eps_mode, op, correction, eps
):
    """The kernels form each group's factors one group at a time
    (``kernels.forward_factor``, ``kernels.vjp_factors``); the CUDA path and the generic
    path's own formulas form them on arrays (``_fused.factors``). Both give the same bits,
    in the compute dtype, for sums of squares of 0, tiny, ordinary, huge, infinite and NaN,
    powers of two across the range, and both signs of the cotangent sums."""
    from normref._fused import factors

    real = np.dtype(dtype).type
    squares = np.array([0.0, 1e-30, 0.5, 3.0, 7.25, 1e20, np.inf, np.nan], dtype=dtype)
    scales = np.array([1.0, 2.0**-40, 2.0**30, 0.5], dtype=dtype)
    squares, scales = (a.ravel() for a in np.meshgrid(squares, scales))
    rng = np.random.default_rng(7)
    dyh = rng.standard_normal(squares.shape).astype(dtype)
    dyh_centred = rng.standard_normal(squares.shape).astype(dtype)
    n = 12
    params = {"eps": eps, "eps_mode": eps_mode}
    if op == "standardize":
        params["correction"] = correction
    layer = type("Layer", (), {"params": params, "op": type("Op", (), {"name": op})})()
    centred = op == "standardize"
    mode = EPS_MODES.index(eps_mode)
    count = float(n - correction)
    with np.errstate(all="ignore"):  # infinite and NaN sums make inf / inf
        expected_forward = factors.forward_factor(layer, np, scales, squares, n)
        expected_vjp = factors.vjp_factors(
            layer, np, scales, squares, dyh, dyh_centred, n, centred=centred
        )
        forward = [
            kernels.forward_factor(q, c, count, eps, mode, True, real(1))
            for q, c in zip(squares, scales, strict=True)
        ]
        vjp = [
            kernels.vjp_factors(q, c, h, hd, count, eps, mode, centred, real(n), real(1))
            for q, c, h, hd in zip(squares, scales, dyh, dyh_centred, strict=True)
        ]
    np.testing.assert_array_equal(np.array(forward, dtype=dtype), expected_forward)
    for name, column in zip(expected_vjp._fields, zip(*vjp, strict=True), strict=True):
        np.testing.assert_array_equal(
            np.array(column, dtype=dtype), getattr(expected_vjp, name), err_msg=name
        )


def test_pairwise_sums_keep_a_long_group_accurate():
    """One group of 2**20 float32 values near 1 with std 1e-3.

    A running float32 sum of the values would err by up to n u32 / 2 ~ 3% of the mean, i.e.
    ~30 standard deviations; pairwise sums keep the mean within about log2(n) u32 of it,
    ~1e-6, which is 1e-3 of a standard deviation. With |mean|/std = 1e3 the centred values
    lose log2(1e3) bits to cancellation as well: the output errs by ~(log2 n) u32 * 1e3.
    """
    rng = np.random.default_rng(0)
    x = (1.0 + 1e-3 * rng.standard_normal((1, 2**20))).astype(np.float32)
    exact = normref.layer_norm(x.astype(np.float64))
    native = normref.layer_norm(x, precision="native")
    error = float(np.max(np.abs(native - exact)))
    assert error <= 64 * math.log2(x.size) * U32 * 1e3
    highest = normref.layer_norm(x)
    assert np.max(np.abs(highest - exact) / ulp(exact, "float32")) <= 1.0


@pytest.mark.parametrize(("name", "make"), CASES)
def test_fused_gradients_satisfy_the_adjoint_identity(name, make):
    """<J v, u> by finite differences of the fused forward equals <v, J^T u> of the fused VJP."""
    spec = REGISTRY[name]
    sample = _as(make(3), "float64")
    rng = np.random.default_rng(4)
    args = {k: sample.args[k] for k in spec.differentiable}
    u = rng.standard_normal(args["x"].shape)
    v = {k: rng.standard_normal(a.shape) for k, a in args.items()}
    jv, jv_error = fd_jvp(lambda **a: spec.call(sample.replace(**a)), args, v)
    grads = spec.call_vjp(u, sample)
    terms = np.concatenate([np.ravel(jv * u), *(-np.ravel(v[k] * getattr(grads, k)) for k in v)])
    gap = math.fsum(terms)
    # as in tests/test_gradients.py: float64 rounding of the terms plus the FD error bound
    bound = 1e-9 * math.fsum(np.abs(terms)) + math.fsum(np.ravel(jv_error * np.abs(u)))
    assert abs(gap) <= bound, f"{name}: <Jv,u> - <v,J^T u> = {gap:.3e} > {bound:.3e}"


@pytest.mark.parametrize("name", ["layer_norm", "group_norm", "batch_norm"])
def test_a_nan_stays_in_its_group_as_on_the_generic_path(name):
    """A NaN makes its group's outputs and ``dx`` NaN, and the gradients of ``gamma`` NaN where
    they sum over it; ``beta``'s gradient (a sum of ``dy`` alone) and every other group stay
    finite: the same elements as the generic path's, and the same values to float64 rounding."""
    spec = REGISTRY[name]
    shapes = {"layer_norm": (6, 40), "group_norm": (3, 8, 5, 5), "batch_norm": (4, 3, 5, 5)}
    sample = _as(_registry_sample(name, shapes[name])(0), "float64")
    x = sample.args["x"].copy()
    x.flat[7] = np.nan
    sample = sample.replace(x=x)
    dy = np.random.default_rng(1).standard_normal(x.shape)
    (y_f, grads_f), (y_g, grads_g) = _both_paths(spec, sample, dy)
    for a, b, label in [(y_f, y_g, "y"), *zip(grads_f, grads_g, grads_f._fields, strict=True)]:
        if a is None:
            continue
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=label)
        finite = ~np.isnan(b)
        if not finite.any():  # layer norm: the NaN row adds to every parameter's gradient
            continue
        assert_close_to_scale(
            a[finite], b[finite], 1.0 + np.max(np.abs(b[finite])), rtol=1e-12, what=label
        )
    assert np.all(np.isfinite(grads_f.beta))


def _shifted_groups(kind: str, groups: int = 24, n: int = 1024) -> np.ndarray:
    """float32 rows (each a layer-norm group) whose first ``kernels.SHIFT_SAMPLES`` values,
    the kernels' shift, sit where ``kind`` says relative to the row's mean: near it (one pass
    about it; the mean 1000 standard deviations from 0, so that sums about 0 would cancel),
    about half a standard deviation away (either side of the one-pass bound), or far (tens of
    standard deviations: the second pass must run)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((groups, n))
    first = kernels.SHIFT_SAMPLES
    if kind == "near":
        x += 1000.0
    elif kind == "half a deviation":
        x[:, :first] += np.linspace(0.3, 0.7, groups)[:, None] * n / (n - first)
    elif kind == "far":
        x[:, :first] += 40.0
    return x.astype(np.float32)


def _layer_norm_float64(x: np.ndarray, dy: np.ndarray, eps: float = 1e-5):
    """Layer norm over the last axis and its ``dx`` in float64, from the textbook formulas
    ``x_hat = (x - mean) / s`` and ``dx = (dy - mean(dy) - x_hat mean(dy x_hat)) / s``."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    s = np.sqrt((centred**2).mean(axis=-1, keepdims=True) + eps)
    x_hat = centred / s
    dx = (dy - dy.mean(axis=-1, keepdims=True) - x_hat * (dy * x_hat).mean(-1, keepdims=True)) / s
    return x_hat, dx


@pytest.mark.parametrize("kind", ["near", "half a deviation", "far"])
def test_one_pass_statistics_are_as_accurate_as_two_passes(kind):
    """The kernels' sums about a shift (one pass where the shift is within half a standard
    deviation of the mean, else a second pass about the mean): in float32 arithmetic the
    fused path errs against the float64 result by at most twice what the generic path's two
    passes err, plus an ulp of the result; in float64 arithmetic both round to float32
    within an ulp of it. (With the second pass switched off, the "far" rows' outputs err four
    times more than this bound allows.)"""
    x = _shifted_groups(kind)
    dy = np.random.default_rng(12).standard_normal(x.shape).astype(np.float32)
    y_exact, dx_exact = _layer_norm_float64(x, dy)
    errors = {}
    for fused in (True, False):
        with _fused.enabled(fused):
            y = normref.layer_norm(x, precision="native")
            dx = normref.layer_norm_vjp(dy, x, precision="native").x
            errors[fused] = (np.abs(y - y_exact), np.abs(dx - dx_exact))
            y_high = normref.layer_norm(x, precision="highest")
            dx_high = normref.layer_norm_vjp(dy, x, precision="highest").x
        what = f"{kind}, {'fused' if fused else 'generic'}, highest"
        assert_within(y_high, y_exact, ulp(y_exact, "float32"), what=f"{what}: y")
        assert_within(dx_high, dx_exact, ulp(dx_exact, "float32"), what=f"{what}: dx")
    for name, fused_error, generic_error, exact in zip(
        ("y", "dx"), errors[True], errors[False], (y_exact, dx_exact), strict=True
    ):
        bound = 2 * np.max(generic_error) + ulp(np.max(np.abs(exact)), "float32")
        assert np.max(fused_error) <= bound, (
            f"{kind} native {name}: {np.max(fused_error)} > {bound}"
        )


@pytest.mark.parametrize(
    ("shape", "groups"), [((5, 3, 7, 2), 3), ((5, 40, 3, 3), 4)], ids=["small groups", "short rows"]
)
def test_the_shift_is_taken_across_rows_and_of_small_groups(shape, groups):
    """Groups of fewer values than ``kernels.SHIFT_SAMPLES`` (the shift is their mean) and of
    rows shorter than it (group norm's samples: the shift gathers several rows): the fused
    path's float64 results are the generic path's."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape) + 50.0 * rng.standard_normal((shape[0], shape[1], 1, 1))
    dy = rng.standard_normal(shape)
    gamma, beta = 1.0 + rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            y = normref.group_norm(x, groups, gamma, beta)
            results.append((y, *normref.group_norm_vjp(dy, x, groups, gamma, beta)))
    scale = 1.0 + np.max(np.abs(results[1][0])) + np.sum(np.abs(dy))
    for a, b, name in zip(*results, ("y", "dx", "dgamma", "dbeta"), strict=True):
        assert_close_to_scale(a, b, scale, rtol=FLOAT64_RTOL, what=f"{shape} {name}")


def test_more_groups_than_chunks_are_all_computed():
    """Every one of 3 * MAX_CHUNKS + 1 groups is normalized: mean 0, variance v / (v + eps)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3 * MAX_CHUNKS + 1, 40)) * rng.uniform(
        0.5, 2.0, (3 * MAX_CHUNKS + 1, 1)
    )
    y = normref.layer_norm(x)
    v = np.var(x, axis=1)
    means = np.mean(y, axis=1)
    assert_close_to_scale(means, np.zeros_like(means), 1.0, rtol=64 * U64, what="group means")
    assert_close_to_scale(np.var(y, axis=1), v / (v + 1e-5), 1.0, rtol=64 * U64, what="variances")


# Powers of two across the kernels' boundary between sums of the values as they are and sums
# of the values scaled (sizes 2**255 and 2**-255 in float64 arithmetic, 2**31 and 2**-31 in
# float32), and at the ends of the range.
ROW_SCALES = {
    "float64": [-900, -600, -256, -255, -254, 0, 254, 255, 256, 600, 1000],
    "float32": [-100, -40, -32, -31, -30, 0, 30, 31, 32, 40, 100],
}


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("precision", ["native", "highest"])
def test_groups_at_every_scale_give_the_same_results_exactly(name, dtype, precision):
    """Rows ``2**k x`` of one input, each its own group, some summed as they are and some
    scaled: with ``eps`` negligible, every row's output is the same, bit for bit, and so is
    every row's ``2**k dx`` (multiplying by a power of two rounds nothing)."""
    rng = np.random.default_rng(0)
    k = np.array(ROW_SCALES[dtype])[:, None]
    base = rng.uniform(0.5, 1.5, (1, 300)) * rng.choice([-1.0, 1.0], (1, 300))
    x = (base * 2.0**k).astype(dtype)
    dy = np.broadcast_to(rng.standard_normal((1, 300)), x.shape).astype(dtype)
    options = {"eps": 5e-324, "eps_mode": "add_std", "precision": precision}  # below every s
    with _fused.enabled(True):
        y = getattr(normref, name)(x, **options)
        dx = getattr(normref, f"{name}_vjp")(dy, x, **options).x * 2.0**k
    for result in (y, dx):
        np.testing.assert_array_equal(
            result, np.broadcast_to(result[k.tolist().index([0])], x.shape)
        )


# ---------------------------------------------------------------------------- where it runs


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """Names of the output kernels called during the test."""
    return spy_on(monkeypatch, kernels, ("normalize", "gradients", "statistics"))


def _bn_inputs(dtype="float32", order="C"):
    rng = np.random.default_rng(6)
    x = np.asarray(rng.standard_normal((4, 3, 5, 5)), dtype=dtype, order=order)
    gamma = np.ones(3, dtype=dtype)
    return x, gamma, np.asarray(rng.standard_normal(x.shape), dtype=dtype, order=order)


@pytest.mark.parametrize("precision", ["highest", "native"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_layers_take_the_fused_path(kernel_calls, precision, dtype):
    x, gamma, dy = _bn_inputs(dtype)
    normref.batch_norm(x, gamma, gamma, precision=precision)
    normref.batch_norm_vjp(dy, x, gamma, gamma, precision=precision)
    normref.rms_norm(x, gamma[:1].repeat(5), axes=-1, precision=precision)
    assert kernel_calls == ["normalize", "gradients", "normalize"]


@pytest.mark.parametrize("precision", ["highest", "native"])
def test_the_centring_takes_the_fused_path(kernel_calls, precision):
    """Mean-only batch norm and gradient centralization: the forward's kernels, forward and
    backward (the centring's VJP is the centring of ``dy``)."""
    x, _, dy = _bn_inputs()
    beta = np.zeros(3, dtype=np.float32)
    normref.mean_only_batch_norm(x, beta, precision=precision)
    normref.mean_only_batch_norm_vjp(dy, x, beta, precision=precision)
    normref.gradient_centralize(x, precision=precision)
    normref.gradient_centralize_vjp(dy, x, precision=precision)
    assert kernel_calls == ["normalize"] * 4


@pytest.mark.parametrize("precision", ["highest", "native"])
def test_mean_only_batch_norms_beta_gradient_is_n_times_the_kernels_group_mean(precision):
    """``beta`` has a value per group (channel): its gradient, the sum of ``dy`` over the
    channel, is ``n`` times the mean the centring's kernel takes of each group anyway. It
    agrees with the float64 sum to float32's error bound in "native" (of the sum of
    ``|dy|``) and to one float32 ulp in "highest", as the generic path's NumPy sum does."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((16, 5, 30, 30)).astype(np.float32)
    dy = (3.0 + rng.standard_normal(x.shape)).astype(np.float32)
    dy[:, 2] *= -1e-3  # a channel of small values of the other sign
    exact = dy.astype(np.float64).sum(axis=(0, 2, 3))
    magnitude = np.abs(dy).astype(np.float64).sum(axis=(0, 2, 3))
    beta = np.zeros(5, np.float32)
    for fused in (True, False):
        with _fused.enabled(fused):
            d_beta = normref.mean_only_batch_norm_vjp(dy, x, beta, precision=precision).beta
        if precision == "native":
            bound = NATIVE_FLOAT32_RTOL * magnitude
        else:
            bound = ulp(exact, "float32") + FLOAT64_RTOL * magnitude
        assert_within(d_beta, exact, bound, what=f"{'fused' if fused else 'generic'} d_beta")


@pytest.mark.parametrize("precision", ["highest", "native"])
def test_scaled_ws_of_a_float32_weight_takes_the_fused_path(kernel_calls, precision):
    """Its constant factor is applied by the kernels, not to a float64 copy of the weight."""
    w = np.random.default_rng(7).standard_normal((8, 4, 3, 3)).astype(np.float32)
    gain = np.ones(8, dtype=np.float32)
    normref.scaled_weight_standardize(w, gain, precision=precision)
    normref.scaled_weight_standardize_vjp(w, w, precision=precision)
    assert kernel_calls == ["normalize", "gradients"]


@pytest.mark.parametrize("precision", ["highest", "native"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_renorm_takes_its_batch_statistics_from_the_kernels(kernel_calls, precision, dtype):
    """Batch renormalization's mean and 1 / sigma_B per channel come from the statistics
    kernel (no float64 copy of ``x``), then batch norm's kernels run with the corrected
    affine; every result is the generic path's, to float64 rounding (one float32 ulp of
    the output in "highest") or to float32's error bound in "native"."""
    x, _, dy = _bn_inputs(dtype)
    x = x * 3.0 + 2.0
    rng = np.random.default_rng(9)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    gamma, beta = (1.0 + rng.standard_normal(3)).astype(dtype), rng.standard_normal(3).astype(dtype)
    options = {"r_max": 1.5, "d_max": 0.5, "precision": precision}
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            y = normref.batch_renorm(x, mean, var, gamma, beta, **options)
            grads = normref.batch_renorm_vjp(dy, x, mean, var, gamma, beta, **options)
            results.append((y, *grads))
    assert kernel_calls == ["statistics", "normalize", "statistics", "gradients"]
    float64_arithmetic = precision == "highest" or dtype == "float64"
    rtol = FLOAT64_RTOL if float64_arithmetic else NATIVE_FLOAT32_RTOL
    scale = 1.0 + float(np.max(np.abs(results[1][0]))) + float(np.sum(np.abs(dy)))
    for a, b, name in zip(*results, ("y", "dx", "dgamma", "dbeta"), strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype), name
        bound = rtol * scale + (ulp(b, "float32") if dtype == "float32" else 0.0)
        assert_within(a, b, bound, what=f"batch renorm {dtype} {precision}: {name}")


def test_a_modelled_convention_takes_the_generic_path(kernel_calls):
    x, gamma, dy = _bn_inputs()
    normref.batch_norm(x, gamma, precision="torch")
    normref.batch_norm_vjp(dy, x, gamma, precision="flax")
    assert kernel_calls == []


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param(lambda: _bn_inputs("float16"), id="float16"),
        pytest.param(lambda: _bn_inputs(order="F"), id="non-contiguous x and dy"),
        pytest.param(
            lambda: (_bn_inputs()[0], np.ones(3, np.float16), _bn_inputs()[2]),
            id="float16 gamma, float32 x",
        ),
    ],
)
def test_other_numpy_inputs_take_the_generic_path(kernel_calls, inputs):
    x, gamma, dy = inputs()
    y = normref.batch_norm(x, gamma)
    grads = normref.batch_norm_vjp(dy, x, gamma)
    assert kernel_calls == []
    assert y.dtype == np.result_type(x, gamma)
    assert grads.gamma.dtype == gamma.dtype


@pytest.mark.parametrize("precision", ["highest", "native"])
def test_parameters_of_the_other_float_dtype_take_the_fused_path(kernel_calls, precision):
    """float64 parameters with float32 ``x`` (AdaIN's style statistics): the kernels read
    them in the compute dtype, as the generic path does; the output has the promoted dtype
    and each gradient its argument's, and every result is the generic path's (to float64
    rounding in ``"highest"``, to float32's error bound in ``"native"``)."""
    x, _, dy = _bn_inputs()
    rng = np.random.default_rng(8)
    gamma, beta = 1.0 + rng.standard_normal(3), rng.standard_normal(3)
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            results.append(
                (
                    normref.batch_norm(x, gamma, beta, precision=precision),
                    normref.batch_norm_vjp(dy, x, gamma, beta, precision=precision),
                )
            )
    assert kernel_calls == ["normalize", "gradients"]
    (y_f, g_f), (y_g, g_g) = results
    assert y_f.dtype == y_g.dtype == np.float64
    assert (g_f.x.dtype, g_f.gamma.dtype, g_f.beta.dtype) == (np.float32, np.float64, np.float64)
    rtol = FLOAT64_RTOL if precision == "highest" else NATIVE_FLOAT32_RTOL
    scale = float(np.max(np.abs(y_g))) + float(np.sum(np.abs(dy)))
    for a, b, name in [(y_f, y_g, "y"), *zip(g_f, g_g, g_f._fields, strict=True)]:
        # dx is float32: its two roundings of nearby float64 values differ by an ulp
        bound = rtol * scale + (ulp(b, "float32") if b.dtype == np.float32 else 0.0)
        assert_within(np.asarray(a), np.asarray(b), bound, what=name)


def test_a_non_contiguous_cotangent_takes_the_generic_path(kernel_calls):
    x, gamma, dy = _bn_inputs()
    normref.batch_norm_vjp(np.asfortranarray(dy), x, gamma)
    assert kernel_calls == []


def test_other_libraries_take_the_generic_path(kernel_calls):
    import array_api_strict

    x, gamma, _ = _bn_inputs()
    normref.batch_norm(array_api_strict.asarray(x), array_api_strict.asarray(gamma))
    assert kernel_calls == []


def test_the_switch_turns_the_fused_path_off(kernel_calls):
    x, gamma, _ = _bn_inputs()
    with _fused.enabled(False):
        normref.batch_norm(x, gamma)
    assert kernel_calls == []
    normref.batch_norm(x, gamma)
    assert kernel_calls == ["normalize"]


def _import_with(variable: str, value: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, variable: value}
    return subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )


def test_the_environment_variable_turns_the_fused_path_off():
    code = "from normref import _fused; print(_fused.DEFAULT_ENABLED)"
    off, on = ("0", "false", "No", " OFF "), ("1", "true", "YES", "on", "")
    for value, expected in [*((v, "False") for v in off), *((v, "True") for v in on)]:
        out = _import_with("NORMREF_FUSED", value, code)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, value


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NORMREF_FUSED", "maybe", "NORMREF_FUSED must be one of 1, true, yes, on or 0"),
        ("NORMREF_FUSED", "2", "NORMREF_FUSED must be one of"),
        ("NORMREF_THREADS", "many", "NORMREF_THREADS must be an integer >= 1, got 'many'"),
        ("NORMREF_THREADS", "0", "NORMREF_THREADS must be an integer >= 1, got '0'"),
    ],
)
def test_a_bad_environment_variable_is_refused_on_import(variable, value, message):
    """Not first when an input large enough for threads runs: as normref is imported."""
    out = _import_with(variable, value, "import normref")
    assert out.returncode != 0
    assert "ValueError" in out.stderr
    assert message in out.stderr


def test_errors_are_raised_before_either_path(kernel_calls):
    x, gamma, dy = _bn_inputs()
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        normref.batch_norm(x, gamma[:2])
    with pytest.raises(ValueError, match="dy must have shape"):
        normref.batch_norm_vjp(dy[:2], x, gamma)
    assert kernel_calls == []


@pytest.mark.parametrize(
    ("channels", "precision", "fused"),
    [(4, "native", True), (8, "native", False), (64, "native", False), (64, "highest", True)],
)
def test_channels_last_with_many_channels_in_the_input_dtype_runs_the_generic_path(
    channels, precision, fused, kernel_calls
):
    """Channels interleaved element by element: the kernels would read one element per row of
    each channel, so from MAX_INTERLEAVED_GROUPS channels on the generic path runs where it
    computes in the input's dtype; computing float32 in float64 it would hold float64 copies,
    and the fused path stays."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 3, channels)).astype(np.float32)
    y = normref.batch_norm(x, np.ones(channels, np.float32), axis=-1, precision=precision)
    assert kernel_calls == (["normalize"] if fused else [])
    assert y.dtype == np.float32


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2.5"])
def test_a_thread_count_that_is_not_a_positive_integer_is_refused(value, monkeypatch):
    monkeypatch.setenv("NORMREF_THREADS", value)
    with pytest.raises(ValueError, match=r"NORMREF_THREADS must be an integer >= 1, got"):
        thread_count()


def test_the_switch_belongs_to_the_calling_thread():
    """Blocks of ``enabled`` in two threads, exited in either order, leave the default on."""
    inside, release = threading.Barrier(2), threading.Event()
    seen = {}

    def switched_off(name):
        with _fused.enabled(False):
            inside.wait()
            seen[name] = _fused._enabled.get()
            if name == "first":
                release.wait()
        seen[f"{name} after"] = _fused._enabled.get()

    first = threading.Thread(target=switched_off, args=("first",))
    second = threading.Thread(target=switched_off, args=("second",))
    first.start()
    second.start()
    second.join()
    assert _fused._enabled.get() is _fused.DEFAULT_ENABLED  # this thread never switched
    release.set()
    first.join()
    assert seen == {
        "first": False,
        "second": False,
        "first after": _fused.DEFAULT_ENABLED,
        "second after": _fused.DEFAULT_ENABLED,
    }
    assert _fused._enabled.get() is _fused.DEFAULT_ENABLED


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    """Work is split into chunks by the problem alone; threads only share out the chunks."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 16, 32, 32))  # above MIN_PARALLEL_ELEMENTS
    gamma, beta, dy = rng.standard_normal(16), rng.standard_normal(16), rng.standard_normal(x.shape)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("NORMREF_THREADS", threads)
        results.append(
            (normref.group_norm(x, 4, gamma, beta), *normref.group_norm_vjp(dy, x, 4, gamma, beta))
        )
    for one, three in zip(*results, strict=True):
        np.testing.assert_array_equal(one, three)


_FORK_SCRIPT = """
import multiprocessing, numpy as np, normref
x = np.random.default_rng(8).standard_normal((4, 16, 64, 64))
expected = normref.batch_norm(x)  # the parent's pool now has a thread
with multiprocessing.get_context("fork").Pool(1) as pool:
    result = pool.apply_async(normref.batch_norm, (x,)).get(timeout=60)
np.testing.assert_array_equal(result, expected)
print("same")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_runs_on_threads_of_its_own():
    """The parent's pool threads do not exist in a forked child: the child starts new ones.

    Run in a fresh interpreter: this test process holds other libraries' threads (JAX warns
    on any fork), which are not what is tested.
    """
    env = {**os.environ, "NORMREF_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.stdout.strip() == "same", out.stderr


# Groups whose samples lie in several runs (batch norm's channels, one run per example) are
# read a set of groups at a time: each group keeps its own cascade between runs, so its pieces
# are added in the same pairs as group by group. Runs longer than a piece, shorter ones that
# share a piece with the next run, sets that do not divide the groups, several chunks, a
# group that needs a second pass (its shift far from its mean) and one that needs scaling.
SET_CASES = [
    pytest.param("batch_norm", (5, 11, 300), id="runs_longer_than_a_piece"),
    pytest.param("batch_norm", (37, 19, 7), id="short_runs"),
    pytest.param("batch_norm", (3, 70, 2, 2), id="more_groups_than_chunks"),
    pytest.param("batch_renorm", (6, 13, 50), id="batch_renorm"),
    pytest.param("mean_only_batch_norm", (9, 10, 33), id="mean_only"),
]


@pytest.mark.parametrize(("name", "shape"), SET_CASES)
@pytest.mark.parametrize(("dtype", "precision"), [("float64", "highest"), ("float32", "native")])
def test_reading_a_set_of_groups_at_a_time_changes_no_bit(name, shape, dtype, precision):
    spec = REGISTRY[name]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0, (1, shape[1], *([1] * (len(shape) - 2))))
    x[:, 0] += 1e3  # a shift far from the mean: a second pass
    x[:, 1] *= 2.0**-600 if dtype == "float64" else 2.0**-70  # a group the kernels scale
    sample = _as(_registry_sample(name, shape)(0), dtype, precision=precision)
    sample = sample.replace(x=x.astype(dtype))
    dy = rng.standard_normal(shape).astype(dtype)

    sizes: list[int] = []
    set_size = _fused._set_size

    def spied(*args):
        sizes.append(set_size(*args))
        return sizes[-1]

    def both(max_set: int):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_fused, "MAX_SET", max_set)
            patch.setattr(_fused, "_set_size", spied)
            return spec.call(sample), spec.call_vjp(dy, sample)

    sets = both(_fused.MAX_SET)
    assert max(sizes) > 1, "the kernels took no set of several groups"
    alone = both(1)
    assert max(sizes[-2:]) == 1
    for got, want in zip(_flat(sets), _flat(alone), strict=True):
        np.testing.assert_array_equal(got, want)


def _flat(result) -> list[np.ndarray]:
    """The arrays of a (nested) tuple of results, ``None`` left out."""
    if isinstance(result, tuple):
        return [leaf for item in result for leaf in _flat(item)]
    return [] if result is None else [result]
