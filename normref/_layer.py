"""How a named layer runs: partition + operation + affine, forward and backward.

Every layer in :mod:`normref.layers` is one call to :func:`normalize` (and its
VJP to :func:`normalize_vjp`) with its own partition, operation and parameter
axes: no layer has math of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from normref import _fused
from normref._checks import check_shape
from normref._namespace import (
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
from normref.ops._group_op import CANONICAL_SAMPLE_AXES, GroupOp, check_group_size
from normref.partition import Partition


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
    :math:`\gamma/\sqrt N`); 1 for every named activation layer.
    """

    name: str
    partition: Partition
    op: GroupOp
    params: dict[str, Any]
    param_axes: tuple[int, ...]
    where: str
    affine_scale: float = 1.0


def _checked_namespace(
    layer: Layer, x: Array, gamma: Array | None, beta: Array | None, **more: Array
) -> Any:
    xp = namespace_of(**more, x=x, gamma=gamma, beta=beta)
    check_param(gamma, x.shape, layer.param_axes, name="gamma")
    check_param(beta, x.shape, layer.param_axes, name="beta")
    check_group_size(layer.partition.M, op=layer.op, where=f"{layer.name}({layer.where})")
    return xp


def _op_kwargs(layer: Layer, precision: Any) -> dict[str, Any]:
    extra = {"algorithm": variance_algorithm(precision)} if layer.op.needs_variance else {}
    return {**layer.params, **extra}


def _op_layout(layer: Layer) -> tuple[Callable, Callable, tuple[int, ...]]:
    """How ``layer``'s operation sees ``x``: (to the view, back from it, its sample axes).

    The split view (no data moves) for operations on independent features; the
    canonical ``(G, M, D)`` array for operations on the features jointly.
    """
    part = layer.partition
    if layer.op.joint_features:
        return part.to_canonical, part.from_canonical, CANONICAL_SAMPLE_AXES
    return part.split, part.unsplit, part.sample_axes


def normalize(
    layer: Layer, x: Array, gamma: Array | None, beta: Array | None, precision: Any
) -> Array:
    """Forward pass of ``layer``."""
    xp = _checked_namespace(layer, x, gamma, beta)
    fused = _fused.forward(layer, xp, x, gamma, beta, precision)
    if fused is not None:
        return fused
    dtype = compute_dtype(xp, x.dtype, precision)
    to_view, from_view, axes = _op_layout(layer)
    x_hat = from_view(
        xp,
        layer.op.forward(
            xp, to_view(xp, to_dtype(xp, x, dtype)), axes, **_op_kwargs(layer, precision)
        ),
    )
    y = affine(
        xp,
        x_hat,
        scaled_gamma(xp, gamma, layer.affine_scale, dtype, param_shape(x.shape, layer.param_axes)),
        to_dtype(xp, beta, dtype),
        layer.param_axes,
    )
    return to_dtype(xp, y, output_dtype(xp, precision, x, gamma, beta))


def normalize_vjp(
    layer: Layer, dy: Array, x: Array, gamma: Array | None, beta: Array | None, precision: Any
) -> NormGrads:
    """Backward pass of ``layer``: gradients for ``x``, ``gamma`` and ``beta``."""
    xp = _checked_namespace(layer, x, gamma, beta, dy=dy)
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    fused = _fused.vjp(layer, xp, dy, x, gamma, beta, precision)
    if fused is not None:
        return fused
    dtype = compute_dtype(xp, x.dtype, precision)
    to_view, from_view, axes = _op_layout(layer)

    def backward(d_x_hat: Array) -> tuple[Array, Array]:
        dx, x_hat = layer.op.vjp(
            xp,
            to_view(xp, d_x_hat),
            to_view(xp, to_dtype(xp, x, dtype)),
            axes,
            **_op_kwargs(layer, precision),
        )
        return from_view(xp, dx), from_view(xp, x_hat)

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
    factor = scaled_gamma(xp, gamma, scale, dtype, param_shape(x.shape, param_axes))
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
