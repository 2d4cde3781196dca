"""How a named layer runs: partition + operation + affine, forward and backward.

Every layer in :mod:`normref.layers` is one call to :func:`normalize` (and its
VJP to :func:`normalize_vjp`) with its own partition, operation and parameter
axes: no layer has math of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from array_api_compat import device

from normref import _fused
from normref._lib.checks import check_shape
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
    variance_algorithm,
)
from normref.affine import (
    affine,
    affine_vjp_params,
    affine_vjp_x_hat,
    check_param,
    param_shape,
    scaled_gamma,
)
from normref.ops.base import GroupOp, check_group_size, empty_like
from normref.ops.sample_blocks import sample_blocks
from normref.partition import Partition
from normref.types import Precision


class NormGrads(NamedTuple):
    """Gradients of a normalization layer with respect to ``x``, ``gamma`` and ``beta``.

    ``gamma`` and ``beta`` are ``None`` where the layer was called without them.
    """

    x: Array
    gamma: Array | None
    beta: Array | None


class ScaleNormGrads(NamedTuple):
    """Gradients of a scale-only layer (RMS norm) with respect to ``x`` and ``gamma``."""

    x: Array
    gamma: Array | None


class Layer(NamedTuple):
    r"""What a layer call is made of.

    ``affine_scale`` is a constant factor of the affine, applied in the compute
    dtype: :math:`y = c\,\gamma \hat x + \beta` (Scaled WS's
    :math:`\gamma/\sqrt N`); 1 for every named activation layer. ``argument``
    names the normalized input in messages (``"w"``, ``"v"`` for weights).
    """

    name: str
    partition: Partition
    op: GroupOp
    params: dict[str, Any]
    param_axes: tuple[int, ...]
    where: str
    affine_scale: float = 1.0
    argument: str = "x"


def _checked_namespace(
    layer: Layer, x: Array, gamma: Array | None, beta: Array | None, **more: Array
) -> Any:
    xp = namespace_of(**more, x=x, gamma=gamma, beta=beta, optional=("gamma", "beta"))
    check_param(gamma, x.shape, layer.param_axes, name="gamma")
    check_param(beta, x.shape, layer.param_axes, name="beta")
    check_group_size(
        layer.partition,
        op=layer.op,
        params=layer.params,
        where=f"{layer.name}({layer.where})",
        name=layer.argument,
    )
    return xp


def _op_kwargs(layer: Layer, precision: Precision) -> dict[str, Any]:
    extra = {"algorithm": variance_algorithm(precision)} if layer.op.needs_variance else {}
    return {**layer.params, **extra}


def _canonical_param(layer: Layer, xp: Any, param: Array | None) -> Array | None:
    if param is None:
        return None
    return layer.partition.canonical_param(xp, param, layer.param_axes)


def _joint_forward(
    layer: Layer,
    xp: Any,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
    out_dtype: Any,
) -> Array:
    """:func:`normalize` where the operation treats each group's features jointly.

    The operation reads the canonical rows of ``x`` a block at a time
    (:mod:`normref.ops.sample_blocks`), applies the affine (per feature:
    ``(G, 1, D)`` in the canonical layout) to each block of its output in the
    compute dtype, and writes the result, rounded to ``out_dtype``, in ``x``'s shape.
    """
    dtype = compute_dtype(xp, x.dtype, precision)
    factor = scaled_gamma(
        xp, gamma, layer.affine_scale, dtype, param_shape(x.shape, layer.param_axes), device(x)
    )
    return layer.op.forward(
        xp,
        sample_blocks(xp, layer.partition, x),
        _canonical_param(layer, xp, factor),
        _canonical_param(layer, xp, to_dtype(xp, beta, dtype)),
        dtype=dtype,
        out_dtype=out_dtype,
        **_op_kwargs(layer, precision),
    )


def _joint_vjp(
    layer: Layer,
    xp: Any,
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
) -> NormGrads:
    """:func:`normalize_vjp` where the operation treats each group's features jointly.

    The operation reads the canonical rows of ``dy`` and ``x`` a block at a time, with
    ``gamma`` in the canonical layout, and returns ``dx`` in ``x``'s shape and dtype
    and the sums over samples that the affine's gradients are.
    """
    dtype = compute_dtype(xp, x.dtype, precision)
    part, scale = layer.partition, layer.affine_scale
    factor = scaled_gamma(
        xp, gamma, scale, dtype, param_shape(x.shape, layer.param_axes), device(x)
    )
    grads = layer.op.vjp(
        xp,
        sample_blocks(xp, part, dy),
        sample_blocks(xp, part, x),
        _canonical_param(layer, xp, factor),
        dtype=dtype,
        out_dtype=x.dtype,
        **_op_kwargs(layer, precision),
    )

    def param_grad(sums: Array, param: Array | None) -> Array | None:
        if param is None:
            return None
        return to_dtype(xp, part.param_from_canonical(xp, sums, layer.param_axes), param.dtype)

    return NormGrads(
        x=grads.dx,
        gamma=param_grad(grads.dy_dot_y * scale if scale != 1.0 else grads.dy_dot_y, gamma),
        beta=param_grad(grads.dy_sum, beta),
    )


def normalize(
    layer: Layer,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
    *,
    out_dtype: Any = None,
) -> Array:
    """Forward pass of ``layer``, in ``out_dtype`` (by default the promoted dtype of ``x``,
    ``gamma`` and ``beta``, or ``x``'s where a modelled convention says so).

    A layer that computes its affine parameters in the compute dtype (batch
    renormalization, AdaIN) names the dtype of the parameters it was given: the result is
    rounded to it once, with no output of the parameters' dtype in between.
    """
    xp = _checked_namespace(layer, x, gamma, beta)
    dtype = compute_dtype(xp, x.dtype, precision)  # checks precision, as every call does
    if out_dtype is None:
        out_dtype = output_dtype(xp, precision, x, gamma, beta)
    if x.size == 0:  # no groups (a size 0 that is not reduced): nothing to normalize
        return empty_like(xp, tuple(x.shape), out_dtype, x)
    fused = _fused.forward(layer, xp, x, gamma, beta, precision, out_dtype)
    if fused is not None:
        return fused
    if layer.op.joint_features:
        return _joint_forward(layer, xp, x, gamma, beta, precision, out_dtype)
    part = layer.partition
    x_hat = part.unsplit(
        xp,
        layer.op.forward(
            xp,
            part.split(xp, to_dtype(xp, x, dtype)),
            part.sample_axes,
            **_op_kwargs(layer, precision),
        ),
    )
    y = affine(
        xp,
        x_hat,
        scaled_gamma(
            xp,
            gamma,
            layer.affine_scale,
            dtype,
            param_shape(x.shape, layer.param_axes),
            device(x),
        ),
        to_dtype(xp, beta, dtype),
        layer.param_axes,
        overwrite=True,  # the operation's output is a new array
    )
    return to_dtype(xp, y, out_dtype)


def normalize_vjp(
    layer: Layer, dy: Array, x: Array, gamma: Array | None, beta: Array | None, precision: Precision
) -> NormGrads:
    """Backward pass of ``layer``: gradients for ``x``, ``gamma`` and ``beta``."""
    xp = _checked_namespace(layer, x, gamma, beta, dy=dy)
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    if x.size == 0:  # no groups: every gradient is empty, or a sum over no values
        compute_dtype(xp, x.dtype, precision)
        return NormGrads(
            x=empty_like(xp, tuple(x.shape), x.dtype, x),
            gamma=None if gamma is None else xp.zeros_like(gamma),
            beta=None if beta is None else xp.zeros_like(beta),
        )
    fused = _fused.vjp(layer, xp, dy, x, gamma, beta, precision)
    if fused is not None:
        return NormGrads(*fused)
    if layer.op.joint_features:
        return _joint_vjp(layer, xp, dy, x, gamma, beta, precision)
    dtype = compute_dtype(xp, x.dtype, precision)
    part = layer.partition

    def backward(d_x_hat: Array) -> tuple[Array, Array]:
        dx, x_hat = layer.op.vjp(
            xp,
            part.split(xp, d_x_hat),
            part.split(xp, to_dtype(xp, x, dtype)),
            part.sample_axes,
            **_op_kwargs(layer, precision),
        )
        return part.unsplit(xp, dx), part.unsplit(xp, x_hat)

    return affine_backward(
        xp, dtype, dy, x, gamma, beta, layer.param_axes, backward, scale=layer.affine_scale
    )


def affine_backward(
    xp: Any,
    dtype: Any,
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    param_axes: tuple[int, ...],
    backward: Callable[[Array], tuple[Array, Array]],
    *,
    scale: float = 1.0,
) -> NormGrads:
    """Gradients of ``scale * gamma * x_hat(x) + beta`` for cotangent ``dy``, computed in ``dtype``.

    ``backward(d_x_hat) -> (dx, x_hat)`` is the normalization's own VJP (and its
    output, which the gradient of ``gamma`` needs); each gradient is returned in
    the dtype of its argument.
    """
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    dy_c = to_dtype(xp, dy, dtype)
    factor = scaled_gamma(xp, gamma, scale, dtype, param_shape(x.shape, param_axes), device(x))
    dx, x_hat = backward(affine_vjp_x_hat(xp, dy_c, factor, param_axes))
    d_gamma, d_beta = affine_vjp_params(
        xp, dy_c, x_hat, param_axes, has_gamma=gamma is not None, has_beta=beta is not None
    )
    if d_gamma is not None and scale != 1.0:
        d_gamma = d_gamma * scale
    return NormGrads(
        x=to_dtype(xp, dx, x.dtype),
        gamma=to_dtype(xp, d_gamma, None if gamma is None else gamma.dtype),
        beta=to_dtype(xp, d_beta, None if beta is None else beta.dtype),
    )
