"""Comoments: cross-product matrices by two passes, merged exactly chunk by chunk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normref import stats
from tests.support import Backend, assert_close_to_scale, fsum_comoments

U64 = np.finfo(np.float64).eps


def test_comoments_against_fsum(standard_backend: Backend):
    """Two passes in float64: each entry exact to a few u of the sum of |products| (M u here)."""
    x = np.random.default_rng(0).standard_normal((3, 50, 4)) * 3 + 7
    c = stats.comoments(standard_backend.asarray(x, "float64"))
    assert c.count == 50
    for g in range(3):
        _, mean, cross = fsum_comoments(x[g])
        assert_close_to_scale(
            standard_backend.to_numpy(c.mean)[g], mean, np.abs(mean), rtol=4 * U64, what="mean"
        )
        dev = np.abs(x[g] - mean)
        assert_close_to_scale(
            standard_backend.to_numpy(c.cross)[g], cross, dev.T @ dev, rtol=50 * U64, what="cross"
        )


@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    d=st.integers(1, 5),
    offset=st.sampled_from([0.0, 1e3, 1e6]),
)
def test_merging_chunks_equals_the_whole(seed, cuts, d, offset):
    """The pairwise merge is exact in real arithmetic; in float64 each chunk's mean carries
    ~u |mean|, which the δδ^T term passes into the cross products relative to their
    size n σ^2: the bound scales with the conditioning |mean| / σ, as for moments."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(cuts) + 2, d)) @ rng.standard_normal((d, d)) + offset
    bounds = np.cumsum([0, *cuts, 2])
    chunks = [stats.comoments(x[a:b]) for a, b in itertools.pairwise(bounds)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = stats.merge_comoments(merged, chunk)
    n, mean, cross = fsum_comoments(x)
    assert merged.count == n
    spread = np.sqrt(np.diag(cross) / n)
    conditioning = 1.0 + np.max(np.abs(mean)) / np.min(spread)
    bound = 16 * len(chunks) * U64 * conditioning
    assert_close_to_scale(merged.mean, mean, np.abs(mean) + spread, rtol=bound, what="mean")
    scale = np.outer(spread, spread) * n
    assert_close_to_scale(merged.cross, cross, scale, rtol=bound, what="cross")
    reverse = chunks[-1]
    for chunk in reversed(chunks[:-1]):
        reverse = stats.merge_comoments(chunk, reverse)
    assert_close_to_scale(reverse.cross, cross, scale, rtol=bound, what="reverse order")


def test_merge_with_an_empty_chunk_is_the_identity():
    a = stats.comoments(np.arange(12.0).reshape(4, 3))
    empty = stats.Comoments(0, np.zeros(3), np.zeros((3, 3)))
    assert stats.merge_comoments(a, empty) is a
    assert stats.merge_comoments(empty, a) is a


def test_covariance_corrections():
    x = np.random.default_rng(1).standard_normal((6, 3))
    c = stats.comoments(x)
    np.testing.assert_allclose(stats.covariance(c), np.cov(x.T, bias=True), rtol=1e-14)
    np.testing.assert_allclose(stats.covariance(c, correction=1), np.cov(x.T), rtol=1e-14)
    with pytest.raises(ValueError, match="needs count > 1, got count=1"):
        stats.covariance(stats.comoments(np.ones((1, 3))), correction=1)


def test_comoments_errors():
    with pytest.raises(ValueError, match=r"x must have rank >= 2 \(samples and features"):
        stats.comoments(np.ones(5))
    a = stats.comoments(np.ones((4, 3)))
    b = stats.comoments(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"b.mean must have shape \(3,\)"):
        stats.merge_comoments(a, b)
    bad = stats.Comoments(4, np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"b.cross must have shape \(3, 3\)"):
        stats.merge_comoments(a, bad)
    with pytest.raises(ValueError, match=r"a\.count must be .*>= 0, got -1"):
        stats.merge_comoments(stats.Comoments(-1, a.mean, a.cross), a)
