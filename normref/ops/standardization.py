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
NaN. The statistics are sums of squares, not rescaled first: where they
overflow (:math:`|x|` beyond about :math:`10^{154}` in float64 arithmetic,
:math:`1.8 \cdot 10^{19}` in float32 under ``precision="native"``) the
divisor is infinite and the outputs are 0 or NaN, not the normalized values.
"""

from __future__ import annotations

import math
from typing import Any

from normref._lib.checks import check_correction, check_eps, check_eps_mode
from normref._lib.namespace import Array, Namespace
from normref._lib.reductions import sum_of_products
from normref.ops.base import GroupOp, XGrad, run_canonical, run_canonical_vjp
from normref.types import Precision


def group_count(x: Array, axes: tuple[int, ...]) -> int:
    """Number of samples per group: the product of ``x``'s sizes along ``axes``."""
    return math.prod(x.shape[a] for a in axes)


def mean_and_m2(
    xp: Namespace, x: Array, axes: tuple[int, ...], *, algorithm: str
) -> tuple[Array, Array, Array]:
    """Per-group mean, sum of squared deviations ``m2`` and centred values (means keep dims).

    ``algorithm="two_pass"`` is the exact form; ``"fast"`` and ``"fast_clamped"``
    model frameworks that use ``mean(x**2) - mean(x)**2``.
    """
    n = group_count(x, axes)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    if algorithm == "two_pass":
        m2 = sum_of_products(xp, centred, centred, axes)
    else:
        m2 = (xp.mean(x * x, axis=axes, keepdims=True) - mean * mean) * n
        if algorithm == "fast_clamped":
            m2 = xp.clip(m2, min=0.0)
    return mean, m2, centred


def mean_and_variance(
    xp: Namespace, x: Array, axes: tuple[int, ...], *, correction: int, algorithm: str
) -> tuple[Array, Array, Array]:
    """Per-group mean, variance ``m2 / (n - correction)`` and centred values (see
    :func:`mean_and_m2`)."""
    mean, m2, centred = mean_and_m2(xp, x, axes, algorithm=algorithm)
    return mean, m2 / (group_count(x, axes) - correction), centred


def divisor(xp: Namespace, v: Array, *, eps: float, eps_mode: str) -> Array:
    """The scale ``s(v)`` that ``eps_mode`` defines (see the module docstring)."""
    if eps_mode == "add":
        return xp.sqrt(v + eps)
    if eps_mode == "max":
        return xp.sqrt(xp.clip(v, min=eps))
    return xp.sqrt(v) + eps


def divisor_derivative(xp: Namespace, v: Array, s: Array, *, eps: float, eps_mode: str) -> Array:
    """``ds/dv`` for :func:`divisor` (see the module docstring for the kinks)."""
    if eps_mode == "add":
        return 0.5 / s
    if eps_mode == "max":
        return xp.where(v >= eps, 0.5 / s, xp.zeros_like(s))
    root = xp.sqrt(v)
    positive = root > 0
    return xp.where(
        positive, 0.5 / xp.where(positive, root, xp.ones_like(root)), xp.zeros_like(root)
    )


def variance_term(
    xp: Namespace, v: Array, s: Array, dy_dot_y: Array, *, count: int, eps: float, eps_mode: str
) -> Array:
    r"""The backward's coefficient :math:`k = -\frac{2 s'(v)}{s \cdot count} \sum_i \bar y_i y_i`.

    With :math:`y = (x - \mu)/s` (or :math:`x/s`) this is the module docstring's
    :math:`k`; ``dy_dot_y`` is :math:`\sum_i \bar y_i y_i` per group and ``count``
    is :math:`n - c`.
    """
    return (-2.0 / count) * divisor_derivative(xp, v, s, eps=eps, eps_mode=eps_mode) / s * dy_dot_y


def _center_forward(xp: Namespace, x: Array, axes: tuple[int, ...]) -> Array:
    return x - xp.mean(x, axis=axes, keepdims=True)


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
    _, v, y = mean_and_variance(xp, x, axes, correction=correction, algorithm=algorithm)
    y /= divisor(xp, v, eps=eps, eps_mode=eps_mode)  # in place: y is this function's own array
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
    _, v, y = mean_and_variance(xp, x, axes, correction=correction, algorithm=algorithm)
    s = divisor(xp, v, eps=eps, eps_mode=eps_mode)
    y /= s  # in place: the centred values become y
    dy_dot_y = sum_of_products(xp, dy, y, axes)
    k = variance_term(xp, v, s, dy_dot_y, count=n - correction, eps=eps, eps_mode=eps_mode)
    # dx = (dy - mean(dy)) / s + (x - mu) k with x - mu = y s, built in one new array
    dx = y * (k * s * s)
    dx += dy
    dx -= xp.mean(dy, axis=axes, keepdims=True)
    dx /= s
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
    _, v, _ = mean_and_variance(xp, x, axes, correction=correction, algorithm=algorithm)
    return x / divisor(xp, v, eps=eps, eps_mode=eps_mode)


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
    _, v, centred = mean_and_variance(xp, x, axes, correction=correction, algorithm=algorithm)
    s = divisor(xp, v, eps=eps, eps_mode=eps_mode)
    y = x / s
    dy_dot_y = sum_of_products(xp, dy, y, axes)
    k = variance_term(xp, v, s, dy_dot_y, count=n - correction, eps=eps, eps_mode=eps_mode)
    # dx = dy / s + (x - mu) k, built in the centred values' array
    dx = centred
    dx *= k * s
    dx += dy
    dx /= s
    return dx, y


def _rms_scale_forward(
    xp: Namespace, x: Array, axes: tuple[int, ...], *, eps: float, eps_mode: str
) -> Array:
    q = sum_of_products(xp, x, x, axes) / group_count(x, axes)
    return x / divisor(xp, q, eps=eps, eps_mode=eps_mode)


def _rms_scale_vjp(
    xp: Namespace, dy: Array, x: Array, axes: tuple[int, ...], *, eps: float, eps_mode: str
) -> tuple[Array, Array]:
    n = group_count(x, axes)
    q = sum_of_products(xp, x, x, axes) / n
    s = divisor(xp, q, eps=eps, eps_mode=eps_mode)
    y = x / s
    k = variance_term(
        xp, q, s, sum_of_products(xp, dy, y, axes), count=n, eps=eps, eps_mode=eps_mode
    )
    # dx = dy / s + x k with x = y s, built in one new array
    dx = y * (k * s * s)
    dx += dy
    dx /= s
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
        Canonical array of shape ``(G, M, D)``, ``M >= 2``; statistics over axis 1.
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

    No centring, so a group of one sample is allowed. Parameters as
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
