"""Partitions map x to (G, M, D) and back exactly, with the textbook grouping."""

from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------
# Parameters in the canonical layout, and canonical copies of one's own


def _spread_param(shape, param_axes, param):
    """``param`` broadcast to the full ``shape`` (the parameter of every element)."""
    full = [1] * len(shape)
    for axis in param_axes:
        full[axis] = shape[axis]
    return np.broadcast_to(param.reshape(full), shape)


@pytest.mark.parametrize(
    ("shape", "group_size", "axis"),
    [((3, 8, 2, 5), 4, 1), ((3, 5, 2, 6), 3, -1), ((4, 6), 6, 1), ((2, 6, 3), 1, 1)],
)
def test_a_per_channel_parameter_in_the_whitening_canonical_layout(shape, group_size, axis):
    """Against the canonical array of every element's own parameter: constant over samples."""
    part = partition.whitening_partition(shape, group_size, axis)
    channel = axis % len(shape)
    param = np.arange(1.0, shape[channel] + 1.0)
    expected = np.asarray(part.to_canonical(xp, _spread_param(shape, (channel,), param)))
    c = np.asarray(part.canonical_param(xp, param, (channel,)))
    assert c.shape == (part.G, 1, part.D)
    np.testing.assert_array_equal(np.broadcast_to(c, expected.shape), expected)
    np.testing.assert_array_equal(part.param_from_canonical(xp, c, (channel,)), param)


def test_a_parameter_of_the_normalized_axes_in_the_layer_norm_canonical_layout():
    shape = (2, 3, 4, 5)
    part = partition.layer_partition(shape, (-2, -1))
    param = np.arange(20.0).reshape(4, 5)
    expected = np.asarray(part.to_canonical(xp, _spread_param(shape, (2, 3), param)))
    c = np.asarray(part.canonical_param(xp, param, (2, 3)))
    assert c.shape == (1, 20, 1)
    np.testing.assert_array_equal(np.broadcast_to(c, expected.shape), expected)
    np.testing.assert_array_equal(part.param_from_canonical(xp, c, (2, 3)), param)


def test_a_parameter_along_part_of_a_canonical_axis_has_no_canonical_layout():
    """Group norm's groups are (sample, channel group) pairs: a per-channel parameter
    varies along part of the group axis and part of the sample axis."""
    part = partition.group_partition((2, 6, 3), 3)
    with pytest.raises(ValueError, match="vary along only part of the canonical axes"):
        part.canonical_param(xp, np.ones(6), (1,))


def test_a_canonical_copy_is_ones_own_where_the_canonical_array_is_a_view():
    """(N, C) whitened in one group: the canonical array is a reshape of x, no transpose."""
    x = np.arange(12.0).reshape(4, 3)
    part = partition.whitening_partition(x.shape, 3)
    assert np.shares_memory(np.asarray(part.to_canonical(xp, x)), x)
    copied = np.asarray(part.to_canonical(xp, x, copy=True))
    assert not np.shares_memory(copied, x)
    np.testing.assert_array_equal(copied[0], x)


@pytest.mark.parametrize(
    ("shape", "group_size", "axis", "view", "features_outside"),
    [
        ((8, 3, 2, 2), 4, 0, True, True),  # a conv kernel, units first (OWN, ONI)
        ((2, 2, 3, 8), 4, -1, True, False),  # the same kernel, units last (HWIO)
        ((2, 6, 2, 3), 3, 1, False, True),  # batch whitening, channels first
        ((2, 2, 3, 6), 3, -1, True, False),  # batch whitening, channels last
    ],
)
def test_the_memory_layout_of_the_canonical_rows(shape, group_size, axis, view, features_outside):
    """Whether the canonical array of a C-contiguous x is a view of it (each kind of axis a
    run in memory), checked by reshaping without a copy, and whether the features vary more
    slowly than the innermost samples, checked by the strides of the gathered view."""
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    part = partition.whitening_partition(shape, group_size, axis)
    assert part.canonical_is_a_view == view
    gathered = np.asarray(part.to_canonical(xp, x))
    assert np.shares_memory(gathered, x) == view
    split = np.reshape(x, part.split_shape)
    feature_stride = split.strides[part.feature_axes[0]]
    sample_stride = min(split.strides[a] for a in part.sample_axes if split.shape[a] > 1)
    assert part.features_outside_samples == (feature_stride > sample_stride) == features_outside
