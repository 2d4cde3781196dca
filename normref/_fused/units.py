"""Adaptive gradient clipping's per-unit sums and products through the kernels.

Under ``precision="highest"`` a float32 gradient, weight and cotangent are
widened to float64, where their squares and products are exact, and neither
they (at most ``2**256``, at least ``2**-298`` in magnitude) nor sums of up to
``2**62`` of them overflow or underflow. The power of two of each unit by which
the generic path takes its norms (``normref._lib.scaling``) then changes
nothing, exactly: the kernels take the sums of the values as they are, and the
clipping's per-unit formulas (in :mod:`normref.gradients`) run on them with a
scale of 1, with the same results as scaled values give. The sums are
pairwise (:func:`normref._fused.kernels.unit_products`), in another order than
the generic path's, so results agree with it to the rounding of those sums.

The kernels read each unit as a row: they run where the units' fan-in axes are
the trailing ones of C-contiguous float32 NumPy arrays (``out_axis=0``, the
torch layouts, and vectors), the fused path is enabled and numba is installed;
elsewhere the generic path runs. Nothing the size of an input is made but the
results.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from normref._fused import MAX_CHUNKS, enabled_kernels
from normref._fused.threads import run_chunks
from normref._lib.namespace import Array, Namespace


def unit_rows(
    xp: Namespace, axes: tuple[int, ...], precision: object, *arrays: Array | None
) -> tuple[Array, ...] | None:
    """The arrays (``None`` skipped; of one shape, which their caller checked) as
    ``(units, fan-in)`` rows for the kernels, where their units (over ``axes``) are rows of
    float32 values to be computed in float64; else ``None``."""
    present = [a for a in arrays if a is not None]
    first = present[0]
    shape = tuple(first.shape)
    rank = len(shape)
    if (
        precision != "highest"
        or not array_api_compat.is_numpy_namespace(xp)
        or rank == 0
        or math.prod(shape) == 0
        or axes != tuple(range(rank - len(axes), rank))
        or any(
            type(a) is not xp.ndarray or a.dtype != xp.float32 or not a.flags.c_contiguous
            for a in present
        )
        or enabled_kernels() is None
    ):
        return None
    fan_in = math.prod(shape[rank - len(axes) :])
    return tuple(xp.reshape(a, (-1, fan_in)) for a in present)


def _kernels() -> Any:
    kernels = enabled_kernels()
    assert kernels is not None  # unit_rows gives rows only where it is not None
    return kernels


def _chunks(rows: Array) -> int:
    return min(rows.shape[0], MAX_CHUNKS)


def unit_products(xp: Namespace, u: Array, v: Array) -> Array:
    """``sum u * v`` over each row of ``u`` and ``v`` (rows of :func:`unit_rows`), in float64,
    one value per row."""
    kernels = _kernels()
    chunks = _chunks(u)
    out = xp.empty((u.shape[0],), dtype=xp.float64)
    stack = xp.zeros((chunks, 1, kernels.DEPTH), dtype=xp.float64)
    run_chunks(kernels.unit_products, chunks, u.size, u, v, out, stack)
    return out


def combined(
    xp: Namespace, u: Array, a: Array, v: Array | None = None, b: Array | None = None
) -> Array:
    """``u * a - v * b`` (``u * a`` without ``v``), ``a`` and ``b`` a value per row in float64,
    computed in float64 and rounded once to ``u``'s dtype: a new array of ``u``'s shape."""
    kernels = _kernels()
    chunks = _chunks(u)
    out = xp.empty(u.shape, dtype=u.dtype)
    run_chunks(kernels.combine_units, chunks, u.size, u, a, v, b, out, chunks)
    return out
