"""Output units of a weight or gradient: the axis that indexes them, checked, and their norms.

A weight (or its gradient) has one axis of output units, ``out_axis``: 0 for
torch and onnx layouts (``(out, in)`` matrices, ``OIHW`` kernels), -1 for
jax/flax layouts (``(in, out)`` matrices, ``HWIO`` kernels). Every other axis is
part of the unit's *fan-in* (:func:`normref.partition.fan_in_axes`).
"""

from __future__ import annotations

import operator

from normref._lib.checks import check_rank
from normref._lib.namespace import Array, Namespace
from normref._lib.reductions import sum_of_products
from normref._lib.scaling import group_scale, power_of_two_scale

LAYOUTS = "0 for (out, in) matrices and OIHW kernels, -1 for (in, out) matrices and HWIO kernels"


def axis_index(out_axis: object, rank: int, shape: tuple[int, ...], name: str) -> int:
    """``out_axis`` as a non-negative axis of a rank-``rank`` array ``name`` of ``shape``."""
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
    return axis_index(out_axis, len(shape), shape, name)


def check_units(shape: tuple[int, ...], axes: tuple[int, ...], *, name: str) -> None:
    """Each unit of ``name`` (over ``axes``) must hold values: a unit of none has no norm or
    statistics to compare or normalize by (a :class:`ValueError` naming the axis of size 0)."""
    empty = [a for a in axes if shape[a] == 0]
    if empty:
        msg = (
            f"{name} of shape {tuple(shape)} has size 0 along axis {empty[0]}, which each "
            "unit's norm or statistics are taken over: a unit without values has none"
        )
        raise ValueError(msg)


def unit_scale(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """The power of two of each unit of ``x`` over ``axes`` (keeping dims; of each element for
    no axes), by which its norm is taken (``normref._lib.scaling``)."""
    if not axes:
        return power_of_two_scale(xp, xp.abs(x))
    return group_scale(xp, x, axes)


def unit_norms(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """Euclidean norms of ``x`` over ``axes``, keeping dims (``|x|`` for no axes), as plain sums
    of squares: of values scaled by :func:`unit_scale`.

    The squares are summed as dot products where ``axes`` include the last
    axis (:func:`normref._lib.reductions.sum_of_products`), without a squared copy.
    """
    if not axes:
        return xp.abs(x)
    return xp.sqrt(sum_of_products(xp, x, x, axes))


def norms(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """Euclidean norms of ``x`` over ``axes``, keeping dims: those of ``x`` times each unit's
    power of two, divided by it, so that they are finite wherever they are representable."""
    scale = unit_scale(xp, x, axes)
    return unit_norms(xp, x * scale, axes) / scale
