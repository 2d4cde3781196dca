"""The fused kernels' view of a partition: five slots, and where the affine parameters vary.

The kernels see ``x`` as a C-contiguous array of shape ``(G0, S1, G2, S3, S4)``
(a reshape, so no data moves): a group is a pair ``(g0, g2)`` and its samples
are the ``(s1, s3, s4)``, with ``s4`` the innermost, contiguous loop. Every
named layer fits:

=====================  ===============================  ==========================
layer                  slots (G0, S1, G2, S3, S4)       parameters vary along
=====================  ===============================  ==========================
batch norm (N, C, S)   (1, N, C, 1, prod(S))            G2
instance norm          (N, 1, C, 1, prod(S))            G2
group norm (g groups)  (N, 1, g, C/g, prod(S))          G2, S3
ghost batch norm (b)   (N/b, b, C, 1, prod(S))          G2
layer / RMS norm       (prod(leading), 1, 1, 1, F)      S4
canonical (G, M, D)    (G, M, D, 1, 1)                  (no parameters)
=====================  ===============================  ==========================

The affine parameters' flat index is ``sum(index[slot] * param_strides[slot])``.
They must either be constant along ``S4`` (the inner loop reads one value per
row) or vary along ``S4`` alone (the inner loop reads a contiguous run); any
other layout is left to the generic path. Per-sample parameters of shape
``(N, C)`` (conditional normalization) vary along the batch's slot too: ``G0``
and ``G2`` for instance norm (and ``S3``, a group's channels, for group norm),
``S1`` and ``G2`` for batch norm with the channels first; channels-last batch norm's vary along two sample slots
around its channels and find no layout (the generic path runs it).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

from normref.partition import GROUP, SAMPLE, Partition, split_origins

SLOT_LABELS = (GROUP, SAMPLE, GROUP, SAMPLE, SAMPLE)
GROUP_INNER = 2
"""The inner group slot: groups that alternate within a row of samples (channels)."""
INNER = 4
"""The innermost, contiguous sample slot."""


class Layout(NamedTuple):
    """Slot sizes ``(G0, S1, G2, S3, S4)`` and the parameters' stride along each slot."""

    shape: tuple[int, ...]
    param_strides: tuple[int, ...]

    @property
    def groups(self) -> int:
        """Number of groups: the pairs ``(g0, g2)``."""
        return self.shape[0] * self.shape[GROUP_INNER]

    @property
    def group_size(self) -> int:
        """Elements of one group: the samples ``(s1, s3, s4)``."""
        return self.shape[1] * self.shape[3] * self.shape[INNER]


class _Run(NamedTuple):
    label: str
    is_param: bool
    size: int


def _runs(partition: Partition, param_axes: tuple[int, ...]) -> list[_Run] | None:
    """The split view's axes of size > 1, adjacent ones of one kind merged."""
    origins = split_origins(partition.shape, partition.split_shape)
    if origins is None:
        return None
    kept = [
        (lab, size)
        for lab, size in zip(partition.labels, partition.split_shape, strict=True)
        if size > 1
    ]
    runs: list[_Run] = []
    for (label, size), origin in zip(kept, origins, strict=True):
        is_param = origin in param_axes
        if runs and runs[-1].label == label and runs[-1].is_param == is_param:
            runs[-1] = _Run(label, is_param, runs[-1].size * size)
        else:
            runs.append(_Run(label, is_param, size))
    return runs


def _param_strides(runs: list[_Run], slots: tuple[int, ...]) -> tuple[int, ...]:
    strides = [0] * len(SLOT_LABELS)
    stride = 1
    for run, slot in reversed(list(zip(runs, slots, strict=True))):
        if run.is_param:
            strides[slot] = stride
            stride *= run.size
    return tuple(strides)


@functools.lru_cache(maxsize=256)
def fit(partition: Partition, param_axes: tuple[int, ...]) -> Layout | None:
    """The five-slot layout of ``partition`` with parameters along ``param_axes``, if it has one.

    Pass ``param_axes=()`` for a call without affine parameters.
    """
    runs = _runs(partition, param_axes)
    if runs is None or len(runs) > len(SLOT_LABELS):
        return None
    candidates = []
    for slots in itertools.combinations(range(len(SLOT_LABELS)), len(runs)):
        if any(SLOT_LABELS[s] != run.label for s, run in zip(slots, runs, strict=True)):
            continue
        inner_params = [run.is_param for s, run in zip(slots, runs, strict=True) if s == INNER]
        outer_params = [run.is_param for s, run in zip(slots, runs, strict=True) if s != INNER]
        if any(inner_params) and any(outer_params):
            continue
        candidates.append(slots)
    if not candidates:
        return None
    # the innermost run in the contiguous inner loop when it is a sample run, outer slots first
    slots = min(candidates, key=lambda c: (INNER not in c, c))
    shape = [1] * len(SLOT_LABELS)
    for slot, run in zip(slots, runs, strict=True):
        shape[slot] = run.size
    assert math.prod(shape) == math.prod(partition.shape)
    return Layout(tuple(shape), _param_strides(runs, slots))
