r"""Local response normalization (Krizhevsky et al., 2012): each value divided by a power of the
sum of squares over a window of neighbouring channels.

.. math::

    y_c = x_c \,/\, D_c^{\beta}, \qquad
    D_c = k + \frac{\alpha}{n} \sum_{j \in W(c)} x_j^2,

along the channel axis ``axis``, ``n`` = ``size``, the sum zero-padded beyond
the first and last channels. The window of channel ``c`` is

* ``window="torch"`` (``torch.nn.functional.local_response_norm``, the paper):
  :math:`[c - \lfloor n/2 \rfloor,\ c + \lfloor (n-1)/2 \rfloor]`;
* ``window="onnx"`` (ONNX ``LRN``):
  :math:`[c - \lfloor (n-1)/2 \rfloor,\ c + \lceil (n-1)/2 \rceil]`;

the same for odd ``size``; for even ``size`` torch's window has one more
channel before ``c``, ONNX's one more after. TensorFlow's
``tf.nn.local_response_normalization(depth_radius=r, bias, alpha, beta)``
sums over :math:`[c - r, c + r]` with ``alpha`` not divided by the window's
size: it is ``size = 2 r + 1``, ``alpha = alpha_tf * (2 r + 1)``, ``k = bias``,
``axis=-1`` here.

Backward (derived by hand): :math:`W^\top(j)`, the channels whose window holds
``j``, is the window with its two extents swapped, and

.. math::

    \bar x_j = \bar y_j D_j^{-\beta}
        - \frac{2 \alpha \beta}{n}\, x_j \sum_{c \in W^\top(j)} \bar y_c\, x_c\, D_c^{-\beta - 1}.

Every term of :math:`D` is positive, so it has no cancellation; with
:math:`k > 0` it is positive everywhere.

Scaling. The sums of squares are taken of the values times a power of two
:math:`2^{-e}` per position (the channels at one index of the other axes,
which every window of that position sums; ``normref._lib.scaling``; from
their largest finite magnitude, so that a NaN or an infinity reaches only the
windows that hold it), and
:math:`\alpha = m_\alpha 2^{a}`, so that :math:`\frac{\alpha}{n}\sum x^2
= T\,2^{E}` with :math:`T = \frac{m_\alpha}{n}\sum (2^{-e}x)^2` and
:math:`E = a + 2e`. Where :math:`E` or :math:`k` lies far from the dtype's
limits, :math:`D` is formed as it is; elsewhere it is held as
:math:`D = u\,2^F`, :math:`F = \max(E, \log_2 k)`, and
:math:`D^{-\beta} = u^{-\beta}\,2^{-\beta F}` with :math:`\beta F` split
into an integer and a fraction (exactly): no denominator overflows or
underflows where the output is representable, and multiplying ``x`` by
:math:`2^k` and ``alpha`` by :math:`4^{-k}` multiplies ``y`` by :math:`2^k`
and leaves the gradient unchanged, exactly.

Memory. Each position (the channels at one index of the other axes) is
computed apart from the others, so both directions run a block of positions
at a time on libraries that write arrays in place
(``normref._lib.in_place``): the temporaries are a block's,
whatever the input's size, and the results are the same bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from array_api_compat import device

from normref._lib.checks import check_eps, check_finite_number, check_positive_int, normalize_axis
from normref._lib.in_place import assembled, blocks_of, written
from normref._lib.namespace import Array, compute_dtype, namespace_of, output_dtype, to_dtype
from normref._lib.scaling import (
    finite_max_magnitude,
    power_of_two_factors,
    power_of_two_scale,
    scaled_copy,
    times_power_of_two,
)
from normref.ops.base import XGrad
from normref.types import Precision

WINDOWS = ("torch", "onnx")
"""The conventions for the window of an even ``size``."""


def window_extents(size: int, window: str) -> tuple[int, int]:
    """How many channels before and after ``c`` its window holds."""
    if window == "torch":
        return size // 2, (size - 1) // 2
    return (size - 1) // 2, size // 2


def _window_sums(
    xp: Any, a: Array, axis: int, before: int, after: int, *, squares: bool = False
) -> Array:
    """``sum(a[c - before : c + after + 1])`` along ``axis`` for every ``c``, zero-padded (of
    ``a * a`` where ``squares``): an array of its own, which the caller may update in place.

    The padded array's slices are added in order, from the window's first channel to its
    last (a slice, not an assignment: jax and Dask arrays are not written in place).
    """
    channels = a.shape[axis]

    def zeros(count: int) -> Array:
        shape = tuple(count if i == axis else s for i, s in enumerate(a.shape))
        return xp.zeros(shape, dtype=a.dtype, device=device(a))

    def channels_from(offset: int) -> Array:
        index = tuple(
            slice(offset, offset + channels) if i == axis else slice(None) for i in range(a.ndim)
        )
        return padded[index]

    padded = xp.concat([zeros(before), a, zeros(after)], axis=axis)
    if squares:
        padded *= padded  # in place: the padded copy is this function's own array
    if before + after == 0:
        return padded
    total = channels_from(0) + channels_from(1)
    for offset in range(2, before + after + 1):
        total += channels_from(offset)
    return total


def _checked(
    x: Array,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    axis: int,
    window: str,
    **more: Array,
) -> tuple[Any, int, int, float, float, float]:
    xp = namespace_of(**more, x=x)
    size = check_positive_int(size, name="size")
    alpha = check_finite_number(alpha, name="alpha")
    beta = check_finite_number(beta, name="beta")
    if alpha < 0 or beta < 0:
        msg = f"alpha and beta must be finite numbers >= 0, got alpha={alpha!r}, beta={beta!r}"
        raise ValueError(msg)
    k = check_eps(k, name="k")
    if window not in WINDOWS:
        msg = f"window must be one of {WINDOWS}, got {window!r}"
        raise ValueError(msg)
    return xp, size, normalize_axis(axis, x.ndim), alpha, beta, k


class _Positions(NamedTuple):
    r"""Per position (the ``(A, 1, B)`` arrays of the ``(A, C, B)`` view), in the compute
    dtype, what makes the scaled denominators and results (module docstring): the power of
    two ``scale`` :math:`2^{-e}`; :math:`2^{E - F}` in two steps (``sum_factors``), by which
    :math:`\frac{m_\alpha}{n} \sum X^2` becomes the first term of :math:`u`, and
    ``k_term`` :math:`k\,2^{-F}` its second; the ``fraction`` :math:`2^{-r}`; and in two
    steps each :math:`2^{e - q}` (``y_factors``) and :math:`2^{-q}` (``dx_factors``), with
    :math:`\alpha = m_\alpha 2^a` (``alpha_mantissa``), :math:`E = a + 2e`, :math:`D = u\,2^F`
    and :math:`\beta F = q + r`."""

    scale: Array
    sum_factors: tuple[Array, Array]
    k_term: Array
    fraction: Array
    y_factors: tuple[Array, Array]
    dx_factors: tuple[Array, Array]
    alpha_mantissa: float

    def at(self, block: tuple[slice, ...]) -> _Positions:
        """The values at the positions of ``block``."""
        return _Positions(
            self.scale[block],
            (self.sum_factors[0][block], self.sum_factors[1][block]),
            self.k_term[block],
            self.fraction[block],
            (self.y_factors[0][block], self.y_factors[1][block]),
            (self.dx_factors[0][block], self.dx_factors[1][block]),
            self.alpha_mantissa,
        )


def _split(value: float) -> tuple[float, float]:
    """``value`` as ``high + low``, ``high`` of 26 significant bits: ``high * n`` is exact for
    integers ``n`` of up to 27 bits, ``low`` carries the rest."""
    if value == 0.0 or not math.isfinite(value):
        return value, 0.0
    exponent = math.frexp(value)[1]
    high = math.ldexp(round(math.ldexp(value, 26 - exponent)), exponent - 26)
    return high, value - high


def _positions(
    xp: Any,
    x: Array,
    blocks: list[tuple[slice, ...]],
    dtype: Any,
    alpha: float,
    beta: float,
    k: float,
) -> _Positions:
    """The :class:`_Positions` of ``x`` (the ``(A, C, B)`` view), its largest finite magnitudes
    taken a block at a time."""
    kept = (x.shape[0], 1, x.shape[2])
    largest = assembled(xp, blocks, [finite_max_magnitude(xp, x[b], (1,)) for b in blocks], kept)
    scale = power_of_two_scale(xp, to_dtype(xp, largest, dtype))
    shift = -xp.round(xp.log2(scale))
    alpha_mantissa, alpha_exp = math.frexp(alpha)
    k_mantissa, k_exp = math.frexp(k)
    # alpha sum(x^2) / n = sums 2^E: E is the same for every channel of a position
    big = alpha_exp + 2.0 * shift
    # D itself where both its terms are far from overflow and underflow, else D / 2^F
    top = float(math.frexp(float(xp.finfo(dtype).max))[1] // 2 - 2)
    moderate = (xp.abs(big) <= top) & (abs(k_exp) <= top)
    exponent = xp.where(moderate, xp.zeros_like(big), xp.maximum(big, float(k_exp)))
    high, low = _split(beta)
    whole = xp.floor(high * exponent)
    return _Positions(
        scale,
        power_of_two_factors(xp, big - exponent, dtype),
        times_power_of_two(xp, xp.full_like(exponent, k_mantissa), k_exp - exponent),
        2.0 ** (-((high * exponent - whole) + low * exponent)),
        power_of_two_factors(xp, shift - whole, dtype),
        power_of_two_factors(xp, -whole, dtype),
        alpha_mantissa,
    )


def _mantissas(xp: Any, values: Array, at: _Positions, size: int, before: int, after: int) -> Array:
    r""":math:`u = \frac{m_\alpha}{n} \sum_{W} X^2\, 2^{E - F} + k\,2^{-F}` of a block's
    scaled values: an array of the caller's own."""
    sums = _window_sums(xp, values, 1, before, after, squares=True)
    # in place: the window sums are this function's own array
    sums *= at.alpha_mantissa / size
    for factor in at.sum_factors:
        sums *= factor
    sums += at.k_term
    return sums


def _times(a: Array, fraction: Array, factors: tuple[Array, Array]) -> Array:
    """``a * fraction`` times both ``factors``, in ``a``'s memory (the caller's own array)."""
    a *= fraction
    for factor in factors:
        a *= factor
    return a


def _position_blocks(
    xp: Any, x: Array, axis: int
) -> tuple[tuple[int, int, int], list[tuple[slice, ...]]]:
    """The ``(A, C, B)`` view's shape of ``x`` with ``axis`` as ``C``, and its blocks of
    positions (every channel at about ``BLOCK_ELEMENTS / C`` positions)."""
    shape = tuple(x.shape)
    view = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))
    return view, blocks_of(xp, view, (0, 2))


def local_response_norm(
    x: Array,
    size: int,
    *,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    axis: int = 1,
    window: str = "torch",
    precision: Precision = "highest",
) -> Array:
    r"""Local response normalization across channels (module docstring).

    Parameters
    ----------
    x
        Input with the channel axis at ``axis`` (any rank >= 1).
    size
        The window's number of channels, an integer >= 1.
    alpha, beta
        Finite, >= 0 (torch's and ONNX's defaults 1e-4 and 0.75).
    k
        Finite, > 0 (torch's ``k``, ONNX's ``bias``; default 1).
    axis
        The channel axis.
    window
        ``"torch"`` or ``"onnx"``: where an even window's extra channel lies.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.local_response_norm(x, 2, alpha=1.0, beta=0.5)
    >>> print(np.round(y[0], 4))
    [[0.8165 1.1547 1.3333]
     [1.2247 1.27   0.    ]]

    References
    ----------
    - Krizhevsky, A., Sutskever, I. and Hinton, G. E. (2012). ImageNet classification with
      deep convolutional neural networks. NeurIPS.
    """
    xp, size, channel, alpha, beta, k = _checked(x, size, alpha, beta, k, axis, window)
    dtype = compute_dtype(xp, x.dtype, precision)
    out_dtype = output_dtype(xp, precision, x)
    before, after = window_extents(size, window)
    view, blocks = _position_blocks(xp, x, channel)
    x3 = xp.reshape(x, view)
    positions = _positions(xp, x3, blocks, dtype, alpha, beta, k)

    def forward(block: tuple[slice, ...]) -> Array:
        at = positions.at(block)
        values = scaled_copy(xp, x3[block], dtype, at.scale)
        # y = X u^-beta 2^-r 2^(e - q), in place: u^-beta is this function's own array
        y = xp.pow(_mantissas(xp, values, at, size, before, after), -beta)
        y *= values
        return to_dtype(xp, _times(y, at.fraction, at.y_factors), out_dtype)

    return xp.reshape(written(xp, blocks, forward, view, out_dtype, x), x.shape)


def local_response_norm_vjp(
    dy: Array,
    x: Array,
    size: int,
    *,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    axis: int = 1,
    window: str = "torch",
    precision: Precision = "highest",
) -> XGrad:
    r"""VJP of :func:`local_response_norm` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.local_response_norm(x, 2, alpha=1.0, beta=0.5)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.local_response_norm_vjp(dy, x, 2, alpha=1.0, beta=0.5)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0.4979 -0.1351 -0.0236]
      [-0.0464 -0.0134 -0.0303]]
    <BLANKLINE>
     [[ 0.0909  0.2043  0.0389]
      [ 0.1225  0.0419  0.0208]]]

    References
    ----------
    - Krizhevsky, A., Sutskever, I. and Hinton, G. E. (2012). ImageNet classification with
      deep convolutional neural networks. NeurIPS.
    """
    xp, size, channel, alpha, beta, k = _checked(x, size, alpha, beta, k, axis, window, dy=dy)
    if tuple(dy.shape) != tuple(x.shape):
        msg = f"dy must have shape {tuple(x.shape)} (the shape of x), got {tuple(dy.shape)}"
        raise ValueError(msg)
    dtype = compute_dtype(xp, x.dtype, precision)
    before, after = window_extents(size, window)
    view, blocks = _position_blocks(xp, x, channel)
    x3, dy3 = xp.reshape(x, view), xp.reshape(dy, view)
    positions = _positions(xp, x3, blocks, dtype, alpha, beta, k)

    def backward(block: tuple[slice, ...]) -> Array:
        at = positions.at(block)
        values = scaled_copy(xp, x3[block], dtype, at.scale)
        mantissas = _mantissas(xp, values, at, size, before, after)
        dy_c = to_dtype(xp, dy3[block], dtype)
        powered = xp.pow(mantissas, -beta)  # u^-beta
        # in place from here: powered, values and the window sums are this function's own arrays
        each = dy_c * values
        each *= powered / mantissas
        through = _window_sums(xp, each, 1, after, before)
        # alpha x_j x_c D^(-beta-1) = m X_j X_c u^(-beta-1) 2^(E - F) 2^-r 2^-q
        for factor in at.sum_factors:
            through *= factor
        dx = powered
        dx *= dy_c
        values *= 2.0 * at.alpha_mantissa * beta / size
        values *= through
        dx -= values
        return to_dtype(xp, _times(dx, at.fraction, at.dx_factors), x.dtype)

    return XGrad(xp.reshape(written(xp, blocks, backward, view, x.dtype, x), x.shape))
