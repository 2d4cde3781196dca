"""Comparing an implementation's outputs with the reference, element by element, in ulps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.bounds.budgets import Arithmetic, element_bounds
from conformance.bounds.terms import OpTerms
from conformance.checked.formats import round_to


@dataclass(frozen=True)
class OutputCheck:
    """One output (``y``, a running statistic or a gradient) of one evaluation, against its bound.

    Attributes
    ----------
    name, direction
        The output (``"y"``, ``"running_var"``, ``"dx"``, ...) and
        ``"forward"``, ``"state"`` or ``"backward"``.
    ok
        Right dtype and shape, and every element within its bound.
    dtype, expected_dtype
        The implementation's and the model's dtype of the output.
    max_ulps, p99_ulps
        The largest and the 99th-percentile error, in ulps of the expected
        dtype at the scale of the terms (``inf`` where the value or the exact
        one is non-finite and they differ).
    used
        The largest ratio of error to bound (> 1: out of budget).
    worst_index, budget_ulps, actual, expected
        The worst element (:func:`worst_element`): its index, the bound there
        in ulps at the scale of the terms, the implementation's and the exact
        value.
    reference_bound_ulps
        The float64 reference's own error bound at ``worst_index``, in the unit
        of ``budget_ulps``: the share of that budget owed to the reference
        (never more than the budget). It grows with conditioning that the
        terms' scale does not absorb (a covariance's condition number; not
        ``|mean|/std``, since ``|x|/s`` is one of the terms).
    nonfinite_mismatches
        How many elements have a non-finite exact value (NaN where normref's result does not
        exist, say) that the implementation's value does not match.
    input_value
        The primary input at ``worst_index`` (when the output has its shape).
    problem
        What made the output unusable (missing, wrong shape, wrong dtype), or ``None``.
    """

    name: str
    direction: str
    ok: bool
    dtype: str | None
    expected_dtype: str
    max_ulps: float
    p99_ulps: float
    used: float
    worst_index: tuple[int, ...]
    budget_ulps: float
    actual: float | None
    expected: float | None
    reference_bound_ulps: float
    nonfinite_mismatches: int = 0
    input_value: float | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The check as JSON-ready values (non-finite floats as strings)."""
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def compare_output(
    name: str,
    actual: np.ndarray | None,
    actual_dtype: str | None,
    exact: np.ndarray,
    terms: OpTerms,
    expected_dtype: str,
    arithmetic: Arithmetic,
    primary: np.ndarray,
    direction: str = "forward",
) -> OutputCheck:
    """Check one output element by element against its bound (:mod:`conformance.bounds.budgets`).

    ``direction`` is the output's: ``"forward"``, ``"state"`` (running statistics,
    power-iteration vectors) or ``"backward"`` (a gradient).
    """
    if actual is None:
        return _unusable(name, direction, actual_dtype, expected_dtype, "the output is missing")
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != exact.shape:
        shape_problem = f"shape {actual.shape}, expected {exact.shape}"
        return _unusable(name, direction, actual_dtype, expected_dtype, shape_problem)
    bounds = element_bounds(terms, name, exact, expected_dtype, arithmetic)
    error, ratio, same = element_errors(actual, exact, bounds.bound, expected_dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ulps = error / bounds.unit
        budget = bounds.bound / bounds.unit
        reference = bounds.reference / bounds.unit
    index = worst_element(ratio, exact)
    problem = None
    if actual_dtype != expected_dtype:
        problem = f"dtype {actual_dtype}, expected {expected_dtype}"
    return OutputCheck(
        name=name,
        direction=direction,
        ok=problem is None and bool(np.all(ratio <= 1.0)),
        dtype=actual_dtype,
        expected_dtype=expected_dtype,
        max_ulps=float(np.max(ulps, initial=0.0)),
        # "higher" picks an element: no interpolation between infinities
        p99_ulps=float(np.percentile(ulps, 99, method="higher")) if ulps.size else 0.0,
        used=float(np.max(ratio, initial=0.0)),
        worst_index=index,
        budget_ulps=float(budget[index]) if ratio.size else 0.0,
        actual=float(actual[index]) if ratio.size else None,
        expected=float(exact[index]) if ratio.size else None,
        reference_bound_ulps=float(reference[index]) if ratio.size else 0.0,
        nonfinite_mismatches=int(np.count_nonzero(~np.isfinite(exact) & ~same)),
        input_value=float(primary[index]) if primary.shape == exact.shape and ratio.size else None,
        problem=problem,
    )


def element_errors(
    actual: np.ndarray, exact: np.ndarray, bound: np.ndarray, expected_dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element: the error ``|actual - exact|`` (0 where the value is right, ``inf`` where it
    is NaN and the exact one is not), its ratio to ``bound`` (> 1: out of budget) and whether
    the value is right: the exact value, the correctly rounded one (even where that overflows
    to infinity), or NaN where the exact value is NaN."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        error = np.abs(actual - exact)
        rounded = round_to(exact, expected_dtype)
        same = (actual == exact) | (actual == rounded) | (np.isnan(actual) & np.isnan(exact))
        error = np.where(same, 0.0, np.where(np.isnan(error), np.inf, error))
        ratio = np.where(error == 0, 0.0, error / bound)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return error, ratio, same


def worst_element(ratio: np.ndarray, exact: np.ndarray) -> tuple[int, ...]:
    """The index of the largest ratio of error to bound among the elements whose exact value is
    finite; only when none of those is out of budget, the first element out of budget at a
    non-finite exact value (an implementation's number where normref gives NaN, say)."""
    if not ratio.size:
        return ()
    finite = np.isfinite(exact)
    at_finite = np.where(finite, ratio, -1.0)
    if np.max(at_finite) > 1.0 or not np.any(ratio[~finite] > 1.0):
        flat = int(np.argmax(at_finite)) if finite.any() else int(np.argmax(ratio))
    else:
        flat = int(np.argmax(~finite & (ratio > 1.0)))
    return tuple(int(i) for i in np.unravel_index(flat, ratio.shape))


def _unusable(
    name: str, direction: str, dtype: str | None, expected_dtype: str, problem: str
) -> OutputCheck:
    inf = float("inf")
    return OutputCheck(
        name,
        direction,
        False,
        dtype,
        expected_dtype,
        inf,
        inf,
        inf,
        (),
        0.0,
        None,
        None,
        0.0,
        problem=problem,
    )
