r"""Normalization of gradients: unit-wise norms, adaptive gradient clipping, global-norm clipping.

Unit-wise norm (Brock et al., 2021)
    :math:`\|x\|_u`, the Euclidean norm of each output unit of ``x`` (the
    slice at one index of ``out_axis``, over all other axes) for rank >= 2,
    and of the whole array for a scalar or a vector (a bias, a gain).

Adaptive gradient clipping (AGC)
    Per unit, with :math:`G` the gradient and :math:`W` its parameter,

    .. math::

        G \leftarrow G \cdot \min\Big(1, \frac{m}{\|G\|_u}\Big), \qquad
        m = \lambda \max(\|W\|_u, \epsilon),

    computed as :math:`G \, m / \max(\|G\|_u, m)`, which is finite everywhere
    (:math:`m \ge \lambda\epsilon > 0`): a zero gradient stays 0, a zero weight
    clips to :math:`\lambda\epsilon`, and a unit exactly at the boundary
    :math:`\|G\|_u = m` is unchanged (factor exactly 1).

Gradient centralization (Yong et al., 2020)
    Each output unit of a gradient of rank >= 2 centred over its fan-in,
    :math:`G \leftarrow G - \operatorname{mean}_u(G)`; a vector (a bias, a gain) is
    left as it is.

Global-norm clipping (Pascanu et al., 2013)
    All gradients scaled by one factor,
    :math:`\min(1, c/(\|g\| + \epsilon))` with :math:`\|g\|` the norm of all
    of them together, computed as :math:`c/\max(\|g\| + \epsilon, c)`: torch's
    ``clip_grad_norm_`` is ``eps=1e-6``, optax's ``clip_by_global_norm``
    ``eps=0`` (``docs/conventions.md``).

Scaling. Every norm is taken of the values times a power of two
(``normref._lib.scaling``): per unit for AGC and the unit-wise norm, one for
all the gradients of a global norm, so that no sum of squares overflows or
underflows where the norm, the clipping factor or the clipped gradient is
representable.

Layouts. ``out_axis`` is the axis of output units (0 for torch ``(out, in)``
and ``OIHW``, -1 for flax ``(in, out)`` and ``HWIO``). The NFNets code and
optax infer the units from the rank instead (the convention field
``unit_axes="by_rank"``); ``docs/conventions.md`` says where the two differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from normref._fused import units as fused_units
from normref._lib.checks import check_eps, check_shape
from normref._lib.namespace import (
    Array,
    Namespace,
    compute_dtype,
    namespace_of,
    output_dtype,
    result_dtype,
    to_dtype,
)
from normref._lib.reductions import sum_of_products
from normref._lib.scaling import max_magnitude, power_of_two_scale
from normref._lib.tree import Flat, check_not_empty, check_same_structure, flatten, named_leaves
from normref._lib.units import check_units, norms, unit_norms, unit_scale
from normref.layers.compose import Layer, normalize, normalize_vjp
from normref.ops.standardization import CENTER
from normref.partition import unit_norm_axes, unit_partition
from normref.types import Precision


class AGCGrads(NamedTuple):
    """Gradients of :func:`adaptive_grad_clip` with respect to ``grad`` and ``param``."""

    grad: Array
    param: Array


def unitwise_norm(x: Array, *, out_axis: int = 0, precision: Precision = "highest") -> Array:
    r"""The NFNets unit-wise norm :math:`\|x\|_u`, keeping dims so that it broadcasts against ``x``.

    For rank >= 2: the Euclidean norm of each output unit (over every axis
    but ``out_axis``); for a scalar or a vector: the norm of the whole array.
    The result has ``x``'s rank, with size 1 on the reduced axes (optax
    broadcasts it to ``x``'s shape; the NFNets code returns a scalar for
    vectors).

    Parameters
    ----------
    x
        Any real floating array.
    out_axis
        The axis of output units: 0 (``(out, in)``, ``OIHW``) or -1 (``(in, out)``,
        ``HWIO``); for rank <= 1 it must still be 0 or -1.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.unitwise_norm(w)
    >>> print(np.round(y.ravel(), 4))
    [5.     2.4495]

    References
    ----------
    - Brock, A., De, S., Smith, S. L. and Simonyan, K. (2021). High-performance large-scale
      image recognition without normalization. ICML. https://arxiv.org/abs/2102.06171
    """
    xp = namespace_of(x=x)
    axes = unit_norm_axes(tuple(x.shape), out_axis, name="x")
    check_units(tuple(x.shape), axes, name="x")
    dtype = compute_dtype(xp, x.dtype, precision)
    return to_dtype(xp, norms(xp, to_dtype(xp, x, dtype), axes), output_dtype(xp, precision, x))


class _AGCParts(NamedTuple):
    r"""What both directions of AGC need, per unit, in the compute dtype.

    The norms are taken of each unit times its power of two (``grad_scale``,
    ``param_scale``; ``normref._lib.scaling``): ``grad_norm`` and ``param_norm``
    are the norms of the scaled units, ``max_norm`` the threshold
    :math:`\lambda \max(\|W\|, \epsilon)` in the parameter's scale. ``factor`` is
    :math:`m / \max(\|G\|, m)` and ``clipped`` where :math:`\|G\| > m`, both
    compared in the scale of the larger of the two units, so that neither side
    overflows or underflows where the other is representable.
    """

    xp: Namespace
    dtype: Any
    axes: tuple[int, ...]
    grad_scale: Array
    grad_norm: Array
    param_scale: Array
    param_norm: Array
    max_norm: Array
    factor: Array
    clipped: Array


class _AGCCall(NamedTuple):
    """An AGC call's namespace, checked constants, unit axes and compute dtype."""

    xp: Namespace
    clipping: float
    eps: float
    axes: tuple[int, ...]
    dtype: Any


def _agc_call(
    grad: Array,
    param: Array,
    clipping: float,
    eps: float,
    out_axis: object,
    precision: Precision,
    dy: Array | None = None,
) -> _AGCCall:
    """Check an AGC call's arguments."""
    xp = namespace_of(grad=grad, param=param, dy=dy, optional=("dy",))
    check_shape(param.shape, grad.shape, name="param", what="the shape of grad")
    if dy is not None:
        check_shape(dy.shape, grad.shape, name="dy", what="the shape of grad")
    clipping = check_eps(clipping, name="clipping")
    eps = check_eps(eps)
    axes = unit_norm_axes(tuple(grad.shape), out_axis, name="grad")
    check_units(tuple(grad.shape), axes, name="grad")
    return _AGCCall(xp, clipping, eps, axes, compute_dtype(xp, grad.dtype, precision))


def _agc_factors(
    call: _AGCCall,
    grad_scale: Array,
    grad_norm: Array,
    param_scale: Array,
    param_norm: Array,
) -> _AGCParts:
    """The clipping factors of units of norms ``grad_norm`` and ``param_norm``, those of the
    units times ``grad_scale`` and ``param_scale``."""
    xp, clipping, eps = call.xp, call.clipping, call.eps
    max_norm = clipping * xp.maximum(param_norm, eps * param_scale)
    # both in the scale of the larger unit: powers of two, exact, the smaller side may underflow
    common = xp.minimum(grad_scale, param_scale)
    n, m = grad_norm * (common / grad_scale), max_norm * (common / param_scale)
    return _AGCParts(
        xp,
        call.dtype,
        call.axes,
        grad_scale,
        grad_norm,
        param_scale,
        param_norm,
        max_norm,
        m / xp.maximum(n, m),
        n > m,
    )


def _agc_parts(grad: Array, param: Array, call: _AGCCall) -> tuple[_AGCParts, Array]:
    """The per-unit quantities of AGC, and ``grad`` in the compute dtype.

    ``param`` is needed as its norms alone: its scaled copy is dropped at once.
    """
    xp, axes = call.xp, call.axes
    p = to_dtype(xp, param, call.dtype)
    param_scale = unit_scale(xp, p, axes)
    param_norm = unit_norms(xp, _times(p, param, param_scale), axes)
    del p
    g = to_dtype(xp, grad, call.dtype)
    grad_scale = unit_scale(xp, g, axes)
    grad_norm = unit_norms(xp, g * grad_scale, axes)
    return _agc_factors(call, grad_scale, grad_norm, param_scale, param_norm), g


def _row_parts(call: _AGCCall, shape: tuple[int, ...], rows: tuple[Array, ...]) -> _AGCParts:
    """The per-unit quantities of AGC from the kernels' sums over the units as rows
    (:mod:`normref._fused.units`: float32 values in float64, where any scale is exactly 1)."""
    xp = call.xp
    kept = tuple(1 if a in call.axes else size for a, size in enumerate(shape))

    def norm(u: Array) -> Array:
        return xp.reshape(xp.sqrt(fused_units.unit_products(xp, u, u)), kept)

    one = xp.ones(kept, dtype=call.dtype)
    return _agc_factors(call, one, norm(rows[0]), one, norm(rows[1]))


def _vjp_coefficients(parts: _AGCParts, s: Array, call: _AGCCall) -> tuple[Array, Array]:
    """Per unit, ``k_grad = f s / n**2`` on a clipped unit (0 elsewhere) and ``k_param``,
    ``lambda s / (n p)`` where the threshold moves with the weight (0 elsewhere; NaN where the
    factor is), from ``s``, the sum of the cotangent times the scaled gradient."""
    xp, factor, clipped = parts.xp, parts.factor, parts.clipped
    n = xp.where(clipped, parts.grad_norm, xp.ones_like(parts.grad_norm))
    k_grad = xp.where(clipped, factor * s / (n * n), 0.0)
    moves_m = clipped & (parts.param_norm >= call.eps * parts.param_scale)
    p = xp.where(moves_m, parts.param_norm, xp.ones_like(parts.param_norm))
    k_param = xp.where(moves_m, call.clipping * s / (n * p), 0.0)
    return k_grad, xp.where(xp.isnan(factor), factor, k_param)


def _times(converted: Array, source: Array, factor: Array) -> Array:
    """``converted * factor``, in ``converted``'s memory where it is a copy of ``source``.

    ``converted`` is ``to_dtype(source, ...)``, which is ``source`` itself when
    no conversion was needed: an input is never modified.
    """
    if converted is source:
        return converted * factor
    converted *= factor
    return converted


def _per_row(xp: Namespace, unit_values: Array) -> Array:
    """Per-unit values (kept dims) as one value per row of :func:`unit_rows`."""
    return xp.reshape(unit_values, (-1,))


def adaptive_grad_clip(
    grad: Array,
    param: Array,
    *,
    clipping: float = 0.01,
    eps: float = 1e-3,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Adaptive gradient clipping of one parameter's gradient, unit-wise.

    .. math::

        G \leftarrow G \cdot \frac{m}{\max(\|G\|_u, m)}, \qquad
        m = \lambda \max(\|W\|_u, \epsilon)

    (:math:`= G \min(1, m/\|G\|_u)`; see the module docstring for the
    boundary, zero gradients and zero weights, which are all finite).

    Parameters
    ----------
    grad
        The gradient :math:`G`.
    param
        The parameter :math:`W`, of ``grad``'s shape.
    clipping
        :math:`\lambda`, finite, > 0 (NFNets: 0.01 for batch size 4096, larger
        for smaller batches).
    eps
        Finite, > 0: the smallest parameter norm (so zero-initialized
        parameters can move). NFNets and optax: 1e-3.
    out_axis
        The axis of output units: 0 (torch) or -1 (jax); see the module docstring.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    The clipped gradient, of ``grad``'s shape and dtype. A unit holding an
    infinite gradient has an infinite norm and is scaled by 0: its finite
    values become 0 and its infinite ones NaN (as the NFNets code and optax);
    NaN in a unit of ``grad`` or ``param`` makes that unit NaN. Other units
    are unaffected. The norms are taken of each unit times a power of two, so
    that they neither overflow nor underflow.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> grad = np.array([[10.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    >>> y = normref.adaptive_grad_clip(grad, w, clipping=0.1)
    >>> print(np.round(y, 4))  # the first unit's gradient clipped to 0.1 of its norm
    [[0.5  0.   0.  ]
     [0.01 0.   0.  ]]

    References
    ----------
    - Brock, A., De, S., Smith, S. L. and Simonyan, K. (2021). High-performance large-scale
      image recognition without normalization. ICML. https://arxiv.org/abs/2102.06171
    """
    call = _agc_call(grad, param, clipping, eps, out_axis, precision)
    xp = call.xp
    rows = fused_units.unit_rows(xp, call.axes, precision, grad, param)
    if rows is not None:
        parts = _row_parts(call, tuple(grad.shape), rows)
        return xp.reshape(fused_units.combined(xp, rows[0], _per_row(xp, parts.factor)), grad.shape)
    parts, g = _agc_parts(grad, param, call)
    return to_dtype(xp, _times(g, grad, parts.factor), grad.dtype)


def adaptive_grad_clip_vjp(
    dy: Array,
    grad: Array,
    param: Array,
    *,
    clipping: float = 0.01,
    eps: float = 1e-3,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> AGCGrads:
    r"""VJP of :func:`adaptive_grad_clip` for ``grad`` and ``param``.

    With :math:`n = \|G\|_u`, :math:`p = \|W\|_u`, :math:`f = m/\max(n, m)` and
    :math:`s = \sum_u \bar y\, G` per unit: on a clipped unit (:math:`n > m`)

    .. math::

        \bar G = f \bar y - \frac{f s}{n^2} G, \qquad
        \bar W = [p \ge \epsilon] \, \frac{\lambda s}{n p} W,

    and on an unclipped one (:math:`n \le m`, the boundary included)
    :math:`\bar G = \bar y`, :math:`\bar W = 0`. At the kinks (:math:`n = m`,
    :math:`p = \epsilon`) these are one-sided derivatives. A unit whose factor
    :math:`f` is NaN (NaN in its gradient or parameter) gets NaN in both
    gradients, as non-finite values propagate everywhere in normref. Both
    terms are products of a unit's scaled values with ratios of scaled sums,
    which do not change with the units' scale.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> grad = np.array([[10.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    >>> y = normref.adaptive_grad_clip(grad, w, clipping=0.1)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.adaptive_grad_clip_vjp(dy, grad, w, clipping=0.1)
    >>> print(g._fields)
    ('grad', 'param')
    >>> print(np.round(g[0], 4))
    [[ 0.   -0.03 -0.01]
     [ 0.2   0.6   1.  ]]

    References
    ----------
    - Brock, A., De, S., Smith, S. L. and Simonyan, K. (2021). High-performance large-scale
      image recognition without normalization. ICML. https://arxiv.org/abs/2102.06171
    """
    call = _agc_call(grad, param, clipping, eps, out_axis, precision, dy=dy)
    xp = call.xp
    rows = fused_units.unit_rows(xp, call.axes, precision, grad, param, dy)
    if rows is not None:
        g_rows, p_rows, dy_rows = rows
        parts = _row_parts(call, tuple(grad.shape), rows)
        s = xp.reshape(fused_units.unit_products(xp, dy_rows, g_rows), parts.factor.shape)
        k_grad, k_param = (_per_row(xp, k) for k in _vjp_coefficients(parts, s, call))
        factor = _per_row(xp, parts.factor)
        return AGCGrads(
            grad=xp.reshape(fused_units.combined(xp, dy_rows, factor, g_rows, k_grad), grad.shape),
            param=xp.reshape(fused_units.combined(xp, p_rows, k_param), param.shape),
        )
    parts, g = _agc_parts(grad, param, call)
    d_grad = xp.astype(dy, parts.dtype, copy=True)  # becomes the gradient of grad
    g = _times(g, grad, parts.grad_scale)  # the scaled units: f s / n^2 G = f s' / n'^2 G'
    s = sum_of_products(xp, d_grad, g, parts.axes) if parts.axes else d_grad * g
    k_grad, k_param = _vjp_coefficients(parts, s, call)
    d_grad *= parts.factor
    g *= k_grad  # in place: g is this function's own scaled copy
    d_grad -= g
    del g  # the converted gradient is not needed any more: free it before the next copies
    d_grad = to_dtype(xp, d_grad, grad.dtype)
    w = to_dtype(xp, param, parts.dtype)
    d_param = _times(_times(w, param, parts.param_scale), param, k_param)
    return AGCGrads(grad=d_grad, param=to_dtype(xp, d_param, param.dtype))


def adaptive_grad_clip_tree(
    grads: Any,
    params: Any,
    *,
    exclude: Callable[[tuple[Any, ...]], bool] | None = None,
    clipping: float = 0.01,
    eps: float = 1e-3,
    out_axis: int = 0,
    precision: Precision = "highest",
) -> Any:
    """:func:`adaptive_grad_clip` on every leaf of matching trees of gradients and parameters.

    ``grads`` and ``params`` are arrays, or (nested) lists, tuples or dicts of
    arrays with the same structure (and keys); the result has that structure.
    Each leaf is clipped unit-wise on its own (scalars and vectors as one unit),
    with the same ``clipping``, ``eps`` and ``out_axis``.

    ``exclude`` receives each leaf's path, the tuple of the dict keys and
    sequence indices leading to it (``("head", "w")``; ``()`` for a lone
    array), and returns ``True`` to leave that gradient unclipped (a copy, in
    its dtype): NFNets does not clip its final linear layer, ``exclude=lambda
    path: path[0] == "head"``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> grads = {'w': np.array([[10.0, 0.0, 0.0], [0.01, 0.0, 0.0]])}
    >>> y = normref.adaptive_grad_clip_tree(grads, {'w': w}, clipping=0.1)
    >>> print(np.round(y['w'], 4))
    [[0.5  0.   0.  ]
     [0.01 0.   0.  ]]

    References
    ----------
    - Brock, A., De, S., Smith, S. L. and Simonyan, K. (2021). High-performance large-scale
      image recognition without normalization. ICML. https://arxiv.org/abs/2102.06171
    """
    flat_grads, flat_params = flatten(grads), flatten(params)
    check_same_structure(flat_grads, flat_params, names=("grads", "params"))
    namespace_of(**named_leaves("grads", flat_grads), **named_leaves("params", flat_params))
    if exclude is not None and not callable(exclude):
        msg = f"exclude must be a callable of a leaf's path, or None, got {type(exclude).__name__}"
        raise TypeError(msg)
    clipped = []
    for keys, path, g, p in zip(
        flat_grads.keys, flat_grads.paths, flat_grads.leaves, flat_params.leaves, strict=True
    ):
        if exclude is not None and exclude(keys):
            clipped.append(namespace_of(grad=g).asarray(g, copy=True))
            continue
        try:
            clipped.append(
                adaptive_grad_clip(
                    g, p, clipping=clipping, eps=eps, out_axis=out_axis, precision=precision
                )
            )
        except (TypeError, ValueError) as error:
            msg = f"the leaf grads{path} (and params{path}): {error}"
            raise type(error)(msg) from error
    return flat_grads.rebuild(clipped)


class CentralizedGrad(NamedTuple):
    """Gradient of :func:`gradient_centralize` with respect to ``grad``."""

    grad: Array


def _centralizing_layer(grad: Array, out_axis: object) -> Layer | None:
    """The centring operation on the units of ``grad`` (``None`` for a scalar or a vector,
    which is left unchanged; ``out_axis`` must still be 0 or -1 there)."""
    shape = tuple(grad.shape)
    axes = unit_norm_axes(shape, out_axis, name="grad")
    if len(shape) <= 1:
        return None
    axis = next(a for a in range(len(shape)) if a not in axes)
    return Layer(
        "gradient_centralize",
        unit_partition(shape, axis),
        CENTER,
        {},
        (axis,),
        f"grad of shape {shape}, out_axis={out_axis}",
    )


def gradient_centralize(
    grad: Array, *, out_axis: int = 0, precision: Precision = "highest"
) -> Array:
    r"""Gradient centralization: each output unit minus its mean over the fan-in (rank >= 2).

    .. math::

        G \leftarrow G - \frac1N \sum_{i \in u} G_i \quad \text{per unit } u

    (the centring operation, :func:`normref.ops.center`, on the units of
    ``out_axis``, whose mean is summed as the unit's values times a power of
    two: no overflow where the mean is finite); a scalar or a vector is returned unchanged (a copy). Yong
    et al. centre the gradient of every weight of rank > 1 (convolution and
    fully connected kernels) over all of a unit's fan-in. Idempotent: a
    centred gradient is its own centring; each unit's output has mean 0.

    Parameters
    ----------
    grad
        The gradient, any rank.
    out_axis
        The axis of output units: 0 (torch ``(out, in)``, ``OIHW``) or -1 (jax
        ``(in, out)``, ``HWIO``); ``optax.centralize`` always takes the leading
        axis (``docs/conventions.md``).
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``grad``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.gradient_centralize(w)
    >>> print(np.round(y, 4))  # each unit's mean removed
    [[ 0.6667  1.6667 -2.3333]
     [ 0.3333 -1.6667  1.3333]]

    References
    ----------
    - Yong, H., Huang, J., Hua, X. and Zhang, L. (2020). Gradient centralization: a new
      optimization technique for deep neural networks. ECCV.
      https://arxiv.org/abs/2004.01461
    """
    xp = namespace_of(grad=grad)
    layer = _centralizing_layer(grad, out_axis)
    if layer is None:
        return xp.asarray(grad, copy=True)
    return normalize(layer, grad, None, None, precision)


def gradient_centralize_vjp(
    dy: Array, grad: Array, *, out_axis: int = 0, precision: Precision = "highest"
) -> CentralizedGrad:
    r"""VJP of :func:`gradient_centralize`: the same centring of ``dy`` (an orthogonal projection
    is its own adjoint); ``dy`` itself (a copy) for a scalar or a vector.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> w = np.array([[3.0, 4.0, 0.0], [1.0, -1.0, 2.0]])  # (out, in)
    >>> y = normref.gradient_centralize(w)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.gradient_centralize_vjp(dy, w)
    >>> print(g._fields)
    ('grad',)
    >>> print(np.round(g[0], 4))
    [[-0.4  0.   0.4]
     [-0.4  0.   0.4]]

    References
    ----------
    - Yong, H., Huang, J., Hua, X. and Zhang, L. (2020). Gradient centralization: a new
      optimization technique for deep neural networks. ECCV.
      https://arxiv.org/abs/2004.01461
    """
    xp = namespace_of(grad=grad, dy=dy)
    check_shape(dy.shape, grad.shape, name="dy", what="the shape of grad")
    layer = _centralizing_layer(grad, out_axis)
    if layer is None:
        return CentralizedGrad(xp.asarray(to_dtype(xp, dy, grad.dtype), copy=True))
    return CentralizedGrad(normalize_vjp(layer, dy, grad, None, None, precision).x)


class _GlobalNorm(NamedTuple):
    """The leaves of a tree of gradients, and their global norm taken of them times one power
    of two (``scale``): ``norm`` is that of the scaled leaves."""

    xp: Namespace
    dtype: Any
    flat: Flat
    scale: Array
    norm: Array


def _global_norm(grads: Any, precision: Precision) -> _GlobalNorm:
    flat = flatten(grads)
    check_not_empty(flat, name="grads")
    xp = namespace_of(**named_leaves("grads", flat))
    dtype = compute_dtype(xp, result_dtype(xp, *flat.leaves), precision)
    leaves = [xp.reshape(to_dtype(xp, leaf, dtype), (-1,)) for leaf in flat.leaves if leaf.size]
    if not leaves:
        msg = f"grads hold no values (leaves of size 0 only: {flat.paths}): no norm to clip by"
        raise ValueError(msg)
    magnitudes = xp.stack([max_magnitude(xp, leaf, (0,))[0] for leaf in leaves])
    scale = power_of_two_scale(xp, xp.max(magnitudes))
    squares = [xp.vecdot(leaf * scale, leaf * scale) for leaf in leaves]
    return _GlobalNorm(xp, dtype, flat, scale, xp.sqrt(xp.sum(xp.stack(squares))))


def global_norm(grads: Any, *, precision: Precision = "highest") -> Array:
    r"""The Euclidean norm of all arrays of ``grads`` together, :math:`\sqrt{\sum_k \|g_k\|^2}`.

    ``grads`` is an array or a (nested) list, tuple or dict of arrays. Returns
    a 0-d array in the promoted dtype of the leaves. The squares are summed of the
    values times one power of two (``normref._lib.scaling``): the norm is
    infinite only where it overflows the dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> grads = [np.array([3.0]), np.array([[4.0, 0.0]])]
    >>> y = normref.global_norm(grads)
    >>> print(float(y))
    5.0

    References
    ----------
    - Pascanu, R., Mikolov, T. and Bengio, Y. (2013). On the difficulty of training
      recurrent neural networks. ICML. https://arxiv.org/abs/1211.5063
    """
    found = _global_norm(grads, precision)
    xp = found.xp
    return to_dtype(xp, found.norm / found.scale, result_dtype(xp, *found.flat.leaves))


def clip_by_global_norm(
    grads: Any, max_norm: float, *, eps: float = 0.0, precision: Precision = "highest"
) -> Any:
    r"""Scale all gradients by one factor so that their global norm is at most ``max_norm``.

    .. math::

        g_k \leftarrow g_k \cdot \frac{c}{\max(\|g\| + \epsilon, c)}
        = g_k \min\Big(1, \frac{c}{\|g\| + \epsilon}\Big)

    with :math:`c` = ``max_norm`` and :math:`\|g\|` = :func:`global_norm`.
    ``eps`` is the convention: 0 is optax's ``clip_by_global_norm`` (exactly
    ``max_norm`` after clipping); ``1e-6`` is torch's ``clip_grad_norm_``
    (slightly below it). Zero gradients stay 0; no division by 0 happens. A
    non-finite global norm gives what torch and optax give: an infinite one
    scales every finite gradient to 0 (the infinite values become NaN), a
    NaN one makes every gradient NaN.

    Parameters
    ----------
    grads
        An array or a (nested) list, tuple or dict of arrays (one library).
    max_norm
        :math:`c`, finite, > 0.
    eps
        Finite, >= 0, added to the norm before dividing.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    ``grads``' structure with every array scaled, each in its own dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> grads = [np.array([3.0]), np.array([[4.0, 0.0]])]
    >>> y = normref.clip_by_global_norm(grads, 1.0)
    >>> print([np.round(g, 4) for g in y])
    [array([0.6]), array([[0.8, 0. ]])]

    References
    ----------
    - Pascanu, R., Mikolov, T. and Bengio, Y. (2013). On the difficulty of training
      recurrent neural networks. ICML. https://arxiv.org/abs/1211.5063
    """
    max_norm = check_eps(max_norm, name="max_norm")
    eps = check_eps(eps, allow_zero=True)
    found = _global_norm(grads, precision)
    xp, scale = found.xp, found.scale
    # c / max(|g| + eps, c) with everything times the power of two of the norm
    limit = max_norm * scale
    total = found.norm + eps * scale
    clipped = total > limit
    factor = xp.where(clipped, limit / xp.where(clipped, total, xp.ones_like(total)), 1.0)
    factor = xp.where(xp.isnan(total), total, factor)  # a NaN norm makes every gradient NaN
    return found.flat.rebuild(
        [
            to_dtype(xp, to_dtype(xp, leaf, found.dtype) * factor, leaf.dtype)
            for leaf in found.flat.leaves
        ]
    )
