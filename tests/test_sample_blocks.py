"""Whitening reads and writes the canonical rows of its input by blocks (normref.ops.sample_blocks).

The blocks against the canonical array itself, and every whitening layer and operation
computed through many small blocks against the independent references and finite
differences; its temporaries stay a few blocks whatever the number of samples.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import array_api_compat.numpy as xp_numpy
import numpy as np
import pytest

import normref
from benchmarks.memory import traced_temporaries
from normref import partition
from normref.ops import sample_blocks as blocks_module
from normref.ops.base import canonical_partition
from normref.ops.sample_blocks import sample_blocks
from normref.ops.whitening import group_covariance
from tests import reference_weights
from tests.reference_whitening import RTOL
from tests.reference_whitening import batch_whiten as reference_batch_whiten
from tests.reference_whitening import batch_whiten_inference as reference_batch_whiten_inference
from tests.reference_whitening import zca_whiten as reference_zca_whiten
from tests.support import Backend, assert_close_to_scale, assert_within, fd_vjp
from tests.whitening_cases import METHODS, U64, assert_batch_whiten_gradients

LAYOUTS = [
    pytest.param((6, 6, 2, 3), 3, 1, id="channels-first"),
    pytest.param((6, 2, 3, 6), 3, -1, id="channels-last"),
    pytest.param((8, 3, 2, 2), 4, 0, id="units-first"),
    pytest.param((2, 2, 3, 8), 4, -1, id="units-last"),
    pytest.param((5, 1, 6, 3), 2, 2, id="size-one-sample-axis"),
]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so that the small inputs of these tests take many of them."""
    monkeypatch.setattr(blocks_module, "BLOCK_ELEMENTS", 24)


@pytest.mark.parametrize(("shape", "group_size", "axis"), LAYOUTS)
@pytest.mark.parametrize("elements", [1, 24, 60, 10**6])
def test_blocks_are_the_canonical_rows_in_order(shape, group_size, axis, elements, backend):
    """The blocks' row ranges follow one another from 0 to M, each block's rows are the
    canonical array's (in the dtype asked for, in an array of the caller's own), and writing
    each block's rows back gives x. JAX and Dask take one block."""
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) - 7.0
    part = partition.whitening_partition(shape, group_size, axis)
    on = backend.asarray(x, "float64")
    found = sample_blocks(backend.xp, part, on, elements)
    canonical = np.asarray(part.to_canonical(xp_numpy, x))
    starts = [b.rows.start for b in found.blocks]
    assert starts[0] == 0
    assert found.blocks[-1].rows.stop == part.M
    assert all(a.rows.stop == b.rows.start for a, b in itertools.pairwise(found.blocks))
    for block in found.blocks:
        rows = found.rows(block, backend.xp.float32)
        np.testing.assert_array_equal(backend.to_numpy(rows), canonical[:, block.rows, :])
        if backend.name not in ("jax", "dask"):
            rows *= 0  # in place: the caller's own array, not x's memory
    np.testing.assert_array_equal(backend.to_numpy(on), x)
    back = found.assembled(
        lambda block: found.rows(block, backend.xp.float64) * 2 + 1, backend.xp.float64
    )
    np.testing.assert_array_equal(backend.to_numpy(back), 2 * x + 1)
    assert (len(found.blocks) == 1) == (elements == 10**6 or backend.name in ("jax", "dask"))


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("shape", "group_size", "axis"), LAYOUTS[:2] + LAYOUTS[4:])
@pytest.mark.parametrize("method", METHODS)
def test_batch_whitening_through_many_blocks_matches_the_reference(
    shape, group_size, axis, method, standard_backend: Backend
):
    rng = np.random.default_rng(5)
    x = (
        rng.standard_normal(shape)
        * 2.0
        ** np.arange(shape[axis]).reshape(
            [-1 if a == axis % len(shape) else 1 for a in range(len(shape))]
        )
        % 3
    )
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(shape[axis]), rng.standard_normal(shape[axis])
    kwargs = {"group_size": group_size, "eps": 1e-3, "axis": axis, "method": method}
    part = partition.whitening_partition(shape, group_size, axis)
    assert len(sample_blocks(xp_numpy, part, x).blocks) > 2
    expected = reference_batch_whiten(x, gamma, beta, **kwargs)
    arrays = [standard_backend.asarray(a, "float64") for a in (x, gamma, beta)]
    actual = standard_backend.to_numpy(normref.batch_whiten(*arrays, **kwargs))
    assert_close_to_scale(actual, expected, np.abs(expected) + 1.0, rtol=RTOL, what=method)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(("shape", "group_size", "axis"), LAYOUTS[:2] + LAYOUTS[4:])
def test_batch_whitening_inference_through_many_blocks(
    shape, group_size, axis, standard_backend: Backend
):
    """Given statistics, each output is a dot product of D terms and the affine: within
    (D + 2) u of |W| |x - mean| |gamma| + |beta|, computed here as the reference's scale."""
    rng = np.random.default_rng(11)
    channels = shape[axis]
    x = rng.standard_normal(shape)
    mean = rng.standard_normal(channels)
    whitening = rng.standard_normal((channels // group_size, group_size, group_size))
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)
    kwargs = {"group_size": group_size, "axis": axis}
    expected = reference_batch_whiten_inference(x, mean, whitening, gamma, beta, **kwargs)
    scale = reference_batch_whiten_inference(
        np.abs(x)
        + np.abs(mean).reshape([-1 if a == axis % len(shape) else 1 for a in range(len(shape))]),
        np.zeros(channels),
        np.abs(whitening),
        np.abs(gamma),
        np.abs(beta),
        **kwargs,
    )
    arrays = (x, mean, whitening, gamma, beta)
    actual = normref.batch_whiten_inference(
        *(standard_backend.asarray(a, "float64") for a in arrays), **kwargs
    )
    rtol = (group_size + 2) * U64
    assert_close_to_scale(standard_backend.to_numpy(actual), expected, scale, rtol=rtol, what="y")


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("method", METHODS)
def test_batch_whitening_gradients_through_many_blocks(axis, method, standard_backend: Backend):
    """Every gradient against finite differences of the forward (float64)."""
    shape = (7, 4, 3) if axis == 1 else (7, 3, 4)
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(4), rng.standard_normal(4)
    dy = rng.standard_normal(shape)
    kwargs = {"group_size": 2, "method": method, "axis": axis}
    assert len(sample_blocks(xp_numpy, partition.whitening_partition(shape, 2, axis), x).blocks) > 2
    assert_batch_whiten_gradients(
        standard_backend, dy, {"x": x, "gamma": gamma, "beta": beta}, kwargs
    )


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("out_axis", [0, -1])
def test_orthogonal_weight_norms_through_many_blocks(out_axis, standard_backend: Backend):
    """OWN and ONI of a kernel units first and units last against the SVD references, and
    OWN's gradient against finite differences."""
    rng = np.random.default_rng(7)
    shape = (8, 3, 2, 2) if out_axis == 0 else (2, 2, 3, 8)
    v = rng.standard_normal(shape)
    kwargs = {"group_size": 4, "eps": 1e-5, "out_axis": out_axis}
    on = standard_backend.asarray(v, "float64")
    for name, extra in (("orthogonal_weight_norm", {}), ("oni_weight_norm", {"iterations": 5})):
        expected = getattr(reference_weights, name)(v, **kwargs, **extra)
        actual = standard_backend.to_numpy(getattr(normref, name)(on, **kwargs, **extra))
        assert_close_to_scale(actual, expected, np.abs(expected) + 1.0, rtol=RTOL, what=name)
    dy = rng.standard_normal(shape)
    grad = normref.orthogonal_weight_norm_vjp(standard_backend.asarray(dy, "float64"), on, **kwargs)
    expected, bound = fd_vjp(
        lambda **a: normref.orthogonal_weight_norm(a["v"], **kwargs), {"v": v}, dy, "v"
    )
    assert_within(standard_backend.to_numpy(grad.v), expected, bound, what="OWN's gradient")


@pytest.mark.usefixtures("small_blocks")
def test_canonical_whitening_through_many_blocks(standard_backend: Backend):
    x = np.random.default_rng(8).standard_normal((2, 40, 3)) * np.array([1.0, 3.0, 0.5])
    expected = reference_zca_whiten(x, eps=1e-5)
    actual = standard_backend.to_numpy(
        normref.ops.zca_whiten(standard_backend.asarray(x, "float64"))
    )
    assert_close_to_scale(actual, expected, np.abs(expected) + 1.0, rtol=RTOL, what="zca")


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_merged_block_covariance_is_exact_to_rounding(offset):
    """The blocks' products about their own means, merged (Chan et al.), against the exact
    covariance in rational arithmetic, far from and near an offset of 10^4 standard
    deviations. Every product is of centred values, so the error is rounding of terms of
    size |x - mu| (|x - mu| + |delta_b|), at most (rows per block + blocks + 4) u of their
    sum per entry, never of the offset squared."""
    rng = np.random.default_rng(9)
    x = (offset + rng.standard_normal((1, 200, 2)) * np.array([1.0, 0.25]))[...]
    part = canonical_partition(x.shape)
    found = sample_blocks(xp_numpy, part, x, elements=2 * 16)
    assert len(found.blocks) > 10
    stats, _ = group_covariance(
        xp_numpy, found, dtype=np.float64, eps=1e-5, correction=0, algorithm="two_pass"
    )
    rows = [[Fraction(float(v)) for v in row] for row in x[0]]
    mean = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    exact = np.array(
        [
            [
                float(sum((r[j] - mean[j]) * (r[k] - mean[k]) for r in rows) / len(rows))
                for k in range(2)
            ]
            for j in range(2)
        ]
    )
    centred = np.abs(x[0] - np.array([float(m) for m in mean]))
    terms = centred.T @ centred / len(rows)
    cov = np.asarray(stats.cov[0]) / float(stats.scale[0, 0, 0]) ** 2
    budget = (16 + len(found.blocks) + 4) * U64
    assert_close_to_scale(cov, exact, terms, rtol=budget, what="covariance")


@pytest.mark.parametrize("precision", ["native", "highest"])
def test_whitening_temporaries_do_not_grow_with_the_samples(precision):
    """Four times the samples, the same temporaries (to 2% of the larger input): a few blocks
    and the D x D matrices, not a copy of the input."""
    rng = np.random.default_rng(10)

    def temporaries(n: int) -> tuple[int, int]:
        x = rng.standard_normal((n, 32, 8, 8)).astype(np.float32)
        dy = np.ones_like(x)
        forward = traced_temporaries(
            lambda: normref.batch_whiten(x, group_size=8, precision=precision)
        )
        backward = traced_temporaries(
            lambda: normref.batch_whiten_vjp(dy, x, group_size=8, precision=precision)
        )
        return max(forward, backward), x.nbytes

    small, _ = temporaries(384)  # inputs of at least INPUT_SHARE blocks of the largest size
    large, size = temporaries(1536)
    assert large <= small + 0.02 * size, f"{large / size:.3f}x against {small / size:.3f}x"
