"""Results written into an array block by block, so that the temporaries are a block's.

An operation that treats parts of its input apart from each other (the
instances of switchable norm, the positions of local response normalization)
runs on blocks of them (:func:`blocks_of`), writing each block's results into
the result (:func:`written`) or its reductions into small arrays
(:func:`assembled`); the whitening operations read and write the canonical rows
of their input by blocks (:mod:`normref.ops.sample_blocks`). JAX arrays are
immutable and Dask arrays lazy: on those the result is formed whole, as the
plain expression.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat
from array_api_compat import device

from normref._lib.namespace import Array, Namespace

BLOCK_ELEMENTS = 1 << 15
"""Elements of one block of rows (of all groups together): 256 KiB in float64."""


def writes_in_place(xp: Namespace) -> bool:
    """Whether arrays of ``xp`` are buffers that item assignment writes into."""
    return not (array_api_compat.is_jax_namespace(xp) or array_api_compat.is_dask_namespace(xp))


def blocks_of(
    xp: Namespace, shape: tuple[int, ...], axes: tuple[int, int], elements: int = BLOCK_ELEMENTS
) -> list[tuple[slice, ...]]:
    """Index tuples that split arrays of ``shape`` along the two ``axes`` into blocks of about
    ``elements`` elements (at least one *unit*: every index of the other axes at one index of
    both), ``axes[1]`` split first; one block of everything where ``xp`` does not write in
    place (:func:`writes_in_place`), or for an empty shape."""
    everything = tuple(slice(None) for _ in shape)
    first, second = (shape[a] for a in axes)
    unit = math.prod(shape) // max(1, first * second)
    if not writes_in_place(xp) or math.prod(shape) == 0:
        return [everything]
    per_block = max(1, elements // max(1, unit))
    second_step = min(second, per_block)
    first_step = max(1, per_block // second)

    def block(start: int, step: int, size: int) -> slice:
        return slice(start, min(start + step, size))

    blocks = []
    for i in range(0, first, first_step):
        for j in range(0, second, second_step):
            index = list(everything)
            index[axes[0]] = block(i, first_step, first)
            index[axes[1]] = block(j, second_step, second)
            blocks.append(tuple(index))
    return blocks


def assembled(
    xp: Namespace, blocks: list[tuple[slice, ...]], parts: list[Array], shape: tuple[int, ...]
) -> Array:
    """The results of a reduction over each block (``parts``, in the order of ``blocks``, each
    with the block's shape on the reduced axes kept as 1) as one array of ``shape``: the one
    block's own where there is one."""
    if len(blocks) == 1:
        return parts[0]
    out = xp.empty(shape, dtype=parts[0].dtype, device=device(parts[0]))
    for block, part in zip(blocks, parts, strict=True):
        out[block] = part
    return out


def written(
    xp: Namespace,
    blocks: list[tuple[slice, ...]],
    compute: Callable[[tuple[slice, ...]], Array],
    shape: tuple[int, ...],
    dtype: Any,
    like: Array,
) -> Array:
    """``compute(block)`` (in ``dtype``) of every block written into one new array of ``shape``
    on ``like``'s device: the one block's own result where there is one. The results are the
    same either way, bit for bit, where ``compute`` treats each block's units apart from the
    others; only the temporaries differ."""
    if len(blocks) == 1:
        return compute(blocks[0])
    out = xp.empty(shape, dtype=dtype, device=device(like))
    for block in blocks:
        out[block] = compute(block)
    return out
