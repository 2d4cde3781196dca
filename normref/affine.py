r"""Normalization representation recovery (NRR): the affine :math:`y = \gamma \hat x + \beta`.

``gamma`` and ``beta`` span some axes of ``x`` (the *parameter axes*): the
channel axis for batch, instance, group and ghost batch norm (shape ``(C,)``),
or the batch axis 0 and the channel axis for their per-sample parameters
(shape ``(N, C)``: conditional normalization, :func:`channel_param_axes`); the
normalized axes for layer and RMS norm (their shape). They broadcast over
every other axis. The gradients are

.. math::

    \bar{\hat x} = \gamma \bar y, \qquad
    \bar\gamma = \sum_{\text{other axes}} \bar y \, \hat x, \qquad
    \bar\beta = \sum_{\text{other axes}} \bar y.
"""

from __future__ import annotations

from typing import Any

from normref._lib.checks import check_shape, normalize_axis
from normref._lib.namespace import Array, Namespace, to_dtype
from normref._lib.reductions import sum_of_products


def param_shape(x_shape: tuple[int, ...], param_axes: tuple[int, ...]) -> tuple[int, ...]:
    """Shape a parameter spanning ``param_axes`` of ``x`` must have."""
    return tuple(x_shape[a] for a in param_axes)


def channel_param_axes(
    shape: tuple[int, ...], axis: int, gamma: Array | None, beta: Array | None
) -> tuple[int, ...]:
    """The axes of ``x`` (of ``shape``) that a channel layer's ``gamma`` and ``beta`` span.

    The channel axis ``axis`` (parameters of shape ``(C,)``); or, where either
    parameter has rank 2, the batch axis 0 and the channel axis: one ``gamma``
    and ``beta`` per sample and channel, shape ``(N, C)`` (conditional
    instance and batch norm, FiLM), both of that shape. Raises
    :class:`ValueError` for per-sample parameters when the channel axis is the
    batch axis 0.
    """
    channel = normalize_axis(axis, len(shape))
    if not any(p is not None and getattr(p, "ndim", 1) == 2 for p in (gamma, beta)):
        return (channel,)
    if channel == 0:
        msg = (
            "gamma and beta of rank 2 are per sample, of shape (N, C) with N on the batch "
            f"axis 0, which axis={axis} names as the channel axis"
        )
        raise ValueError(msg)
    return (0, channel)


def check_param(
    param: Array | None, x_shape: tuple[int, ...], param_axes: tuple[int, ...], *, name: str
) -> None:
    """``param`` must be ``None`` or have the shape of ``x`` along ``param_axes``."""
    if param is None:
        return
    where = ", ".join(f"x.shape[{a}]" for a in param_axes)
    check_shape(param.shape, param_shape(x_shape, param_axes), name=name, what=where)


def scaled_gamma(
    xp: Namespace,
    gamma: Array | None,
    scale: float,
    dtype: Any,
    shape: tuple[int, ...],
    device: Any,
) -> Array | None:
    """``scale * gamma`` in ``dtype``: ``gamma`` converted where ``scale`` is 1, ``None`` for neither.

    An absent ``gamma`` with a ``scale`` other than 1 is ``scale`` everywhere, of
    the parameter's ``shape``, on ``device``.
    """
    if scale == 1.0:
        return to_dtype(xp, gamma, dtype)
    if gamma is None:
        return xp.full(shape, scale, dtype=dtype, device=device)
    return to_dtype(xp, gamma, dtype) * scale


def broadcast_param(xp: Namespace, param: Array, ndim: int, param_axes: tuple[int, ...]) -> Array:
    shape = [1] * ndim
    for axis, size in zip(param_axes, param.shape, strict=False):
        shape[axis] = size
    return xp.reshape(param, tuple(shape))


def affine(
    xp: Namespace,
    x_hat: Array,
    gamma: Array | None,
    beta: Array | None,
    param_axes: tuple[int, ...],
    *,
    overwrite: bool = False,
) -> Array:
    """``gamma * x_hat + beta`` with the parameters broadcast along ``param_axes``.

    With ``overwrite``, ``x_hat`` is the caller's own array and the result is
    written in it; otherwise ``x_hat`` is never modified and at most one new
    array is made.
    """
    if overwrite:
        if gamma is not None:
            x_hat *= broadcast_param(xp, gamma, x_hat.ndim, param_axes)
        if beta is not None:
            x_hat += broadcast_param(xp, beta, x_hat.ndim, param_axes)
        return x_hat
    if gamma is None:
        return x_hat if beta is None else x_hat + broadcast_param(xp, beta, x_hat.ndim, param_axes)
    y = x_hat * broadcast_param(xp, gamma, x_hat.ndim, param_axes)
    if beta is not None:
        y += broadcast_param(xp, beta, x_hat.ndim, param_axes)  # in place: y is new
    return y


def affine_vjp_x_hat(
    xp: Namespace, dy: Array, gamma: Array | None, param_axes: tuple[int, ...]
) -> Array:
    """Gradient of :func:`affine` with respect to ``x_hat``: ``gamma * dy``."""
    if gamma is None:
        return dy
    return dy * broadcast_param(xp, gamma, dy.ndim, param_axes)


def affine_vjp_params(
    xp: Namespace,
    dy: Array,
    x_hat: Array,
    param_axes: tuple[int, ...],
    *,
    has_gamma: bool,
    has_beta: bool,
) -> tuple[Array | None, Array | None]:
    """Gradients of :func:`affine` with respect to ``gamma`` and ``beta`` (``None`` if absent)."""
    other = tuple(a for a in range(dy.ndim) if a not in param_axes)
    d_gamma = sum_of_products(xp, dy, x_hat, other, keepdims=False) if has_gamma else None
    d_beta = xp.sum(dy, axis=other) if has_beta else None
    return d_gamma, d_beta
