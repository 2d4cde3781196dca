"""Precision modes, output dtypes, mixed dtypes and modelling a framework's arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from conformance.checked.formats import ulp
from normref import FLAX, TORCH


def _large_mean_input(dtype=np.float32) -> np.ndarray:
    """Channels with mean 1e4 and std 1: |mean|/std = 1e4 makes E[x^2] - E[x]^2 cancel."""
    rng = np.random.default_rng(0)
    return (1e4 + rng.standard_normal((64, 3, 4, 4))).astype(dtype)


def test_mixed_dtypes_promote_the_output_and_keep_gradient_dtypes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2)).astype(np.float16)
    gamma = np.ones(3, np.float32)
    beta = np.zeros(3, np.float64)
    assert normref.batch_norm(x, gamma).dtype == np.float32
    assert normref.batch_norm(x, gamma, beta).dtype == np.float64
    assert normref.batch_norm(x).dtype == np.float16
    grads = normref.batch_norm_vjp(np.ones((4, 3, 2), np.float16), x, gamma, beta)
    assert (grads.x.dtype, grads.gamma.dtype, grads.beta.dtype) == (
        np.float16,
        np.float32,
        np.float64,
    )


def test_native_float64_is_highest():
    x = _large_mean_input(np.float64)
    np.testing.assert_array_equal(normref.batch_norm(x, precision="native"), normref.batch_norm(x))


def _two_pass_float32_bound(x: np.ndarray) -> float:
    """Worst-case error of a float32 two-pass batch norm of ``x`` (channel axis 1).

    NumPy's pairwise sum of n terms errs by at most (ceil(log2 n) + 8) u of the
    sum of their magnitudes (blocks of 128 summed by 8 accumulators, then
    pairwise): the mean errs by that times max|x|, which every centred value and
    so every output carries divided by the channel's std; the variance's relative
    error adds the same amount again at most (its centred values are off by the
    mean's error), and the few elementwise roundings are below 8 u of |y|.
    """
    n = x.size // x.shape[1]
    u32 = float(np.finfo(np.float32).eps) / 2
    std = float(np.min(x.astype(np.float64).std(axis=(0, 2, 3))))
    mean_error = (math.ceil(math.log2(n)) + 8) * u32 * float(np.max(np.abs(x)))
    largest = float(np.max(np.abs(x - x.mean(axis=(0, 2, 3), keepdims=True)))) / std
    return 2 * mean_error / std * (1 + largest) + 8 * u32 * largest


def test_native_computes_in_the_input_dtype():
    """In float32 the two-pass mean of values near 1e4 is off by ~ulp(1e4) ~ 1e-3 of the std.

    Highest precision rounds the exact result (<= 0.5 ulp); native precision
    carries that float32 error of the mean into every output, so it must be
    visibly worse, yet within the two-pass bound of ``_two_pass_float32_bound``.
    """
    x = _large_mean_input()
    exact = normref.batch_norm(x.astype(np.float64))
    highest = normref.batch_norm(x)
    native = normref.batch_norm(x, precision="native")
    assert native.dtype == np.float32
    highest_err = np.max(np.abs(highest - exact) / ulp(exact, "float32"))
    native_err = np.max(np.abs(native - exact))
    assert highest_err <= 0.5 + 1e-6
    assert native_err > 10 * np.max(ulp(exact, "float32"))
    assert native_err <= _two_pass_float32_bound(x)


def test_modelling_flax_reproduces_fast_variance_cancellation():
    """precision=FLAX uses E[x^2] - E[x]^2 in float32: on |mean|/std = 1e4 that loses every digit.

    The variance of values near 1e4 is the difference of two numbers near 1e8
    whose float32 spacing is 8, so the computed variance is a multiple of 8
    (or 0 once clamped) where the true one is about 1: every output of a channel
    is off by a factor sqrt(8 + eps) or 1/sqrt(eps), an error of order 1 or more.
    The two-pass float32 model (torch) stays within its rounding bound.
    """
    x = _large_mean_input()
    exact = normref.batch_norm(x.astype(np.float64))
    flax_like = normref.batch_norm(x, precision=FLAX)
    torch_like = normref.batch_norm(x, precision="torch")
    assert np.max(np.abs(flax_like - exact)) > 0.5
    assert np.max(np.abs(torch_like - exact)) <= _two_pass_float32_bound(x)


def test_modelling_output_dtype_rules():
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float16)
    gamma = np.ones(8, np.float32)
    assert normref.layer_norm(x, gamma, precision=TORCH).dtype == np.float16
    assert normref.layer_norm(x, gamma, precision="flax").dtype == np.float32


def test_modelling_torch_float16_computes_in_float32():
    """torch upcasts float16 to float32 for the statistics: the result is then within 1 ulp."""
    x = np.random.default_rng(2).standard_normal((16, 64)).astype(np.float16)
    exact = normref.layer_norm(x.astype(np.float64))
    modelled = normref.layer_norm(x, precision=TORCH)
    assert modelled.dtype == np.float16
    assert np.max(np.abs(modelled - exact) / ulp(exact, "float16")) <= 1.0


def test_jax_without_x64_cannot_compute_highest():
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    import jax.numpy as jnp

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", False)
    try:
        x = jnp.ones((4, 3), dtype=jnp.float32)
        with pytest.raises(normref.Float64UnavailableError, match="jax_enable_x64"):
            normref.layer_norm(x)
        assert normref.layer_norm(x, precision="native").dtype == jnp.float32
    finally:
        jax.config.update("jax_enable_x64", previous)
