r"""Orthogonalizing weight normalizations: OWN (Huang et al., 2018) and ONI (Huang et al., 2020).

Each acts on groups of ``group_size`` output units (``out_axis``; all units
when ``group_size`` is ``None``), each unit a row of :math:`V` (``k x N``, ``N``
the fan-in), centred over its fan-in: :math:`V_c = V - \mu \mathbf 1^\top`.
With :math:`S = V_c V_c^\top + \epsilon I` (a Gram matrix: no division by the
fan-in, unlike a covariance):

* OWN: :math:`W = S^{-1/2} V_c`, so that :math:`W W^\top = V_c V_c^\top S^{-1}
  = I - \epsilon S^{-1}`: orthonormal rows up to :math:`\epsilon/\lambda_{min}`,
  which needs :math:`V_c V_c^\top` nonsingular, :math:`k \le N - 1` (centring
  removes one rank: with :math:`k = N` one eigenvalue of :math:`S` is
  :math:`\epsilon` and :math:`W W^\top` has an eigenvalue near 0);
* ONI, as the authors' code (``ONINorm``) computes it: :math:`S' = S/\lVert S \rVert_F`,
  :math:`V' = V_c/\sqrt{\lVert S \rVert_F}`, :math:`B_0 = I`,
  :math:`B_t = \tfrac32 B_{t-1} - \tfrac12 B_{t-1}^3 S'` and :math:`W = B_T V'`,
  which tends to OWN's :math:`W` as :math:`T` grows (the eigenvalues of
  :math:`S'` lie in :math:`(0, 1]`, where the iteration converges, slowly for
  small ones).

Both are whitening of the units as samples: with :math:`X = V^\top` (``N``
samples of ``k`` features) and :math:`C = X_c^\top X_c / N`,
:math:`S = N (C + \tfrac{\epsilon}{N} I)`, so

.. math::

    W = \frac{1}{\sqrt N}\, M\big(C + \tfrac{\epsilon}{N} I\big)\, V_c,

:math:`M` ZCA's :math:`\Sigma^{-1/2}` for OWN and, for ONI, the Newton–Schulz
iteration of :math:`\Sigma/\lVert\Sigma\rVert_F` over :math:`\sqrt{\lVert\Sigma\rVert_F}`
(:data:`normref.ops.whitening.FROBENIUS_NEWTON`; IterNorm's divides by the
trace). Both are computed so: the whitening layer on the partition of the
weight into groups of units (:func:`normref.partition.whitening_partition`
with the unit axis as the channel axis), with the constant
:math:`1/\sqrt N` as its affine. Their backward is the whitening backward of
:mod:`normref.ops.whitening`: ZCA's divided differences, exact at repeated
eigenvalues, and the unrolled Newton–Schulz steps.

Scaling. The whitening operations take their covariance of each group's
values times a power of two (:mod:`normref.ops.whitening`), with
:math:`\epsilon/N` scaled alike: :math:`W` is exact from the smallest
subnormal weight to the largest finite one, and unchanged, exactly, when
:math:`V` is multiplied by :math:`2^k` and :math:`\epsilon` by :math:`4^k`.

Conventions. The ONI code's ``norm_groups`` is a *number* of groups, not a
size: ``norm_groups=g`` is ``group_size = units / g`` here. The paper's
Algorithm 1 normalizes :math:`V = V_c/\lVert V_c \rVert_F` first (so
:math:`S = V V^\top` has trace 1: IterNorm's trace normalization) and adds no
:math:`\epsilon`; the code adds :math:`\epsilon I` and divides by the
Frobenius norm, which is what this function computes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from normref._lib.checks import check_eps, check_positive_int
from normref._lib.namespace import Array, namespace_of
from normref._lib.units import check_units, unit_axis
from normref.layers.compose import Layer, normalize, normalize_vjp
from normref.ops.base import GroupOp
from normref.ops.whitening import FROBENIUS_NEWTON, WHITENING_OPS, whitening_op
from normref.partition import fan_in, fan_in_axes, whitening_partition
from normref.types import Precision

ONI_WHITENING = whitening_op(FROBENIUS_NEWTON)
"""The operation of :func:`oni_weight_norm` on each group of units."""


class OrthogonalGrad(NamedTuple):
    """Gradient of :func:`orthogonal_weight_norm` or :func:`oni_weight_norm` for ``v``."""

    v: Array


def _orthogonal_layer(
    name: str,
    v: Array,
    op: GroupOp,
    group_size: int | None,
    eps: float,
    out_axis: object,
    **params: Any,
) -> Layer:
    """The whitening layer of groups of ``group_size`` units, ``eps / N`` and ``1 / sqrt(N)``."""
    eps = check_eps(eps)
    shape = tuple(v.shape)
    axis = unit_axis(out_axis, shape, name="v", minimum_rank=2)
    units = shape[axis]
    size = units if group_size is None else check_positive_int(group_size, name="group_size")
    if units % size:
        msg = (
            f"group_size={group_size} must divide the number of output units "
            f"v.shape[{axis}]={units}"
        )
        raise ValueError(msg)
    check_units(shape, fan_in_axes(len(shape), axis), name="v")
    n = fan_in(shape, axis)
    return Layer(
        name,
        whitening_partition(shape, size, axis),
        op,
        {"eps": eps / n, "correction": 0, **params},
        (axis,),
        f"v of shape {shape}, group_size={group_size}, out_axis={out_axis}",
        1.0 / math.sqrt(n),
    )


def _own_layer(v: Array, group_size: int | None, eps: float, out_axis: object) -> Layer:
    return _orthogonal_layer(
        "orthogonal_weight_norm", v, WHITENING_OPS["zca"], group_size, eps, out_axis
    )


def _oni_layer(
    v: Array, iterations: object, group_size: int | None, eps: float, out_axis: object
) -> Layer:
    steps = check_positive_int(iterations, name="iterations")
    return _orthogonal_layer(
        "oni_weight_norm", v, ONI_WHITENING, group_size, eps, out_axis, iterations=steps
    )


def orthogonal_weight_norm(
    v: Array,
    *,
    group_size: int | None = None,
    eps: float = 1e-5,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Orthogonal weight normalization (OWN): :math:`W = (V_c V_c^\top + \epsilon I)^{-1/2} V_c`
    per group of units (module docstring).

    Parameters
    ----------
    v
        Proxy weight, rank >= 2 (``(out, in)``, ``OIHW``, ...), fan-in >= 2.
    group_size
        Units per group; it must divide the number of units. ``None``: all units
        one group. Orthonormal rows need ``group_size <= fan_in - 1``.
    eps
        Finite, > 0, added to the diagonal of :math:`V_c V_c^\top`.
    out_axis
        0 for ``OIHW``/``(out, in)``, -1 for ``HWIO``/``(in, out)``.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``v``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.orthogonal_weight_norm(w)
    >>> print(np.round(y @ y.T, 4))  # orthonormal rows
    [[ 1. -0.]
     [-0.  1.]]

    References
    ----------
    - Huang, L., Liu, X., Lang, B., Yu, A. W., Wang, Y. and Li, B. (2018). Orthogonal weight
      normalization: solution to optimization over multiple dependent Stiefel manifolds in
      deep neural networks. AAAI. https://arxiv.org/abs/1709.06079
    """
    namespace_of(v=v)
    return normalize(_own_layer(v, group_size, eps, out_axis), v, None, None, precision)


def orthogonal_weight_norm_vjp(
    dy: Array,
    v: Array,
    *,
    group_size: int | None = None,
    eps: float = 1e-5,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> OrthogonalGrad:
    """VJP of :func:`orthogonal_weight_norm`: ZCA whitening's backward, exact at repeated
    eigenvalues (:mod:`normref.ops.whitening`).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.orthogonal_weight_norm(w)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.orthogonal_weight_norm_vjp(dy, w)
    >>> print(g._fields)
    ('v',)
    >>> print(np.round(g[0], 4))
    [[ 0.0506 -0.0651  0.0145]
     [-0.046  -0.0209  0.0668]]

    References
    ----------
    - Huang, L., Liu, X., Lang, B., Yu, A. W., Wang, Y. and Li, B. (2018). Orthogonal weight
      normalization: solution to optimization over multiple dependent Stiefel manifolds in
      deep neural networks. AAAI. https://arxiv.org/abs/1709.06079
    """
    namespace_of(v=v, dy=dy)
    layer = _own_layer(v, group_size, eps, out_axis)
    return OrthogonalGrad(normalize_vjp(layer, dy, v, None, None, precision).x)


def oni_weight_norm(
    v: Array,
    *,
    iterations: int = 5,
    group_size: int | None = None,
    eps: float = 1e-5,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Orthogonalization by Newton's iteration (ONI), as the authors' ``ONINorm`` computes it.

    :math:`W = B_T V_c / \sqrt{\lVert S \rVert_F}` per group of units, with
    :math:`S = V_c V_c^\top + \epsilon I` and :math:`T` Newton–Schulz steps on
    :math:`S/\lVert S \rVert_F` (module docstring).

    Parameters
    ----------
    v
        Proxy weight, rank >= 2, fan-in >= 2.
    iterations
        :math:`T \ge 1` (the code's ``T``, default 5).
    group_size
        Units per group (``None``: all); the code's ``norm_groups`` is
        ``units / group_size``.
    eps
        Finite, > 0 (the code's 1e-5).
    out_axis
        0 for ``OIHW``/``(out, in)``, -1 for ``HWIO``/``(in, out)``.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``v``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.oni_weight_norm(w, iterations=7)
    >>> print(np.round(y @ y.T, 4))  # nearly orthonormal rows
    [[ 1. -0.]
     [-0.  1.]]

    References
    ----------
    - Huang, L., Liu, L., Zhu, F., Wan, D., Yuan, Z., Li, B. and Shao, L. (2020).
      Controllable orthogonalization in training DNNs. CVPR.
      https://arxiv.org/abs/2004.00917
    """
    namespace_of(v=v)
    return normalize(_oni_layer(v, iterations, group_size, eps, out_axis), v, None, None, precision)


def oni_weight_norm_vjp(
    dy: Array,
    v: Array,
    *,
    iterations: int = 5,
    group_size: int | None = None,
    eps: float = 1e-5,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> OrthogonalGrad:
    """VJP of :func:`oni_weight_norm`: back through the unrolled Newton–Schulz steps.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.oni_weight_norm(w, iterations=7)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.oni_weight_norm_vjp(dy, w, iterations=7)
    >>> print(g._fields)
    ('v',)
    >>> print(np.round(g[0], 4))
    [[ 0.0506 -0.0651  0.0145]
     [-0.046  -0.0208  0.0668]]

    References
    ----------
    - Huang, L., Liu, L., Zhu, F., Wan, D., Yuan, Z., Li, B. and Shao, L. (2020).
      Controllable orthogonalization in training DNNs. CVPR.
      https://arxiv.org/abs/2004.00917
    """
    namespace_of(v=v, dy=dy)
    layer = _oni_layer(v, iterations, group_size, eps, out_axis)
    return OrthogonalGrad(normalize_vjp(layer, dy, v, None, None, precision).x)
