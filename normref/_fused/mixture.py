"""Switchable norm's passes over ``x`` and ``dy`` through the kernels, on NumPy arrays.

Switchable norm (:mod:`normref.layers.switchable`) mixes the statistics of
instances, layers and batches, which all come from each instance's mean and sum
of squared deviations; its output and its input's gradient are an affine map of
each instance's values (and cotangent). Here the kernels take those sums
(:func:`normref._fused.kernels.statistics` over instance norm's groups: pairwise,
from one pass where that is as accurate as two) and write the maps
(:func:`~normref._fused.kernels.normalize_with`,
:func:`~normref._fused.kernels.affine_gradient`), one pass over ``x`` each, with
no copy of it; the backward's sums per instance of ``dy`` and of ``dy (x - mu)``
take one more (:func:`~normref._fused.kernels.cotangent_sums`). The mixture's
statistics, one value per instance, stay with the generic code.

Scale. The mixture adds statistics of different groups, which must share one
power of two. The generic path takes every sum of the values times one for the
whole input, chosen from its largest magnitude; here the kernels take each
instance's sums of its values times its own (1 where the values as they are
give them exactly), brought to the smallest of them (:func:`instance_moments`).
Both choices make inputs a power of two apart give results that power apart,
bit for bit (the scaling law the tests hold every path to). An input with a NaN
or an infinity runs the generic path, whose statistics keep those to the
instances, layers and batches that hold them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

from normref._fused import (
    _chunks,
    _flat_param,
    _kernels,
    _layout,
    _param_size,
    on_gpu,
    statistics,
)
from normref._fused.factors import Layer
from normref._fused.layout import Layout
from normref._fused.threads import run_chunks
from normref._lib.namespace import Array, Namespace, compute_dtype
from normref.types import Precision


class _Plan(NamedTuple):
    """How the kernels take one call: its layout, the kernels module, the compute dtype, the
    parameters' size and the chunks of work."""

    layout: Layout
    kernels: ModuleType
    dtype: Any
    size: int
    chunks: int


def _plan(
    layer: Layer,
    xp: Namespace,
    precision: Precision,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    dy: Array | None = None,
) -> _Plan | None:
    """The :class:`_Plan` of a call, or ``None`` where the kernels do not take its arrays."""
    layout = _layout(layer, xp, precision, x, gamma, beta, dy)
    kernels = _kernels()
    if layout is None or kernels is None:
        return None
    size = _param_size(layer, x, gamma is not None or beta is not None)
    return _Plan(layout, kernels, compute_dtype(xp, x.dtype, precision), size, _chunks(layout, 1))


class Moments(NamedTuple):
    """Each instance's mean and sum of squared deviations ``m2`` of its values times the power
    of two ``scale`` (one for the whole input), one value per instance in the order of the
    partition's group axes."""

    mean: Array
    m2: Array
    scale: Array


def instance_moments(layer: Layer, xp: Namespace, x: Array, precision: Precision) -> Moments | None:
    """The :class:`Moments` of the values of ``layer``'s groups (instance norm's), in the compute
    dtype; ``None`` where the generic path must run: the kernels do not run here, or the
    input holds a NaN or an infinity.

    The kernels take each instance's sums of its values times its own power of two ``c``, 1
    where the values as they are give them exactly; here they are brought to the smallest
    ``c`` of all, the ``scale`` (times ``scale / c``, exact but where an instance is so much
    smaller than the largest that its sums underflow there, as the generic path's would).
    Inputs a power of two apart so get the same moments times that power, bit for bit.
    """
    if on_gpu(xp):
        return None
    found = statistics(layer, xp, x, precision)
    if found is None or not bool(xp.all(xp.isfinite(found.m2) & xp.isfinite(found.scaled_mean))):
        return None
    scale = xp.min(found.scale)
    ratio = scale / found.scale
    return Moments(found.scaled_mean * ratio, found.m2 * ratio * ratio, scale)


def normalized(
    layer: Layer,
    xp: Namespace,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
    scale: Array,
    mu: Array,
    factor: Array,
    out_dtype: object,
) -> Array | None:
    """``y = (x * scale - mu) * factor * gamma + beta`` per instance (``mu`` and ``factor`` one
    value per instance in the compute dtype, ``scale`` that of :func:`instance_moments`, which
    the kernels took of ``x``), in ``out_dtype``; ``None`` where the kernels do not take the
    parameters (a float16 ``gamma``: the generic path must write ``y``)."""
    plan = _plan(layer, xp, precision, x, gamma, beta)
    if plan is None:
        return None
    y = xp.empty(x.shape, dtype=out_dtype)
    run_chunks(
        plan.kernels.normalize_with,
        plan.chunks,
        x.size,
        xp.reshape(x, plan.layout.shape),
        xp.stack([xp.reshape(mu, (-1,)), xp.reshape(factor, (-1,))]),
        scale[()],
        _flat_param(xp, gamma, 1.0, plan.size, plan.dtype),
        _flat_param(xp, beta, -0.0, plan.size, plan.dtype),
        plan.layout.param_strides,
        xp.reshape(y, plan.layout.shape),
        plan.chunks,
    )
    return y


def cotangent_sums(
    layer: Layer,
    xp: Namespace,
    dy: Array,
    x: Array,
    gamma: Array | None,
    precision: Precision,
    scale: Array,
    mu: Array,
) -> tuple[Array, Array] | None:
    """Per instance (one value each, in the compute dtype): the sums of ``dy`` and of
    ``dy * (x * scale - mu)``; ``None`` where the kernels take neither ``dy`` nor ``gamma``
    (the generic path must take the sums and write ``dx``; :func:`affine_gradient` runs where
    they do)."""
    plan = _plan(layer, xp, precision, x, gamma, None, dy)
    if plan is None:
        return None
    out = xp.empty((2, plan.layout.groups), dtype=plan.dtype)
    run_chunks(
        plan.kernels.cotangent_sums,
        plan.chunks,
        x.size,
        xp.reshape(x, plan.layout.shape),
        xp.reshape(dy, plan.layout.shape),
        xp.ones((1,), dtype=plan.dtype),
        scale[()],
        xp.reshape(mu, (-1,)),
        out,
        xp.zeros((plan.chunks, 1, 4, plan.kernels.DEPTH), dtype=plan.dtype),
    )
    return out[0, :], out[1, :]


def affine_gradient(
    layer: Layer,
    xp: Namespace,
    dy: Array,
    x: Array,
    gamma: Array | None,
    precision: Precision,
    scale: Array,
    factors: tuple[Array, Array, Array, Array],
) -> Array:
    """``dx = (dy * gamma) * r + (x * scale - mu) * k + o`` per instance, ``factors`` the
    ``(mu, r, k, o)`` of each (one value per instance in the compute dtype), in ``x``'s dtype;
    where :func:`cotangent_sums` ran."""
    plan = _plan(layer, xp, precision, x, gamma, None, dy)
    assert plan is not None  # as for cotangent_sums
    dx = xp.empty(x.shape, dtype=x.dtype)
    run_chunks(
        plan.kernels.affine_gradient,
        plan.chunks,
        x.size,
        xp.reshape(x, plan.layout.shape),
        xp.reshape(dy, plan.layout.shape),
        _flat_param(xp, gamma, 1.0, plan.size, plan.dtype),
        plan.layout.param_strides,
        scale[()],
        xp.stack([xp.reshape(f, (-1,)) for f in factors]),
        xp.reshape(dx, plan.layout.shape),
        plan.chunks,
    )
    return dx
