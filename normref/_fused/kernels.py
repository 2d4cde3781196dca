"""Numba kernels of the fused path: per-group sums and factors, and the passes that use them.

The forward (:func:`normalize`) takes each group's sums and factor and writes its
output at once, while the group's values are in cache; the backward
(:func:`gradients`) takes the sums and factors of a block of groups, then writes
their gradients while the block is in cache. The factors are the array formulas of
:mod:`normref._fused.factors` written for one group (:func:`forward_factor`,
:func:`vjp_factors`), with the same roundings.

Every kernel takes ``x`` (and ``dy``, ``y``, ``dx``) in the five-slot layout of
:mod:`normref._fused.layout` and writes into arrays its caller allocated, so
that all memory is visible to the caller and no kernel allocates. Arithmetic
happens in the dtype of the statistics arrays (the compute dtype): an element
of a float32 input is widened exactly to float64 when they are float64.

A group's mean and sum of squared deviations come from one pass where that is
as accurate as two: sums about a shift near the mean, corrected by the shift's
distance from the mean where that distance is at most half a standard deviation
(:func:`_centred_sums`); elsewhere a second pass, from cache, takes the squared
deviations about the mean.

Sums are pairwise, as NumPy's are: contiguous pieces of about :data:`PIECE`
elements are each summed by a vectorized loop (the only place where
floating-point reassociation is allowed), and the pieces of a group are
combined by cascade summation, which adds them in the same pairs as a
recursive pairwise sum. The error of a group's sum is thus bounded by about
``PIECE / lanes + log2(pieces)`` roundings of its partial sums instead of the
``n`` roundings of a running sum. The parameters' gradients are the
exception: each chunk adds its rows' products to a running sum per parameter
(as many roundings as the chunk has rows), and the chunks' sums are then
added by NumPy.

Every statistic is that of a group's values times a power of two, its
``scale``: multiplying by it is exact, and the scaled sums of squares neither
overflow nor underflow. ``normref._lib.scaling`` chooses one for the
generic path from the largest magnitude; the kernels take 1 where that is
safe, and otherwise one from the sum of the group's magnitudes (or the floor
their caller gives, the scale of ``eps``; :func:`_scale_of`).

The sums are first taken of the values as they are: where the group's size
(the larger of its mean and spread) and the magnitude at which ``eps`` matters
are moderate, they are exact, and the group takes 1 as its scale (any
power of two gives the same results, exactly, where nothing overflows or
underflows), at the cost of the passes it cost unscaled; elsewhere (sizes
beyond about 2**255, or 2**31 in float32, tiny ones, and sums that
overflowed) the group's magnitudes are summed, and its sums taken again of
the values times the power of two of that sum (:func:`_plain_is_exact`).

Each kernel computes the chunks ``first <= chunk < stop`` of a fixed split of
the groups into ``chunks`` (the leading dimension of its scratch or partial
arrays, chosen from the problem size alone). Its caller runs ranges of chunks
on several threads (the kernels release the GIL); since no chunk's result
depends on another's, every result is the same whatever the number of threads.
"""

from __future__ import annotations

import math
from typing import Any

import numba

PIECE = 256
"""Elements summed by one vectorized loop before the cascade takes over."""

DEPTH = 64
"""Depth of a cascade stack: enough for 2**63 pieces."""

SHIFT_SAMPLES = 64
"""Values whose mean is a group's shift (:func:`_shift_of`): for independent values it lies
within an eighth of a standard deviation of the group's mean, most often."""

SHIFT_CANCELLATION = 0.25
"""The most ``n delta**2`` may be of the sum of squared deviations for the one-pass sums about
a shift (:func:`_group_statistics`): the shift within half a standard deviation of the mean."""

_jit = numba.njit(cache=True, nogil=True)
_jit_inline = numba.njit(cache=True, nogil=True, inline="always")
"""For the functions of a group's sums: inlined by Numba, their loops are compiled in their
callers' own (their calls measured about 10% slower)."""
_jit_reassoc = numba.njit(cache=True, nogil=True, fastmath={"reassoc"})


# ---------------------------------------------------------------------------- pieces


@_jit_reassoc
def _piece_sums(piece: Any, scale: Any, shift: Any, zero: Any) -> tuple[Any, Any]:
    """Sums of ``d = piece * scale - shift`` and of ``d**2`` (``d = piece - shift`` where
    ``scale`` is ``None``: the values as they are)."""
    total = zero
    squares = zero
    for i in range(piece.shape[0]):
        d = piece[i] - shift if scale is None else piece[i] * scale - shift
        total += d
        squares += d * d
    return total, squares


@_jit_reassoc
def _piece_magnitude(piece: Any, zero: float) -> float:
    """``sum |piece|`` in float64."""
    total = zero
    for i in range(piece.shape[0]):
        total += abs(piece[i])
    return total


@_jit_reassoc
def _piece_vjp_sums(
    x: Any, dy: Any, gamma: Any, scale: Any, shift: Any, zero: Any
) -> tuple[Any, Any, Any, Any]:
    """Sums of ``d``, of ``d**2``, of ``dyh`` and of ``dyh * d`` over one piece,
    ``d = x * scale - shift`` (``x - shift`` where ``scale`` is ``None``).

    ``dyh = dy * gamma`` is the cotangent of the normalized values; ``gamma`` is
    a piece as long as ``x``.
    """
    total = zero
    squares = zero
    dyh_total = zero
    dyh_centred = zero
    for i in range(x.shape[0]):
        d = x[i] - shift if scale is None else x[i] * scale - shift
        h = dy[i] * gamma[i]
        total += d
        squares += d * d
        dyh_total += h
        dyh_centred += h * d
    return total, squares, dyh_total, dyh_centred


@_jit_reassoc
def _piece_dy_sums(x: Any, dy: Any, scale: Any, shift: Any, zero: Any) -> tuple[Any, Any, Any, Any]:
    """Sums of ``d``, of ``d**2``, of ``dy`` and of ``dy * d`` over one piece, as
    :func:`_piece_vjp_sums`.

    For parameters constant along the piece, whose caller scales the last two
    by ``gamma`` once: the loop of :func:`_piece_vjp_sums` with ``gamma[i]``
    read through a stride known only at run time would not vectorize.
    """
    total = zero
    squares = zero
    dy_total = zero
    dy_centred = zero
    for i in range(x.shape[0]):
        d = x[i] - shift if scale is None else x[i] * scale - shift
        h = dy[i] + zero
        total += d
        squares += d * d
        dy_total += h
        dy_centred += h * d
    return total, squares, dy_total, dy_centred


@_jit_reassoc
def _row_param_sums(
    x: Any, dy: Any, scale: Any, mean: Any, inv_s: Any, zero: Any
) -> tuple[Any, Any]:
    """Over one row: sums of ``dy * x_hat`` and of ``dy``, for parameters constant along it
    (``x_hat = (x * scale - mean) * inv_s``)."""
    dy_x_hat = zero
    dy_total = zero
    # one loop: a second, for a scale of 1, slows this one (which LLVM then leaves scalar)
    for i in range(x.shape[0]):
        h = dy[i] + zero
        dy_x_hat += h * ((x[i] * scale - mean) * inv_s)
        dy_total += h
    return dy_x_hat, dy_total


# ---------------------------------------------------------------------------- cascade


@_jit
def _push(
    stack: Any, chunk: int, depth: int, count: int, pieces: tuple[Any, ...]
) -> tuple[int, int]:
    """Put the piece sums ``pieces`` on the stacks; merge pairs as pairwise summation would."""
    for w in range(len(pieces)):
        stack[chunk, w, depth] = pieces[w]
    depth += 1
    count += 1
    pairs = count
    while pairs % 2 == 0:
        depth -= 1
        for w in range(len(pieces)):
            stack[chunk, w, depth - 1] += stack[chunk, w, depth]
        pairs //= 2
    return depth, count


@_jit
def _drain(stack: Any, chunk: int, w: int, depth: int, zero: Any) -> Any:
    """The total of cascade ``w``: its pending partial sums, smallest first."""
    total = zero
    for d in range(depth - 1, -1, -1):
        total += stack[chunk, w, d]
    return total


@_jit_inline
def _group_value_sums(
    x: Any, g0: int, g2: int, scale: Any, shift: Any, stack: Any, chunk: int
) -> tuple[Any, Any]:
    """Pairwise sums over group ``(g0, g2)`` of ``d = x * scale - shift`` and of ``d**2``
    (``d = x - shift`` where ``scale`` is ``None``: the values as they are).

    Short rows are gathered into one piece until it holds ``PIECE`` elements.
    """
    zero = stack.dtype.type(0)
    depth = count = filled = 0
    pieces = (zero, zero)
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            row = x[g0, s1, g2, s3]
            for start in range(0, row.shape[0], PIECE):
                part = row[start : start + PIECE]
                total, squares = _piece_sums(part, scale, shift, zero)
                pieces = (pieces[0] + total, pieces[1] + squares)
                filled += part.shape[0]
                if filled >= PIECE:
                    depth, count = _push(stack, chunk, depth, count, pieces)
                    pieces, filled = (zero, zero), 0
    if filled:
        depth, count = _push(stack, chunk, depth, count, pieces)
    return _drain(stack, chunk, 0, depth, zero), _drain(stack, chunk, 1, depth, zero)


@_jit
def _shift_of(x: Any, g0: int, g2: int, scale: Any, zero: Any) -> Any:
    """The mean of the first :data:`SHIFT_SAMPLES` values of group ``(g0, g2)`` (of all of
    them in a smaller group) times ``scale`` (as they are where it is ``None``), in the dtype
    of ``zero``: a value near the group's mean, for :func:`_centred_sums`; 0 where that mean
    is not finite."""
    total = zero
    taken = 0
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            row = x[g0, s1, g2, s3]
            take = min(row.shape[0], SHIFT_SAMPLES - taken)
            total += _piece_sums(row[:take], scale, zero, zero)[0]
            taken += take
            if taken == SHIFT_SAMPLES:
                break
        if taken == SHIFT_SAMPLES:
            break
    shift = total / type(zero)(taken)
    # an infinity or a NaN among the samples: no shift, so that the mean is the sum's
    # (an infinity's sign), as the generic path's
    return shift if math.isfinite(shift) else zero


@_jit
def _group_magnitude(x: Any, g0: int, g2: int) -> float:
    """The sum of the magnitudes ``|x|`` of group ``(g0, g2)``, in float64."""
    total = 0.0
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            total += _piece_magnitude(x[g0, s1, g2, s3], 0.0)
    return total


@_jit
def _limits(n: float, floor: float, bound: int) -> tuple[float, float]:
    """The range of ``n * size**2`` in which :func:`_plain_is_exact` takes a group's sums as
    exact: a group's size (the larger of ``|mu|`` and its spread) within ``2**-bound``
    and ``2**bound``, where nothing formed of it overflows, nor underflows but below the
    rounding of its own sums. Empty where ``floor`` (the magnitude at which ``eps``
    matters) is above ``2**bound``.

    A large ``eps`` does not excuse tiny values: the results divide their deviations,
    which must keep their relative precision, by its root. (Computed once per kernel:
    ``frexp`` or ``ldexp`` per group measured 10 to 20% of a small group's time.)
    """
    if floor > math.ldexp(1.0, bound):
        return 1.0, 0.0
    return n * math.ldexp(1.0, -2 * bound), n * math.ldexp(1.0, 2 * bound + 2)


@_jit
def _plain_is_exact(mu: Any, squares: Any, n: float, limits: tuple[float, float]) -> bool:
    """Whether a group's sums taken of its values as they are (mean ``mu``, sum of squared
    deviations ``squares``) are exact: ``n * size**2 = max(n * mu**2, squares)`` within
    ``limits`` (:func:`_limits`); false for an overflow, an infinity or a NaN."""
    size2n = max(float(mu) * float(mu) * n, float(squares))
    return limits[0] <= size2n < limits[1]


@_jit
def _scale_of(magnitude: float, floor: float, exponents: tuple[int, int]) -> float:
    """The power of two of a group whose magnitudes sum to ``magnitude``: ``2**-e`` with
    ``2**e`` the largest power of two not above ``magnitude`` (or ``floor``, where that is
    larger), ``e`` clamped to ``exponents`` (a normal number); 1 for a group of zeros.

    The sum of magnitudes bounds every value and their sum of squares and is at most ``n``
    times the largest: scaled by it, no value's square overflows, nor underflows where it
    matters. (The generic path takes the largest magnitude itself: any such power of two
    gives the same results, exactly, where nothing overflows or underflows.) An
    overflowing sum, an infinity or a NaN takes the smallest scale (a NaN makes the group's
    sums NaN whatever the scale).
    """
    lowest, highest = exponents
    larger = max(magnitude, floor)
    if larger == 0:
        return 1.0
    exponent = math.frexp(larger)[1] - 1 if larger < math.inf else highest
    return math.ldexp(1.0, -min(max(exponent, lowest), highest))


# ---------------------------------------------------------------------------- kernels


@_jit_inline
def _group_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    scale: Any,
    shift: Any,
    stack: Any,
    chunk: int,
) -> tuple[Any, Any, Any, Any]:
    """Over group ``(g0, g2)``, with ``d = x * scale - shift`` (``x - shift`` where ``scale``
    is ``None``): the sums of ``d`` and of ``d**2`` and, with a cotangent ``dy``, the sums of
    ``dyh`` and of ``dyh * d`` in the same pass (:func:`_vjp_group_sums`); 0 for those
    without (``dy`` ``None``: Numba compiles one branch for each)."""
    if dy is None:
        zero = stack.dtype.type(0)
        total, squares = _group_value_sums(x, g0, g2, scale, shift, stack, chunk)
        return total, squares, zero, zero
    return _vjp_group_sums(x, dy, gamma, param_strides, g0, g2, scale, shift, stack, chunk)


@_jit_inline
def _centred_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    center: bool,
    scale: Any,
    stack: Any,
    chunk: int,
) -> tuple[Any, Any, Any, Any]:
    """Of the values ``x * scale`` of group ``(g0, g2)`` (``x`` where ``scale`` is ``None``):
    their mean (0 unless ``center``), the sum of their squared deviations ``d**2`` and, with
    a cotangent ``dy``, the sums of ``dyh`` and of ``dyh * d``.

    One pass takes them where it can: the sums of ``e = x - a`` and ``e**2`` (and of ``dyh``
    and ``dyh * e``) about a shift ``a`` near the mean (:func:`_shift_of`), whence
    ``mean = a + delta`` (``delta = sum(e) / n``), ``sum(d**2) = sum(e**2) - delta sum(e)``
    and ``sum(dyh d) = sum(dyh e) - delta sum(dyh)``. Their cancellation is at most that of
    ``n delta**2`` against ``sum(d**2)``: where the shift lies within half a standard
    deviation of the mean (:data:`SHIFT_CANCELLATION`), the subtracted term is at most a
    quarter of the result, which so keeps the accuracy of sums about the mean; elsewhere (and
    for a NaN) a second pass takes them about the mean, from cache.
    """
    real = stack.dtype.type
    zero = real(0)
    n = real(x.shape[1] * x.shape[3] * x.shape[4])
    shift = _shift_of(x, g0, g2, scale, zero) if center else zero
    total, squares, dyh, dyh_d = _group_sums(
        x, dy, gamma, param_strides, g0, g2, scale, shift, stack, chunk
    )
    if not center:
        return zero, squares, dyh, dyh_d
    delta = total / n
    mu = shift + delta
    deviations = squares - delta * total
    if n * delta * delta <= real(SHIFT_CANCELLATION) * deviations:
        return mu, deviations, dyh, dyh_d - delta * dyh
    _, squares, dyh, dyh_d = _group_sums(
        x, dy, gamma, param_strides, g0, g2, scale, mu, stack, chunk
    )
    return mu, squares, dyh, dyh_d


@_jit_inline
def _group_statistics(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    center: bool,
    floor: float,
    exponents: tuple[int, int],
    limits: tuple[float, float],
    stack: Any,
    chunk: int,
) -> tuple[Any, Any, Any, Any, Any]:
    """Of group ``(g0, g2)``: its power of two ``c``, and of its values times it the mean
    (0 unless ``center``), the sum of squared deviations ``d**2`` and, with a cotangent
    ``dy`` (``None`` forward), the sums of ``dyh`` and of ``dyh * d``, ``d = x * c - mean``
    (``dyh = dy * gamma``; :func:`_centred_sums`).

    The sums are taken of the values as they are (``c = 1``) where they are exact
    (:func:`_plain_is_exact`), else again of the values times :func:`_scale_of`'s power of
    two: the same arithmetic on values a power of two apart, so the same results scaled.
    """
    c = stack.dtype.type(1)
    mu, squares, dyh, dyh_d = _centred_sums(
        x, dy, gamma, param_strides, g0, g2, center, None, stack, chunk
    )
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    if not _plain_is_exact(mu, squares, n, limits):
        c = stack.dtype.type(_scale_of(_group_magnitude(x, g0, g2), floor, exponents))
        mu, squares, dyh, dyh_d = _centred_sums(
            x, dy, gamma, param_strides, g0, g2, center, c, stack, chunk
        )
    return c, mu, squares, dyh, dyh_d


@_jit
def forward_factor(
    squares: Any, c: Any, count: float, eps: float, eps_mode: int, divides: bool, one: Any
) -> Any:
    """``1 / s`` of a group's values times ``c``, from their sum of squares ``squares`` over
    ``count``: :func:`normref._fused.factors.forward_factor` for one group, in the dtype of
    ``one`` (the compute dtype; 1), with the same roundings.

    ``s = divisor(v, eps')`` of the variance ``v = squares / count`` and ``eps`` scaled with
    the values (``eps c**2``, ``eps c`` for ``"add_std"``); a divisor of 0 counts as 1. For
    the centring (``divides`` false) ``1 / c``: its centred values back at their own size.
    ``count`` and ``eps`` are float64 numbers, taken into the compute dtype as the array
    formulas take them; ``eps_mode`` is an index into :data:`normref.conventions.EPS_MODES`.
    """
    if not divides:
        return one / c
    s = _divisors(squares / type(one)(count), c, eps, eps_mode, one)[0]
    return one / (one if s == 0 else s)


@_jit
def _divisors(v: Any, c: Any, eps: float, eps_mode: int, one: Any) -> tuple[Any, Any, Any]:
    """``s(v)`` of the variance ``v`` of values times ``c`` with ``eps`` scaled alike, that
    scaled ``eps``, and ``s(0)`` of the unscaled ``eps``
    (:func:`~normref.ops.standardization.divisor`, :func:`~normref.ops.standardization.scaled_eps`).
    """
    real_eps = type(one)(eps)
    zero = one - one
    if eps_mode == 2:  # "add_std": eps added to the standard deviation
        scaled = real_eps * c
        return math.sqrt(v) + scaled, scaled, math.sqrt(zero) + real_eps
    scaled = (real_eps * c) * c
    if eps_mode == 0:
        return math.sqrt(v + scaled), scaled, math.sqrt(zero + real_eps)
    # "max": the larger of v and eps, NaN where v is NaN (as maximum and clip; which argument
    # max returns for a NaN depends on their order)
    larger = scaled if v < scaled else v  # noqa: FURB136
    return math.sqrt(larger), scaled, math.sqrt(max(zero, real_eps))


@_jit_inline
def _normalize_group(
    x: Any,
    g0: int,
    g2: int,
    c: Any,
    mu: Any,
    factor: Any,
    gamma: Any,
    beta: Any,
    param_strides: tuple[int, ...],
    y: Any,
) -> None:
    """``y = (x * c - mu) * factor * gamma + beta`` over group ``(g0, g2)``."""
    p0, p1, p2, p3, p4 = param_strides
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            p = g0 * p0 + s1 * p1 + g2 * p2 + s3 * p3
            row, out = x[g0, s1, g2, s3], y[g0, s1, g2, s3]
            # a scale of 1 (a group the unscaled sums took exactly) multiplies nothing
            if p4 == 0 and c == 1:
                gm, bt = gamma[p], beta[p]
                for i in range(row.shape[0]):
                    out[i] = (row[i] - mu) * factor * gm + bt
            elif p4 == 0:
                gm, bt = gamma[p], beta[p]
                for i in range(row.shape[0]):
                    out[i] = (row[i] * c - mu) * factor * gm + bt
            else:
                gamma_row, beta_row = gamma[p : p + row.shape[0]], beta[p : p + row.shape[0]]
                if c == 1:
                    for i in range(row.shape[0]):
                        out[i] = (row[i] - mu) * factor * gamma_row[i] + beta_row[i]
                else:
                    for i in range(row.shape[0]):
                        out[i] = (row[i] * c - mu) * factor * gamma_row[i] + beta_row[i]


@_jit
def normalize(
    x: Any,
    center: bool,
    divides: bool,
    floor: float,
    exponents: tuple[int, int],
    count: float,
    eps: float,
    eps_mode: int,
    gamma: Any,
    beta: Any,
    param_strides: tuple[int, ...],
    y: Any,
    means: Any,
    stack: Any,
    first: int,
    stop: int,
) -> None:
    """``y = (x * c - mean) / s * gamma + beta`` per group, in one pass over each group.

    Each group's statistics (:func:`_group_statistics`: its power of two ``c`` and of its
    values times it the mean and the sum of squares) and its factor ``1 / s``
    (:func:`forward_factor`, of ``count = n - correction`` and ``eps``) are computed
    where its values are still in cache, and its output written at once. The caller
    passes ``gamma`` of ones and ``beta`` of ``-0.0`` for absent parameters: multiplying
    by 1 and adding -0.0 change no value. ``means``, unless it is ``None``, receives each
    group's mean (of its values as they are). ``stack`` is ``(chunks, 2, DEPTH)`` scratch in
    the compute dtype.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    limits = _limits(n, floor, exponents[1] // 4)
    for chunk in range(first, stop):
        for g in range(chunk * groups // chunks, (chunk + 1) * groups // chunks):
            g0, g2 = g // x.shape[2], g % x.shape[2]
            c, mu, squares, _, _ = _group_statistics(
                x,
                None,
                gamma,
                param_strides,
                g0,
                g2,
                center,
                floor,
                exponents,
                limits,
                stack,
                chunk,
            )
            factor = forward_factor(squares, c, count, eps, eps_mode, divides, real(1))
            _normalize_group(x, g0, g2, c, mu, factor, gamma, beta, param_strides, y)
            if means is not None:
                means[g] = mu / c


@_jit_inline
def _vjp_group_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    scale: Any,
    shift: Any,
    stack: Any,
    chunk: int,
) -> tuple[Any, Any, Any, Any]:
    """Over group ``(g0, g2)``, with ``d = x * scale - shift`` (``x - shift`` where ``scale``
    is ``None``): the pairwise sums of ``d``, of ``d**2``, of ``dyh`` and of ``dyh * d``
    (``dyh = dy * gamma``)."""
    zero = stack.dtype.type(0)
    p0, p1, p2, p3, p4 = param_strides
    depth = count = filled = 0
    pieces = (zero, zero, zero, zero)
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            p = g0 * p0 + s1 * p1 + g2 * p2 + s3 * p3
            row, dy_row = x[g0, s1, g2, s3], dy[g0, s1, g2, s3]
            for start in range(0, row.shape[0], PIECE):
                end = min(start + PIECE, row.shape[0])
                if p4:
                    gamma_part = gamma[p + start : p + end]
                    total, squares, dyh_total, dyh_centred = _piece_vjp_sums(
                        row[start:end], dy_row[start:end], gamma_part, scale, shift, zero
                    )
                else:
                    total, squares, dy_total, dy_centred = _piece_dy_sums(
                        row[start:end], dy_row[start:end], scale, shift, zero
                    )
                    dyh_total, dyh_centred = dy_total * gamma[p], dy_centred * gamma[p]
                pieces = (
                    pieces[0] + total,
                    pieces[1] + squares,
                    pieces[2] + dyh_total,
                    pieces[3] + dyh_centred,
                )
                filled += end - start
                if filled >= PIECE:
                    depth, count = _push(stack, chunk, depth, count, pieces)
                    pieces, filled = (zero, zero, zero, zero), 0
    if filled:
        depth, count = _push(stack, chunk, depth, count, pieces)
    return (
        _drain(stack, chunk, 0, depth, zero),
        _drain(stack, chunk, 1, depth, zero),
        _drain(stack, chunk, 2, depth, zero),
        _drain(stack, chunk, 3, depth, zero),
    )


@_jit
def vjp_factors(
    squares: Any,
    c: Any,
    dyh: Any,
    dyh_centred: Any,
    count: float,
    eps: float,
    eps_mode: int,
    centred: bool,
    n: Any,
    one: Any,
) -> tuple[Any, Any, Any, Any]:
    """The factors of ``dx = ((dyh - dyh_mean) + d * coef) * inverse`` for one group:
    :func:`normref._fused.factors.vjp_factors`, in the dtype of ``one`` (the compute dtype;
    1), with the same roundings.

    From the group's sums of its ``n`` values times ``c`` (``squares`` of ``d**2``, ``dyh``
    and ``dyh_centred`` of ``dyh`` and ``dyh * d``) over ``count = n - correction``:
    ``inv_s`` (``1/s`` of the scaled values), ``inverse`` (``1/s`` of the unscaled ones),
    ``coef`` (the variance term over ``s``) and ``dyh_mean`` (0 unless ``centred``), as
    :func:`~normref.ops.standardization.scaled_divisors` and
    :func:`~normref.ops.standardization.variance_term` form them: a constant group's divisor
    is ``c s(0)`` of the unscaled ``eps``, and a divisor of 0 counts as 1. ``count`` and
    ``eps`` are float64 numbers, as for :func:`forward_factor`.
    """
    real = type(one)
    zero = one - one
    v = squares / real(count)
    s, scaled, unscaled = _divisors(v, c, eps, eps_mode, one)
    if v == 0:
        s = c * unscaled
        inverse = one / (one if unscaled == 0 else unscaled)
    else:
        inverse = c / (one if s == 0 else s)
    inv_s = one / (one if s == 0 else s)
    # divisor_slope: s'(v) s
    if eps_mode == 0:
        slope = real(0.5)
    elif eps_mode == 1:
        slope = real(0.5) if v >= scaled else zero
    else:
        root = math.sqrt(v)
        slope = s / (real(2.0) * root) if root > 0 else zero
    k = (real(-2.0 / count) * slope) * (dyh_centred * inv_s)
    dyh_mean = dyh / n if centred else zero
    return inv_s, inverse, k * inv_s, dyh_mean


@_jit_inline
def _vjp_apply_group(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    factors: tuple[Any, Any, Any, Any, Any, Any],
    dx: Any,
    d_gamma: Any,
    d_beta: Any,
    chunk: int,
) -> None:
    """Over group ``(g0, g2)``: ``dx = ((dyh - centre) + d * k) * r`` with
    ``d = x * c - mu``, and its terms of the parameters' gradients (``dy * d * factor`` and
    ``dy``) added to row ``chunk`` of ``d_gamma`` and ``d_beta``; ``factors`` is
    ``(c, mu, factor, r, k, centre)``."""
    c, mu, factor, r, k, centre = factors
    zero = d_gamma.dtype.type(0)
    p0, p1, p2, p3, p4 = param_strides
    for s1 in range(x.shape[1]):
        for s3 in range(x.shape[3]):
            p = g0 * p0 + s1 * p1 + g2 * p2 + s3 * p3
            row, dy_row, out = x[g0, s1, g2, s3], dy[g0, s1, g2, s3], dx[g0, s1, g2, s3]
            # a scale of 1 (a group the unscaled sums took exactly) multiplies nothing
            if p4 == 0 and c == 1:
                gm = gamma[p]
                for i in range(row.shape[0]):
                    out[i] = ((dy_row[i] * gm - centre) + (row[i] - mu) * k) * r
            elif p4 == 0:
                gm = gamma[p]
                for i in range(row.shape[0]):
                    out[i] = ((dy_row[i] * gm - centre) + (row[i] * c - mu) * k) * r
            if p4 == 0:
                dy_x_hat, dy_total = _row_param_sums(row, dy_row, c, mu, factor, zero)
                d_gamma[chunk, p] += dy_x_hat
                d_beta[chunk, p] += dy_total
            else:
                size = row.shape[0]
                gamma_row = gamma[p : p + size]
                d_gamma_row = d_gamma[chunk, p : p + size]
                d_beta_row = d_beta[chunk, p : p + size]
                for i in range(size):
                    h = dy_row[i] + zero
                    d = row[i] * c - mu
                    d_gamma_row[i] += h * (d * factor)
                    d_beta_row[i] += h
                    out[i] = ((h * gamma_row[i] - centre) + d * k) * r


@_jit
def gradients(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    center: bool,
    floor: float,
    exponents: tuple[int, int],
    count: float,
    eps: float,
    eps_mode: int,
    block: int,
    factors: Any,
    stack: Any,
    dx: Any,
    d_gamma: Any,
    d_beta: Any,
    first: int,
    stop: int,
) -> None:
    """``dx = ((dyh - dyh_mean) + d * coef) * inverse`` and the parameters' gradients, a
    block of ``block`` groups at a time.

    For each group of a block: its sums (:func:`_group_statistics`) and the factors of its
    gradient (:func:`vjp_factors`), in ``factors[:, g]``: ``c``, the mean, ``inv_s``,
    ``inverse``, ``coef`` and ``dyh_mean``; then for each group of the block its gradients
    (:func:`_vjp_apply_group`), ``d = x * c - mean`` being the scaled centred values. The
    caller sizes the blocks so that their ``x`` and ``dy`` stay in cache between the two
    passes, which read them from memory once; a group's factors, a chain of divisions and
    roots, overlap the next group's sums instead of holding up the group's own output.

    ``dyh = dy * gamma`` is the cotangent of the normalized values (``gamma`` of ones where
    the layer has none); ``stack`` is ``(chunks, 4, DEPTH)`` scratch in the compute dtype.
    ``d_gamma`` and ``d_beta`` are ``(chunks, P)`` partial sums (zeros on entry) of
    ``dy * x_hat`` and ``dy`` per parameter, one row per chunk of groups; their caller adds
    the rows.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    limits = _limits(n, floor, exponents[1] // 4)
    for chunk in range(first, stop):
        chunk_stop = (chunk + 1) * groups // chunks
        for start in range(chunk * groups // chunks, chunk_stop, block):
            end = min(start + block, chunk_stop)
            for g in range(start, end):
                g0, g2 = g // x.shape[2], g % x.shape[2]
                c, mu, squares, dyh, dyh_d = _group_statistics(
                    x,
                    dy,
                    gamma,
                    param_strides,
                    g0,
                    g2,
                    center,
                    floor,
                    exponents,
                    limits,
                    stack,
                    chunk,
                )
                inv_s, inverse, coef, centre = vjp_factors(
                    squares, c, dyh, dyh_d, count, eps, eps_mode, center, real(n), real(1)
                )
                factors[0, g], factors[1, g], factors[2, g] = c, mu, inv_s
                factors[3, g], factors[4, g], factors[5, g] = inverse, coef, centre
            for g in range(start, end):
                group_factors = (
                    factors[0, g],
                    factors[1, g],
                    factors[2, g],
                    factors[3, g],
                    factors[4, g],
                    factors[5, g],
                )
                _vjp_apply_group(
                    x,
                    dy,
                    gamma,
                    param_strides,
                    g // x.shape[2],
                    g % x.shape[2],
                    group_factors,
                    dx,
                    d_gamma,
                    d_beta,
                    chunk,
                )


@_jit
def statistics(
    x: Any,
    center: bool,
    floor: float,
    exponents: tuple[int, int],
    count: float,
    eps: float,
    eps_mode: int,
    out: Any,
    stack: Any,
    first: int,
    stop: int,
) -> None:
    """Per group ``g``: the mean of its values and ``1 / s`` of them in ``out[0, g]`` and
    ``out[1, g]``, the statistics :func:`normalize` takes (:func:`_group_statistics`; ``s``
    the divisor of the variance over ``count = n - correction`` with ``eps``, the
    ``inverse`` of :func:`vjp_factors`), for a caller that forms its own affine from them
    (batch renormalization). ``stack`` is ``(chunks, 2, DEPTH)`` scratch in the compute
    dtype.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    one, zero = real(1), real(0)
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    limits = _limits(n, floor, exponents[1] // 4)
    for chunk in range(first, stop):
        for g in range(chunk * groups // chunks, (chunk + 1) * groups // chunks):
            g0, g2 = g // x.shape[2], g % x.shape[2]
            c, mu, squares, _, _ = _group_statistics(
                x, None, x, (0, 0, 0, 0, 0), g0, g2, center, floor, exponents, limits, stack, chunk
            )
            inverse = vjp_factors(
                squares, c, zero, zero, count, eps, eps_mode, center, real(n), one
            )[1]
            out[0, g] = mu / c
            out[1, g] = inverse


# ---------------------------------------------------------------------------- units (AGC)


@_jit_reassoc
def _piece_products(u: Any, v: Any, zero: Any) -> Any:
    """``sum u * v`` over one piece, each value widened to the dtype of ``zero`` first."""
    real = type(zero)
    total = zero
    for i in range(u.shape[0]):
        total += real(u[i]) * real(v[i])
    return total


@_jit
def unit_products(u: Any, v: Any, out: Any, stack: Any, first: int, stop: int) -> None:
    """``out[r] = sum_j u[r, j] * v[r, j]`` in ``out``'s dtype, for each row ``r`` of the
    chunks ``first <= chunk < stop`` of ``stack.shape[0]``.

    Pairwise, as the groups' sums: pieces of :data:`PIECE` elements, added by cascade.
    """
    rows, chunks = u.shape[0], stack.shape[0]
    zero = out.dtype.type(0)
    for chunk in range(first, stop):
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            depth = count = 0
            for start in range(0, u.shape[1], PIECE):
                total = _piece_products(
                    u[r, start : start + PIECE], v[r, start : start + PIECE], zero
                )
                depth, count = _push(stack, chunk, depth, count, (total,))
            out[r] = _drain(stack, chunk, 0, depth, zero)


@_jit
def combine_units(
    u: Any, a: Any, v: Any, b: Any, out: Any, chunks: int, first: int, stop: int
) -> None:
    """``out[r, j] = u[r, j] * a[r] - v[r, j] * b[r]`` (``u[r, j] * a[r]`` where ``v`` is
    ``None``), computed in ``a``'s dtype and rounded once to ``out``'s, for each row ``r`` of
    the chunks ``first <= chunk < stop`` of ``chunks``."""
    rows = u.shape[0]
    real = a.dtype.type
    for chunk in range(first, stop):
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            row, result, ar = u[r], out[r], a[r]
            if v is None:
                for j in range(row.shape[0]):
                    result[j] = real(row[j]) * ar
            else:
                other, br = v[r], b[r]
                for j in range(row.shape[0]):
                    result[j] = real(row[j]) * ar - real(other[j]) * br
