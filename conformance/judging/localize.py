"""Where a failure is: which outputs, which elements, which rows.

* A row's outputs: which are out of budget and which within
  (:func:`outputs_line`).
* Within an output: the elements out of budget concentrated along one axis,
  beyond an index ("elements at index >= 64 along axis 2 (normalized) are
  wrong; below it within budget") or at some indices only (some channels,
  some groups) (:func:`elements_line`).
* Across an implementation's rows: the failing rows only at some dtypes, or
  only where the input's conditioning (``|mean|/std``) is large
  (:func:`rows_line`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from conformance.bounds.compare import OutputCheck
from conformance.checked.models import Model
from conformance.judging.rows import Row
from conformance.reports.results import CaseResult, Status
from normref.partition import SAMPLE, split_origins

LISTED = 8
"""At most this many indices are listed; more are counted."""


def outputs_line(checks: Sequence[OutputCheck]) -> str:
    """``"out of budget: dx (backward); within budget: y, dgamma, dbeta"``."""
    failing = [f"{c.name} ({c.direction})" for c in checks if not c.ok]
    passing = [c.name for c in checks if c.ok]
    text = "out of budget: " + ", ".join(failing)
    return text + (f"; within budget: {', '.join(passing)}" if passing else "")


def _roles(row: Row) -> dict[int, str]:
    """What each axis of the primary input is to the op: normalized over, or the channels."""
    op, sample = row.prepared.op, row.prepared.sample
    roles: dict[int, str] = {}
    if op.spec.partition is None:
        return roles
    try:
        partition = op.partition(sample)
        params = op.param_axes(sample)
    except ValueError:
        return roles
    if partition is None:
        return roles
    origins = split_origins(partition.shape, partition.split_shape) or []
    labels = [lab for lab, n in zip(partition.labels, partition.split_shape, strict=True) if n > 1]
    for axis, label in zip(origins, labels, strict=False):
        if label == SAMPLE:
            roles[axis] = "the normalized axis"
    for axis in params:
        roles.setdefault(axis, "the channel axis" if op.affine_args else "the unit axis")
    return roles


def _indices(found: np.ndarray) -> str:
    listed = ", ".join(str(int(i)) for i in found[:LISTED])
    return listed + (f" and {len(found) - LISTED} more" if len(found) > LISTED else "")


def elements_line(row: Row, model: Model, name: str) -> str | None:
    """Where output ``name`` is out of budget, where that is along one axis: beyond an index, or
    at some of its indices only; ``None`` where it is everywhere (or nowhere)."""
    ratios = row.ratios(model, name)
    if ratios is None or ratios.ndim == 0:
        return None
    bad = ratios > 1.0
    if not bad.any() or bad.all():
        return None
    roles = (
        _roles(row)
        if np.shape(ratios) == np.shape(row.prepared.sample.args[row.prepared.op.spec.primary])
        else {}
    )
    thresholds, subsets = [], []
    for axis, size in enumerate(bad.shape):
        if size < 2:
            continue
        per_index = np.asarray(bad.any(axis=tuple(a for a in range(bad.ndim) if a != axis)))
        if per_index.all() or not per_index.any():
            continue
        along = f"along axis {axis}" + (f" ({roles[axis]})" if axis in roles else "")
        first = int(np.argmax(per_index))
        if per_index[first:].all():
            thresholds.append(
                f"{name}: elements at index >= {first} {along} are wrong; below it within budget"
            )
            continue
        last = int(size - np.argmax(per_index[::-1]))
        if per_index[:last].all():
            thresholds.append(
                f"{name}: elements at index < {last} {along} are wrong; from it on within budget"
            )
            continue
        found = np.flatnonzero(per_index)
        where = f"{name}: wrong only at index {_indices(found)} of {size} {along}"
        subsets.append((len(found) / size, where))
    if thresholds:
        return "; ".join(thresholds)
    return min(subsets)[1] if subsets else None


@dataclass(frozen=True)
class RowFacts:
    """What :func:`rows_line` needs of a row: its dtype, whether it fails, its input's
    conditioning (``None`` where not stated) and what that measures."""

    dtype: str
    failing: bool
    conditioning: float | None
    measure: str | None = None


def rows_line(rows: Sequence[CaseResult]) -> str | None:
    """Across one implementation's rows of one op: the failing rows only at some dtypes, or only
    where the input's conditioning is at least some value (the others within budget)."""
    judged = [r for r in rows if r.status in (Status.PASS, Status.CONVENTION, Status.FAIL)]
    return facts_line(
        [
            RowFacts(r.dtype, r.status is Status.FAIL, r.conditioning, r.conditioning_measure)
            for r in judged
        ]
    )


def facts_line(rows: Sequence[RowFacts]) -> str | None:
    """:func:`rows_line` of rows described by their facts."""
    failing = [r for r in rows if r.failing]
    if not failing or len(failing) == len(rows):
        return None
    notes = []
    dtypes = sorted({r.dtype for r in rows})
    bad = sorted({r.dtype for r in failing})
    if len(bad) < len(dtypes):
        good = [d for d in dtypes if d not in bad]
        notes.append(f"only at {', '.join(bad)} (no {', '.join(good)} row fails)")
    known = [float(r.conditioning) for r in rows if r.conditioning is not None]
    if len(known) == len(rows) and all(np.isfinite(known)):
        low = min(float(r.conditioning) for r in failing if r.conditioning is not None)
        passing = [
            float(r.conditioning) for r in rows if not r.failing and r.conditioning is not None
        ]
        if passing and max(passing) < low:
            measure = failing[0].measure or "|mean|/std"
            notes.append(
                f"only where the input's {measure} is {low:.3g} or more (no row up to "
                f"{max(passing):.3g} fails)"
            )
    return "; ".join(notes) or None
