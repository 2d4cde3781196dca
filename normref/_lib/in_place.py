"""Matrix products written over one of their operands, block by block of rows.

The Array API has no matrix product into an existing array, so ``a @ b`` is a
new array of ``a``'s size. Where ``a`` is an operation's own array and is not
needed afterwards, :func:`products_over` writes the result over ``a`` one
block of rows at a time (item assignment, which the standard has), so the
only new memory is one block's product. JAX arrays are immutable and Dask
arrays lazy: on those the product is formed whole, as the plain expression.
"""

from __future__ import annotations

import math

import array_api_compat

from normref._lib.namespace import Array, Namespace

BLOCK_ELEMENTS = 1 << 15
"""Elements of one block of rows (of all groups together): 256 KiB in float64."""


def _mutable(xp: Namespace) -> bool:
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
    if not _mutable(xp):
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
