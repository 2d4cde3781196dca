"""Moments, exact merging, running statistics and one training step."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normref
from normref import stats
from tests.support import Backend


def _fsum_moments(values: np.ndarray) -> tuple[int, float, float]:
    flat = [float(v) for v in values.ravel()]
    mean = math.fsum(flat) / len(flat)
    return len(flat), mean, math.fsum((v - mean) ** 2 for v in flat)


def test_moments_against_fsum(standard_backend: Backend):
    x = np.random.default_rng(0).standard_normal((5, 3, 4)) * 3 + 7
    m = stats.moments(standard_backend.asarray(x, "float64"), (0, 2))
    assert m.count == 20
    for c in range(3):
        _n, mean, m2 = _fsum_moments(x[:, c])
        assert standard_backend.to_numpy(m.mean)[c] == pytest.approx(mean, rel=1e-15)
        assert standard_backend.to_numpy(m.m2)[c] == pytest.approx(m2, rel=1e-13)


@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    offset=st.sampled_from([0.0, 1e3, 1e6]),
)
def test_merging_chunks_equals_the_whole(seed, cuts, offset):
    """Chan's merge is exact: chunk moments merged in any order give the moments of the whole."""
    x = np.random.default_rng(seed).standard_normal(sum(cuts) + 2) + offset
    bounds = np.cumsum([0, *cuts, 2])
    chunks = [stats.moments(x[a:b], 0) for a, b in itertools.pairwise(bounds)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = stats.merge(merged, chunk)
    n, mean, m2 = _fsum_moments(x)
    assert merged.count == n
    # each chunk mean is exact to ~u * |mean|; the merge's delta**2 term carries that error
    # into m2 relative to m2 ~ n * std**2: the bound is set by the conditioning |mean| / std
    u = np.finfo(np.float64).eps
    conditioning = 1.0 + abs(mean) / np.sqrt(m2 / n)
    assert float(merged.mean) == pytest.approx(mean, rel=8 * len(chunks) * u)
    bound = 8 * len(chunks) * u * conditioning
    assert float(merged.m2) == pytest.approx(m2, rel=bound)
    reversed_merge = chunks[-1]
    for chunk in reversed(chunks[:-1]):
        reversed_merge = stats.merge(chunk, reversed_merge)
    assert float(reversed_merge.m2) == pytest.approx(m2, rel=bound)


@pytest.mark.parametrize(
    ("values", "expected_mean"),
    [
        ([1.0, 2.0, np.inf, 4.0, 5.0, 6.0], np.inf),
        ([1.0, -np.inf, 3.0, 4.0], -np.inf),
        ([1.0, np.inf, 3.0, -np.inf], np.nan),
    ],
)
def test_merged_moments_of_infinite_data_are_those_of_the_whole(values, expected_mean):
    """An infinity gives the union an infinite mean (NaN for both signs) and a NaN m2, in every
    chunking, as NumPy's mean and variance of the whole data do."""
    x = np.asarray(values)
    with np.errstate(invalid="ignore"):
        for size in range(1, len(x) + 1):
            merged = stats.moments(x[:size], 0)
            for start in range(size, len(x), size):
                merged = stats.merge(merged, stats.moments(x[start : start + size], 0))
            np.testing.assert_equal(float(merged.mean), expected_mean)
            assert np.isnan(float(merged.m2))


def test_merge_with_an_empty_chunk_is_the_identity():
    a = stats.moments(np.arange(4.0), 0)
    empty = stats.Moments(0, np.zeros(()), np.zeros(()))
    assert stats.merge(a, empty) is a
    assert stats.merge(empty, a) is a


def test_variance_corrections():
    x = np.array([1.0, 2.0, 4.0])
    m = stats.moments(x, 0)
    assert float(stats.variance(m)) == pytest.approx(np.var(x))
    assert float(stats.variance(m, correction=1)) == pytest.approx(np.var(x, ddof=1))
    with pytest.raises(ValueError, match="needs count > 1, got count=1"):
        stats.variance(stats.moments(np.ones(1), 0), correction=1)
    with pytest.raises(ValueError, match=r"correction must be 0 \(biased\) or 1"):
        stats.variance(m, correction=2)


def test_merge_errors():
    a = stats.moments(np.ones((3, 2)), 0)
    b = stats.moments(np.ones((3, 4)), 0)
    with pytest.raises(ValueError, match=r"b.mean must have shape \(2,\)"):
        stats.merge(a, b)
    with pytest.raises(ValueError, match=r"a\.count must be an integer >= 0, got -1"):
        stats.merge(stats.Moments(-1, a.mean, a.m2), a)


def _update(convention, momentum, **kw):
    return stats.running_update(
        np.zeros(2),
        np.ones(2),
        np.array([1.0, 2.0]),
        np.array([4.0, 8.0]),
        5,
        momentum=momentum,
        convention=convention,
        **kw,
    )


def test_running_update_torch_meaning_and_unbiased_variance():
    new = _update("torch", 0.1)
    np.testing.assert_allclose(new.mean, [0.1, 0.2])
    np.testing.assert_allclose(new.var, [0.9 + 0.1 * 4 * 5 / 4, 0.9 + 0.1 * 8 * 5 / 4])


def test_running_update_flax_meaning_and_biased_variance():
    new = _update("flax", 0.9)
    np.testing.assert_allclose(new.mean, [0.1, 0.2])
    np.testing.assert_allclose(new.var, [0.9 + 0.1 * 4, 0.9 + 0.1 * 8])


def test_cumulative_average_is_the_plain_mean_of_batch_statistics():
    rng = np.random.default_rng(0)
    batch_means = rng.standard_normal((6, 3))
    running = stats.RunningStats(np.zeros(3), np.ones(3))
    for k, mean in enumerate(batch_means, start=1):
        running = stats.running_update(
            running.mean,
            running.var,
            mean,
            np.ones(3),
            10,
            momentum=None,
            convention="torch",
            num_batches_tracked=k,
        )
    np.testing.assert_allclose(running.mean, batch_means.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0, 1\], got 1.5"),
        ({"momentum": None}, ValueError, "needs num_batches_tracked >= 1"),
        ({"momentum": 0.1, "convention": "caffe"}, ValueError, "convention must be"),
    ],
)
def test_running_update_errors(kwargs, error, match):
    args = {"convention": "torch", **kwargs}
    with pytest.raises(error, match=match):
        _update(**args)


def test_unbiased_running_variance_needs_two_values():
    with pytest.raises(ValueError, match="needs count >= 2 values per statistic, got count=1"):
        stats.running_update(
            np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1), 1, momentum=0.1, convention="torch"
        )


def test_running_update_keeps_buffer_dtypes():
    new = stats.running_update(
        np.zeros(2, np.float32),
        np.ones(2, np.float32),
        np.ones(2),
        np.ones(2),
        4,
        momentum=0.1,
        convention="torch",
    )
    assert new.mean.dtype == np.float32
    assert new.var.dtype == np.float32


def test_batch_norm_train_against_torch_batchnorm():
    """torch.nn.BatchNorm2d in training mode is an independent implementation of the same step."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4, 3, 3))
    module = torch.nn.BatchNorm2d(4, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(1 + rng.random(4)))
        module.bias.copy_(torch.from_numpy(rng.standard_normal(4)))
    gamma, beta = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
    rm, rv = np.zeros(4), np.ones(4)
    for _ in range(3):
        expected = module(torch.from_numpy(x)).detach().numpy()
        y, (rm, rv) = normref.batch_norm_train(
            x, rm, rv, gamma, beta, momentum=0.1, convention="torch"
        )
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rm, module.running_mean.numpy(), rtol=1e-13)
        np.testing.assert_allclose(rv, module.running_var.numpy(), rtol=1e-13)
        x = x * 1.5 + 0.25


def test_batch_norm_train_against_flax_batchnorm():
    """flax.linen.BatchNorm: momentum 0.9 as the old value's weight, biased running variance.

    flax initializes its running statistics in float32 whatever ``dtype`` says,
    and the first update multiplies the old value in float32: with float32
    buffers on normref's side too, the two agree to float32 rounding.
    """
    pytest.importorskip("flax", reason="flax is not installed (pip install -e '.[jax]')")
    import jax
    import jax.numpy as jnp
    from flax import linen

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 3, 3, 5))  # channels last
    module = linen.BatchNorm(
        use_running_average=False,
        momentum=0.9,
        epsilon=1e-5,
        use_fast_variance=False,
        dtype=jnp.float64,
        param_dtype=jnp.float64,
    )
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
    y_flax, updated = module.apply(variables, jnp.asarray(x), mutable=["batch_stats"])
    flax_mean = np.asarray(updated["batch_stats"]["mean"])
    flax_var = np.asarray(updated["batch_stats"]["var"])
    y, running = normref.batch_norm_train(
        x,
        np.zeros(5, np.float32),
        np.ones(5, np.float32),
        momentum=0.9,
        convention="flax",
        axis=-1,
    )
    np.testing.assert_allclose(y, np.asarray(y_flax), rtol=1e-12, atol=1e-12)
    assert running.var.dtype == np.float32
    ulp32 = np.spacing(np.float32(1.0))
    np.testing.assert_allclose(running.mean, flax_mean, rtol=0, atol=2 * ulp32)
    np.testing.assert_allclose(running.var, flax_var, rtol=2 * ulp32)
