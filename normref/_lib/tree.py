"""Trees of arrays: (nested) lists, tuples and dicts whose leaves are arrays.

Gradient clipping acts on all of a model's gradients at once; they come as a
list, a tuple or a dict of arrays (nested or not). :func:`flatten` lists the
leaves with their paths and gives back a function that rebuilds the same
structure from new leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from normref._lib.namespace import Array


class Flat(NamedTuple):
    """The leaves of a tree, their paths (``"['conv'][0]"``; ``""`` for a lone array), how to
    rebuild the tree from new leaves in the same order, and each leaf's key path: the dict
    keys and sequence indices leading to it (``("conv", 0)``; ``()`` for a lone array)."""

    paths: list[str]
    leaves: list[Array]
    rebuild: Callable[[list[Array]], Any]
    keys: list[tuple[Any, ...]]


def flatten(tree: Any) -> Flat:
    """The leaves of ``tree`` in order (dicts in their key order)."""
    if isinstance(tree, Mapping):
        keys = list(tree)
        return _join(keys, [flatten(tree[k]) for k in keys], _as_dict(keys))
    if isinstance(tree, (list, tuple)):
        kind = type(tree) if type(tree) in (list, tuple) else list
        return _join(list(range(len(tree))), [flatten(t) for t in tree], kind)
    return Flat([""], [tree], lambda leaves: leaves[0], [()])


def _as_dict(keys: list[Any]) -> Callable[[list[Any]], dict[Any, Any]]:
    return lambda children: dict(zip(keys, children, strict=True))


def _join(keys: list[Any], children: list[Flat], build: Callable[[list[Any]], Any]) -> Flat:
    paths = [
        f"[{key!r}]" + path
        for key, child in zip(keys, children, strict=True)
        for path in child.paths
    ]
    key_paths = [
        (key, *tail) for key, child in zip(keys, children, strict=True) for tail in child.keys
    ]
    leaves = [leaf for child in children for leaf in child.leaves]
    sizes = [len(child.leaves) for child in children]

    def rebuild(new: list[Array]) -> Any:
        parts, start = [], 0
        for child, size in zip(children, sizes, strict=True):
            parts.append(child.rebuild(new[start : start + size]))
            start += size
        return build(parts)

    return Flat(paths, leaves, rebuild, key_paths)


def named_leaves(name: str, flat: Flat) -> dict[str, Array]:
    """The leaves keyed by their full names (``"grads['conv'][0]"``), for error messages."""
    return {name + path: leaf for path, leaf in zip(flat.paths, flat.leaves, strict=True)}


def check_same_structure(a: Flat, b: Flat, *, names: tuple[str, str]) -> None:
    """``a`` and ``b`` must have the same paths (same structure, same keys)."""
    if a.paths != b.paths:
        msg = (
            f"{names[0]} and {names[1]} must have the same structure; "
            f"{names[0]} has leaves {a.paths}, {names[1]} has {b.paths}"
        )
        raise ValueError(msg)


def check_not_empty(flat: Flat, *, name: str) -> None:
    """A tree must hold at least one array."""
    if not flat.leaves:
        msg = f"{name} must hold at least one array, got an empty structure"
        raise ValueError(msg)
