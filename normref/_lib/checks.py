"""Argument checks shared by every public function.

Each check raises :class:`ValueError` (or :class:`TypeError` for a wrong kind
of value) whose message names the argument, the value received and what was
expected, so that a user reads the fix from the message alone.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Literal, TypeGuard, overload

from normref.conventions import EPS_MODES


def _is_real(value: object) -> TypeGuard[numbers.Real]:
    """A real number of any kind (Python's, or a NumPy scalar such as ``float32``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_eps(eps: object, *, name: str = "eps", allow_zero: bool = False) -> float:
    """``eps`` as a float; it must be finite and > 0 (or >= 0 with ``allow_zero``)."""
    if not _is_real(eps):
        msg = f"{name} must be a number, got {type(eps).__name__}"
        raise TypeError(msg)
    value = float(eps)
    bound_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (math.isfinite(value) and bound_ok):
        expected = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a finite number {expected}, got {eps!r}"
        raise ValueError(msg)
    return value


def check_eps_mode(eps_mode: object) -> str:
    """``eps_mode`` must be one of :data:`normref.conventions.EPS_MODES`."""
    if eps_mode not in EPS_MODES:
        msg = f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}"
        raise ValueError(msg)
    return str(eps_mode)


def check_correction(correction: object) -> int:
    """A variance correction (Bessel's): 0 (biased) or 1 (unbiased)."""
    if correction not in (0, 1) or isinstance(correction, bool):
        msg = f"correction must be 0 (biased) or 1 (unbiased), got {correction!r}"
        raise ValueError(msg)
    return int(correction)


@overload
def check_momentum(momentum: object, *, allow_none: Literal[False] = False) -> float: ...
@overload
def check_momentum(momentum: object, *, allow_none: bool) -> float | None: ...
def check_momentum(momentum: object, *, allow_none: bool = False) -> float | None:
    """A momentum in [0, 1]; ``None`` (cumulative average) where ``allow_none``."""
    if momentum is None and allow_none:
        return None
    if not _is_real(momentum):
        msg = f"momentum must be a number in [0, 1], got {momentum!r}"
        raise TypeError(msg)
    if not 0.0 <= float(momentum) <= 1.0:
        msg = f"momentum must be in [0, 1], got {momentum!r}"
        raise ValueError(msg)
    return float(momentum)


def check_int(value: object, *, name: str, minimum: int) -> int:
    """A Python integer >= ``minimum``."""
    try:
        as_int = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        msg = f"{name} must be an integer, got {type(value).__name__}"
        raise TypeError(msg) from None
    if isinstance(value, bool) or as_int < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return as_int


def check_positive_int(value: object, *, name: str) -> int:
    """A Python integer >= 1."""
    return check_int(value, name=name, minimum=1)


def normalize_axis(axis: object, ndim: int, *, name: str = "axis") -> int:
    """``axis`` as a non-negative index into a rank-``ndim`` array (a bool is not an axis)."""
    try:
        if isinstance(axis, bool):
            raise TypeError
        index = operator.index(axis)  # type: ignore[arg-type]
    except TypeError:
        msg = f"{name} must be an integer, got {type(axis).__name__}"
        raise TypeError(msg) from None
    if not -ndim <= index < ndim:
        msg = f"{name}={axis} is out of range for x of rank {ndim}"
        raise ValueError(msg)
    return index % ndim


def normalize_axes(axes: object, ndim: int, *, name: str = "axes") -> tuple[int, ...]:
    """``axes`` (an int or a sequence of ints) as sorted, distinct non-negative indices."""
    items = (axes,) if not isinstance(axes, Sequence) else tuple(axes)
    if not items:
        msg = f"{name} must name at least one axis, got {axes!r}"
        raise ValueError(msg)
    normalized = [normalize_axis(a, ndim, name=name) for a in items]
    if len(set(normalized)) != len(normalized):
        msg = f"{name}={axes!r} names an axis twice"
        raise ValueError(msg)
    return tuple(sorted(normalized))


def check_rank(x_shape: tuple[int, ...], *, minimum: int, layout: str, name: str = "x") -> None:
    """``x`` must have at least ``minimum`` axes; ``layout`` describes them."""
    if len(x_shape) < minimum:
        msg = f"{name} must have rank >= {minimum} ({layout}), got shape {tuple(x_shape)}"
        raise ValueError(msg)


def check_shape(
    value_shape: tuple[int, ...], expected: tuple[int, ...], *, name: str, what: str
) -> None:
    """An argument must have exactly the ``expected`` shape; ``what`` says where it comes from."""
    if tuple(value_shape) != tuple(expected):
        msg = f"{name} must have shape {tuple(expected)} ({what}), got {tuple(value_shape)}"
        raise ValueError(msg)


def check_finite_number(value: object, *, name: str) -> float:
    """A real number (not a bool) that is finite, as a float."""
    if not _is_real(value):
        msg = f"{name} must be a number, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{name} must be a finite number, got {value!r}"
        raise ValueError(msg)
    return float(value)
