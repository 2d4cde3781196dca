r"""The standardization family: center, scale by std, scale by RMS, standardize.

Each operation acts per group on the canonical ``(G, M, D)`` layout: for every
group ``g`` and feature ``d`` the statistics are taken over the ``M`` samples
``x[g, :, d]``. Notation for one group (``n = M`` samples ``x_i``):

.. math::

    \mu = \frac1n \sum_i x_i, \qquad
    v = \frac{1}{n - c} \sum_i (x_i - \mu)^2, \qquad
    q = \frac1n \sum_i x_i^2

with the variance correction ``c`` (0: biased, the default; 1: unbiased), and
the divisor ``s(v)`` chosen by ``eps_mode``:

* ``"add"``: :math:`s = \sqrt{v + \epsilon}` (torch, flax, keras, onnx);
* ``"max"``: :math:`s = \sqrt{\max(v, \epsilon)}`;
* ``"add_std"``: :math:`s = \sqrt{v} + \epsilon`.

Backward (derived by hand; :math:`P(g) = g - \operatorname{mean}(g)` is the
centring projection, :math:`\bar y` the cotangent):

* center: :math:`y = x - \mu`, :math:`\bar x = P(\bar y)`.
* standardize: :math:`y = (x - \mu)/s`,
  :math:`\bar x = P(\bar y)/s + (x - \mu)\,k`,
  :math:`k = -\frac{2 s'(v)}{s^2 (n - c)} \sum_i \bar y_i (x_i - \mu)`.
  (The variance's derivative :math:`2 (x_i - \mu)/(n - c)` has no mean term
  because :math:`\sum_i (x_i - \mu) = 0`.)
* scale: :math:`y = x/s`, :math:`\bar x = \bar y/s + (x - \mu)\,k`,
  :math:`k = -\frac{2 s'(v)}{s^2 (n - c)} \sum_i \bar y_i x_i`.
* rms_scale: :math:`y = x/s(q)`, :math:`\bar x = \bar y/s + x\,k`,
  :math:`k = -\frac{2 s'(q)}{s^2 n} \sum_i \bar y_i x_i`.

with :math:`s'(v) = 1/(2s)` for ``"add"``; :math:`1/(2s)` where
:math:`v \ge \epsilon` and 0 below for ``"max"`` (the ``max`` is taken as
differentiable in its first argument at the tie); and :math:`1/(2\sqrt v)` for
``"add_std"``, defined as 0 at :math:`v = 0`, where the input is constant, the
centred values are all 0 and the term :math:`(x - \mu)k` vanishes in the limit.

So constant groups give finite outputs and gradients in every mode. A NaN, or
an infinity in a group whose statistics centre it, makes the whole group's
output and gradient NaN; under rms_scale an infinity makes its own output NaN
and its group's finite values 0 (:math:`x/\infty`, the limit), the gradient
NaN.

Scaling. The statistics are taken of each group's values times a power of two
:math:`c` (``normref._lib.scaling``), chosen from the group's largest
:math:`|x_i|` or, where that is smaller, from the scale of :math:`\epsilon`
(:math:`\sqrt\epsilon`, or :math:`\epsilon` for ``"add_std"``), with
:math:`\epsilon` scaled alike (:math:`c^2\epsilon`, :math:`c\,\epsilon`): the
scaled group has the normalized values of the unscaled one, exactly, and its
sums of squares neither overflow nor underflow from the smallest subnormal
:math:`|x|` to the largest finite one. Where the scaled variance is 0 (a
constant group) :math:`\epsilon` alone sets the divisor, and it is taken
unscaled, so it keeps its meaning where :math:`c^2\epsilon` underflows. A
result is infinite only where its exact value overflows the dtype.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from normref._lib.checks import check_correction, check_eps, check_eps_mode
from normref._lib.namespace import Array, Namespace
from normref._lib.reductions import sum_of_products
from normref._lib.scaling import group_scale, scaled_mean
from normref.ops.base import GroupOp, XGrad, run_canonical, run_canonical_vjp
from normref.types import Precision


def group_count(x: Array, axes: tuple[int, ...]) -> int:
    """Number of samples per group: the product of ``x``'s sizes along ``axes``."""
    return math.prod(x.shape[a] for a in axes)


def mean_and_m2(
    xp: Namespace, x: Array, axes: tuple[int, ...], *, algorithm: str, overwrite: bool = False
) -> tuple[Array, Array, Array]:
    """Per-group mean, sum of squared deviations ``m2`` and centred values (means keep dims).

    ``algorithm="two_pass"`` is the exact form; ``"fast"`` and ``"fast_clamped"``
    model frameworks that use ``mean(x**2) - mean(x)**2``. With ``overwrite``,
    ``x`` is the caller's own array and is centred in place (the centred values
    returned are ``x``). The sums are plain: a caller whose values may be
    large or tiny passes them scaled (:class:`Scaled`).
    """
    n = group_count(x, axes)
    mean = xp.mean(x, axis=axes, keepdims=True)
    if algorithm != "two_pass":
        m2 = (xp.mean(x * x, axis=axes, keepdims=True) - mean * mean) * n
        if algorithm == "fast_clamped":
            m2 = xp.clip(m2, min=0.0)
    if overwrite:
        x -= mean
        centred = x
    else:
        centred = x - mean
    if algorithm == "two_pass":
        m2 = sum_of_products(xp, centred, centred, axes)
    return mean, m2, centred


def divisor(xp: Namespace, v: Array, *, eps: float | Array, eps_mode: str) -> Array:
    """The scale ``s(v)`` that ``eps_mode`` defines (see the module docstring)."""
    if eps_mode == "add":
        return xp.sqrt(v + eps)
    if eps_mode == "max":
        if isinstance(eps, float):
            return xp.sqrt(xp.clip(v, min=eps))
        return xp.sqrt(xp.maximum(v, eps))
    return xp.sqrt(v) + eps


def divisor_slope(xp: Namespace, v: Array, s: Array, *, eps: float | Array, eps_mode: str) -> Array:
    """``s'(v) s``, the divisor's derivative times the divisor: 1/2 for ``"add"``; 1/2 where
    ``v >= eps`` and 0 below for ``"max"``; ``s / (2 sqrt(v))`` for ``"add_std"``, 0 at
    ``v = 0`` (see the module docstring for the kinks). A pure number: it does not change
    when ``v``, ``s`` and ``eps`` are scaled together."""
    half = xp.full_like(s, 0.5)
    if eps_mode == "add":
        return half
    if eps_mode == "max":
        return xp.where(v >= eps, half, xp.zeros_like(s))
    root = xp.sqrt(v)
    positive = root > 0
    return xp.where(
        positive, s / (2.0 * xp.where(positive, root, xp.ones_like(root))), xp.zeros_like(s)
    )


def divisor_derivative(
    xp: Namespace, v: Array, s: Array, *, eps: float | Array, eps_mode: str
) -> Array:
    """``ds/dv`` for :func:`divisor`: :func:`divisor_slope` over ``s``."""
    return divisor_slope(xp, v, s, eps=eps, eps_mode=eps_mode) / s


def variance_term(
    xp: Namespace,
    v: Array,
    s: Array,
    dy_dot_y: Array,
    *,
    count: int,
    eps: float | Array,
    eps_mode: str,
) -> Array:
    r"""The backward's :math:`K = k s^2 = -\frac{2 s'(v) s}{count} \sum_i \bar y_i y_i`.

    With :math:`y = (x - \mu)/s` (or :math:`x/s`) and the module docstring's
    :math:`k`, :math:`\bar x = (P(\bar y) + y K)/s` (:math:`\bar y + y K` without
    centring); ``dy_dot_y`` is :math:`\sum_i \bar y_i y_i` per group and ``count``
    is :math:`n - c`. :math:`K` does not change when the group is scaled.
    """
    return (-2.0 / count) * divisor_slope(xp, v, s, eps=eps, eps_mode=eps_mode) * dy_dot_y


def eps_magnitude(eps: float, eps_mode: str) -> float:
    """The magnitude of ``x`` at which ``eps`` matters: ``sqrt(eps)`` where it is added to (or
    compared with) a variance, ``eps`` where it is added to a standard deviation."""
    return eps if eps_mode == "add_std" else math.sqrt(eps)


def scaled_eps(eps: float, eps_mode: str, scale: Array) -> Array:
    """``eps`` for values times ``scale``: times ``scale**2`` with a variance, ``scale`` with a
    standard deviation (computed so that no step rounds where the result does not)."""
    return eps * scale if eps_mode == "add_std" else (eps * scale) * scale


class Scaled(NamedTuple):
    r"""A group's statistics taken of its values times a power of two (the module docstring).

    ``scale`` is :math:`c` per group (keeping dims); ``values`` the scaled values,
    centred where asked (the caller's own array); ``v`` their variance (or mean
    square); ``s`` their divisor, with :math:`\epsilon` scaled alike, except
    where ``v`` is 0, where it is :math:`c\,s(0)` of the unscaled :math:`\epsilon`;
    ``inverse`` :math:`1/s` of the unscaled values (also where :math:`c\,s(0)`
    underflows).
    """

    scale: Array
    values: Array
    v: Array
    s: Array
    inverse: Array


def scaled_divisors(
    xp: Namespace, v: Array, scale: Array, *, eps: float, eps_mode: str
) -> tuple[Array, Array]:
    """``(s, inverse)`` of :class:`Scaled` for the variance ``v`` of values times ``scale``."""
    s = divisor(xp, v, eps=scaled_eps(eps, eps_mode, scale), eps_mode=eps_mode)
    # s(0), eps alone: 0 only for weight norm's eps = 0, whose all-zero units it masks
    unscaled = divisor(xp, xp.zeros_like(v), eps=eps, eps_mode=eps_mode)
    constant = v == 0
    s = xp.where(constant, scale * unscaled, s)
    # 1 / s(0) only where it is used: for a tiny eps it overflows, and says so
    ones = xp.ones_like(s)
    return s, xp.where(
        constant,
        1.0 / xp.where(constant, nonzero_divisor(xp, unscaled), ones),
        scale / nonzero_divisor(xp, s),
    )


def scaled_statistics(
    xp: Namespace,
    x: Array,
    axes: tuple[int, ...],
    *,
    centre: bool,
    eps: float,
    eps_mode: str,
    correction: int = 0,
    algorithm: str = "two_pass",
) -> Scaled:
    """The statistics of each group of ``x`` over ``axes``, scaled (:class:`Scaled`).

    ``centre``: the centred variance, and the values centred; else the mean square
    (rms_scale), the values as they are. ``x`` is not modified.
    """
    scale = group_scale(xp, x, axes, floor=eps_magnitude(eps, eps_mode))
    values = x * scale
    if centre:
        _, m2, values = mean_and_m2(xp, values, axes, algorithm=algorithm, overwrite=True)
        v = m2 / (group_count(x, axes) - correction)
    else:
        v = sum_of_products(xp, values, values, axes) / group_count(x, axes)
    s, inverse = scaled_divisors(xp, v, scale, eps=eps, eps_mode=eps_mode)
    return Scaled(scale, values, v, s, inverse)


def nonzero_divisor(xp: Namespace, s: Array) -> Array:
    """``s`` where it is not 0, else 1: a divisor of centred values that are all 0 (the
    unscaled eps alone, underflowed to 0 once scaled), whose quotients are 0 anyway. NaN
    stays NaN."""
    return xp.where(s == 0, xp.ones_like(s), s)


def _center_forward(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    return x - scaled_mean(xp, x, axes)


def _center_vjp(xp: Namespace, dy: Array, x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    return _center_forward(xp, dy, axes), _center_forward(xp, x, axes)


def _standardize_forward(
    xp: Namespace,
    x: Array,
    axes: tuple[int, ...],
    *,
    eps: float,
    eps_mode: str,
    correction: int,
    algorithm: str,
) -> Array:
    stats = scaled_statistics(
        xp,
        x,
        axes,
        centre=True,
        eps=eps,
        eps_mode=eps_mode,
        correction=correction,
        algorithm=algorithm,
    )
    y = stats.values
    y /= nonzero_divisor(xp, stats.s)  # in place: the scaled values are this function's own array
    return y


def _standardize_vjp(
    xp: Namespace,
    dy: Array,
    x: Array,
    axes: tuple[int, ...],
    *,
    eps: float,
    eps_mode: str,
    correction: int,
    algorithm: str,
) -> tuple[Array, Array]:
    n = group_count(x, axes)
    stats = scaled_statistics(
        xp,
        x,
        axes,
        centre=True,
        eps=eps,
        eps_mode=eps_mode,
        correction=correction,
        algorithm=algorithm,
    )
    y = stats.values
    y /= nonzero_divisor(xp, stats.s)  # in place: the centred values become y
    dy_dot_y = sum_of_products(xp, dy, y, axes)
    eps_s = scaled_eps(eps, eps_mode, stats.scale)
    k = variance_term(
        xp, stats.v, stats.s, dy_dot_y, count=n - correction, eps=eps_s, eps_mode=eps_mode
    )
    # dx = (dy - mean(dy) + y K) / s, built in one new array
    dx = y * k
    dx += dy
    dx -= xp.mean(dy, axis=axes, keepdims=True)
    dx *= stats.inverse
    return dx, y


def _scale_forward(
    xp: Namespace,
    x: Array,
    axes: tuple[int, ...],
    *,
    eps: float,
    eps_mode: str,
    correction: int,
    algorithm: str,
) -> Array:
    stats = scaled_statistics(
        xp,
        x,
        axes,
        centre=True,
        eps=eps,
        eps_mode=eps_mode,
        correction=correction,
        algorithm=algorithm,
    )
    return (x * stats.scale) / stats.s


def _scale_vjp(
    xp: Namespace,
    dy: Array,
    x: Array,
    axes: tuple[int, ...],
    *,
    eps: float,
    eps_mode: str,
    correction: int,
    algorithm: str,
) -> tuple[Array, Array]:
    n = group_count(x, axes)
    stats = scaled_statistics(
        xp,
        x,
        axes,
        centre=True,
        eps=eps,
        eps_mode=eps_mode,
        correction=correction,
        algorithm=algorithm,
    )
    y = (x * stats.scale) / stats.s
    eps_s = scaled_eps(eps, eps_mode, stats.scale)
    k = variance_term(
        xp,
        stats.v,
        stats.s,
        sum_of_products(xp, dy, y, axes),
        count=n - correction,
        eps=eps_s,
        eps_mode=eps_mode,
    )
    # dx = (dy + (x - mu) / s K) / s, built in the centred values' array
    dx = stats.values
    dx /= nonzero_divisor(xp, stats.s)
    dx *= k
    dx += dy
    dx *= stats.inverse
    return dx, y


def _rms_scale_forward(
    xp: Namespace, x: Array, axes: tuple[int, ...], *, eps: float, eps_mode: str
) -> Array:
    stats = scaled_statistics(xp, x, axes, centre=False, eps=eps, eps_mode=eps_mode)
    y = stats.values
    y /= nonzero_divisor(xp, stats.s)  # in place: the scaled values are this function's own array
    return y


def _rms_scale_vjp(
    xp: Namespace, dy: Array, x: Array, axes: tuple[int, ...], *, eps: float, eps_mode: str
) -> tuple[Array, Array]:
    n = group_count(x, axes)
    stats = scaled_statistics(xp, x, axes, centre=False, eps=eps, eps_mode=eps_mode)
    y = stats.values
    y /= nonzero_divisor(xp, stats.s)  # in place: the scaled values become y
    eps_s = scaled_eps(eps, eps_mode, stats.scale)
    k = variance_term(
        xp,
        stats.v,
        stats.s,
        sum_of_products(xp, dy, y, axes),
        count=n,
        eps=eps_s,
        eps_mode=eps_mode,
    )
    # dx = (dy + y K) / s, built in one new array
    dx = y * k
    dx += dy
    dx *= stats.inverse
    return dx, y


CENTER = GroupOp("center", _center_forward, _center_vjp, needs_variance=False)
STANDARDIZE = GroupOp("standardize", _standardize_forward, _standardize_vjp, needs_variance=True)
SCALE = GroupOp("scale", _scale_forward, _scale_vjp, needs_variance=True)
RMS_SCALE = GroupOp("rms_scale", _rms_scale_forward, _rms_scale_vjp, needs_variance=False)


def std_params(eps: float, eps_mode: str, correction: int) -> dict[str, Any]:
    """Checked parameters of the operations that divide by a standard deviation."""
    return {
        "eps": check_eps(eps),
        "eps_mode": check_eps_mode(eps_mode),
        "correction": check_correction(correction),
    }


def rms_params(eps: float, eps_mode: str) -> dict[str, Any]:
    """Checked parameters of :func:`rms_scale`."""
    return {"eps": check_eps(eps), "eps_mode": check_eps_mode(eps_mode)}


def center(x: Array, *, precision: Precision = "highest") -> Array:
    r"""Subtract the per-group mean: :math:`y = x - \mu`.

    Parameters
    ----------
    x
        Canonical array of shape ``(G, M, D)``; the mean is over axis 1.
    precision
        ``"highest"`` (float64), ``"native"`` or a convention to model
        (see :mod:`normref._lib.namespace`).

    Returns
    -------
    Array of ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.center(x)
    >>> print(np.round(y, 4))
    [[[ 0.5  1.5  0.5]
      [-0.5 -1.5 -0.5]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical(CENTER, x, precision, {})


def center_vjp(dy: Array, x: Array, *, precision: Precision = "highest") -> XGrad:
    r"""VJP of :func:`center`: :math:`\bar x = \bar y - \operatorname{mean}(\bar y)`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.center(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.center_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0.6 -0.6 -0.6]
      [ 0.6  0.6  0.6]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical_vjp(CENTER, dy, x, precision, {})


def standardize(
    x: Array,
    *,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Per-group standardization: :math:`y = (x - \mu)/s(v)`.

    Parameters
    ----------
    x
        Canonical array of shape ``(G, M, D)``, ``M >= 1`` (``M > correction``);
        statistics over axis 1. A group of one sample has the biased variance 0, its
        output 0 and its gradient 0. ``M = 0`` is an error; ``G = 0`` or ``D = 0`` gives an
        empty output.
    eps
        Finite, > 0; enters as ``eps_mode`` says.
    eps_mode
        ``"add"`` (:math:`\sqrt{v+\epsilon}`), ``"max"`` (:math:`\sqrt{\max(v,\epsilon)}`)
        or ``"add_std"`` (:math:`\sqrt v + \epsilon`).
    correction
        0 for the biased variance :math:`\frac1n\sum (x-\mu)^2`, 1 for the unbiased.
    precision
        ``"highest"`` (float64), ``"native"`` or a convention to model.

    Returns
    -------
    Array of ``x``'s shape and dtype; each group has mean 0 and variance
    :math:`v/s^2` (1 up to the effect of ``eps``).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.standardize(x)
    >>> print(np.round(y, 4))
    [[[ 1.  1.  1.]
      [-1. -1. -1.]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical(STANDARDIZE, x, precision, std_params(eps, eps_mode, correction))


def standardize_vjp(
    dy: Array,
    x: Array,
    *,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> XGrad:
    r"""VJP of :func:`standardize`: :math:`\bar x = P(\bar y)/s + (x-\mu)k` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.standardize(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.standardize_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0. -0. -0.]
      [ 0.  0.  0.]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical_vjp(STANDARDIZE, dy, x, precision, std_params(eps, eps_mode, correction))


def scale(
    x: Array,
    *,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Divide by the per-group standard deviation without centring: :math:`y = x/s(v)`.

    Parameters are those of :func:`standardize`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.scale(x)
    >>> print(np.round(y, 4))
    [[[ 2.      1.3333  7.9998]
      [ 0.     -0.6667  5.9999]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical(SCALE, x, precision, std_params(eps, eps_mode, correction))


def scale_vjp(
    dy: Array,
    x: Array,
    *,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> XGrad:
    r"""VJP of :func:`scale`: :math:`\bar x = \bar y/s + (x-\mu)k` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.scale(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.scale_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-1.0000e-04 -0.0000e+00 -4.7997e+00]
      [-1.5999e+00  0.0000e+00  6.3997e+00]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return run_canonical_vjp(SCALE, dy, x, precision, std_params(eps, eps_mode, correction))


def rms_scale(
    x: Array, *, eps: float = 1e-6, eps_mode: str = "add", precision: Precision = "highest"
) -> Array:
    r"""Divide by the per-group root mean square: :math:`y = x/s(q)`, :math:`q = \frac1n\sum x^2`.

    Parameters as
    :func:`standardize` (no ``correction``).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.rms_scale(x)
    >>> print(np.round(y, 4))
    [[[ 1.4142  1.2649  1.1314]
      [ 0.     -0.6325  0.8485]]]

    References
    ----------
    - Zhang, B. and Sennrich, R. (2019). Root mean square layer normalization. NeurIPS.
      https://arxiv.org/abs/1910.07467
    """
    return run_canonical(RMS_SCALE, x, precision, rms_params(eps, eps_mode))


def rms_scale_vjp(
    dy: Array,
    x: Array,
    *,
    eps: float = 1e-6,
    eps_mode: str = "add",
    precision: Precision = "highest",
) -> XGrad:
    r"""VJP of :func:`rms_scale`: :math:`\bar x = \bar y/s + x k` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]]])  # one group of 2 samples x 3 features
    >>> y = normref.ops.rms_scale(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.rms_scale_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0.      0.0759 -0.1561]
      [ 0.2828  0.1518  0.2082]]]

    References
    ----------
    - Zhang, B. and Sennrich, R. (2019). Root mean square layer normalization. NeurIPS.
      https://arxiv.org/abs/1910.07467
    """
    return run_canonical_vjp(RMS_SCALE, dy, x, precision, rms_params(eps, eps_mode))
