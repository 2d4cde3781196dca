"""The fused kernels' five-slot view of each layer's partition (pure Python; no numba needed)."""

from __future__ import annotations

import pytest

from normref import partition
from normref._fused.layout import Layout, fit

# (partition, parameter axes, expected slots (G0, S1, G2, S3, S4), expected parameter strides),
# written from the layers' definitions: which axes are groups, samples and parameters.
NAMED_LAYERS = [
    pytest.param(
        partition.batch_partition((32, 64, 56, 56)),
        (1,),
        (1, 32, 64, 1, 3136),
        (0, 0, 1, 0, 0),
        id="batch norm: groups are channels, samples N and H*W",
    ),
    pytest.param(
        partition.instance_partition((32, 64, 56, 56)),
        (1,),
        (32, 1, 64, 1, 3136),
        (0, 0, 1, 0, 0),
        id="instance norm: groups (n, c), parameters per c",
    ),
    pytest.param(
        partition.group_partition((32, 64, 56, 56), 32),
        (1,),
        (32, 1, 32, 2, 3136),
        (0, 0, 2, 1, 0),
        id="group norm: channel = group * 2 + channel within the group",
    ),
    pytest.param(
        partition.ghost_batch_partition((8, 4, 3, 3), 2),
        (1,),
        (4, 2, 4, 1, 9),
        (0, 0, 1, 0, 0),
        id="ghost batch norm: groups (virtual batch, channel)",
    ),
    pytest.param(
        partition.layer_partition((16, 128, 1024), (-1,)),
        (2,),
        (2048, 1, 1, 1, 1024),
        (0, 0, 0, 0, 1),
        id="layer norm: parameters along the inner loop",
    ),
    pytest.param(
        partition.layer_partition((4, 5, 6), (1, 2)),
        (1, 2),
        (4, 1, 1, 1, 30),
        (0, 0, 0, 0, 1),
        id="layer norm over two trailing axes merges them",
    ),
    pytest.param(
        partition.batch_partition((8, 5, 5, 4), -1),
        (3,),
        (1, 200, 4, 1, 1),
        (0, 0, 1, 0, 0),
        id="channels-last batch norm: an inner loop of one",
    ),
    pytest.param(
        partition.Partition((3, 7, 2), (3, 7, 2), ("group", "sample", "group")),
        (),
        (3, 7, 2, 1, 1),
        (0, 0, 0, 0, 0),
        id="canonical (G, M, D)",
    ),
    pytest.param(
        partition.group_partition((2, 1, 3), 1),
        (1,),
        (2, 1, 1, 1, 3),
        (0, 0, 0, 0, 0),
        id="axes of size one carry no index",
    ),
]


@pytest.mark.parametrize(("part", "param_axes", "shape", "strides"), NAMED_LAYERS)
def test_layout_of_named_layers(part, param_axes, shape, strides):
    assert fit(part, param_axes) == Layout(shape, strides)


def test_without_parameters_only_labels_matter():
    part = partition.group_partition((32, 64, 56, 56), 32)
    assert fit(part, ()) == Layout((1024, 1, 1, 1, 6272), (0,) * 5)


def test_more_alternations_than_slots_do_not_fit():
    part = partition.layer_partition((2, 3, 4, 5, 6, 7), (1, 3, 5))
    assert fit(part, ()) is None


def test_an_empty_input_does_not_fit():
    assert fit(partition.batch_partition((0, 3, 4)), (1,)) is None
