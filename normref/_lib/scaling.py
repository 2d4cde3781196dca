r"""Safe scaling: a power of two per group, so that sums of squares neither overflow nor underflow.

A sum of squares :math:`\sum_i x_i^2` overflows where :math:`|x|` exceeds the
square root of the dtype's largest value (about :math:`10^{154}` in float64)
and loses its precision to underflow below the square root of its smallest
normal value, though the norm, the variance's square root or the normalized
values are representable. Every statistic of normref is therefore taken of
:math:`c\,x`, with :math:`c = 2^{-e}` chosen per group from the group's largest
magnitude (the idea of LAPACK's safe-scaled ``nrm2``; Blue, 1978; Anderson,
"Safe scaling in the Level 1 BLAS", 2017): multiplying by a power of two is
exact, so the scaled statistics are the unscaled ones times a power of
:math:`c`, exactly, wherever the unscaled ones do not overflow or underflow,
and a result computed from them is the same, bit for bit, whatever power of two
the input was multiplied by first.

The Array API has neither ``frexp`` nor ``ldexp``: :math:`e` is
:math:`\lfloor \log_2 m \rfloor` (which rounding may make one too large near a
power of two: any power of two near :math:`1/m` serves), clamped so that
:math:`c` is a normal number of the dtype, and :math:`c = 2^{-e}` is computed by
``pow``, exact for a power of two on every library normref runs on.
"""

from __future__ import annotations

import math

from array_api_compat import device

from normref._lib.namespace import Array, Namespace, to_dtype


def max_magnitude(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """``max |x|`` over ``axes`` (keeping dims), without a full-size ``|x|``: the larger of
    ``max x`` and ``-min x``. NaN where a NaN is among the values; 0 over no values."""
    if any(x.shape[a] == 0 for a in axes):
        shape = tuple(1 if a in axes or a - x.ndim in axes else n for a, n in enumerate(x.shape))
        return xp.zeros(shape, dtype=x.dtype, device=device(x))
    return xp.maximum(xp.max(x, axis=axes, keepdims=True), -xp.min(x, axis=axes, keepdims=True))


def exponent_range(xp: Namespace, dtype: object) -> tuple[int, int]:
    """The exponents ``e`` for which ``2**-e`` is a normal number of ``dtype``."""
    info = xp.finfo(dtype)
    # frexp(v) = (m, e) with v = m 2**e, 1/2 <= m < 1: 2**(e - 1) is the largest power <= v
    return 1 - math.frexp(float(info.max))[1], 1 - math.frexp(float(info.smallest_normal))[1]


def power_of_two_scale(xp: Namespace, magnitude: Array) -> Array:
    """A power of two ``c`` with ``c * magnitude`` in ``[1/2, 2)`` where ``c`` can be a normal
    number of ``magnitude``'s dtype (else the nearest such power); 1 where ``magnitude`` is 0,
    NaN where it is NaN (so that the scaled group is NaN, as it would be).

    ``magnitude`` is non-negative: the largest ``|x|`` of each group, or a floor the
    caller puts under it (the square root of ``eps``, ...).
    """
    lowest, highest = exponent_range(xp, magnitude.dtype)
    zero = magnitude == 0
    logarithm = xp.log2(xp.where(zero, xp.ones_like(magnitude), magnitude))
    exponent = xp.clip(xp.floor(logarithm), min=float(lowest), max=float(highest))
    return xp.where(zero, xp.ones_like(exponent), 2.0 ** (-exponent))


def group_scale(xp: Namespace, x: Array, axes: tuple[int, ...], *, floor: float = 0.0) -> Array:
    """The power of two per group (keeping dims) for the values of ``x`` over ``axes``, from
    their largest magnitude, or ``floor`` where that is larger (see :func:`power_of_two_scale`)."""
    return floored_scale(xp, max_magnitude(xp, x, axes), floor)


def floored_scale(xp: Namespace, magnitude: Array, floor: float = 0.0) -> Array:
    """:func:`power_of_two_scale` of ``magnitude``, or of ``floor`` where that is larger."""
    if floor > 0.0:
        magnitude = xp.maximum(magnitude, xp.full_like(magnitude, floor))
    return power_of_two_scale(xp, magnitude)


def finite_max_magnitude(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """:func:`max_magnitude` of the finite values of ``x`` alone (0 where there are none): a
    NaN or an infinity stays itself once scaled by a power of two taken of it, and reaches
    only the sums that hold it, where one power of two serves sums over parts of the group (a
    window, or several kinds of groups)."""
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    return max_magnitude(xp, xp.where(xp.isfinite(x), x, zero), axes)


def scaled_copy(xp: Namespace, values: Array, dtype: object, scale: Array) -> Array:
    """``values`` in ``dtype`` times the power of two ``scale``: a new array, of the caller's own
    (``values`` itself is never written)."""
    converted = to_dtype(xp, values, dtype)
    if converted is values:
        return values * scale
    converted *= scale  # in place: the conversion's own copy
    return converted


def scaled_mean(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    """The mean of ``x`` over ``axes`` (keeping dims), summed as the values times each group's
    power of two (:func:`group_scale`): finite wherever the mean is."""
    scale = group_scale(xp, x, axes)
    return xp.mean(x * scale, axis=axes, keepdims=True) / scale


def power_of_two_factors(xp: Namespace, exponent: Array, dtype: object) -> tuple[Array, Array]:
    """Two powers of two (arrays of ``exponent``'s shape) whose product is ``2**exponent`` for
    an integer-valued ``exponent`` array: multiplying a value of ``dtype`` by one, then the
    other, overflows or underflows only where the product does (:func:`times_power_of_two`)."""
    info = xp.finfo(dtype)
    top = float(math.frexp(float(info.max))[1] - 1)
    half = xp.clip(xp.floor(exponent / 2), min=-top - 64, max=top)
    rest = xp.clip(exponent - half, min=-top - 64, max=top)
    return 2.0**half, 2.0**rest


def times_power_of_two(xp: Namespace, m: Array, exponent: Array) -> Array:
    """``m * 2**exponent`` for an integer-valued ``exponent`` array, in two steps: no power of
    two overflows or underflows where the product does not (``exponent`` may lie beyond the
    dtype's range, so that ``(m, exponent)`` holds a value that ``m`` alone cannot)."""
    first, second = power_of_two_factors(xp, exponent, m.dtype)
    return (m * first) * second
