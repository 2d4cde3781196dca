"""Partitions map x to (G, M, D) and back exactly, with the textbook grouping."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normref import partition

shapes = st.lists(st.integers(1, 4), min_size=3, max_size=5).map(tuple)


def _roundtrip(part, shape):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    c = np.asarray(part.to_canonical(xp, x))
    assert c.shape == (part.G, part.M, part.D)
    assert x.size == part.G * part.M * part.D
    np.testing.assert_array_equal(np.asarray(part.from_canonical(xp, c)), x)
    return x, c


@given(shape=shapes, axis=st.integers(-3, 2))
def test_batch_partition_roundtrip(shape, axis):
    x, c = _roundtrip(partition.batch_partition(shape, axis), shape)
    channel = axis % len(shape)
    for g in range(shape[channel]):
        np.testing.assert_array_equal(
            np.sort(c[g, :, 0]), np.sort(np.take(x, g, axis=channel).ravel())
        )


@given(shape=shapes, data=st.data())
def test_group_partition_roundtrip(shape, data):
    groups = data.draw(st.sampled_from([g for g in range(1, shape[1] + 1) if shape[1] % g == 0]))
    x, c = _roundtrip(partition.group_partition(shape, groups), shape)
    per = shape[1] // groups
    for n in range(shape[0]):
        for g in range(groups):
            expected = x[n, g * per : (g + 1) * per].ravel()
            np.testing.assert_array_equal(np.sort(c[n * groups + g, :, 0]), np.sort(expected))


@given(shape=shapes)
def test_instance_partition_roundtrip(shape):
    x, c = _roundtrip(partition.instance_partition(shape), shape)
    np.testing.assert_array_equal(c[:, :, 0], x.reshape(shape[0] * shape[1], -1))


@given(shape=shapes, data=st.data())
def test_ghost_partition_roundtrip(shape, data):
    size = data.draw(st.sampled_from([b for b in range(1, shape[0] + 1) if shape[0] % b == 0]))
    x, c = _roundtrip(partition.ghost_batch_partition(shape, size), shape)
    np.testing.assert_array_equal(np.sort(c[0, :, 0]), np.sort(x[:size, 0].ravel()))


@given(shape=shapes, k=st.integers(1, 3))
def test_layer_partition_roundtrip(shape, k):
    axes = tuple(range(-k, 0))
    x, c = _roundtrip(partition.layer_partition(shape, axes), shape)
    np.testing.assert_array_equal(c[:, :, 0], x.reshape(-1, int(np.prod(shape[-k:]))))


def test_partition_errors_name_the_argument():
    with pytest.raises(
        ValueError, match=r"num_groups=3 must divide the number of channels x.shape\[1\]=4"
    ):
        partition.group_partition((2, 4, 3), 3)
    with pytest.raises(
        ValueError, match=r"virtual_batch_size=3 must divide the batch size x.shape\[0\]=4"
    ):
        partition.ghost_batch_partition((4, 2), 3)
    with pytest.raises(
        ValueError, match=r"x must have rank >= 3 \(N, C and at least one spatial axis\)"
    ):
        partition.instance_partition((4, 2))
    with pytest.raises(ValueError, match="axis=0 names the batch axis 0"):
        partition.instance_partition((4, 2, 3), axis=0)
