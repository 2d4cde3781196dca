"""Reductions shared by the operations, written to spare a full-size temporary where they can."""

from __future__ import annotations

from normref._namespace import Array, Namespace


def sum_of_products(
    xp: Namespace, a: Array, b: Array, axes: tuple[int, ...], *, keepdims: bool = True
) -> Array:
    """``sum(a * b)`` over ``axes`` (``a`` and ``b`` of one shape).

    When the array's last axis is among ``axes`` the product along it is a dot
    product (``vecdot``), which forms no elementwise temporary; the other axes
    are then summed. Otherwise (a reduction over leading axes only, where a dot
    product would run along a strided axis) it is ``sum(a * b)``.
    """
    ordered = sorted(axis % a.ndim for axis in axes)
    if not ordered or ordered[-1] != a.ndim - 1:
        return xp.sum(a * b, axis=tuple(ordered), keepdims=keepdims)
    total = xp.vecdot(a, b, axis=-1)
    rest = tuple(ordered[:-1])
    if rest:
        total = xp.sum(total, axis=rest, keepdims=keepdims)
    return xp.expand_dims(total, axis=-1) if keepdims else total
