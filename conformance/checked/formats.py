"""Floating-point formats: spacing (ulp), unit roundoff and rounding, computed in float64.

Every error the suite reports is measured in units in the last place (ulps)
of an output dtype. The four dtypes are described by their significand
precision ``p`` (with the implicit bit) and exponent range, so float16 and
bfloat16 are handled the same way as float32 and float64 without needing a
library that has them: values are kept as float64 NumPy arrays, which hold
every value of the four formats exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FloatFormat(NamedTuple):
    """A binary floating-point format: precision ``p``, minimum and maximum normal exponents."""

    precision: int
    min_exponent: int
    max_exponent: int


FORMATS: dict[str, FloatFormat] = {
    "float16": FloatFormat(11, -14, 15),
    "bfloat16": FloatFormat(8, -126, 127),
    "float32": FloatFormat(24, -126, 127),
    "float64": FloatFormat(53, -1022, 1023),
}
"""The dtypes the suite checks, by name."""

DTYPES: tuple[str, ...] = tuple(FORMATS)


def _format(dtype: str) -> FloatFormat:
    try:
        return FORMATS[dtype]
    except KeyError:
        msg = f"dtype must be one of {DTYPES}, got {dtype!r}"
        raise ValueError(msg) from None


def unit_roundoff(dtype: str) -> float:
    """``u = 2**-p``: the largest relative error of rounding to nearest in ``dtype``."""
    return 2.0 ** -_format(dtype).precision


def largest(dtype: str) -> float:
    """The largest finite value of ``dtype``."""
    p, _, emax = _format(dtype)
    return (2.0 - 2.0 ** (1 - p)) * 2.0**emax


def ulp(values: np.ndarray | float, dtype: str) -> np.ndarray:
    """Spacing of ``dtype`` at ``|values|`` (the subnormal spacing below the normal range).

    For ``2**e <= |v| < 2**(e+1)`` this is ``2**(e - p + 1)``; zero and
    non-finite values get the smallest spacing, ``2**(emin - p + 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> print(conformance.ulp(1.0, 'float32'), conformance.ulp(np.array([1.0, 1024.0]), 'float16'))
    1.1920928955078125e-07 [9.765625e-04 1.000000e+00]
    """
    p, emin, _ = _format(dtype)
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(magnitude))
    exponent = np.maximum(np.where(np.isfinite(exponent), exponent, emin), emin)
    return np.ldexp(1.0, (exponent - p + 1).astype(np.int64))


def round_to(values: np.ndarray | float, dtype: str) -> np.ndarray:
    """``values`` rounded to the nearest ``dtype`` value (ties to even), returned as float64.

    Values beyond the largest finite one round to infinity as IEEE 754
    requires; NaN stays NaN. The result is exactly representable in ``dtype``.
    """
    v = np.asarray(values, dtype=np.float64)
    spacing = ulp(v, dtype)
    with np.errstate(invalid="ignore"):
        rounded = np.round(v / spacing) * spacing
    overflow = np.isfinite(v) & (np.abs(rounded) > largest(dtype))
    return np.where(overflow, np.copysign(np.inf, v), rounded)


def promote(a: str, b: str) -> str:
    """The Array API promotion of two floating dtypes (float16 with bfloat16 gives float32)."""
    if a == b:
        return a
    if {a, b} == {"float16", "bfloat16"}:
        return "float32"
    return max(a, b, key=lambda d: _format(d).precision)
