"""Reductions shared by the operations, written to spare a full-size temporary where they can."""

from __future__ import annotations

import math

from normref._lib.namespace import Array, Namespace


def _trailing_run(ordered: list[int], ndim: int) -> int:
    """How many of the last axes of a rank-``ndim`` array the sorted ``ordered`` axes cover."""
    run = 0
    while run < len(ordered) and ordered[-1 - run] == ndim - 1 - run:
        run += 1
    return run


def sum_of_products(
    xp: Namespace, a: Array, b: Array, axes: tuple[int, ...], *, keepdims: bool = True
) -> Array:
    """``sum(a * b)`` over ``axes`` (``a`` and ``b`` of one shape).

    When the array's last axes are among ``axes`` they are merged into one (a
    reshape: no data moves where they are contiguous) and the product along it
    is a dot product (``vecdot``), which forms no elementwise temporary; the
    other axes are then summed. Otherwise (a reduction over leading axes only,
    where a dot product would run along a strided axis) it is ``sum(a * b)``.
    """
    ordered = sorted(axis % a.ndim for axis in axes)
    run = _trailing_run(ordered, a.ndim)
    if not run:
        return xp.sum(a * b, axis=tuple(ordered), keepdims=keepdims)
    kept = tuple(a.shape[: a.ndim - run])
    merged = (*kept, math.prod(a.shape[a.ndim - run :]))
    total = xp.vecdot(xp.reshape(a, merged), xp.reshape(b, merged), axis=-1)
    rest = tuple(ordered[: len(ordered) - run])
    if rest:
        total = xp.sum(total, axis=rest, keepdims=keepdims)
    return xp.reshape(total, (*total.shape, *(1,) * run)) if keepdims else total
