"""Dask arrays (threaded scheduler): one-pass lazy statistics, and the registry's operations.

What does not run on Dask, and is refused with a :class:`TypeError` that says so:
the whitening operations that factor each group's covariance (decorrelation,
PCA, ZCA and Cholesky whitening, and ``batch_whiten`` and ``whitening_matrix``
with those methods), since ``dask.array`` has no batched ``eigh`` or
``cholesky``. IterNorm whitening, which needs only matrix products, runs.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

dask = pytest.importorskip("dask", reason="dask is not installed (pip install -e '.[dask]')")
da = pytest.importorskip("dask.array", reason="dask is not installed (pip install -e '.[dask]')")

import normref
from normref import stats
from normref.ops import whitening_matrix
from normref.partition import whitening_partition
from normref.registry import REGISTRY, OpSpec
from tests import test_gradients, test_values
from tests.reference import REFERENCES
from tests.registry_cases import derivative_params, draw, on_backend
from tests.support import (
    assert_close_to_scale,
    dask_backend,
    fsum_comoments,
)

U64 = np.finfo(np.float64).eps
DASK = dask_backend()


@pytest.fixture(autouse=True)
def _threaded_scheduler():
    with dask.config.set(scheduler="threads"):
        yield


# ---------------------------------------------------------------------------
# Statistics: values, laziness, one pass.


def _exact_moments(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and m2 over ``axes`` by exactly rounded sums (the diagonal of the comoments)."""
    kept = [a for a in range(x.ndim) if a not in axes]
    samples = np.moveaxis(x, list(axes), list(range(len(axes))))
    m = math.prod(x.shape[a] for a in axes)
    _, mean, cross = fsum_comoments(samples.reshape(m, -1))
    shape = tuple(x.shape[a] for a in kept)
    return mean.reshape(shape), np.diagonal(cross).reshape(shape)


CHUNKINGS = [
    pytest.param((7, 6, 5), (0,), id="one-chunk-per-statistic-axis-0"),
    pytest.param((4, 2, 5), (0, 2), id="chunked-kept-axis"),
    pytest.param((3, 6, 2), (0, 2), id="both-reduced-axes-chunked"),
    pytest.param((1, 1, 1), (1, 2), id="one-value-chunks"),
]


@pytest.mark.parametrize(("chunks", "axes"), CHUNKINGS)
def test_moments_match_exact_sums(chunks, axes):
    x = np.random.default_rng(0).standard_normal((29, 6, 5)) * 2.0 + 5.0
    m = stats.moments(da.from_array(x, chunks=chunks), axes)
    mean, m2 = dask.compute(m.mean, m.m2)
    expected_mean, expected_m2 = _exact_moments(x, axes)
    n = math.prod(x.shape[a] for a in axes)
    assert m.count == n
    chunk_count = math.prod(math.ceil(x.shape[a] / chunks[a]) for a in axes)
    # each chunk's sums are within n u of the sum of |terms|; each of the at most
    # chunk_count merges adds a few u of |mean| (mean) and, through the means it
    # subtracts, a few u times the conditioning |mean| / std (m2)
    rtol = (n + 8 * chunk_count) * U64
    conditioning = 1.0 + np.abs(expected_mean) / np.sqrt(expected_m2 / n)
    assert_close_to_scale(
        mean, expected_mean, np.mean(np.abs(x), axis=axes), rtol=rtol, what="mean"
    )
    assert_close_to_scale(m2, expected_m2, expected_m2 * conditioning, rtol=rtol, what="m2")


def test_comoments_match_exact_sums():
    """Chunks along samples and features (the features are joined into one chunk first)."""
    x = np.random.default_rng(1).standard_normal((3, 40, 4)) * 3.0 + 7.0
    c = stats.comoments(da.from_array(x, chunks=(2, 7, 3)))
    mean, cross = dask.compute(c.mean, c.cross)
    assert c.count == 40
    assert cross.shape == (3, 4, 4)
    chunk_count = math.ceil(40 / 7)
    for g in range(3):
        _, expected_mean, expected_cross = fsum_comoments(x[g])
        std = np.sqrt(np.diagonal(expected_cross) / 40)
        # as for the moments: n u per chunk, a few u per merge times the conditioning
        # |mean| / std, relative to the scale of the summed products |x_i - mean| |x_j - mean|
        rtol = (40 + 8 * chunk_count) * U64 * (1.0 + np.max(np.abs(expected_mean) / std))
        deviations = np.abs(x[g] - expected_mean)
        scale = np.mean(np.abs(x[g]), axis=0)
        assert_close_to_scale(mean[g], expected_mean, scale, rtol=rtol, what="mean")
        assert_close_to_scale(
            cross[g], expected_cross, deviations.T @ deviations, rtol=rtol, what="cross"
        )


class _Generated:
    """A Dask array built chunk by chunk from seeds, counting the chunks it generates."""

    def __init__(self, chunks: int, shape: tuple[int, ...]):
        self.calls: list[int] = []
        parts = [
            da.from_delayed(dask.delayed(self._chunk)(i, shape), shape, dtype=np.float64)
            for i in range(chunks)
        ]
        self.x = da.concatenate(parts, axis=0)

    def _chunk(self, seed: int, shape: tuple[int, ...]) -> np.ndarray:
        self.calls.append(seed)
        return np.random.default_rng(seed).standard_normal(shape)


def _never_computed(dsk, keys, **kwargs):
    msg = "something was computed while the graph was built"
    raise AssertionError(msg)


def test_statistics_are_lazy_and_read_each_chunk_once():
    data = _Generated(6, (5, 4, 3))
    with dask.config.set(scheduler=_never_computed):
        m = stats.moments(data.x, (0, 2))
        c = stats.comoments(whitening_partition(data.x.shape, 2).to_canonical(DASK.xp, data.x))
        merged = stats.merge(m, m)
        variance = stats.variance(merged)
        cov = stats.covariance(c, correction=1)
    assert data.calls == []
    assert (m.count, merged.count, c.count) == (90, 180, 90)
    dask.compute(m.mean, m.m2, variance, c.mean, c.cross, cov)
    assert sorted(data.calls) == list(range(6))


def test_memory_holds_a_few_chunks_not_the_data():
    """One pass: each chunk is reduced and released; the data (16 MiB) is never held.

    The generic two-pass graph would hold every chunk until the global mean is
    known (the whole 16 MiB); the peak here is the statistics of a chunk in
    flight (the chunk, its deviations and their products, 0.5 MiB each) and
    what Dask holds between tasks. NumPy reports its buffers to tracemalloc.
    """
    data = _Generated(32, (1024, 8, 8))
    m = stats.moments(data.x, (0, 2))
    c = stats.comoments(whitening_partition(data.x.shape, 4).to_canonical(DASK.xp, data.x))
    dask.compute(da.ones(3).sum(), scheduler="sync")  # Dask's one-time allocations, before tracing
    tracemalloc.start()
    try:
        dask.compute(m.mean, m.m2, c.mean, c.cross, scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < data.x.nbytes / 4, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(("precision", "dtype"), [("highest", np.float64), ("native", np.float32)])
def test_statistics_are_accumulated_in_the_compute_dtype(precision, dtype):
    x = da.from_array(np.ones((6, 2), dtype=np.float32), chunks=(2, 1))
    m = stats.moments(x, 0, precision=precision)
    c = stats.comoments(x, precision=precision)
    for lazy in (m.mean, m.m2, c.mean, c.cross):
        assert lazy.dtype == dtype
        assert lazy.compute().dtype == dtype


def test_unknown_sizes_are_refused():
    x = da.from_array(np.ones((6, 2)), chunks=(2, 2))
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match="unknown sizes along axes"):
        stats.moments(unknown, 0)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        stats.comoments(unknown)


# ---------------------------------------------------------------------------
# Population statistics fed to inference.


def _against_reference(name: str, actual: np.ndarray, x: np.ndarray, **kwargs) -> None:
    """``actual`` against the independent reference of the training-mode layer on all of ``x``.

    The data are as well conditioned as the registry's samples, so the
    reference's tolerance holds for statistics merged from chunks as for
    statistics taken at once (the merges add a few u each).
    """
    reference = REFERENCES[name]
    expected = reference.compute(x, **kwargs)
    scale = np.max(np.abs(expected)) + 1.0
    assert_close_to_scale(actual, expected, scale, rtol=reference.rtol, what=name)


def test_population_statistics_feed_batch_norm_inference():
    """With the statistics of the whole data set, inference is batch norm on all of it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 3, 4, 4)) * [[[[0.5]], [[2.0]], [[1.0]]]] + 0.3
    gamma, beta = 1.0 + 0.1 * rng.standard_normal(3), rng.standard_normal(3)
    m = stats.moments(da.from_array(x, chunks=(5, 2, 4, 3)), (0, 2, 3))
    mean, var = dask.compute(m.mean, stats.variance(m))
    y = normref.batch_norm_inference(x, mean, var, gamma, beta, eps=1e-5)
    _against_reference("batch_norm", y, x, gamma=gamma, beta=beta, eps=1e-5, axis=1)


def test_population_covariance_feeds_batch_whiten_inference():
    """With the whole data set's covariance, inference is ZCA batch whitening on all of it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 4, 2)) @ np.array([[1.0, 0.3], [0.0, 0.5]]) + 0.3
    x = np.ascontiguousarray(np.moveaxis(x, -1, 1))  # (N, C, S) with correlated channels
    part = whitening_partition(x.shape, 2)
    lazy = da.from_array(x, chunks=(7, 2, 2))
    c = stats.comoments(part.to_canonical(DASK.xp, lazy))
    mean, cov = dask.compute(c.mean, stats.covariance(c))
    w = whitening_matrix(cov, method="zca", eps=1e-5)
    y = normref.batch_whiten_inference(x, mean.reshape(-1), w, group_size=2)
    _against_reference("batch_whiten", y, x, group_size=2, eps=1e-5, axis=1)


# ---------------------------------------------------------------------------
# The registry's operations on Dask arrays.


def _dask_params(supported: bool) -> list:
    """The ops that run on Dask arrays (``supported``), or those that refuse them: the
    whitening operations that factor a covariance."""
    return [
        pytest.param(spec, id=name)
        for name, spec in REGISTRY.items()
        if spec.capabilities.dask is supported
    ]


@pytest.mark.parametrize("spec", _dask_params(supported=True))
def test_forward_matches_reference(spec: OpSpec):
    """The same checks as on every other backend (tests/test_values.py), on Dask arrays."""
    test_values.test_forward_float64_matches_reference(spec, 0, DASK)
    test_values.test_highest_precision_rounds_once_to_the_input_dtype(spec, DASK)


@pytest.mark.parametrize(
    "spec", [p for p in _dask_params(supported=True) if p in derivative_params()]
)
def test_vjp_matches_finite_differences(spec: OpSpec):
    """The same check as on every other backend (tests/test_gradients.py), on Dask arrays."""
    test_gradients.test_vjp_matches_finite_differences(spec, 0, DASK)


@pytest.mark.parametrize("spec", _dask_params(supported=False))
def test_factoring_whitening_is_refused(spec: OpSpec):
    sample = on_backend(draw(spec, 0), DASK)
    dy = DASK.asarray(np.ones(sample.args[spec.primary].shape), "float64")
    with pytest.raises(TypeError, match=r"dask\.array cannot do for a stack of matrices"):
        spec.call(sample)
    with pytest.raises(TypeError, match=r"compute the covariance with normref\.stats\.comoments"):
        spec.call_vjp(dy, sample)


@pytest.mark.parametrize("method", ["zca", "pca", "cholesky"])
def test_whitening_matrix_of_a_dask_covariance_is_refused(method):
    cov = da.from_array(np.eye(3)[None].repeat(2, axis=0), chunks=(1, 3, 3))
    with pytest.raises(TypeError, match="factors each group's covariance"):
        whitening_matrix(cov, method=method)


def test_iter_norm_batch_whitening_runs_on_dask():
    """Its canonical operation is in the registry checks above; the layer, against its reference."""
    sample = draw(REGISTRY["batch_whiten"], 0).replace(method="iter_norm", iterations=5)
    reference = REFERENCES["batch_whiten"]
    expected = reference.compute(*sample.args.values(), **sample.kwargs)
    actual = DASK.to_numpy(normref.batch_whiten(**on_backend(sample, DASK).args, **sample.kwargs))
    scale = np.max(np.abs(expected)) + 1.0
    assert_close_to_scale(actual, expected, scale, rtol=reference.rtol, what="batch_whiten")
