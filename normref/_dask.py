r"""Moments and comoments of Dask arrays: per-chunk statistics merged exactly up a tree.

:func:`normref.stats.moments` and :func:`normref.stats.comoments` call this
module when their input is a ``dask.array`` (and only then). The generic
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

from normref import stats
from normref._namespace import Array

Stat = TypeVar("Stat", stats.Moments, stats.Comoments)


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


# The chunk functions are also called on an empty array to find the type of the
# result (``computing_meta=True``): they answer with that array, as Dask's own do.


def _chunk_moments(
    chunk: Array, axis: tuple[int, ...], precision: Any, computing_meta: bool = False, **_: Any
) -> stats.Moments | Array:
    return chunk if computing_meta else stats.moments(chunk, axis, precision=precision)


def _chunk_comoments(
    chunk: Array, precision: Any, computing_meta: bool = False, **_: Any
) -> stats.Comoments | Array:
    return chunk if computing_meta else stats.comoments(chunk, precision=precision)


def _field(tree: Array, name: str, dtype: Any, *, new_axis: int | None = None) -> Array:
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


def _tree(
    x: Array,
    chunk: Callable[..., Any],
    merge: Callable[[Stat, Stat], Stat],
    axes: tuple[int, ...],
    dtype: Any,
    name: str,
) -> Array:
    """A Dask array whose blocks are the statistics of ``x`` over ``axes``, merged up a tree."""
    node = partial(_merged, merge=merge)
    return da.reduction(
        x,
        chunk,
        node,
        combine=node,
        axis=axes,
        keepdims=False,
        concatenate=False,
        dtype=dtype,
        meta=meta_from_array(x, ndim=x.ndim - len(axes), dtype=dtype),
        name=name,
    )


def moments(x: Array, axes: tuple[int, ...], dtype: Any, precision: Any) -> stats.Moments:
    """Lazy :class:`~normref.stats.Moments` of the Dask array ``x`` over ``axes`` (see the module)."""
    count = known_count(x, axes)
    chunk = partial(_chunk_moments, precision=precision)
    tree = _tree(x, chunk, stats.merge, axes, dtype, "normref-moments")
    return stats.Moments(count, _field(tree, "mean", dtype), _field(tree, "m2", dtype))


def comoments(x: Array, dtype: Any, precision: Any) -> stats.Comoments:
    """Lazy :class:`~normref.stats.Comoments` of the Dask array ``x`` of shape ``(..., M, D)``.

    The feature axis is first made one chunk (``rechunk``), since each chunk's
    cross products need all ``D`` features of its samples.
    """
    samples = (x.ndim - 2,)
    count = known_count(x, samples)
    whole_features = x.rechunk({x.ndim - 1: -1})
    chunk = partial(_chunk_comoments, precision=precision)
    tree = _tree(whole_features, chunk, stats.merge_comoments, samples, dtype, "normref-comoments")
    mean = _field(tree, "mean", dtype)
    return stats.Comoments(count, mean, _field(tree, "cross", dtype, new_axis=tree.ndim))
