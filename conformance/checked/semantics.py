"""Semantic model fields that normref has no argument for, evaluated exactly around its call.

Each function here wraps an evaluation of normref (``evaluate(sample, dy,
model)`` returning the outputs and gradients by name) so that it follows one
field of the model:

* :func:`unit_axes`: ``unit_axes="by_rank"``, the units of the NFNets code and
  optax. Their units are normref's units of the weight permuted and reshaped
  to a matrix (or a vector), which is exact: normref is called on that view and
  its results are reshaped back.
* :func:`centralize_axes`: ``centralize_axes="leading"``, optax's
  ``centralize``, whose units are along axis 0 whatever the layout: normref is
  called with ``out_axis=0``.
* :func:`weight_norm_zero_norm` and :func:`spectral_zero_norm`:
  ``zero_norm="ieee"``, a division by a zero norm carried out as IEEE
  arithmetic does (torch) instead of normref's guarded result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import normref
from normref.partition import fan_in_axes
from normref.registry import Sample

Evaluate = Callable[[Sample, "np.ndarray | None", Any], dict[str, np.ndarray]]
"""``evaluate(sample, dy, model)``: outputs and gradients (``dy`` not ``None``) by name, under
a :class:`~conformance.checked.models.Model`."""


@dataclass(frozen=True)
class RankLayout:
    """The units the NFNets code and optax infer from the rank, as a view normref understands.

    With the unit axis moved last (their layout), a squeezed vector is one unit;
    rank 2 and 3 reduce axis 0, rank 4 axes 0-2 and rank 5 axes 0-3
    (``optax/transforms/_clipping.py``, ``unitwise_norm``). ``order`` puts the
    reduced axes first, ``view`` is the shape of the matrix (reduced, kept) or of
    the vector they form: its units, along ``out_axis=-1``, are theirs.
    """

    shape: tuple[int, ...]
    order: tuple[int, ...]
    view: tuple[int, ...]

    @classmethod
    def of(cls, shape: tuple[int, ...], out_axis: int) -> RankLayout:
        """The layout of an array of ``shape`` whose unit axis is ``out_axis``."""
        rank = len(shape)
        unit = out_axis % rank if rank else 0
        last = [a for a in range(rank) if a != unit] + ([unit] if rank else [])
        reduced = _reduced_axes([shape[a] for a in last])
        kept = [a for a in range(rank) if a not in reduced]
        order = tuple(last[a] for a in (*reduced, *kept))
        size = math.prod(shape[a] for a in order[: len(reduced)])
        view = (size,) if not kept else (size, math.prod(shape[a] for a in order[len(reduced) :]))
        return cls(tuple(shape), order, view)

    def to_view(self, array: np.ndarray) -> np.ndarray:
        """``array`` (of ``shape``) as the view."""
        return np.transpose(array, self.order).reshape(self.view)

    def from_view(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_view`."""
        moved = np.reshape(array, tuple(self.shape[a] for a in self.order))
        return np.transpose(moved, np.argsort(self.order))


def _reduced_axes(shape: list[int]) -> tuple[int, ...]:
    if sum(s != 1 for s in shape) <= 1:
        return tuple(range(len(shape)))
    reductions = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}
    if len(shape) not in reductions:
        msg = f"units inferred from the rank exist for rank 1 to 5, not for shape {tuple(shape)}"
        raise ValueError(msg)
    return reductions[len(shape)]


def rank_layout(sample: Sample, primary: str) -> RankLayout:
    """The :class:`RankLayout` of ``sample``'s ``primary`` array (its ``out_axis`` keyword)."""
    return RankLayout.of(tuple(sample.args[primary].shape), sample.kwargs["out_axis"])


def unit_axes(primary: str) -> Callable[[Evaluate], Evaluate]:
    """Follow ``model.convention.unit_axes``: every array of ``primary``'s shape goes through the view."""

    def wrap(evaluate: Evaluate) -> Evaluate:
        def run(sample: Sample, dy: np.ndarray | None, model: Any) -> dict[str, np.ndarray]:
            if model.convention.unit_axes == "out_axis":
                return evaluate(sample, dy, model)
            layout = rank_layout(sample, primary)
            shape = layout.shape
            viewed = {
                k: layout.to_view(v) if isinstance(v, np.ndarray) and v.shape == shape else v
                for k, v in sample.args.items()
            }
            values = evaluate(
                Sample(viewed, {**sample.kwargs, "out_axis": -1}),
                None if dy is None else layout.to_view(dy),
                model,
            )
            return {k: layout.from_view(v) for k, v in values.items()}

        return run

    return wrap


def leading_units(sample: Sample, model: Any) -> Sample:
    """``sample`` as ``model.convention.centralize_axes`` takes it: with ``"leading"`` its units
    are along axis 0 (``out_axis=0``), whatever the case's layout."""
    if model.convention.centralize_axes == "leading":
        return sample.replace(out_axis=0)
    return sample


def centralize_axes(evaluate: Evaluate) -> Evaluate:
    """Follow ``model.convention.centralize_axes``: under ``"leading"`` the units are axis 0's."""

    def run(sample: Sample, dy: np.ndarray | None, model: Any) -> dict[str, np.ndarray]:
        return evaluate(leading_units(sample, model), dy, model)

    return run


def weight_norm_zero_norm(evaluate: Evaluate) -> Evaluate:
    """Follow ``model.convention.zero_norm`` for weight norm: with ``"ieee"`` a unit whose squared norm plus
    ``eps`` is 0 gives NaN (``g v / 0``) in its output and both gradients."""

    def run(sample: Sample, dy: np.ndarray | None, model: Any) -> dict[str, np.ndarray]:
        values = evaluate(sample, dy, model)
        if model.convention.zero_norm != "ieee":
            return values
        v = sample.args["v"]
        axes = fan_in_axes(v.ndim, sample.kwargs["out_axis"] % v.ndim)
        zero = np.sum(v * v, axis=axes, keepdims=True) + sample.kwargs.get("eps", 0.0) == 0
        poisoned = {}
        for name, value in values.items():
            mask = zero.reshape(-1) if name == "dg" else zero
            poisoned[name] = np.where(np.broadcast_to(mask, value.shape), np.nan, value)
        return poisoned

    return run


def spectral_zero_norm(evaluate: Evaluate) -> Evaluate:
    """Follow ``model.convention.zero_norm`` for spectral norm: with ``"ieee"`` a zero ``sigma`` divides the
    weight (NaN or infinite) and makes its gradient NaN."""

    def run(sample: Sample, dy: np.ndarray | None, model: Any) -> dict[str, np.ndarray]:
        values = evaluate(sample, dy, model)
        if model.convention.zero_norm != "ieee":
            return values
        sigma = values.get("sigma")
        if sigma is None:
            sigma = normref.spectral_norm(*sample.args.values(), **sample.kwargs).sigma
        if float(sigma) != 0.0:
            return values
        with np.errstate(divide="ignore", invalid="ignore"):
            values["y"] = sample.args["w"] / 0.0
        if "dw" in values:
            values["dw"] = np.full(values["dw"].shape, np.nan)
        return values

    return run
