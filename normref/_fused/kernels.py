"""Numba kernels of the fused path: per-group sums and factors, and the passes that use them.

The forward (:func:`normalize`) takes each group's sums and factor and writes its
output at once, while the group's values are in cache (a set of groups' sums, then
their outputs, where groups lie in several runs; below); the backward
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
(:func:`_centred_from`); elsewhere a second pass, from cache, takes the squared
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

Groups whose samples lie in several runs (``x.shape[1] > 1``: batch norm's
channels, one run per example) are taken a set of groups at a time: each pass
reads, for one run index after another, the runs of every group of the set, in
memory order (:func:`_set_sums`). Runs of one group alone are short and far
apart, and each new one waits on memory before the hardware's prefetching
catches up; a set's runs lie side by side. Each group of the set keeps its own
cascade between runs, so its sums are those of reading it group by group, bit
for bit.

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
def _following(g0: int, g2: int, inner: int) -> tuple[int, int]:
    """The group after ``(g0, g2)``, ``inner`` the groups' inner extent: running through a
    set's groups so costs no integer division per group (measured 10 to 40% of short
    groups' time)."""
    return (g0, g2 + 1) if g2 + 1 < inner else (g0 + 1, 0)


@_jit_inline
def _pushed(
    dy: Any, stack: Any, slot: int, depth: int, count: int, pieces: tuple[Any, Any, Any, Any]
) -> tuple[int, int]:
    """:func:`_push` of a group's piece sums: the first two alone without a cotangent (``dy``
    ``None``), whose sums are 0."""
    if dy is None:
        return _push(stack, slot, depth, count, (pieces[0], pieces[1]))
    return _push(stack, slot, depth, count, pieces)


@_jit_inline
def _slab_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    s1: int,
    g2: int,
    scale: Any,
    shift: Any,
    stack: Any,
    slot: int,
    state: tuple[int, int, int, tuple[Any, Any, Any, Any]],
) -> tuple[int, int, int, tuple[Any, Any, Any, Any]]:
    """The rows ``x[g0, s1, g2]`` of group ``(g0, g2)`` added to its pairwise sums of
    ``d = x * scale - shift`` (``x - shift`` where ``scale`` is ``None``), of ``d**2`` and,
    with a cotangent ``dy`` (``None`` forward: 0), of ``dyh`` and ``dyh * d``
    (``dyh = dy * gamma``).

    The sums so far are ``state``: the depth and count of the cascade ``stack[slot]``, the
    elements of the piece being filled and its four sums. Short rows are gathered into one
    piece until it holds ``PIECE`` elements.
    """
    zero = stack.dtype.type(0)
    p0, p1, p2, p3, p4 = param_strides
    depth, count, filled, pieces = state
    for s3 in range(x.shape[3]):
        p = g0 * p0 + s1 * p1 + g2 * p2 + s3 * p3
        row = x[g0, s1, g2, s3]
        for start in range(0, row.shape[0], PIECE):
            end = min(start + PIECE, row.shape[0])
            if dy is None:
                total, squares = _piece_sums(row[start:end], scale, shift, zero)
                dyh_total = dyh_centred = zero
            elif p4:
                total, squares, dyh_total, dyh_centred = _piece_vjp_sums(
                    row[start:end],
                    dy[g0, s1, g2, s3, start:end],
                    gamma[p + start : p + end],
                    scale,
                    shift,
                    zero,
                )
            else:
                total, squares, dy_total, dy_centred = _piece_dy_sums(
                    row[start:end], dy[g0, s1, g2, s3, start:end], scale, shift, zero
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
                depth, count = _pushed(dy, stack, slot, depth, count, pieces)
                pieces, filled = (zero, zero, zero, zero), 0
    return depth, count, filled, pieces


@_jit_inline
def _drained(
    dy: Any, stack: Any, slot: int, state: tuple[int, int, int, tuple[Any, Any, Any, Any]]
) -> tuple[Any, Any, Any, Any]:
    """The four sums of a group whose every row :func:`_slab_sums` took (``state``); the
    cotangent's 0 without one (``dy`` ``None``)."""
    zero = stack.dtype.type(0)
    depth, count, filled, pieces = state
    if filled:
        depth, count = _pushed(dy, stack, slot, depth, count, pieces)
    if dy is None:
        return _drain(stack, slot, 0, depth, zero), _drain(stack, slot, 1, depth, zero), zero, zero
    return (
        _drain(stack, slot, 0, depth, zero),
        _drain(stack, slot, 1, depth, zero),
        _drain(stack, slot, 2, depth, zero),
        _drain(stack, slot, 3, depth, zero),
    )


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
    slot: int,
) -> tuple[Any, Any, Any, Any]:
    """Over group ``(g0, g2)``, row by row: the pairwise sums of :func:`_slab_sums`, with
    ``stack[slot]`` as the cascade."""
    zero = stack.dtype.type(0)
    state = (0, 0, 0, (zero, zero, zero, zero))
    for s1 in range(x.shape[1]):
        state = _slab_sums(
            x, dy, gamma, param_strides, g0, s1, g2, scale, shift, stack, slot, state
        )
    return _drained(dy, stack, slot, state)


@_jit_inline
def _set_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    first: int,
    stop: int,
    origin: tuple[int, int],
    stack: Any,
    progress: Any,
    factors: Any,
) -> None:
    """:func:`_group_sums` of the values as they are about ``factors[0, g]`` for each group
    ``first <= g < stop`` (a set; ``origin`` is group ``first`` as ``(g0, g2)``), into
    ``factors[1:5, g]``, bit for bit; read in memory order: for each ``s1``, the rows of
    every group of the set in turn.

    Each group of the set keeps its own cascade, ``stack[k]`` (``k = g - first``), its depth,
    count and filling in ``progress[k]`` and the sums of the piece it is filling in
    ``stack[k, :, DEPTH]`` between the rows of one ``s1`` and the next: the same pieces are
    added in the same pairs as row by row. (A group's samples split by an outer axis, as batch
    norm's by the batch, lie in short runs far apart; read a set at a time, they make runs as
    long as the set's.) For groups of several runs (``x.shape[1] > 1``).
    """
    zero = stack.dtype.type(0)
    last = x.shape[1] - 1
    for s1 in range(x.shape[1]):
        g0, g2 = origin
        for g in range(first, stop):
            k = g - first
            if s1 == 0:
                state = (0, 0, 0, (zero, zero, zero, zero))
            else:
                state = (
                    progress[k, 0],
                    progress[k, 1],
                    progress[k, 2],
                    (
                        stack[k, 0, DEPTH],
                        stack[k, 1, DEPTH],
                        stack[k, 2, DEPTH],
                        stack[k, 3, DEPTH],
                    ),
                )
            state = _slab_sums(
                x, dy, gamma, param_strides, g0, s1, g2, None, factors[0, g], stack, k, state
            )
            g0, g2 = _following(g0, g2, x.shape[2])
            if s1 == last:
                factors[1, g], factors[2, g], factors[3, g], factors[4, g] = _drained(
                    dy, stack, k, state
                )
            else:
                progress[k, 0], progress[k, 1], progress[k, 2] = state[0], state[1], state[2]
                for w in range(4):
                    stack[k, w, DEPTH] = state[3][w]


@_jit
def _shift_of(x: Any, g0: int, g2: int, scale: Any, zero: Any) -> Any:
    """The mean of the first :data:`SHIFT_SAMPLES` values of group ``(g0, g2)`` (of all of
    them in a smaller group) times ``scale`` (as they are where it is ``None``), in the dtype
    of ``zero``: a value near the group's mean, for :func:`_centred_from`; 0 where that mean
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
def _centred_from(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    g2: int,
    center: bool,
    scale: Any,
    shift: Any,
    sums: tuple[Any, Any, Any, Any],
    stack: Any,
    slot: int,
) -> tuple[Any, Any, Any, Any]:
    """Of the values ``x * scale`` of group ``(g0, g2)`` (``x`` where ``scale`` is ``None``),
    from their ``sums`` about ``shift`` (:func:`_group_sums`): their mean (0 unless
    ``center``), the sum of their squared deviations ``d**2`` and the sums of ``dyh`` and of
    ``dyh * d``.

    With ``e = x - shift`` and ``delta = sum(e) / n``: ``mean = shift + delta``,
    ``sum(d**2) = sum(e**2) - delta sum(e)`` and ``sum(dyh d) = sum(dyh e) - delta sum(dyh)``.
    Their cancellation is at most that of ``n delta**2`` against ``sum(d**2)``: where the
    shift lies within half a standard deviation of the mean (:data:`SHIFT_CANCELLATION`), the
    subtracted term is at most a quarter of the result, which so keeps the accuracy of sums
    about the mean; elsewhere (and for a NaN) a second pass takes them about the mean.
    """
    real = stack.dtype.type
    zero = real(0)
    total, squares, dyh, dyh_d = sums
    if not center:
        return zero, squares, dyh, dyh_d
    n = real(x.shape[1] * x.shape[3] * x.shape[4])
    delta = total / n
    mu = shift + delta
    deviations = squares - delta * total
    if n * delta * delta <= real(SHIFT_CANCELLATION) * deviations:
        return mu, deviations, dyh, dyh_d - delta * dyh
    _, squares, dyh, dyh_d = _group_sums(
        x, dy, gamma, param_strides, g0, g2, scale, mu, stack, slot
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
    shift: Any,
    sums: tuple[Any, Any, Any, Any],
    stack: Any,
    slot: int,
) -> tuple[Any, Any, Any, Any, Any]:
    """Of group ``(g0, g2)``, from the ``sums`` of its values as they are about ``shift`` (a
    value near its mean, :func:`_shift_of`, or 0 unless ``center``): its power of two ``c``,
    and of its values times it the mean (0 unless ``center``), the sum of squared deviations
    ``d**2`` and, with a cotangent ``dy`` (``None`` forward), the sums of ``dyh`` and of
    ``dyh * d``, ``d = x * c - mean`` (``dyh = dy * gamma``; :func:`_centred_from`).

    The sums of the values as they are (``c = 1``) stand where they are exact
    (:func:`_plain_is_exact`); elsewhere the sums are taken again of the values times
    :func:`_scale_of`'s power of two: the same arithmetic on values a power of two apart, so
    the same results scaled.
    """
    zero = stack.dtype.type(0)
    c = stack.dtype.type(1)
    mu, squares, dyh, dyh_d = _centred_from(
        x, dy, gamma, param_strides, g0, g2, center, None, shift, sums, stack, slot
    )
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    if not _plain_is_exact(mu, squares, n, limits):
        c = stack.dtype.type(_scale_of(_group_magnitude(x, g0, g2), floor, exponents))
        scaled_shift = _shift_of(x, g0, g2, c, zero) if center else zero
        scaled_sums = _group_sums(x, dy, gamma, param_strides, g0, g2, c, scaled_shift, stack, slot)
        mu, squares, dyh, dyh_d = _centred_from(
            x, dy, gamma, param_strides, g0, g2, center, c, scaled_shift, scaled_sums, stack, slot
        )
    return c, mu, squares, dyh, dyh_d


@_jit
def _set_first_sums(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    first: int,
    stop: int,
    origin: tuple[int, int],
    center: bool,
    stack: Any,
    progress: Any,
    factors: Any,
) -> None:
    """For each group ``first <= g < stop`` of a set of groups whose samples lie in several
    runs (``origin`` is group ``first`` as ``(g0, g2)``): its shift (:func:`_shift_of`, 0
    unless ``center``) in ``factors[0, g]`` and the sums of its values as they are about it
    in ``factors[1:5, g]``, taken a set at a time (:func:`_set_sums`)."""
    zero = stack.dtype.type(0)
    g0, g2 = origin
    for g in range(first, stop):
        factors[0, g] = _shift_of(x, g0, g2, None, zero) if center else zero
        g0, g2 = _following(g0, g2, x.shape[2])
    _set_sums(x, dy, gamma, param_strides, first, stop, origin, stack, progress, factors)


@_jit_inline
def _statistics_of(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g: int,
    g0: int,
    g2: int,
    center: bool,
    scaling: tuple[float, tuple[int, int], tuple[float, float]],
    stack: Any,
    factors: Any,
) -> tuple[Any, Any, Any, Any, Any]:
    """:func:`_group_statistics` of group ``g``, ``(g0, g2)``, ``scaling`` its ``floor``,
    ``exponents`` and ``limits``: from the shift and sums
    :func:`_set_first_sums` left in ``factors[0:5, g]`` where its samples lie in several runs,
    else from its own (its one run is then in cache for the caller's next pass over it). Any
    second pass uses ``stack[0]``."""
    floor, exponents, limits = scaling
    zero = stack.dtype.type(0)
    if x.shape[1] == 1:
        shift = _shift_of(x, g0, g2, None, zero) if center else zero
        sums = _group_sums(x, dy, gamma, param_strides, g0, g2, None, shift, stack, 0)
    else:
        shift = factors[0, g]
        sums = (factors[1, g], factors[2, g], factors[3, g], factors[4, g])
    return _group_statistics(
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
        shift,
        sums,
        stack,
        0,
    )


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
def _normalize_slab(
    x: Any,
    g0: int,
    s1: int,
    g2: int,
    c: Any,
    mu: Any,
    factor: Any,
    gamma: Any,
    beta: Any,
    param_strides: tuple[int, ...],
    y: Any,
) -> None:
    """``y = (x * c - mu) * factor * gamma + beta`` over the rows ``x[g0, s1, g2]``."""
    p0, p1, p2, p3, p4 = param_strides
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
    size: int,
    factors: Any,
    stack: Any,
    progress: Any,
    first: int,
    stop: int,
) -> None:
    """``y = (x * c - mean) / s * gamma + beta`` per group, a set of ``size`` groups at a time.

    Each group's statistics (:func:`_statistics_of`: its power of two ``c`` and of its
    values times it the mean and the sum of squares) and its factor ``1 / s``
    (:func:`forward_factor`, of ``count = n - correction`` and ``eps``) are computed, then
    the set's output written while its values are still in cache. The caller passes
    ``gamma`` of ones and ``beta`` of ``-0.0`` for absent parameters: multiplying by 1 and
    adding -0.0 change no value. ``means``, unless it is ``None``, receives each group's mean
    (of its values as they are). Scratch, in the compute dtype but ``progress``: where a
    group's samples lie in several runs (``x.shape[1] > 1``), ``factors`` ``(6, groups)``,
    ``stack`` ``(chunks, size, 4, DEPTH + 1)`` and ``progress`` ``(chunks, size, 3)``
    integers; else ``stack`` ``(chunks, 1, 2, DEPTH)`` (``(chunks, 1, 4, DEPTH)`` with a
    cotangent), the others unused.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    scaling = (floor, exponents, _limits(n, floor, exponents[1] // 4))
    runs = x.shape[1]
    for chunk in range(first, stop):
        chunk_stop = (chunk + 1) * groups // chunks
        chunk_stack, chunk_progress = stack[chunk], progress[chunk]
        for start in range(chunk * groups // chunks, chunk_stop, size):
            end = min(start + size, chunk_stop)
            origin = (start // x.shape[2], start % x.shape[2])
            if runs > 1:
                _set_first_sums(
                    x,
                    None,
                    gamma,
                    param_strides,
                    start,
                    end,
                    origin,
                    center,
                    chunk_stack,
                    chunk_progress,
                    factors,
                )
            g0, g2 = origin
            for g in range(start, end):
                c, mu, squares, _, _ = _statistics_of(
                    x, None, gamma, param_strides, g, g0, g2, center, scaling, chunk_stack, factors
                )
                factor = forward_factor(squares, c, count, eps, eps_mode, divides, real(1))
                if means is not None:
                    means[g] = mu / c
                if runs == 1:  # the group's one run is in cache
                    # (a loop, not s1 = 0: a constant index made this pass 40% slower)
                    for s1 in range(runs):
                        _normalize_slab(x, g0, s1, g2, c, mu, factor, gamma, beta, param_strides, y)
                else:
                    factors[0, g], factors[1, g], factors[2, g] = c, mu, factor
                g0, g2 = _following(g0, g2, x.shape[2])
            if runs == 1:
                continue
            for s1 in range(runs):
                g0, g2 = origin
                for g in range(start, end):
                    _normalize_slab(
                        x,
                        g0,
                        s1,
                        g2,
                        factors[0, g],
                        factors[1, g],
                        factors[2, g],
                        gamma,
                        beta,
                        param_strides,
                        y,
                    )
                    g0, g2 = _following(g0, g2, x.shape[2])


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
def _vjp_apply_slab(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    s1: int,
    g2: int,
    factors: tuple[Any, Any, Any, Any, Any, Any],
    dx: Any,
    d_gamma: Any,
    d_beta: Any,
    chunk: int,
) -> None:
    """Over the rows ``x[g0, s1, g2]`` of group ``(g0, g2)``: ``dx = ((dyh - centre) + d * k)
    * r`` with ``d = x * c - mu``, and its terms of the parameters' gradients (``dy * d *
    factor`` and ``dy``) added to row ``chunk`` of ``d_gamma`` and ``d_beta``; ``factors`` is
    ``(c, mu, factor, r, k, centre)``."""
    c, mu, factor, r, k, centre = factors
    zero = d_gamma.dtype.type(0)
    p0, p1, p2, p3, p4 = param_strides
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
    size: int,
    factors: Any,
    stack: Any,
    progress: Any,
    dx: Any,
    d_gamma: Any,
    d_beta: Any,
    first: int,
    stop: int,
) -> None:
    """``dx = ((dyh - dyh_mean) + d * coef) * inverse`` and the parameters' gradients, a set
    of ``size`` groups at a time.

    For each group of a set: its sums (:func:`_statistics_of`) and the factors of its
    gradient (:func:`vjp_factors`), in ``factors[:, g]``: ``c``, the mean, ``inv_s``,
    ``inverse``, ``coef`` and ``dyh_mean``; then for the set its gradients
    (:func:`_vjp_apply_slab`), ``d = x * c - mean`` being the scaled centred values. The
    caller sizes the sets so that their ``x`` and ``dy`` stay in cache between the two
    passes, which read them from memory once; a group's factors, a chain of divisions and
    roots, overlap the next group's sums instead of holding up the group's own output.

    ``dyh = dy * gamma`` is the cotangent of the normalized values (``gamma`` of ones where
    the layer has none); ``stack`` and ``progress`` are scratch as :func:`normalize`'s.
    ``d_gamma`` and ``d_beta`` are ``(chunks, P)`` partial sums (zeros on entry) of
    ``dy * x_hat`` and ``dy`` per parameter, one row per chunk of groups; their caller adds
    the rows.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    scaling = (floor, exponents, _limits(n, floor, exponents[1] // 4))
    for chunk in range(first, stop):
        chunk_stop = (chunk + 1) * groups // chunks
        chunk_stack, chunk_progress = stack[chunk], progress[chunk]
        for start in range(chunk * groups // chunks, chunk_stop, size):
            end = min(start + size, chunk_stop)
            origin = (start // x.shape[2], start % x.shape[2])
            if x.shape[1] > 1:
                _set_first_sums(
                    x,
                    dy,
                    gamma,
                    param_strides,
                    start,
                    end,
                    origin,
                    center,
                    chunk_stack,
                    chunk_progress,
                    factors,
                )
            g0, g2 = origin
            for g in range(start, end):
                c, mu, squares, dyh, dyh_d = _statistics_of(
                    x, dy, gamma, param_strides, g, g0, g2, center, scaling, chunk_stack, factors
                )
                inv_s, inverse, coef, centre = vjp_factors(
                    squares, c, dyh, dyh_d, count, eps, eps_mode, center, real(n), real(1)
                )
                factors[0, g], factors[1, g], factors[2, g] = c, mu, inv_s
                factors[3, g], factors[4, g], factors[5, g] = inverse, coef, centre
                g0, g2 = _following(g0, g2, x.shape[2])
            for s1 in range(x.shape[1]):
                g0, g2 = origin
                for g in range(start, end):
                    group_factors = (
                        factors[0, g],
                        factors[1, g],
                        factors[2, g],
                        factors[3, g],
                        factors[4, g],
                        factors[5, g],
                    )
                    _vjp_apply_slab(
                        x,
                        dy,
                        gamma,
                        param_strides,
                        g0,
                        s1,
                        g2,
                        group_factors,
                        dx,
                        d_gamma,
                        d_beta,
                        chunk,
                    )
                    g0, g2 = _following(g0, g2, x.shape[2])


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
    size: int,
    factors: Any,
    stack: Any,
    progress: Any,
    first: int,
    stop: int,
) -> None:
    """Per group ``g``: the mean of its values and ``1 / s`` of them in ``out[0, g]`` and
    ``out[1, g]``, the statistics :func:`normalize` takes (:func:`_statistics_of`, a set of
    ``size`` groups at a time; ``s`` the divisor of the variance over ``count = n -
    correction`` with ``eps``, the ``inverse`` of :func:`vjp_factors`), for a caller that
    forms its own affine from them (batch renormalization); and its power of two ``c``, the
    mean and the sum of squared deviations of its values times ``c`` in ``out[2, g]``,
    ``out[3, g]`` and ``out[4, g]`` (for a caller that combines groups' sums, as switchable
    norm's). Scratch as :func:`normalize`'s.
    """
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    real = stack.dtype.type
    one, zero = real(1), real(0)
    n = float(x.shape[1] * x.shape[3] * x.shape[4])
    scaling = (floor, exponents, _limits(n, floor, exponents[1] // 4))
    for chunk in range(first, stop):
        chunk_stop = (chunk + 1) * groups // chunks
        chunk_stack, chunk_progress = stack[chunk], progress[chunk]
        for start in range(chunk * groups // chunks, chunk_stop, size):
            end = min(start + size, chunk_stop)
            origin = (start // x.shape[2], start % x.shape[2])
            if x.shape[1] > 1:
                _set_first_sums(
                    x,
                    None,
                    x,
                    (0, 0, 0, 0, 0),
                    start,
                    end,
                    origin,
                    center,
                    chunk_stack,
                    chunk_progress,
                    factors,
                )
            g0, g2 = origin
            for g in range(start, end):
                c, mu, squares, _, _ = _statistics_of(
                    x, None, x, (0, 0, 0, 0, 0), g, g0, g2, center, scaling, chunk_stack, factors
                )
                inverse = vjp_factors(
                    squares, c, zero, zero, count, eps, eps_mode, center, real(n), one
                )[1]
                out[0, g] = mu / c
                out[1, g] = inverse
                out[2, g] = c
                out[3, g] = mu
                out[4, g] = squares
                g0, g2 = _following(g0, g2, x.shape[2])


@_jit
def normalize_with(
    x: Any,
    factors: Any,
    c: Any,
    gamma: Any,
    beta: Any,
    param_strides: tuple[int, ...],
    y: Any,
    chunks: int,
    first: int,
    stop: int,
) -> None:
    """``y = (x * c - mu) * factor * gamma + beta`` per group ``g``, of its given mean
    ``mu = factors[0, g]`` and ``factor = factors[1, g]`` (of the values times the power of two
    ``c``), for the chunks ``first <= chunk < stop`` of ``chunks`` (a layer that mixes groups'
    statistics)."""
    groups = x.shape[0] * x.shape[2]
    for chunk in range(first, stop):
        start = chunk * groups // chunks
        g0, g2 = start // x.shape[2], start % x.shape[2]
        for g in range(start, (chunk + 1) * groups // chunks):
            for s1 in range(x.shape[1]):
                _normalize_slab(
                    x, g0, s1, g2, c, factors[0, g], factors[1, g], gamma, beta, param_strides, y
                )
            g0, g2 = _following(g0, g2, x.shape[2])


@_jit
def cotangent_sums(
    x: Any, dy: Any, one: Any, c: Any, shifts: Any, out: Any, stack: Any, first: int, stop: int
) -> None:
    """Per group ``g``: the sums of ``dy`` and of ``dy * (x * c - shifts[g])`` in ``out[0, g]``
    and ``out[1, g]``, pairwise (:func:`_group_sums`), for the chunks ``first <= chunk < stop``
    of ``stack.shape[0]`` (scratch ``(chunks, 1, 4, DEPTH)`` in the compute dtype; ``one`` is
    ``[1]`` in it, the parameter every group's ``dy`` is taken times; ``c`` a power of two)."""
    groups = x.shape[0] * x.shape[2]
    chunks = stack.shape[0]
    for chunk in range(first, stop):
        start = chunk * groups // chunks
        g0, g2 = start // x.shape[2], start % x.shape[2]
        for g in range(start, (chunk + 1) * groups // chunks):
            # a scale of 1 multiplies nothing
            if c == 1:
                sums = _group_sums(
                    x, dy, one, (0, 0, 0, 0, 0), g0, g2, None, shifts[g], stack[chunk], 0
                )
            else:
                sums = _group_sums(
                    x, dy, one, (0, 0, 0, 0, 0), g0, g2, c, shifts[g], stack[chunk], 0
                )
            out[0, g], out[1, g] = sums[2], sums[3]
            g0, g2 = _following(g0, g2, x.shape[2])


@_jit_inline
def _affine_gradient_slab(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    g0: int,
    s1: int,
    g2: int,
    c: Any,
    factors: tuple[Any, Any, Any, Any],
    dx: Any,
) -> None:
    """``dx = (dy * gamma) * r + (x * c - mu) * k + o`` over the rows ``x[g0, s1, g2]``;
    ``factors`` is ``(mu, r, k, o)``."""
    mu, r, k, o = factors
    p0, p1, p2, p3, p4 = param_strides
    for s3 in range(x.shape[3]):
        p = g0 * p0 + s1 * p1 + g2 * p2 + s3 * p3
        row, dy_row, out = x[g0, s1, g2, s3], dy[g0, s1, g2, s3], dx[g0, s1, g2, s3]
        if p4 == 0:
            gm = gamma[p]
            for i in range(row.shape[0]):
                out[i] = ((dy_row[i] * gm) * r + (row[i] * c - mu) * k) + o
        else:
            gamma_row = gamma[p : p + row.shape[0]]
            for i in range(row.shape[0]):
                out[i] = ((dy_row[i] * gamma_row[i]) * r + (row[i] * c - mu) * k) + o


@_jit
def affine_gradient(
    x: Any,
    dy: Any,
    gamma: Any,
    param_strides: tuple[int, ...],
    c: Any,
    factors: Any,
    dx: Any,
    chunks: int,
    first: int,
    stop: int,
) -> None:
    """``dx = (dy * gamma) * r + (x * c - mu) * k + o`` per group ``g``, ``(mu, r, k, o)`` its
    ``factors[0:4, g]`` and ``c`` a power of two, for the chunks ``first <= chunk < stop`` of
    ``chunks``: the gradient of a layer whose groups' mean and divisor depend on other groups'
    (switchable norm)."""
    groups = x.shape[0] * x.shape[2]
    for chunk in range(first, stop):
        start = chunk * groups // chunks
        g0, g2 = start // x.shape[2], start % x.shape[2]
        for g in range(start, (chunk + 1) * groups // chunks):
            group_factors = (factors[0, g], factors[1, g], factors[2, g], factors[3, g])
            for s1 in range(x.shape[1]):
                _affine_gradient_slab(x, dy, gamma, param_strides, g0, s1, g2, c, group_factors, dx)
            g0, g2 = _following(g0, g2, x.shape[2])


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
