"""Results written into an array block by block, so that the temporaries are a block's.

The Array API has no matrix product into an existing array, so ``a @ b`` is a
new array of ``a``'s size. Where ``a`` is an operation's own array and is not
needed afterwards, :func:`products_over` writes the result over ``a`` one
block of rows at a time (item assignment, which the standard has), so the
only new memory is one block's product. An operation that treats parts of its
input apart from each other (the instances of switchable norm, the positions of
local response normalization) runs on blocks of them (:func:`blocks_of`),
writing each block's results into the result (:func:`written`) or its
reductions into small arrays (:func:`assembled`). JAX arrays are immutable and
Dask arrays lazy: on those the result is formed whole, as the plain expression.
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


def products_over(
    xp: Namespace, a: Array, b: Array, c: Array | None = None, d: Array | None = None
) -> Array:
    """``a @ b`` (plus ``c @ d``) for stacks ``(G, M, K)`` of rows, written over ``a``.

    ``b`` (and ``d``) are ``(G, K, K)``; ``c`` has ``a``'s shape. ``a`` must be
    the caller's own array, which it does not need afterwards: on a mutable
    library its rows are overwritten, block by block, with the result, which is
    returned (``a`` itself); elsewhere the result is a new array. Each row of
    the result depends on that row of ``a`` (and ``c``) alone, so the blocks
    can be computed in place one after the other.
    """
    if not writes_in_place(xp):
        return a @ b if c is None else a @ b + c @ d
    rows = a.shape[-2]
    step = max(1, BLOCK_ELEMENTS // max(1, math.prod(a.shape) // max(1, rows)))
    for start in range(0, rows, step):
        block = slice(start, min(start + step, rows))
        product = a[..., block, :] @ b
        if c is not None:
            product += c[..., block, :] @ d  # in place: a new block
        a[..., block, :] = product
    return a


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
