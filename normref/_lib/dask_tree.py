r"""Moments and comoments of Dask arrays: per-chunk statistics merged exactly up a tree.

:func:`normref.stats.moments` and :func:`normref.stats.comoments` call this
module when their input is a ``dask.array`` (and only then), passing the
statistic of one chunk and the exact merge of two statistics. The generic
Array API code would run on Dask too, but it is two-pass over the whole
array: every chunk would be held (or spilled) until the global mean is known,
so a data set larger than memory would not fit. Here each chunk is reduced on
its own, by the same :func:`~normref.stats.moments` /
:func:`~normref.stats.comoments` on the chunk's arrays (NumPy, or CuPy), to
``(count, mean, m2)`` or ``(count, mean, cross)``; the partial results are
merged by the same :func:`~normref.stats.merge` /
:func:`~normref.stats.merge_comoments` (Chan et al., exact) in a tree
(``dask.array.reduction``): each node merges the statistics of a few blocks
(Dask's ``split_every`` setting, 4 by default) in pairs, so a chunk's
statistics pass through about :math:`\log_2 K` merges for ``K`` chunks. Every
chunk is read once and released as soon as it is reduced.

Lazy and computed
    Nothing is computed when these functions return: ``mean`` and ``m2``
    (``cross``) are Dask arrays that share one graph, and ``count`` is a
    Python int taken from the shape (which must be known). Computing them
    together, ``dask.compute(m.mean, m.m2)``, reads each chunk once;
    computing one and then the other runs the graph twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

import dask.array as da
from dask.array.utils import meta_from_array

from normref._lib.namespace import Array

Stat = TypeVar("Stat")
"""A statistic of some data: a NamedTuple of a count and arrays (``Moments``, ``Comoments``)."""


def known_count(x: Array, axes: tuple[int, ...]) -> int:
    """Number of values along ``axes`` of ``x``; a :class:`ValueError` where a size is unknown."""
    sizes = [x.shape[a] for a in axes]
    if any(math.isnan(s) for s in sizes):
        msg = (
            f"x has unknown sizes along axes {axes} (shape {x.shape}); "
            "call x.compute_chunk_sizes() first"
        )
        raise ValueError(msg)
    return math.prod(sizes)


def _flattened(nested: Any) -> list[Any]:
    """The leaves of ``dask.array.reduction``'s nested lists of partial results, in order."""
    if isinstance(nested, list):
        return [leaf for item in nested for leaf in _flattened(item)]
    return [nested]


def _merged(nested: Any, merge: Callable[[Stat, Stat], Stat], **_: Any) -> Stat:
    """One node of the tree: its children's statistics merged in pairs, level by level."""
    level = _flattened(nested)
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [merge(*pair) if len(pair) == 2 else pair[0] for pair in pairs]
    return level[0]


def _chunk(
    chunk: Array,
    statistic: Callable[[Array, tuple[int, ...]], Stat],
    axis: tuple[int, ...],
    computing_meta: bool = False,
    **_: Any,
) -> Stat | Array:
    """The statistic of one chunk over ``axis``.

    Also called on an empty array to find the type of the result
    (``computing_meta=True``): it answers with that array, as Dask's own do.
    """
    return chunk if computing_meta else statistic(chunk, axis)


def tree_reduction(
    x: Array,
    statistic: Callable[[Array, tuple[int, ...]], Stat],
    merge: Callable[[Stat, Stat], Stat],
    axes: tuple[int, ...],
    dtype: Any,
    name: str,
) -> Array:
    """A Dask array whose blocks are ``statistic(chunk, axes)`` of ``x``'s chunks, merged up a
    tree by ``merge`` (see the module docstring)."""
    node = partial(_merged, merge=merge)
    return da.reduction(
        x,
        partial(_chunk, statistic=statistic),
        node,
        combine=node,
        axis=axes,
        keepdims=False,
        concatenate=False,
        dtype=dtype,
        meta=meta_from_array(x, ndim=x.ndim - len(axes), dtype=dtype),
        name=name,
    )


def field(tree: Array, name: str, dtype: Any, *, new_axis: int | None = None) -> Array:
    """The lazy array of field ``name`` of the statistics in each block of ``tree``."""
    ndim = tree.ndim if new_axis is None else tree.ndim + 1
    extra: dict[str, Any] = {}
    if new_axis is not None:
        extra = {"new_axis": new_axis, "chunks": (*tree.chunks, (tree.shape[-1],))}
    return tree.map_blocks(
        attrgetter(name),
        dtype=dtype,
        meta=meta_from_array(tree, ndim=ndim, dtype=dtype),
        token=f"normref-{name}",
        **extra,
    )


def whole_features(x: Array) -> Array:
    """``x`` of shape ``(..., M, D)`` with its feature axis in one chunk: each chunk's cross
    products need all ``D`` features of its samples."""
    return x.rechunk({x.ndim - 1: -1})
