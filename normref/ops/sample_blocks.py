r"""The canonical ``(G, M, D)`` array of an input, read and written a block of samples at a time.

An operation that treats each group's ``D`` features jointly (whitening) takes
its statistics over the ``M`` rows :math:`x_i \in \mathbb R^D` of each group, in
the canonical layout of :class:`normref.partition.Partition`. That layout is a
transpose of the input in general (batch whitening of ``(N, C, H, W)``: the
samples are split by the channels in memory), and a whole copy of it in the
compute dtype would be the largest thing such an operation holds: once the
input's size, twice computing a float32 input in float64, and twice that in a
backward, which also needs the cotangent. :class:`SampleBlocks` reads the
canonical rows of the input instead, a block of consecutive rows of every group
at a time (:meth:`SampleBlocks.rows`: a new array of the block's values in the
compute dtype), and writes results the same way (:meth:`SampleBlocks.assembled`:
a new array of the input's shape). An operation makes passes over the blocks,
each block read again where a pass needs it, so that beyond its outputs it holds
a few blocks and its ``D x D`` matrices.

Blocks hold about 49152 values (fewer for an input of fewer than 12 times that,
so that a few blocks stay a small part of it): the sample axes of the split view
(in order) are taken whole from the innermost out while they fit, the next one
is sliced, and any outer one is taken one index at a time, so every block is a
range of consecutive canonical rows. Where the
namespace does not write into arrays (JAX, Dask) there is one block, the whole
array.

Memory order. Only the values matter to the results; the order they lie in
memory decides how fast a block is read, multiplied and written. Where the
features vary more slowly than the samples in ``x`` (channels first, a weight's
units first: :attr:`Partition.features_outside_samples`), a block is read as
``(G, D, m)`` and seen as ``(G, m, D)`` through a transpose, and
:meth:`SampleBlocks.times` forms products in that order too, so that reading and
writing a block follow ``x``'s memory and BLAS reads the transposes for free.
Writing goes through the split view of the new output array, a reshape of an
array just allocated (a view in every namespace that writes in place).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

from normref._lib.in_place import writes_in_place
from normref._lib.namespace import Array, Namespace, to_dtype
from normref._lib.scaling import max_magnitude
from normref.partition import Partition


@dataclass(frozen=True)
class Block:
    """One block: its index into the ``source`` of its :class:`SampleBlocks` and the range of
    canonical rows it is."""

    index: tuple[slice, ...]
    rows: slice

    @property
    def count(self) -> int:
        """The number of rows of each group in the block."""
        return int(self.rows.stop) - int(self.rows.start)


@dataclass(frozen=True)
class SampleBlocks:
    """The canonical rows of ``x`` under ``partition``, by blocks (see the module docstring).

    ``source`` is the split view of ``x`` with its axes in the order blocks are read in:
    group axes, then sample axes and feature axes (feature axes first where
    :attr:`features_first`), a view, never a copy. ``blocks`` cover the rows ``0 .. M-1``
    once each, in order.
    """

    xp: Namespace
    partition: Partition
    order: tuple[int, ...]
    source: Array
    blocks: tuple[Block, ...]

    @property
    def groups(self) -> int:
        """``G``."""
        return self.partition.G

    @property
    def samples(self) -> int:
        """``M``."""
        return self.partition.M

    @property
    def features(self) -> int:
        """``D``."""
        return self.partition.D

    @property
    def features_first(self) -> bool:
        """Whether blocks are read features first (:attr:`Partition.features_outside_samples`)."""
        return self.partition.features_outside_samples

    def _transposed(self, a: Array) -> Array:
        return self.xp.matrix_transpose(a)

    def rows(self, block: Block, dtype: Any) -> Array:
        """The ``(G, m, D)`` rows of ``block`` in ``dtype``: a new array, which the caller may
        overwrite (never ``x``'s memory)."""
        xp = self.xp
        part = self.source[block.index]
        g, d = self.groups, self.features
        shape = (g, d, -1) if self.features_first else (g, -1, d)
        if not writes_in_place(xp):  # immutable or lazy: nothing can write into x
            values = to_dtype(xp, xp.reshape(part, shape), dtype)
        elif self.partition.canonical_is_a_view:  # a block's rows are a view: one conversion
            values = xp.astype(xp.reshape(part, shape), dtype, copy=True)
        else:
            values = xp.astype(xp.reshape(part, shape, copy=True), dtype, copy=False)
        return self._transposed(values) if self.features_first else values

    def centred(self, block: Block, dtype: Any, scale: Array, mean: Array) -> Array:
        """:meth:`rows` times ``scale`` (``(G, 1, 1)``) less ``mean`` (``(G, 1, D)``), in place."""
        values = self.rows(block, dtype)
        values *= scale
        values -= mean
        return values

    def times(self, values: Array, matrix: Array) -> Array:
        """``values @ matrix`` for a block's ``(G, m, D)`` values and ``(G, D, D)``
        ``matrix``, formed as ``(matrix.T @ values.T).T`` where features come first, so
        that its memory follows the block's."""
        if self.features_first:
            return self._transposed(self._transposed(matrix) @ self._transposed(values))
        return values @ matrix

    def magnitude(self, dtype: Any) -> Array:
        """``max |x|`` of each group, ``(G, 1, 1)`` in ``dtype`` (exact: a value of ``x``),
        read from ``x`` itself (no block is converted)."""
        xp = self.xp
        axes = tuple(range(len(self.partition.group_axes), self.source.ndim))
        found = max_magnitude(xp, self.source, axes)
        return to_dtype(xp, xp.reshape(found, (self.groups, 1, 1)), dtype)

    def assembled(self, compute: Callable[[Block], Array], dtype: Any) -> Array:
        """A new array of ``x``'s shape in ``dtype`` whose canonical rows of each block are
        ``compute(block)`` (``(G, m, D)``), written into it block by block."""
        xp, part = self.xp, self.partition
        if not writes_in_place(xp):
            return part.from_canonical(xp, to_dtype(xp, compute(self.blocks[0]), dtype))
        out = xp.empty(part.shape, dtype=dtype, device=device(self.source))
        target = xp.permute_dims(part.split(xp, out), self.order)
        for block in self.blocks:
            values = to_dtype(xp, compute(block), dtype)
            if self.features_first:
                values = self._transposed(values)
            destination = target[block.index]
            destination[...] = xp.reshape(values, destination.shape)
        return out


BLOCK_ELEMENTS = 3 << 14
"""Values of a block (384 KiB in float64): long enough that a block's matrix products run
near BLAS's rate for whole arrays, short enough that a few stay in the caches."""

INPUT_SHARE = 12
"""A block holds at most this share of the input's values (or :data:`SMALLEST_BLOCK`): an
operation holds a few blocks at once, which stay a small part of the input at every size."""

SMALLEST_BLOCK = 1024
"""The fewest values a block holds where the input is small (bounding the number of blocks)."""


def _block_elements(size: int) -> int:
    """Values of a block of an input of ``size`` values: :data:`BLOCK_ELEMENTS`, or less for an
    input of fewer than :data:`INPUT_SHARE` times that."""
    return min(BLOCK_ELEMENTS, max(SMALLEST_BLOCK, size // INPUT_SHARE))


def sample_blocks(
    xp: Namespace, partition: Partition, x: Array, elements: int | None = None
) -> SampleBlocks:
    """The :class:`SampleBlocks` of ``x`` (of ``partition.shape``), of about ``elements``
    values each (by default ``BLOCK_ELEMENTS``, and at most one ``INPUT_SHARE``-th of the
    input where that is not below ``SMALLEST_BLOCK``).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> import numpy as np
    >>> from normref.partition import whitening_partition
    >>> x = np.arange(48.0).reshape(4, 6, 2)  # (N, C, L): 2 groups of 3 channels, M = 8
    >>> blocks = sample_blocks(xp, whitening_partition(x.shape, 3), x, elements=12)
    >>> print([(b.rows.start, b.rows.stop) for b in blocks.blocks])
    [(0, 2), (2, 4), (4, 6), (6, 8)]
    >>> print(blocks.rows(blocks.blocks[1], xp.float64)[0])  # group 0 at n = 1
    [[12. 14. 16.]
     [13. 15. 17.]]
    """
    features_first = partition.features_outside_samples
    groups, samples, features = partition.group_axes, partition.sample_axes, partition.feature_axes
    order = groups + (features + samples if features_first else samples + features)
    source = xp.permute_dims(partition.split(xp, x), order)
    first = len(groups) + (len(features) if features_first else 0)
    sizes = tuple(partition.split_shape[a] for a in samples)
    everything = tuple(slice(None) for _ in order)

    def made(blocks: list[Block]) -> SampleBlocks:
        return SampleBlocks(xp, partition, order, source, tuple(blocks))

    whole = [Block(everything, slice(0, partition.M))]
    if not writes_in_place(xp):
        return made(whole)
    size = _block_elements(math.prod(partition.shape)) if elements is None else elements
    budget = max(1, size // max(1, partition.G * partition.D))  # rows per block
    inner, tail = len(sizes), 1  # sample axes inner.. are taken whole: tail rows
    while inner > 0 and tail * sizes[inner - 1] <= budget:
        inner -= 1
        tail *= sizes[inner]
    if inner == 0:
        return made(whole)
    sliced = inner - 1
    step = max(1, budget // tail)
    blocks = []
    for outer in itertools.product(*(range(n) for n in sizes[:sliced])):
        base = math.prod(sizes[sliced:]) * sum(
            i * math.prod(sizes[k + 1 : sliced]) for k, i in enumerate(outer)
        )
        for start in range(0, sizes[sliced], step):
            stop = min(start + step, sizes[sliced])
            index = list(everything)
            for k, i in enumerate(outer):
                index[first + k] = slice(i, i + 1)
            index[first + sliced] = slice(start, stop)
            blocks.append(Block(tuple(index), slice(base + start * tail, base + stop * tail)))
    return made(blocks)
