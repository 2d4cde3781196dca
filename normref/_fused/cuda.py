"""The fused path on CuPy arrays: a standardizing or RMS layer in a few CUDA kernels.

The generic path launches a kernel per Array API operation, many of them on
full-size temporaries. Here each group's sums are reductions that read ``x``
(and ``dy``) in their own dtype into sums in the compute dtype (float64 under
``precision="highest"``, with no float64 copy of the input), and each result
is one elementwise kernel that rounds once to the output dtype: the same
quantities, in the same precision, as the generic path and the numba kernels,
with the per-group factors from the same formulas (:mod:`normref._fused.factors`).

Every statistic is that of a group's values times a power of two: the generic
path's own choice from the group's largest magnitude
(:func:`normref._lib.scaling.group_scale`), which makes the results the same,
bit for bit, whatever power of two the input was multiplied by.

The kernels see ``x`` in the five-slot layout of :mod:`normref._fused.layout`
(a reshape) and reduce over its sample slots ``(1, 3, 4)``; the affine
parameters are reshaped to broadcast along their slots. CuPy compiles each
kernel on first use and caches it on disk. Sums are CuPy's tree reductions, not
the numba kernels' cascade: results agree with the other paths to the
rounding of sums taken in another order.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from normref._fused.factors import Layer, forward_factor, scaling_floor, vjp_factors
from normref._fused.layout import Layout
from normref._lib.namespace import Array, Namespace, to_dtype
from normref._lib.scaling import group_scale

SAMPLE_SLOTS = (1, 3, 4)
"""The slots of the layout a group's samples run along."""

# ``T`` is the input's dtype, ``C`` the compute dtype (placeholders CuPy binds per call).
SCALED = "(C(x) * scale - shift)"
SUM_SCALED = ("T x, C scale, C shift", "C total", SCALED, "a + b", "total = a", "0")
SUM_SQUARES = (
    "T x, C scale, C shift",
    "C total",
    f"{SCALED} * {SCALED}",
    "a + b",
    "total = a",
    "0",
)
SUM_DYH = ("T dy, C gamma", "C total", "C(dy) * gamma", "a + b", "total = a", "0")
SUM_DYH_CENTRED = (
    "T x, T dy, C gamma, C scale, C shift",
    "C total",
    f"C(dy) * gamma * {SCALED}",
    "a + b",
    "total = a",
    "0",
)
SUM_DY_X_HAT = (
    "T x, T dy, C scale, C shift, C inv_s",
    "C total",
    f"C(dy) * ({SCALED} * inv_s)",
    "a + b",
    "total = a",
    "0",
)
"""Reductions: ``(inputs, output, map, reduce, post-map, identity)`` of a
``cupy.ReductionKernel``; ``x * scale - shift`` is a group's scaled value, centred."""

NORMALIZE = (
    "T x, C scale, C shift, C inv_s, C gamma, C beta",
    "O y",
    "y = O((C(x) * scale - shift) * inv_s * gamma + beta)",
)
VJP_APPLY = (
    "T x, T dy, C gamma, C scale, C shift, C inverse, C coef, C centre",
    "T dx",
    "dx = T(((C(dy) * gamma - centre) + (C(x) * scale - shift) * coef) * inverse)",
)
"""Elementwise kernels: ``(inputs, output, body)`` of a ``cupy.ElementwiseKernel``; each
result is rounded once, to its dtype."""


class Kernels(NamedTuple):
    """The compiled kernels (``cupy.ReductionKernel`` and ``cupy.ElementwiseKernel``)."""

    sum_scaled: Any
    sum_squares: Any
    sum_dyh: Any
    sum_dyh_centred: Any
    sum_dy_x_hat: Any
    normalize: Any
    vjp_apply: Any


def build(reduction_kernel: Any, elementwise_kernel: Any) -> Kernels:
    """The kernels, made by ``cupy.ReductionKernel`` and ``cupy.ElementwiseKernel`` (or
    anything called as they are)."""

    def reduction(name: str, spec: tuple[str, ...]) -> Any:
        return reduction_kernel(*spec, name=f"normref_{name}")

    def elementwise(name: str, spec: tuple[str, ...]) -> Any:
        return elementwise_kernel(*spec, name=f"normref_{name}")

    return Kernels(
        reduction("sum_scaled", SUM_SCALED),
        reduction("sum_squares", SUM_SQUARES),
        reduction("sum_dyh", SUM_DYH),
        reduction("sum_dyh_centred", SUM_DYH_CENTRED),
        reduction("sum_dy_x_hat", SUM_DY_X_HAT),
        elementwise("normalize", NORMALIZE),
        elementwise("vjp_apply", VJP_APPLY),
    )


@functools.cache
def kernels() -> Kernels:
    """CuPy's kernels, built on first use (CuPy compiles each on its first call)."""
    import cupy

    return build(cupy.ReductionKernel, cupy.ElementwiseKernel)


def param_shape(layout: Layout) -> tuple[int, ...]:
    """The shape in which flat affine parameters broadcast against ``x`` in ``layout``: a
    slot's size where the parameters vary along it, else 1 (their strides are C order)."""
    return tuple(
        size if stride else 1
        for size, stride in zip(layout.shape, layout.param_strides, strict=True)
    )


def _param(
    xp: Namespace, param: Array | None, identity: float, layout: Layout, dtype: Any
) -> Array:
    """A parameter in the compute dtype, shaped to broadcast (:func:`param_shape`); an absent
    one as ``identity`` (1 or -0.0: multiplying or adding it changes no value)."""
    if param is None:
        return xp.full((1,) * len(layout.shape), identity, dtype=dtype)
    return xp.reshape(to_dtype(xp, param, dtype), param_shape(layout))


def _statistics(
    layer: Layer, xp: Namespace, x5: Array, dtype: Any, centred: bool
) -> tuple[Array, Array, Array, Any]:
    """Per group (keeping the sample slots as 1): the power of two, the mean of the scaled
    values (0 unless ``centred``) and their sum of squared deviations; and the kernels."""
    k = kernels()
    scale = to_dtype(xp, group_scale(xp, x5, SAMPLE_SLOTS, floor=scaling_floor(layer)), dtype)
    zero = xp.zeros_like(scale)
    n = math.prod(x5.shape[s] for s in SAMPLE_SLOTS)
    mean = k.sum_scaled(x5, scale, zero, axis=SAMPLE_SLOTS, keepdims=True) / n if centred else zero
    m2 = k.sum_squares(x5, scale, mean, axis=SAMPLE_SLOTS, keepdims=True)
    return scale, mean, m2, k


def forward(
    layer: Layer,
    xp: Namespace,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    *,
    layout: Layout,
    dtype: Any,
    out_dtype: Any,
    centred: bool,
) -> Array:
    """The layer's output: sums per group, then one elementwise kernel."""
    x5 = xp.reshape(x, layout.shape)
    scale, mean, m2, k = _statistics(layer, xp, x5, dtype, centred)
    inv_s = forward_factor(layer, xp, scale, m2, layer.partition.M)
    gamma5 = _param(xp, gamma, 1.0, layout, dtype) * layer.affine_scale
    beta5 = _param(xp, beta, -0.0, layout, dtype)
    y5 = xp.empty(layout.shape, dtype=out_dtype)
    k.normalize(x5, scale, mean, inv_s, gamma5, beta5, y5)
    return xp.reshape(y5, x.shape)


def vjp(
    layer: Layer,
    xp: Namespace,
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    *,
    layout: Layout,
    dtype: Any,
    centred: bool,
) -> tuple[Array, Array | None, Array | None]:
    """The gradients of ``x``, ``gamma`` and ``beta``: sums per group, the factors, then one
    elementwise kernel for ``dx`` and a reduction per parameter."""
    x5, dy5 = xp.reshape(x, layout.shape), xp.reshape(dy, layout.shape)
    scale, mean, m2, k = _statistics(layer, xp, x5, dtype, centred)
    gamma5 = _param(xp, gamma, 1.0, layout, dtype) * layer.affine_scale
    dyh = k.sum_dyh(dy5, gamma5, axis=SAMPLE_SLOTS, keepdims=True)
    dyh_centred = k.sum_dyh_centred(x5, dy5, gamma5, scale, mean, axis=SAMPLE_SLOTS, keepdims=True)
    factors = vjp_factors(
        layer, xp, scale, m2, dyh, dyh_centred, layer.partition.M, centred=centred
    )
    dx5 = xp.empty(layout.shape, dtype=x.dtype)
    k.vjp_apply(x5, dy5, gamma5, scale, mean, factors.inverse, factors.coef, factors.dyh_mean, dx5)
    # the parameters' gradients: sums over the slots they do not vary along
    outer = tuple(s for s, stride in enumerate(layout.param_strides) if stride == 0)
    d_gamma = d_beta = None
    if gamma is not None:
        total = k.sum_dy_x_hat(x5, dy5, scale, mean, factors.inv_s, axis=outer, keepdims=True)
        d_gamma = to_dtype(xp, xp.reshape(total * layer.affine_scale, gamma.shape), gamma.dtype)
    if beta is not None:
        ones = xp.ones((1,) * len(layout.shape), dtype=dtype)  # sum_dyh of gamma = 1: sum dy
        total = k.sum_dyh(dy5, ones, axis=outer, keepdims=True)
        d_beta = to_dtype(xp, xp.reshape(total, beta.shape), beta.dtype)
    return xp.reshape(dx5, x.shape), d_gamma, d_beta
