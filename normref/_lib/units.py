"""Output units of a weight or gradient: the axis that indexes them, and their fan-in.

A weight (or its gradient) has one axis of output units, ``out_axis``: 0 for
torch and onnx layouts (``(out, in)`` matrices, ``OIHW`` kernels), -1 for
jax/flax layouts (``(in, out)`` matrices, ``HWIO`` kernels). Every other axis is
part of the unit's *fan-in*, of size ``N``: the product of their sizes.
"""

from __future__ import annotations

import math
import operator

from normref._lib.checks import check_rank
from normref._lib.namespace import Array, Namespace
from normref._lib.reductions import sum_of_products

LAYOUTS = "0 for (out, in) matrices and OIHW kernels, -1 for (in, out) matrices and HWIO kernels"


def _axis_index(out_axis: object, rank: int, shape: tuple[int, ...], name: str) -> int:
    try:
        index = operator.index(out_axis)  # type: ignore[arg-type]
    except TypeError:
        msg = f"out_axis must be an integer, got {type(out_axis).__name__}"
        raise TypeError(msg) from None
    if isinstance(out_axis, bool) or not -rank <= index < rank:
        msg = (
            f"out_axis={out_axis!r} is out of range for {name} of shape {tuple(shape)}; "
            f"out_axis is the axis of output units: {LAYOUTS}"
        )
        raise ValueError(msg)
    return index % rank


def unit_axis(out_axis: object, shape: tuple[int, ...], *, name: str, minimum_rank: int) -> int:
    """``out_axis`` as a non-negative axis of the array ``name`` of ``shape``.

    ``minimum_rank`` is the rank the operation needs: 2 where a unit must have
    a fan-in axis, 1 where a unit may be a single element.
    """
    layout = "an axis of output units" + (" and fan-in axes" if minimum_rank > 1 else "")
    check_rank(shape, minimum=minimum_rank, layout=layout, name=name)
    return _axis_index(out_axis, len(shape), shape, name)


def fan_in_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes of a rank-``ndim`` array other than the unit axis ``axis``."""
    return tuple(a for a in range(ndim) if a != axis)


def fan_in(shape: tuple[int, ...], axis: int) -> int:
    """The number of elements of one output unit: the product of the other axes' sizes."""
    return math.prod(shape[a] for a in fan_in_axes(len(shape), axis))


def unit_norm_axes(shape: tuple[int, ...], out_axis: object, *, name: str) -> tuple[int, ...]:
    """The axes a unit-wise norm reduces: the fan-in for rank >= 2, every axis below.

    A scalar or a vector (a bias, a gain) is one unit; ``out_axis`` must still
    be 0 or -1 there.
    """
    if len(shape) <= 1:
        _axis_index(out_axis, 1, shape, name)
        return tuple(range(len(shape)))
    return fan_in_axes(len(shape), _axis_index(out_axis, len(shape), shape, name))


def norms(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """Euclidean norms of ``x`` over ``axes``, keeping dims (``|x|`` for no axes).

    The squares are summed as dot products where ``axes`` include the last
    axis (:func:`normref._lib.reductions.sum_of_products`), without a squared copy.
    """
    if not axes:
        return xp.abs(x)
    return xp.sqrt(sum_of_products(xp, x, x, axes))
