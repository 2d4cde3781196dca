"""Batch whitening layers: partition, every method against the references, inference and running
statistics, one training step."""

from __future__ import annotations

import math

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normref
from normref import ops, stats
from normref.conventions import FLAX, TORCH
from normref.partition import whitening_partition
from tests.reference_whitening import RTOL
from tests.reference_whitening import batch_whiten as reference_batch_whiten
from tests.support import Backend, assert_close_to_scale
from tests.whitening_cases import METHODS, U64, assert_batch_whiten_gradients


def _sample(seed: int, shape=(12, 6, 2, 2), group_size=3):
    """x with channel c scaled by 2**(c % k): group covariances near diag(1, 4, 16), κ ≈ 16."""
    rng = np.random.default_rng(seed)
    scales = 2.0 ** (np.arange(shape[1]) % group_size)
    x = rng.standard_normal(shape) * scales.reshape((-1,) + (1,) * (len(shape) - 2))
    gamma = 1.0 + 0.5 * rng.standard_normal(shape[1])
    beta = rng.standard_normal(shape[1])
    return x, gamma, beta


# ---------------------------------------------------------------------------
# Partition


@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple),
    k=st.integers(1, 3),
    axis=st.integers(-2, 1),
)
def test_whitening_partition_groups_consecutive_channels(shape, k, axis):
    """Group g holds channels g k .. g k + k - 1 as its features; samples are every other index."""
    channel = axis % len(shape)
    shape = tuple(s * k if i == channel else s for i, s in enumerate(shape))
    part = whitening_partition(shape, k, axis)
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    c = np.asarray(part.to_canonical(xp_numpy, x))
    assert c.shape == (shape[channel] // k, math.prod(shape) // shape[channel], k)
    np.testing.assert_array_equal(np.asarray(part.from_canonical(xp_numpy, c)), x)
    samples = np.moveaxis(x, channel, -1).reshape(-1, shape[channel])
    for g in range(c.shape[0]):
        np.testing.assert_array_equal(c[g], samples[:, g * k : (g + 1) * k])


def test_whitening_partition_errors():
    with pytest.raises(ValueError, match=r"group_size=4 must divide the number of channels"):
        whitening_partition((2, 6, 3), 4)
    with pytest.raises(ValueError, match=r"x must have rank >= 2"):
        whitening_partition((6,), 2)
    with pytest.raises(ValueError, match=r"group_size must be an integer >= 1, got 0"):
        whitening_partition((2, 6), 0)


# ---------------------------------------------------------------------------
# Every method


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_the_reference(method, standard_backend: Backend):
    x, gamma, beta = _sample(0)
    kwargs = {"group_size": 3, "eps": 1e-5, "axis": 1, "method": method}
    expected = reference_batch_whiten(x, gamma, beta, **kwargs)
    arrays = [standard_backend.asarray(a, "float64") for a in (x, gamma, beta)]
    actual = standard_backend.to_numpy(normref.batch_whiten(*arrays, **kwargs))
    assert_close_to_scale(actual, expected, np.max(np.abs(expected)) + 1.0, rtol=RTOL, what=method)


@pytest.mark.parametrize("method", METHODS)
def test_unbiased_covariance_is_the_biased_one_of_rescaled_data(method, standard_backend: Backend):
    """correction=1 whitens C M/(M-1) + eps I: the biased whitening of x sqrt(M/(M-1)), rescaled.

    Each side is exact to the references' RTOL of the output's size (κ ≈ 16 here).
    """
    x, _, _ = _sample(8)
    a = math.sqrt(48 / 47)  # M = 12 * 2 * 2 samples per group
    b = standard_backend
    unbiased = normref.batch_whiten(
        b.asarray(x, "float64"), group_size=3, method=method, correction=1
    )
    rescaled = normref.batch_whiten(b.asarray(a * x, "float64"), group_size=3, method=method)
    unbiased, rescaled = b.to_numpy(unbiased), b.to_numpy(rescaled) / a
    assert_close_to_scale(unbiased, rescaled, np.abs(rescaled).max(), rtol=2 * RTOL, what=method)


@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gradient(method, correction, standard_backend: Backend):
    x, gamma, beta = _sample(1, shape=(6, 4, 2), group_size=2)
    kwargs = {"group_size": 2, "method": method, "correction": correction}
    dy = np.random.default_rng(2).standard_normal(x.shape)
    assert_batch_whiten_gradients(
        standard_backend, dy, {"x": x, "gamma": gamma, "beta": beta}, kwargs
    )


@pytest.mark.parametrize("method", METHODS)
def test_group_size_one_is_batch_norm(method, standard_backend: Backend):
    """Whitening one feature is standardizing it: batch_whiten(group_size=1) = batch_norm."""
    x, gamma, beta = _sample(3, group_size=1)
    arrays = [standard_backend.asarray(a, "float64") for a in (x, gamma, beta)]
    whitened = normref.batch_whiten(*arrays, group_size=1, method=method)
    normalized = normref.batch_norm(*arrays)
    assert_close_to_scale(
        standard_backend.to_numpy(whitened),
        standard_backend.to_numpy(normalized),
        np.abs(standard_backend.to_numpy(normalized)) + 1.0,
        rtol=16 * U64,
        what=method,
    )


def test_channels_last_is_the_same_layer():
    """The same groups of the same values: the same covariance, bit for bit. Each output is
    then a dot product of D = 3 terms, which the two layouts sum in their memory's order
    (``SampleBlocks.times``), then the affine: within (D + 1) u of |y| + |beta| per
    output on either side."""
    x, gamma, beta = _sample(4)
    first = normref.batch_whiten(x, gamma, beta, group_size=3)
    last = normref.batch_whiten(np.moveaxis(x, 1, -1), gamma, beta, group_size=3, axis=-1)
    scale = np.abs(first) + np.abs(beta)[:, None, None]
    assert_close_to_scale(np.moveaxis(last, -1, 1), first, scale, rtol=8 * U64, what="y")


def test_pca_gradient_is_refused_at_repeated_eigenvalues():
    """Two channels with the same spread and no correlation: their eigenvalues tie exactly."""
    h = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # orthogonal ±1 columns
    x = np.concatenate([h, 3.0 * h], axis=1)  # channels 0, 1 tie; channels 2, 3 tie
    assert np.isfinite(normref.batch_whiten(x, group_size=2, method="pca")).all()
    with pytest.raises(ValueError, match="repeated eigenvalues"):
        normref.batch_whiten_vjp(np.ones_like(x), x, group_size=2, method="pca")
    assert np.isfinite(normref.batch_whiten_vjp(np.ones_like(x), x, group_size=2).x).all()


# ---------------------------------------------------------------------------
# Inference, running statistics, one training step


def _batch_statistics(
    x: np.ndarray, k: int, method: str, eps: float, iterations: int = 5, correction: int = 0
):
    """Per-channel mean (C,) and group whitening matrices (C/k, k, k), written out in NumPy.

    ZCA and IterNorm from the eigendecomposition of each group's covariance (``np.cov``
    with ``ddof=correction``)
    (IterNorm as its scalar recursion on each eigenvalue of the trace-normalized matrix).
    """
    rows = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    mean = np.array([math.fsum(r) / r.size for r in rows])
    whitening = []
    for g in range(x.shape[1] // k):
        cov = np.cov(rows[g * k : (g + 1) * k], ddof=correction) + eps * np.eye(k)
        lam, v = np.linalg.eigh(cov)
        if method == "zca":
            scaled = lam**-0.5
        else:
            trace = lam.sum()
            p = np.ones(k)
            for _ in range(iterations):
                p = 1.5 * p - 0.5 * p**3 * lam / trace
            scaled = p / np.sqrt(trace)
        whitening.append(v @ np.diag(scaled) @ v.T)
    return mean, np.stack(whitening)


@pytest.mark.parametrize("method", ["zca", "iter_norm"])
def test_inference_with_the_batch_statistics_is_training(method, standard_backend: Backend):
    """batch_whiten_inference with this batch's mean and whitening matrices = batch_whiten.

    The NumPy eigendecomposition and normref's agree to the references' RTOL (κ ≈ 16 here).
    """
    x, gamma, beta = _sample(5)
    mean, whitening = _batch_statistics(x, 3, method, 1e-5)
    b = standard_backend
    inference = normref.batch_whiten_inference(
        *(b.asarray(a, "float64") for a in (x, mean, whitening, gamma, beta)), group_size=3
    )
    training = normref.batch_whiten(
        *(b.asarray(a, "float64") for a in (x, gamma, beta)), group_size=3, method=method
    )
    assert_close_to_scale(
        b.to_numpy(inference), b.to_numpy(training), np.abs(x).max() + 1.0, rtol=RTOL, what=method
    )


def test_whitening_matrix_of_merged_chunk_covariances_whitens_the_whole_batch():
    """Comoments of chunks, merged, give the batch covariance, whose whitening matrix applied at
    inference reproduces training-mode batch whitening."""
    x, _, _ = _sample(6)
    chunks = [
        stats.comoments(whitening_partition(c.shape, 3).to_canonical(xp_numpy, c))
        for c in (x[0:4], x[4:8], x[8:12])
    ]
    merged = stats.merge_comoments(stats.merge_comoments(chunks[0], chunks[1]), chunks[2])
    w = ops.whitening_matrix(stats.covariance(merged))
    y = normref.batch_whiten_inference(x, np.reshape(merged.mean, (-1,)), w, group_size=3)
    assert_close_to_scale(
        y, normref.batch_whiten(x, group_size=3), np.abs(x).max(), rtol=RTOL, what="chunks"
    )


def test_running_whitening_update_follows_the_convention():
    old = np.eye(3)[None] * np.array([1.0, 2.0])[:, None, None]
    new = np.full((2, 3, 3), 5.0)
    torch_like = normref.running_whitening_update(old, new, momentum=0.1, convention=TORCH)
    np.testing.assert_allclose(torch_like, 0.9 * old + 0.1 * new, rtol=U64, atol=0)
    flax_like = normref.running_whitening_update(old, new, momentum=0.9, convention="flax")
    np.testing.assert_allclose(flax_like, 0.9 * old + 0.1 * new, rtol=U64, atol=0)
    assert np.array_equal(old[0], np.eye(3))  # inputs unchanged
    low = normref.running_whitening_update(
        old.astype(np.float32), new, momentum=0.1, convention=FLAX
    )
    assert low.dtype == np.float32


def test_running_whitening_update_errors():
    with pytest.raises(ValueError, match=r"new must have shape \(2, 3, 3\)"):
        normref.running_whitening_update(
            np.zeros((2, 3, 3)), np.zeros((3, 3)), momentum=0.1, convention=TORCH
        )
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        normref.running_whitening_update(np.zeros(3), np.zeros(3), momentum=1.5, convention=TORCH)
    with pytest.raises(TypeError, match=r"momentum must be a number in \[0, 1\], got None"):
        normref.running_whitening_update(np.zeros(3), np.zeros(3), momentum=None, convention=TORCH)


@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("method", ["zca", "iter_norm"])
def test_training_step_as_iter_norm_and_dbn_take_it(method, correction, standard_backend: Backend):
    """IterNorm and DBN: running_mean = m mean + (1 - m) old, running_wm = m W + (1 - m) old
    (torch's momentum meaning, m = 0.1), with W the whitening matrix of the batch's covariance
    (biased as DBN and IterNorm take it, or with ``correction=1``)."""
    x, gamma, beta = _sample(7)
    running_mean = np.linspace(-1.0, 1.0, 6)
    running_whitening = np.broadcast_to(np.eye(3), (2, 3, 3)).copy()
    b = standard_backend
    y, running = normref.batch_whiten_train(
        *(b.asarray(a, "float64") for a in (x, running_mean, running_whitening, gamma, beta)),
        group_size=3,
        momentum=0.1,
        convention=TORCH,
        method=method,
        correction=correction,
    )
    mean, whitening = _batch_statistics(x, 3, method, 1e-5, correction=correction)
    scale = np.abs(whitening).max()
    assert_close_to_scale(
        b.to_numpy(running.mean), 0.1 * mean + 0.9 * running_mean, 1.0, rtol=4 * U64, what="mean"
    )
    assert_close_to_scale(
        b.to_numpy(running.whitening),
        0.1 * whitening + 0.9 * running_whitening,
        scale,
        rtol=RTOL,
        what="running whitening",
    )
    expected_y = normref.batch_whiten(
        *(b.asarray(a, "float64") for a in (x, gamma, beta)),
        group_size=3,
        method=method,
        correction=correction,
    )
    np.testing.assert_array_equal(b.to_numpy(y), b.to_numpy(expected_y))
    assert np.array_equal(running_whitening, np.broadcast_to(np.eye(3), (2, 3, 3)))
