r"""Normalizations of weights: weight standardization, Scaled WS, weight norm, spectral norm.

Each acts per *output unit* of a weight ``w``: the slice at one index of
``out_axis`` (0 for torch/onnx ``(out, in)`` and ``OIHW``, -1 for jax/flax
``(in, out)`` and ``HWIO``), whose other axes are its *fan-in* of size ``N``.
In the layout of :mod:`normref.partition` that is the per-channel partition
with the unit axis as the channel (:func:`normref.partition.unit_partition`):
``G`` = number of units, ``M`` = ``N``, ``D`` = 1. So weight standardization is
the standardize operation of :mod:`normref.ops.standardization` on that
partition, and weight norm is its ``rms_scale`` operation; neither has math of
its own. For one unit :math:`w_1..w_N` with mean :math:`\mu` and variance
:math:`v = \frac{1}{N-c}\sum (w_i - \mu)^2`:

* weight standardization (Qiao et al., 2019): :math:`\hat w = (w - \mu)/s(v)`;
* Scaled WS (Brock et al., 2021): :math:`\hat w = \gamma\, g\, (w - \mu)/(\sigma \sqrt N)`;
* weight norm (Salimans & Kingma, 2016): :math:`w = g\, v / \sqrt{\|v\|^2 + \epsilon}`;
* spectral norm (Miyato et al., 2018): :math:`w / \sigma_{max}(W)` with
  :math:`\sigma_{max}` estimated by power iteration.

Scaled WS and weight norm reduce to those operations through two identities
(exact in real arithmetic):

.. math::

    \frac{1}{\sqrt{\max(N v, \epsilon)}} = \frac{1}{\sqrt N \sqrt{\max(v, \epsilon/N)}},
    \qquad
    \frac{1}{\sqrt{\|v\|^2 + \epsilon}} = \frac{1}{\sqrt N \sqrt{q + \epsilon/N}},
    \quad q = \tfrac1N \textstyle\sum_i v_i^2,

so NFNets' ``max_fan_in`` placement is the ``"max"`` mode with
:math:`\epsilon/N`, and weight norm is ``rms_scale`` with :math:`\epsilon/N`,
each followed by the scalar :math:`1/\sqrt N`. The backward of each is
therefore the backward of that operation (derived in
:mod:`normref.ops.standardization`) with the per-unit parameter folded into
the affine; ``docs/weights.md`` derives them.

Every statistic is taken of each unit times a power of two
(``normref._lib.scaling``), and spectral norm's power iteration holds
:math:`W`, :math:`u` and :math:`v` as mantissas and exponents, so that results
are exact from the smallest subnormal weight to the largest finite one, also
where :math:`\epsilon` dominates the normalization of :math:`u` and :math:`v`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import device

from normref._lib.checks import check_eps, check_finite_number, check_int, check_shape
from normref._lib.namespace import (
    Array,
    Namespace,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
)
from normref._lib.scaling import max_magnitude, power_of_two_scale, times_power_of_two
from normref._lib.units import check_units, norms, unit_axis
from normref.conventions import L2_EPS_MODES, POWER_ITERATION_ORDERS, SCALED_WS_EPS_MODES
from normref.layers.compose import Layer, normalize, normalize_vjp
from normref.ops.standardization import RMS_SCALE, STANDARDIZE, std_params
from normref.partition import fan_in, fan_in_axes, unit_partition
from normref.types import Precision


class WeightGrad(NamedTuple):
    """Gradient of an operation whose one differentiable argument is the weight ``w``."""

    w: Array


class ScaledWSGrads(NamedTuple):
    """Gradients of :func:`scaled_weight_standardize` (``gain`` is ``None`` when it was)."""

    w: Array
    gain: Array | None


class WeightNormGrads(NamedTuple):
    """Gradients of :func:`weight_norm` (``g`` is ``None`` when it was)."""

    v: Array
    g: Array | None


Guard = Callable[[Namespace, Layer, Array], Array | None]
"""``guard(xp, layer, v) -> marked``: the units (kept dims) where a layer would divide by 0
(``None``: none can)."""


class SpectralNormResult(NamedTuple):
    """Result of :func:`spectral_norm`: the normalized weight and the new state."""

    weight: Array
    u: Array
    v: Array
    sigma: Array


# ---------------------------------------------------------------------------
# A weight normalization as a layer: partition by units + operation + per-unit affine.


def _unit_layer(
    name: str,
    shape: tuple[int, ...],
    arg: str,
    axis: int,
    op: Any,
    params: dict[str, Any],
    scale: float = 1.0,
) -> Layer:
    """The layer of ``op`` on the output units along ``axis`` (already validated), its
    affine times the constant ``scale``."""
    return Layer(
        name,
        unit_partition(shape, axis),
        op,
        params,
        (axis,),
        f"{arg} of shape {shape}, out_axis={axis}",
        scale,
        arg,
    )


def _check_unit_param(param: Array | None, layer: Layer, *, name: str, weight: str) -> None:
    """``param`` (``None`` or one value per output unit of ``weight``) must have shape ``(O,)``."""
    if param is not None:
        axis = layer.param_axes[0]
        what = f"one per output unit, {weight}.shape[{axis}]"
        check_shape(param.shape, (layer.partition.shape[axis],), name=name, what=what)


def _check_dy(dy: Array, w: Array, name: str) -> None:
    check_shape(dy.shape, w.shape, name="dy", what=f"the shape of {name}")


# ---------------------------------------------------------------------------
# Weight standardization


def _ws_layer(w: Array, out_axis: object, eps: float, eps_mode: str, correction: int) -> Layer:
    params = std_params(eps, eps_mode, correction)
    shape = tuple(w.shape)
    axis = unit_axis(out_axis, shape, name="w", minimum_rank=2)
    return _unit_layer("weight_standardize", shape, "w", axis, STANDARDIZE, params)


def weight_standardize(
    w: Array,
    *,
    out_axis: int = 0,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Weight standardization: each output unit to zero mean and unit variance over its fan-in.

    .. math::

        \hat w = \frac{w - \mu}{s(v)}, \qquad
        \mu = \frac1N \sum_i w_i, \quad v = \frac{1}{N - c} \sum_i (w_i - \mu)^2

    per output unit, with the divisor ``s`` set by ``eps_mode``:

    * ``"add"``: :math:`s = \sqrt{v + \epsilon}` (timm ``StdConv2d``, ``eps=1e-6``,
      biased variance);
    * ``"max"``: :math:`s = \sqrt{\max(v, \epsilon)}`;
    * ``"add_std"``: :math:`s = \sqrt v + \epsilon` (the original WS code of
      Qiao et al., with ``correction=1`` and ``eps=1e-5``).

    This is :func:`normref.ops.standardize` on the per-unit partition.

    Parameters
    ----------
    w
        Weight of rank >= 2; each unit needs a fan-in of at least one value (two with
        ``correction=1``).
    out_axis
        The axis of output units: 0 for ``(out, in)`` and ``OIHW`` (torch,
        onnx), -1 for ``(in, out)`` and ``HWIO`` (jax, flax).
    eps
        Finite, > 0.
    eps_mode
        ``"add"``, ``"max"`` or ``"add_std"``.
    correction
        0: biased variance; 1: unbiased.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``w``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.weight_standardize(w)
    >>> print(np.round(y, 4))
    [[ 0.3922  0.9806 -1.3728]
     [ 0.2673 -1.3363  1.069 ]]

    References
    ----------
    - Qiao, S., Wang, H., Liu, C., Shen, W. and Yuille, A. (2019). Micro-batch training with
      batch-channel normalization and weight standardization.
      https://arxiv.org/abs/1903.10520
    """
    namespace_of(w=w)
    return normalize(_ws_layer(w, out_axis, eps, eps_mode, correction), w, None, None, precision)


def weight_standardize_vjp(
    dy: Array,
    w: Array,
    *,
    out_axis: int = 0,
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> WeightGrad:
    r"""VJP of :func:`weight_standardize`: the standardize backward per output unit.

    :math:`\bar w = P(\bar y)/s + (w - \mu)\,k`, with :math:`P` the centring
    projection over the fan-in and
    :math:`k = -\frac{2 s'(v)}{s^2 (N - c)} \sum_i \bar y_i (w_i - \mu)`
    (see :mod:`normref.ops.standardization`).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.weight_standardize(w)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.weight_standardize_vjp(dy, w)
    >>> print(g._fields)
    ('w',)
    >>> print(np.round(g[0], 4))
    [[-0.181   0.1358  0.0453]
     [-0.3436  0.1145  0.2291]]

    References
    ----------
    - Qiao, S., Wang, H., Liu, C., Shen, W. and Yuille, A. (2019). Micro-batch training with
      batch-channel normalization and weight standardization.
      https://arxiv.org/abs/1903.10520
    """
    namespace_of(w=w, dy=dy)
    _check_dy(dy, w, "w")
    layer = _ws_layer(w, out_axis, eps, eps_mode, correction)
    return WeightGrad(normalize_vjp(layer, dy, w, None, None, precision).x)


# ---------------------------------------------------------------------------
# Scaled weight standardization


def _scaled_ws_layer(w: Array, gamma: float, out_axis: object, eps: float, eps_mode: str) -> Layer:
    eps = check_eps(eps)
    if eps_mode not in SCALED_WS_EPS_MODES:
        msg = f"eps_mode must be one of {SCALED_WS_EPS_MODES}, got {eps_mode!r}"
        raise ValueError(msg)
    gamma = check_finite_number(gamma, name="gamma")
    shape = tuple(w.shape)
    axis = unit_axis(out_axis, shape, name="w", minimum_rank=2)
    check_units(shape, fan_in_axes(len(shape), axis), name="w")
    n = fan_in(shape, axis)
    mode, op_eps = ("max", eps / n) if eps_mode == "max_fan_in" else (eps_mode, eps)
    params = std_params(op_eps, mode, 0)
    return _unit_layer(
        "scaled_weight_standardize", shape, "w", axis, STANDARDIZE, params, gamma / math.sqrt(n)
    )


def scaled_weight_standardize(
    w: Array,
    gain: Array | None = None,
    *,
    gamma: float = 1.0,
    out_axis: int = 0,
    eps: float = 1e-4,
    eps_mode: str = "max_fan_in",
    precision: Precision = "highest",
) -> Array:
    r"""Scaled weight standardization (NF-ResNets, NFNets): WS scaled by gain, gamma and fan-in.

    .. math::

        \hat w = \gamma \, g \, \frac{w - \mu}{\sigma \sqrt N}

    per output unit (:math:`\mu`, :math:`\sigma^2` the mean and biased variance
    over the fan-in of size :math:`N`), where ``eps_mode`` names the guarded
    divisor :math:`\sigma\sqrt N`:

    * ``"max_fan_in"`` (default, the NFNets reference code ``WSConv2D``,
      ``eps=1e-4``): :math:`\sqrt{\max(N \sigma^2, \epsilon)}`;
    * ``"max"``: :math:`\sqrt{\max(\sigma^2, \epsilon)}\,\sqrt N`;
    * ``"add"`` (timm ``ScaledStdConv2d``, ``eps=1e-6``):
      :math:`\sqrt{\sigma^2 + \epsilon}\,\sqrt N`.

    ``"max_fan_in"`` equals ``"max"`` with :math:`\epsilon/N` (see the module
    docstring), so all three are :func:`normref.ops.standardize` on the
    per-unit partition times :math:`\gamma g/\sqrt N`.

    Parameters
    ----------
    w
        Weight of rank >= 2, each unit with a fan-in of at least one value.
    gain
        Optional learned gain :math:`g`, one per output unit, shape
        ``(w.shape[out_axis],)`` (NFNets: ``(O,)``; timm stores it as
        ``(O, 1, 1, 1)``: pass it flattened).
    gamma
        The nonlinearity's gain :math:`\gamma` (a number), e.g.
        ``nonlinearity_gamma("relu")``. NFNets multiplies the activation by
        it instead; timm passes it here.
    out_axis
        0 for ``OIHW``/``(out, in)``, -1 for ``HWIO``/``(in, out)``.
    eps
        Finite, > 0.
    eps_mode
        ``"max_fan_in"``, ``"max"`` or ``"add"``.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``w``'s shape, in the promoted dtype of ``w`` and ``gain``.
    Each unit has mean 0 and squared norm :math:`(\gamma g)^2` times
    :math:`N\sigma^2 / \max(N\sigma^2, \epsilon)` (``"max_fan_in"``).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.scaled_weight_standardize(w, gamma=1.0)
    >>> print(np.round(y, 4))
    [[ 0.2265  0.5661 -0.7926]
     [ 0.1543 -0.7715  0.6172]]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    namespace_of(w=w, gain=gain, optional=("gain",))
    layer = _scaled_ws_layer(w, gamma, out_axis, eps, eps_mode)
    _check_unit_param(gain, layer, name="gain", weight="w")
    return normalize(layer, w, gain, None, precision)


def scaled_weight_standardize_vjp(
    dy: Array,
    w: Array,
    gain: Array | None = None,
    *,
    gamma: float = 1.0,
    out_axis: int = 0,
    eps: float = 1e-4,
    eps_mode: str = "max_fan_in",
    precision: Precision = "highest",
) -> ScaledWSGrads:
    r"""VJP of :func:`scaled_weight_standardize` for ``w`` and ``gain``.

    With :math:`a = \gamma g/\sqrt N` per unit and :math:`\hat x` the
    standardized unit: :math:`\bar g = \frac{\gamma}{\sqrt N} \sum_i \bar y_i \hat x_i`,
    and :math:`\bar w` is the standardize backward of :math:`a \bar y`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.scaled_weight_standardize(w, gamma=1.0)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.scaled_weight_standardize_vjp(dy, w, gamma=1.0)
    >>> print(g._fields)
    ('w', 'gain')
    >>> print(np.round(g[0], 4))
    [[-0.1045  0.0784  0.0261]
     [-0.1984  0.0661  0.1323]]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    namespace_of(w=w, gain=gain, dy=dy, optional=("gain",))
    _check_dy(dy, w, "w")
    layer = _scaled_ws_layer(w, gamma, out_axis, eps, eps_mode)
    _check_unit_param(gain, layer, name="gain", weight="w")
    grads = normalize_vjp(layer, dy, w, gain, None, precision)
    return ScaledWSGrads(grads.x, grads.gamma)


# ---------------------------------------------------------------------------
# Weight normalization


def _weight_norm_layer(v: Array, out_axis: object, eps: float) -> Layer:
    eps = check_eps(eps, allow_zero=True)
    shape = tuple(v.shape)
    axis = unit_axis(out_axis, shape, name="v", minimum_rank=1)
    check_units(shape, fan_in_axes(len(shape), axis), name="v")
    n = fan_in(shape, axis)
    params = {"eps": eps / n, "eps_mode": "add"}
    return _unit_layer("weight_norm", shape, "v", axis, RMS_SCALE, params, 1.0 / math.sqrt(n))


def _zero_units(xp: Namespace, layer: Layer, v: Array) -> Array | None:
    """Mask of the units whose squared norm is 0 (with ``eps = 0``; not a unit with a NaN)."""
    if layer.params["eps"] > 0:
        return None
    return max_magnitude(xp, v, fan_in_axes(v.ndim, layer.param_axes[0])) == 0


def weight_norm(
    v: Array,
    g: Array | None = None,
    *,
    out_axis: int = 0,
    eps: float = 0.0,
    precision: Precision = "highest",
) -> Array:
    r"""Weight normalization: :math:`w = g \, v / \sqrt{\|v\|^2 + \epsilon}` per output unit.

    :math:`\|v\|` is the Euclidean norm of the unit over its fan-in. ``eps=0``
    is torch (``torch.nn.utils.parametrizations.weight_norm``, no eps);
    ``eps=1e-12`` is flax ``WeightNorm`` (:math:`\epsilon` inside the square
    root). Torch initializes ``g`` to :math:`\|v\|` (the weight is unchanged at
    init), flax to 1; pass whichever you model.

    With ``eps=0`` an all-zero unit has no direction: its output is 0 and its
    gradients are 0 (torch gives NaN there). Norms are taken of each unit times
    a power of two, so that a unit of any magnitude, subnormal ones included,
    has its direction.

    Parameters
    ----------
    v
        Direction parameter, rank >= 1 (``(out, in)``, ``OIHW``, ...).
    g
        Optional magnitude, one per output unit: shape ``(v.shape[out_axis],)``
        (torch stores it as ``(O, 1, ..., 1)``: pass it flattened). ``None``
        gives the unit-norm weight :math:`v/\|v\|`.
    out_axis
        0 for ``OIHW``/``(out, in)`` (torch ``dim=0``), -1 for
        ``HWIO``/``(in, out)`` (flax ``feature_axes=-1``).
    eps
        Finite, >= 0, added to the squared norm.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``v``'s shape, in the promoted dtype of ``v`` and ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> g = np.array([2.0, 1.0])
    >>> y = normref.weight_norm(w, g)
    >>> print(np.round(y, 4))
    [[ 1.2     1.6     0.    ]
     [ 0.4082 -0.4082  0.8165]]

    References
    ----------
    - Salimans, T. and Kingma, D. P. (2016). Weight normalization: a simple
      reparameterization to accelerate training of deep neural networks. NeurIPS.
      https://arxiv.org/abs/1602.07868
    """
    namespace_of(v=v, g=g, optional=("g",))
    return _guarded(_weight_norm_layer(v, out_axis, eps), _zero_units, v, g, precision)


def weight_norm_vjp(
    dy: Array,
    v: Array,
    g: Array | None = None,
    *,
    out_axis: int = 0,
    eps: float = 0.0,
    precision: Precision = "highest",
) -> WeightNormGrads:
    r"""VJP of :func:`weight_norm` for ``v`` and ``g``.

    With :math:`r = 1/\sqrt{\|v\|^2 + \epsilon}` per unit:
    :math:`\bar g = r \sum_i \bar y_i v_i` and
    :math:`\bar v = g r \, \bar y - g r^3 \, v \sum_i \bar y_i v_i`
    (the ``rms_scale`` backward of :mod:`normref.ops.standardization`).
    Both are 0 on a zero unit with ``eps=0``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> g = np.array([2.0, 1.0])
    >>> y = normref.weight_norm(w, g)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.weight_norm_vjp(dy, w, g)
    >>> print(g._fields)
    ('v', 'g')
    >>> print(np.round(g[0], 4))
    [[-0.1408  0.1056 -0.08  ]
     [-0.0272  0.3538  0.1905]]

    References
    ----------
    - Salimans, T. and Kingma, D. P. (2016). Weight normalization: a simple
      reparameterization to accelerate training of deep neural networks. NeurIPS.
      https://arxiv.org/abs/1602.07868
    """
    namespace_of(v=v, g=g, dy=dy, optional=("g",))
    _check_dy(dy, v, "v")
    layer = _weight_norm_layer(v, out_axis, eps)
    return _guarded_vjp(layer, _zero_units, dy, v, g, precision)


def _guarded(layer: Layer, guard: Guard, v: Array, g: Array | None, precision: Precision) -> Array:
    """``layer`` on ``v`` with per-unit ``g``, 0 on the units ``guard`` marks (where the layer
    would divide by 0: their gain is 0, and the layer counts a divisor of 0 as 1)."""
    xp = namespace_of(v=v, g=g, optional=("g",))
    _check_unit_param(g, layer, name="g", weight="v")
    gain = _unmarked_gain(xp, guard(xp, layer, v), g, compute_dtype(xp, v.dtype, precision))
    return normalize(layer, v, gain, None, precision, out_dtype=output_dtype(xp, precision, v, g))


def _unmarked_gain(
    xp: Namespace, marked: Array | None, g: Array | None, dtype: Any
) -> Array | None:
    """``g`` (1 where it is ``None``) with 0 on the ``marked`` units, in ``dtype``; ``g`` itself
    where no unit can be marked."""
    if marked is None:
        return g
    flat = xp.reshape(marked, (-1,))
    kept = (
        xp.ones(flat.shape, dtype=dtype, device=device(marked))
        if g is None
        else to_dtype(xp, g, dtype)
    )
    return xp.where(flat, xp.zeros_like(kept), kept)


def _guarded_vjp(
    layer: Layer, guard: Guard, dy: Array, v: Array, g: Array | None, precision: Precision
) -> WeightNormGrads:
    """The VJP of :func:`_guarded`: 0 for ``v`` and ``g`` on the units ``guard`` marks."""
    xp = namespace_of(v=v, g=g, dy=dy, optional=("g",))
    _check_unit_param(g, layer, name="g", weight="v")
    marked = guard(xp, layer, v)
    gain = _unmarked_gain(xp, marked, g, compute_dtype(xp, v.dtype, precision))
    d_v, d_g = normalize_vjp(layer, dy, v, gain, None, precision)[:2]
    if g is None:
        return WeightNormGrads(to_dtype(xp, d_v, v.dtype), None)
    if marked is not None and d_g is not None:
        d_g = xp.where(xp.reshape(marked, d_g.shape), xp.zeros_like(d_g), d_g)
    return WeightNormGrads(to_dtype(xp, d_v, v.dtype), to_dtype(xp, d_g, g.dtype))


# ---------------------------------------------------------------------------
# Centred weight normalization


def _centered_weight_norm_layer(v: Array, out_axis: object, eps: float) -> Layer:
    """Weight standardization's layer (standardize on the units) with ``eps / N`` and the
    affine's constant ``1 / sqrt(N)``: ``eps = 0`` is allowed, constant units guarded."""
    eps = check_eps(eps, allow_zero=True)
    shape = tuple(v.shape)
    axis = unit_axis(out_axis, shape, name="v", minimum_rank=2)
    check_units(shape, fan_in_axes(len(shape), axis), name="v")
    n = fan_in(shape, axis)
    params = {"eps": eps / n, "eps_mode": "add", "correction": 0}
    return _unit_layer(
        "centered_weight_norm", shape, "v", axis, STANDARDIZE, params, 1.0 / math.sqrt(n)
    )


def _constant_units(xp: Namespace, layer: Layer, v: Array) -> Array | None:
    """Mask of the units whose values are all equal (with ``eps = 0``: their centred norm is 0;
    not a unit with a NaN)."""
    if layer.params["eps"] > 0:
        return None
    axes = fan_in_axes(v.ndim, layer.param_axes[0])
    return xp.max(v, axis=axes, keepdims=True) == xp.min(v, axis=axes, keepdims=True)


def centered_weight_norm(
    v: Array,
    g: Array | None = None,
    *,
    eps: float = 0.0,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Centred weight normalization (Huang et al., 2017): each unit centred, then weight-normalized.

    .. math::

        v_c = v - \mu, \qquad w = g\, \frac{v_c}{\sqrt{\lVert v_c \rVert^2 + \epsilon}}

    per output unit, :math:`\mu` and the norm over its fan-in of size
    :math:`N`. Since :math:`\lVert v_c \rVert^2 = N \sigma^2` (biased variance),

    .. math::

        w = \frac{g}{\sqrt N}\, \frac{v - \mu}{\sqrt{\sigma^2 + \epsilon/N}}:

    weight standardization (:func:`weight_standardize`) with :math:`\epsilon/N`,
    times :math:`g/\sqrt N`. Computed so, its backward is that of weight
    standardization of :math:`(g/\sqrt N)\,\bar y` (:mod:`normref.ops.standardization`),
    and :math:`\bar g = \sum_i \bar y_i v_{c,i}/\sqrt{\lVert v_c \rVert^2 + \epsilon}`.
    The authors' code has no ``eps`` (the default 0); with ``eps=0`` a constant
    unit has no direction: its output and gradients are 0, as :func:`weight_norm`'s
    zero unit.

    Parameters
    ----------
    v
        Direction parameter, rank >= 2, each unit with a fan-in of at least one value (a
        unit of one value is centred to 0: with ``eps=0`` a constant unit, as above).
    g
        Optional magnitude, one per output unit, shape ``(v.shape[out_axis],)``;
        ``None`` gives unit-norm centred units.
    eps
        Finite, >= 0, added to the centred squared norm.
    out_axis
        0 for ``OIHW``/``(out, in)``, -1 for ``HWIO``/``(in, out)``.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``v``'s shape, in the promoted dtype of ``v`` and ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.centered_weight_norm(w)
    >>> print(np.round(y, 4))
    [[ 0.2265  0.5661 -0.7926]
     [ 0.1543 -0.7715  0.6172]]

    References
    ----------
    - Huang, L., Liu, X., Liu, Y., Lang, B. and Tao, D. (2017). Centered weight
      normalization in accelerating training of deep neural networks. ICCV.
    """
    namespace_of(v=v, g=g, optional=("g",))
    return _guarded(_centered_weight_norm_layer(v, out_axis, eps), _constant_units, v, g, precision)


def centered_weight_norm_vjp(
    dy: Array,
    v: Array,
    g: Array | None = None,
    *,
    eps: float = 0.0,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> WeightNormGrads:
    r"""VJP of :func:`centered_weight_norm` for ``v`` and ``g``: weight standardization's backward
    of :math:`(g/\sqrt N)\,\bar y`; both 0 on a constant unit with ``eps=0``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.centered_weight_norm(w)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.centered_weight_norm_vjp(dy, w)
    >>> print(g._fields)
    ('v', 'g')
    >>> print(np.round(g[0], 4))
    [[-0.1045  0.0784  0.0261]
     [-0.1984  0.0661  0.1323]]

    References
    ----------
    - Huang, L., Liu, X., Liu, Y., Lang, B. and Tao, D. (2017). Centered weight
      normalization in accelerating training of deep neural networks. ICCV.
    """
    namespace_of(v=v, g=g, dy=dy, optional=("g",))
    _check_dy(dy, v, "v")
    layer = _centered_weight_norm_layer(v, out_axis, eps)
    return _guarded_vjp(layer, _constant_units, dy, v, g, precision)


# ---------------------------------------------------------------------------
# Spectral normalization


class _Scaled(NamedTuple):
    """A vector or matrix ``m * 2**e``: ``m`` of largest magnitude near 1 (or 0), ``e`` an
    integer-valued 0-d array, so that the value may lie beyond the dtype's range (the power
    iteration's vectors where ``eps`` dominates their normalization)."""

    m: Array
    e: Array

    def value(self, xp: Namespace) -> Array:
        """``m * 2**e``, where it overflows or underflows as the exact value does."""
        return times_power_of_two(xp, self.m, self.e)


def _scaled(xp: Namespace, a: Array) -> _Scaled:
    scale = power_of_two_scale(xp, max_magnitude(xp, xp.reshape(a, (-1,)), (0,)))[0]
    return _Scaled(a * scale, -xp.log2(scale))


class _PowerIteration(NamedTuple):
    """The state after the power iteration, each part as :class:`_Scaled`: the
    ``(units, fan-in)`` matrix of ``w``, the new ``u`` and ``v``, and ``sigma``."""

    matrix: _Scaled
    u: _Scaled
    v: _Scaled
    sigma: _Scaled


def _product(xp: Namespace, matrix: Array, vector: _Scaled, exponent: Array) -> _Scaled:
    """``matrix @ vector`` for the mantissa ``matrix`` of a matrix of exponent ``exponent``."""
    found = _scaled(xp, xp.matmul(matrix, vector.m))
    return _Scaled(found.m, found.e + vector.e + exponent)


def _l2_normalize(xp: Namespace, t: _Scaled, eps: float, eps_mode: str) -> _Scaled:
    r""":math:`t / \max(\|t\|, \epsilon)` or :math:`t / \sqrt{\|t\|^2 + \epsilon}`, of the
    :class:`_Scaled` ``t``: both terms of the divisor taken to the larger of their exponents,
    so that whichever dominates is of order 1, and the result's exponent the difference."""
    bound, exponent = math.frexp(eps if eps_mode == "max" else math.sqrt(eps))
    top = xp.maximum(t.e, xp.full_like(t.e, float(exponent)))
    a = norms(xp, t.m, (0,)) * 2.0 ** (t.e - top)
    b = bound * 2.0 ** (float(exponent) - top)
    d = xp.maximum(a, b) if eps_mode == "max" else xp.hypot(a, b)
    return _Scaled(t.m / xp.where(d == 0, xp.ones_like(d), d), t.e - top)


def _check_spectral_args(
    v: Array | None, n_power_iterations: object, order: object, eps: float, eps_mode: object
) -> tuple[int, float]:
    steps = check_int(n_power_iterations, name="n_power_iterations", minimum=0)
    if order not in POWER_ITERATION_ORDERS:
        msg = f"order must be one of {POWER_ITERATION_ORDERS}, got {order!r}"
        raise ValueError(msg)
    if eps_mode not in L2_EPS_MODES:
        msg = f"eps_mode must be one of {L2_EPS_MODES}, got {eps_mode!r}"
        raise ValueError(msg)
    if v is None and (order == "u_first" or steps == 0):
        msg = (
            f"v is needed with order={order!r} and n_power_iterations={steps}: "
            f"only a v_first iteration computes v from u"
        )
        raise ValueError(msg)
    return steps, check_eps(eps)


def _matrix(xp: Namespace, w: Array, axis: int) -> Array:
    """``w`` as the ``(units, fan-in)`` matrix: the unit axis first, the others flattened."""
    moved = xp.permute_dims(w, (axis, *fan_in_axes(w.ndim, axis)))
    return xp.reshape(moved, (w.shape[axis], fan_in(tuple(w.shape), axis)))


def _unmatrix(xp: Namespace, m: Array, shape: tuple[int, ...], axis: int) -> Array:
    """Inverse of :func:`_matrix`."""
    others = fan_in_axes(len(shape), axis)
    moved = xp.reshape(m, (shape[axis], *(shape[a] for a in others)))
    order = (axis, *others)
    return xp.permute_dims(moved, tuple(sorted(range(len(order)), key=order.__getitem__)))


def _power_iteration(
    xp: Namespace,
    w: Array,
    u: Array,
    v: Array | None,
    *,
    n_power_iterations: int,
    order: str,
    eps: float,
    eps_mode: str,
    axis: int,
) -> _PowerIteration:
    # W, u and v as mantissas and exponents: no product overflows or underflows, and the
    # vectors, shrunk by eps where it dominates, keep their value beyond the dtype's range
    matrix = _scaled(xp, _matrix(xp, w, axis))
    u_s = _scaled(xp, u)
    v_s = None if v is None else _scaled(xp, v)
    for _ in range(n_power_iterations):
        if order == "v_first":
            v_s = _l2_normalize(xp, _product(xp, matrix.m.T, u_s, matrix.e), eps, eps_mode)
            u_s = _l2_normalize(xp, _product(xp, matrix.m, v_s, matrix.e), eps, eps_mode)
        else:
            assert v_s is not None  # _check_spectral_args: u_first needs v
            u_s = _l2_normalize(xp, _product(xp, matrix.m, v_s, matrix.e), eps, eps_mode)
            v_s = _l2_normalize(xp, _product(xp, matrix.m.T, u_s, matrix.e), eps, eps_mode)
    assert v_s is not None  # _check_spectral_args: no iteration needs v
    sigma = _Scaled(xp.sum(u_s.m * xp.matmul(matrix.m, v_s.m)), u_s.e + matrix.e + v_s.e)
    return _PowerIteration(matrix, u_s, v_s, sigma)


def _spectral_parts(
    w: Array,
    u: Array,
    v: Array | None,
    n_power_iterations: int,
    order: str,
    eps: float,
    eps_mode: str,
    out_axis: object,
    precision: Precision,
    dy: Array | None = None,
) -> tuple[Namespace, Any, int, _PowerIteration]:
    xp = namespace_of(w=w, u=u, v=v, dy=dy, optional=("v", "dy"))
    shape = tuple(w.shape)
    axis = unit_axis(out_axis, shape, name="w", minimum_rank=1)
    check_units(shape, fan_in_axes(len(shape), axis), name="w")
    check_shape(u.shape, (shape[axis],), name="u", what=f"one per output unit, w.shape[{axis}]")
    if v is not None:
        check_shape(
            v.shape,
            (fan_in(shape, axis),),
            name="v",
            what="the fan-in of w, the product of its other axes",
        )
    steps, eps = _check_spectral_args(v, n_power_iterations, order, eps, eps_mode)
    dtype = compute_dtype(xp, w.dtype, precision)
    state = _power_iteration(
        xp,
        to_dtype(xp, w, dtype),
        to_dtype(xp, u, dtype),
        to_dtype(xp, v, dtype),
        n_power_iterations=steps,
        order=order,
        eps=eps,
        eps_mode=eps_mode,
        axis=axis,
    )
    return xp, dtype, axis, state


def _normalized(xp: Namespace, state: _PowerIteration) -> tuple[Array, Array]:
    """``(W / sigma, e)`` with ``W / sigma`` as the mantissa of the matrix divided by that of
    sigma and ``e`` the exponent it is times: ``w / sigma``; ``w`` itself where sigma is 0
    (the weight unscaled)."""
    zero = state.sigma.m == 0
    quotient = state.matrix.m / xp.where(zero, xp.ones_like(state.sigma.m), state.sigma.m)
    return quotient, xp.where(zero, state.matrix.e, state.matrix.e - state.sigma.e)


def spectral_norm(
    w: Array,
    u: Array,
    v: Array | None = None,
    *,
    n_power_iterations: int = 1,
    order: str = "v_first",
    eps: float = 1e-12,
    eps_mode: str = "max",
    out_axis: int = 0,
    precision: Precision = "highest",
) -> SpectralNormResult:
    r"""Spectral normalization: :math:`w/\sigma`, :math:`\sigma` estimated by power iteration.

    ``w`` is viewed as the matrix :math:`W` of shape ``(units, fan-in)`` (the
    ``out_axis`` first, the other axes flattened in order, as torch's
    ``dim`` and flax's ``(-1, out)`` reshape). Each of ``n_power_iterations``
    steps, in the given ``order``:

    * ``"v_first"`` (legacy ``torch.nn.utils.spectral_norm``, flax
      ``SpectralNorm``): :math:`v \leftarrow n(W^\top u)`, then
      :math:`u \leftarrow n(W v)`;
    * ``"u_first"`` (``torch.nn.utils.parametrizations.spectral_norm``):
      :math:`u \leftarrow n(W v)`, then :math:`v \leftarrow n(W^\top u)`;

    then :math:`\sigma = u^\top W v`. The vector normalization :math:`n` is
    :math:`x/\max(\|x\|, \epsilon)` for ``eps_mode="max"`` (torch
    ``F.normalize``) or :math:`x/\sqrt{\|x\|^2 + \epsilon}` for ``"add"``
    (flax). Where :math:`\sigma = 0` the weight is returned unscaled (as flax;
    torch divides by 0).

    The state is explicit: nothing is updated in place; the new ``u``, ``v``
    are returned for the next call. Torch's training step does the power
    iteration then normalizes; its evaluation mode is ``n_power_iterations=0``
    with the stored ``u`` and ``v``. Torch draws ``u``, ``v`` at random and the
    parametrization runs 15 warm-up iterations; flax starts from an
    unnormalized random ``u``: compare frameworks from the same state.

    Parameters
    ----------
    w
        Weight of rank >= 1.
    u
        Left singular vector estimate, shape ``(w.shape[out_axis],)``.
    v
        Right singular vector estimate, shape ``(N,)`` (the fan-in). Needed
        unless ``order="v_first"`` and ``n_power_iterations >= 1``.
    n_power_iterations
        Integer >= 0.
    order
        ``"v_first"`` or ``"u_first"``.
    eps
        Finite, > 0 (torch and flax: 1e-12).
    eps_mode
        ``"max"`` or ``"add"``.
    out_axis
        0 for ``OIHW``/``(out, in)`` (torch ``dim=0``), -1 for flax kernels.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    SpectralNormResult
        ``(weight, u, v, sigma)``: :math:`w/\sigma` in ``w``'s dtype, the new
        ``u`` and ``v`` in their dtypes (``v`` in ``w``'s when it was not
        given), and :math:`\sigma` as a 0-d array in ``w``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> u = np.array([1.0, 0.0])
    >>> y = normref.spectral_norm(w, u, n_power_iterations=20)
    >>> print(round(float(y.sigma), 4), round(float(np.linalg.svd(w)[1][0]), 4))  # the largest singular value
    5.0052 5.0052

    References
    ----------
    - Miyato, T., Kataoka, T., Koyama, M. and Yoshida, Y. (2018). Spectral normalization for
      generative adversarial networks. ICLR. https://arxiv.org/abs/1802.05957
    """
    xp, _, axis, state = _spectral_parts(
        w, u, v, n_power_iterations, order, eps, eps_mode, out_axis, precision
    )
    quotient, exponent = _normalized(xp, state)
    weight = _unmatrix(xp, times_power_of_two(xp, quotient, exponent), tuple(w.shape), axis)
    out = output_dtype(xp, precision, w)
    return SpectralNormResult(
        weight=to_dtype(xp, weight, out),
        u=to_dtype(xp, state.u.value(xp), u.dtype),
        v=to_dtype(xp, state.v.value(xp), (w if v is None else v).dtype),
        sigma=to_dtype(xp, state.sigma.value(xp), out),
    )


def spectral_norm_weight(w: Array, u: Array, v: Array | None = None, **options: Any) -> Array:
    """The normalized weight :math:`w/\\sigma` of :func:`spectral_norm` alone (its first output).

    ``options`` are :func:`spectral_norm`'s keyword arguments. This is the
    function whose gradient :func:`spectral_norm_vjp` is when
    ``n_power_iterations=0`` (``u``, ``v`` then enter only as constants).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> u = np.array([1.0, 0.0])
    >>> y = normref.spectral_norm_weight(w, u, n_power_iterations=20)
    >>> print(round(float(np.linalg.norm(y, 2)), 4))
    1.0

    References
    ----------
    - Miyato, T., Kataoka, T., Koyama, M. and Yoshida, Y. (2018). Spectral normalization for
      generative adversarial networks. ICLR. https://arxiv.org/abs/1802.05957
    """
    return spectral_norm(w, u, v, **options).weight


def spectral_norm_vjp(
    dy: Array,
    w: Array,
    u: Array,
    v: Array | None = None,
    *,
    n_power_iterations: int = 1,
    order: str = "v_first",
    eps: float = 1e-12,
    eps_mode: str = "max",
    out_axis: int = 0,
    precision: Precision = "highest",
) -> WeightGrad:
    r"""VJP of :func:`spectral_norm`'s weight :math:`w/\sigma`, with ``u`` and ``v`` held constant.

    ``dy`` is the cotangent of the normalized weight only. The power iteration
    runs as in the forward; then, with its ``u``, ``v`` treated as constants
    (stop-gradient, as torch and flax do), :math:`\sigma = u^\top W v` has
    :math:`\partial\sigma/\partial W = u v^\top` and

    .. math::

        \bar W = \frac{1}{\sigma}\Big(\bar y - \langle \bar y, W/\sigma \rangle \, u v^\top\Big).

    This is the exact derivative of :math:`w/\sigma` only for
    ``n_power_iterations=0``; otherwise it omits the dependence of ``u``, ``v``
    on ``w`` by design. Where :math:`\sigma = 0`, :math:`\bar W = \bar y`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> u = np.array([1.0, 0.0])
    >>> y = normref.spectral_norm(w, u, n_power_iterations=20)
    >>> dy = np.linspace(-1.0, 1.0, y[0].size).reshape(y[0].shape)
    >>> g = normref.spectral_norm_vjp(dy, w, u, n_power_iterations=20)
    >>> print(g._fields)
    ('w',)
    >>> print(np.round(g[0], 4))
    [[-0.1107  0.0026 -0.0431]
     [ 0.0353  0.1134  0.2   ]]

    References
    ----------
    - Miyato, T., Kataoka, T., Koyama, M. and Yoshida, Y. (2018). Spectral normalization for
      generative adversarial networks. ICLR. https://arxiv.org/abs/1802.05957
    """
    xp, dtype, axis, state = _spectral_parts(
        w, u, v, n_power_iterations, order, eps, eps_mode, out_axis, precision, dy=dy
    )
    _check_dy(dy, w, "w")
    dy_m = _matrix(xp, to_dtype(xp, dy, dtype), axis)
    zero = state.sigma.m == 0
    sigma = xp.where(zero, xp.ones_like(state.sigma.m), state.sigma.m)
    # <dy, W / sigma> u v^T of the mantissas: the exponents of W / sigma and u v^T cancel
    y_m = state.matrix.m / sigma
    outer = xp.reshape(state.u.m, (-1, 1)) * xp.reshape(state.v.m, (1, -1))
    projection = xp.where(zero, 0.0, xp.sum(dy_m * y_m))
    d_w = times_power_of_two(
        xp, (dy_m - projection * outer) / sigma, xp.where(zero, 0.0 * state.sigma.e, -state.sigma.e)
    )
    return WeightGrad(to_dtype(xp, _unmatrix(xp, d_w, tuple(w.shape), axis), w.dtype))
