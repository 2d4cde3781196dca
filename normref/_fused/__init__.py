"""The fused path: a layer on NumPy arrays through compiled kernels, when numba is installed.

The generic path (:mod:`normref.layers.compose` with the operations of
:mod:`normref.ops.standardization`) is written once for every Array API
library; on NumPy it makes several passes over the data, a full-size
temporary for most steps and, in ``precision="highest"``, a float64 copy of
every input. For a standardizing, RMS or centring layer on NumPy arrays
(:data:`~normref._fused.factors.FUSED_OPS`: batch, layer, instance, group,
ghost batch and RMS norm, weight standardization, mean-only batch norm,
gradient centralization), this path instead computes each group's sums in
compiled loops (:mod:`normref._fused.kernels`) that read float32 elements
straight into float64 accumulators, in one pass over the group where sums about
a shift near its mean are as accurate as two passes: the forward writes each
group's output at once, while its values are still in cache; the backward takes
a block of groups' sums and factors (:data:`BLOCK_ELEMENTS`), then their
gradients, the block still in cache. Groups whose samples lie in several runs
(batch norm's channels, a run per example) are read a set at a time, the set's
runs side by side (:data:`SET_ELEMENTS`). The only full-size arrays it makes are its
results (and the parameters' partial sums, a row per chunk of groups, at most an
eighth of ``x``'s size each). Large inputs are shared out over threads
(:mod:`normref._fused.threads`). The centring's backward is the centring of
``dy``: the forward's kernel. Switchable norm takes its instances' sums from
these kernels and its passes from a few more (:mod:`normref._fused.mixture`).

It computes the same quantities as the generic path, in the same dtype
(float64 under ``"highest"``, rounded once at the end), with pairwise sums
as NumPy's (a group's squared deviations about a shift within half a standard
deviation of its mean, less the shift's share, which cancels at most a quarter
of the result: the accuracy of sums about the mean, to a few roundings), and
forms each group's factors with the generic path's scalar formulas
(:func:`~normref.ops.standardization.scaled_divisors`,
:func:`~normref.ops.standardization.variance_term`) written for one group in
the kernels, which a test holds to the array formulas bit for bit, on each
group's values times the same power of two (``normref._lib.scaling``); results
agree with the generic path to the rounding of their sums, whose orders differ. Under
``"highest"`` both round once to the output, so float32 results agree to an
ulp; under ``"native"`` float32 sums of different orders may differ by tens
of ulps on large groups (each within the sums' error bound). Arguments are
checked before either path runs, so errors are the same.

Used when all of these hold, else the generic path runs:

* numba is importable and the fused path is enabled (environment variable
  ``NORMREF_FUSED`` is not ``0``, ``false``, ``no`` or ``off``; :func:`enabled`
  switches it in code, for the calling thread);
* ``precision`` is ``"highest"`` or ``"native"`` (a convention is modelled by
  the generic path);
* every array is a ``numpy.ndarray`` of float32 or float64 in native byte
  order, ``x`` and ``dy`` of one dtype and C-contiguous (the parameters, which
  the kernels read in the compute dtype, may have the other: AdaIN's statistics
  of the style, computed in float64 under ``"highest"``);
* the layer's partition and parameters fit the kernels' layout
  (:mod:`normref._fused.layout`), and, computing in the input's dtype, its
  groups are not interleaved element by element (:data:`MAX_INTERLEAVED_GROUPS`:
  there channels-last batch norm with 8 or more channels runs the generic
  path).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import array_api_compat

from normref._fused import cuda
from normref._fused.factors import FUSED_OPS, Layer, scaling_floor
from normref._fused.layout import GROUP_INNER, INNER, Layout, fit
from normref._fused.threads import run_chunks
from normref._lib.namespace import (
    PRECISIONS,
    Array,
    Namespace,
    compute_dtype,
    to_dtype,
)
from normref._lib.scaling import exponent_range
from normref.conventions import EPS_MODES
from normref.types import Precision


class Statistics(NamedTuple):
    """Each group's mean and ``1 / s`` (the reciprocal of its divisor), and its power of two
    ``scale`` and the mean and the sum ``m2`` of squared deviations of its values times it."""

    mean: Array
    inverse: Array
    scale: Array
    scaled_mean: Array
    m2: Array


class Grads(NamedTuple):
    """The gradients of ``x``, ``gamma`` and ``beta`` (``None`` where that parameter is)."""

    x: Array
    gamma: Array | None
    beta: Array | None


MAX_CHUNKS = 64
"""Groups are split over at most this many chunks of work (and partial sums)."""

PARTIAL_SHARE = 8
"""The parameters' partial sums (a row per chunk) hold at most ``1 / PARTIAL_SHARE`` of
``x``'s elements each: few long rows (layer norm over a large shape) take fewer chunks."""

BLOCK_ELEMENTS = 1 << 16
"""The backward takes the sums of the groups of about this many elements (at least one group),
then their gradients: the block's ``x`` and ``dy`` (256 KiB each in float32) are still in
cache for the second pass (the measurements behind the size are in ``docs/performance.md``)."""

SET_ELEMENTS = 1 << 20
"""Groups whose samples lie in several runs (batch norm's, one run per example) are taken a set
of about this many elements at a time (at most :data:`MAX_SET` groups): each pass reads the
set's runs in memory order, runs as long as the set's instead of one group's, and the second
pass finds them in cache (the measurements behind the size are in ``docs/performance.md``)."""

MAX_SET = 8
"""The most groups of one set (:data:`SET_ELEMENTS`)."""

MAX_INTERLEAVED_GROUPS = 8
"""Groups interleaved element by element (channels last: no contiguous run of one group's
samples) are left to the generic path from this many on where it computes in the input's
dtype: the kernels read one element per row of each group (the measurements behind the
threshold are in ``docs/performance.md``)."""

SWITCH_SPELLINGS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}
"""The values an on/off environment variable takes (in any case)."""


def switch(name: str, *, default: bool) -> bool:
    """The on/off environment variable ``name`` (:data:`SWITCH_SPELLINGS`; ``default`` where it
    is unset or empty), or a :class:`ValueError` naming it for any other value."""
    raw = os.environ.get(name, "")
    text = raw.strip().lower()
    if not text:
        return default
    if text not in SWITCH_SPELLINGS:
        msg = f"{name} must be one of 1, true, yes, on or 0, false, no, off (any case), got {raw!r}"
        raise ValueError(msg)
    return SWITCH_SPELLINGS[text]


DEFAULT_ENABLED = switch("NORMREF_FUSED", default=True)
"""Whether the fused path runs where it applies, unless :func:`enabled` says otherwise
(``NORMREF_FUSED``, read when normref is imported)."""

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "normref_fused_enabled", default=DEFAULT_ENABLED
)


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Within the block, use the fused path where it applies (``True``) or never (``False``).

    The setting belongs to the calling thread (and context): blocks in other
    threads neither see nor undo it.
    """
    token = _enabled.set(flag)
    try:
        yield
    finally:
        _enabled.reset(token)


@functools.cache
def _kernels() -> ModuleType | None:
    """The kernels module, or ``None`` where numba is not installed or cannot cache."""
    try:
        from normref._fused import kernels
    except ImportError:
        return None
    except RuntimeError as error:  # numba found no writable place for its compiled code
        warnings.warn(f"normref runs without its fused path: {error}", stacklevel=3)
        return None
    return kernels


def available() -> bool:
    """Whether numba is importable, so that the fused path can run."""
    return _kernels() is not None


def enabled_kernels() -> ModuleType | None:
    """The kernels module where the fused path is enabled for the calling thread and numba is
    installed, else ``None`` (the generic path must run)."""
    return _kernels() if _enabled.get() else None


def on_gpu(xp: Namespace) -> bool:
    """Whether ``xp`` is CuPy's namespace: the CUDA kernels (:mod:`normref._fused.cuda`) run."""
    return bool(array_api_compat.is_cupy_namespace(xp))


def _layout(
    layer: Layer,
    xp: Namespace,
    precision: Precision,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    dy: Array | None = None,
) -> Layout | None:
    """The kernels' layout for this call, or ``None`` where the generic path must run."""
    if not (_enabled.get() and isinstance(precision, str) and precision in PRECISIONS):
        return None
    gpu = on_gpu(xp)
    if layer.op.name not in FUSED_OPS or not (gpu or array_api_compat.is_numpy_namespace(xp)):
        return None
    floats = (xp.float32, xp.float64)
    params = [a for a in (gamma, beta) if a is not None]
    if (
        x.dtype not in floats
        or (dy is not None and (type(dy) is not type(x) or dy.dtype != x.dtype))
        or any(type(a) is not type(x) or a.dtype not in floats for a in params)
    ):
        return None
    if not (x.flags.c_contiguous and (dy is None or dy.flags.c_contiguous)):
        return None
    with_params = gamma is not None or beta is not None
    layout = fit(layer.partition, layer.param_axes if with_params else ())
    if layout is None or gpu:
        return layout
    if not (type(x) is xp.ndarray and available()):
        return None
    interleaved = layout.shape[INNER] == 1 and layout.shape[GROUP_INNER] >= MAX_INTERLEAVED_GROUPS
    if interleaved and compute_dtype(xp, x.dtype, precision) == x.dtype:
        return None
    return layout


def _flat_param(
    xp: Namespace, param: Array | None, identity: float, size: int, dtype: Any
) -> Array:
    """A parameter flattened in the compute dtype; an absent one as ``size`` copies of ``identity``.

    The kernels multiply by ``gamma`` and add ``beta`` unconditionally: 1 and -0.0
    leave every value as it is, so an absent parameter changes nothing.
    """
    if param is None:
        return xp.full((size,), identity, dtype=dtype)
    return xp.reshape(to_dtype(xp, param, dtype), (-1,))


def _param_size(layer: Layer, x: Array, with_params: bool) -> int:
    """Number of elements of the layer's parameters (1 where it is called without any)."""
    return math.prod(x.shape[a] for a in layer.param_axes) if with_params else 1


def _set_size(layout: Layout, contiguous: int) -> int:
    """Groups the kernels take a set at a time: ``contiguous`` where each group's samples are
    one run, else as many as :data:`SET_ELEMENTS` holds (between 1 and :data:`MAX_SET`)."""
    if layout.shape[1] == 1:
        return contiguous
    return max(1, min(MAX_SET, SET_ELEMENTS // max(1, layout.group_size)))


def _chunks(layout: Layout, set_size: int, param_size: int = 1) -> int:
    """Chunks of groups: at most :data:`MAX_CHUNKS`, few enough that partial sums of
    ``param_size`` values per chunk stay within :data:`PARTIAL_SHARE` of ``x``, and, where
    groups lie in several runs, whole sets of ``set_size`` groups each."""
    by_memory = max(1, math.prod(layout.shape) // (PARTIAL_SHARE * param_size))
    units = layout.groups if layout.shape[1] == 1 else -(-layout.groups // set_size)
    return min(units, MAX_CHUNKS, by_memory)


def _scratch(
    xp: Namespace,
    kernels: ModuleType,
    layout: Layout,
    chunks: int,
    set_size: int,
    dtype: Any,
    *,
    cotangent: bool,
) -> tuple[Array, Array, Array]:
    """The kernels' scratch: ``factors`` ``(6, groups)``, and per chunk the cascades
    ``stack`` and their ``progress`` of a set's groups, where groups lie in several runs;
    where each group is one run, which the kernels sum before the next, one cascade per
    chunk, two wide without a ``cotangent`` (and no ``factors`` forward)."""
    sets = layout.shape[1] > 1
    width = 4 if cotangent or sets else 2
    return (
        xp.empty((6, layout.groups if cotangent or sets else 0), dtype=dtype),
        xp.zeros((chunks, set_size if sets else 1, width, kernels.DEPTH + sets), dtype=dtype),
        xp.zeros((chunks, set_size if sets else 0, 3), dtype=xp.int64),
    )


def _scaling(layer: Layer, xp: Namespace, dtype: Any) -> tuple[float, tuple[int, int]]:
    """The floor under each group's magnitude (the scale of ``eps``) and the range of the
    scales' exponents, as the kernels take them."""
    return scaling_floor(layer), exponent_range(xp, dtype)


def _divisor_args(layer: Layer) -> tuple[float, float, int]:
    """``n - correction``, ``eps`` and the index of ``eps_mode`` in
    :data:`~normref.conventions.EPS_MODES`, as the forward kernel takes them (``eps`` 0 for
    the centring, which has none)."""
    count = layer.partition.M - layer.params.get("correction", 0)
    if "eps" not in layer.params:
        return float(count), 0.0, 0
    return float(count), float(layer.params["eps"]), EPS_MODES.index(layer.params["eps_mode"])


def forward(
    layer: Layer,
    xp: Namespace,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
    out_dtype: Any,
    means: Array | None = None,
) -> Array | None:
    """The layer's output in ``out_dtype`` through the kernels, or ``None`` where the generic
    path must run; ``means`` (on NumPy, one value per group in the compute dtype) receives
    each group's mean."""
    layout = _layout(layer, xp, precision, x, gamma, beta)
    if layout is None:
        return None
    dtype = compute_dtype(xp, x.dtype, precision)
    if on_gpu(xp):
        return cuda.forward(
            layer,
            xp,
            x,
            gamma,
            beta,
            layout=layout,
            dtype=dtype,
            out_dtype=out_dtype,
            centred=FUSED_OPS[layer.op.name].centred,
        )
    kernels = _kernels()
    assert kernels is not None  # _layout gives a NumPy layout only where available()
    set_size = _set_size(layout, 1)
    chunks = _chunks(layout, set_size)
    fused_op = FUSED_OPS[layer.op.name]
    y = xp.empty(x.shape, dtype=out_dtype)
    size = _param_size(layer, x, gamma is not None or beta is not None)
    run_chunks(
        kernels.normalize,
        chunks,
        x.size,
        xp.reshape(x, layout.shape),
        fused_op.centred,
        fused_op.divides,
        *_scaling(layer, xp, dtype),
        *_divisor_args(layer),
        _flat_param(xp, gamma, 1.0, size, dtype) * layer.affine_scale,
        _flat_param(xp, beta, -0.0, size, dtype),
        layout.param_strides,
        xp.reshape(y, layout.shape),
        means,
        set_size,
        *_scratch(xp, kernels, layout, chunks, set_size, dtype, cotangent=False),
    )
    return y


def statistics(layer: Layer, xp: Namespace, x: Array, precision: Precision) -> Statistics | None:
    """Each group's :class:`Statistics` through the kernels (:func:`kernels.statistics`), in
    the compute dtype, one value per group in the order of the partition's group axes; or
    ``None`` where the generic path must run (also on a GPU)."""
    layout = _layout(layer, xp, precision, x, None, None)
    if layout is None or on_gpu(xp):
        return None
    kernels = _kernels()
    assert kernels is not None  # _layout gives a NumPy layout only where available()
    dtype = compute_dtype(xp, x.dtype, precision)
    set_size = _set_size(layout, 1)
    chunks = _chunks(layout, set_size)
    out = xp.empty((5, layout.groups), dtype=dtype)
    run_chunks(
        kernels.statistics,
        chunks,
        x.size,
        xp.reshape(x, layout.shape),
        FUSED_OPS[layer.op.name].centred,
        *_scaling(layer, xp, dtype),
        *_divisor_args(layer),
        out,
        set_size,
        *_scratch(xp, kernels, layout, chunks, set_size, dtype, cotangent=False),
    )
    return Statistics(*(out[row, :] for row in range(5)))


def vjp(
    layer: Layer,
    xp: Namespace,
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
) -> Grads | None:
    """The layer's gradients through the kernels, or ``None`` where the generic path must run."""
    layout = _layout(layer, xp, precision, x, gamma, beta, dy)
    if layout is None:
        return None
    dtype = compute_dtype(xp, x.dtype, precision)
    if not FUSED_OPS[layer.op.name].divides:
        return _centring_vjp(layer, xp, dy, x, gamma, beta, precision, dtype, layout)
    centred = FUSED_OPS[layer.op.name].centred
    if on_gpu(xp):
        return Grads(
            *cuda.vjp(layer, xp, dy, x, gamma, beta, layout=layout, dtype=dtype, centred=centred)
        )
    kernels = _kernels()
    assert kernels is not None  # _layout gives a NumPy layout only where available()
    size = _param_size(layer, x, gamma is not None or beta is not None)
    set_size = _set_size(layout, max(1, BLOCK_ELEMENTS // layout.group_size))
    chunks = _chunks(layout, set_size, size)
    inputs = (
        xp.reshape(x, layout.shape),
        xp.reshape(dy, layout.shape),
        _flat_param(xp, gamma, 1.0, size, dtype) * layer.affine_scale,
        layout.param_strides,
    )
    d_gamma = xp.zeros((chunks, size), dtype=dtype)
    d_beta = xp.zeros((chunks, size), dtype=dtype)
    dx = xp.empty(x.shape, dtype=x.dtype)
    run_chunks(
        kernels.gradients,
        chunks,
        x.size,
        *inputs,
        centred,
        *_scaling(layer, xp, dtype),
        *_divisor_args(layer),
        set_size,
        *_scratch(xp, kernels, layout, chunks, set_size, dtype, cotangent=True),
        xp.reshape(dx, layout.shape),
        d_gamma,
        d_beta,
    )
    return Grads(
        x=dx,
        gamma=_param_grad(xp, d_gamma, gamma, layer.affine_scale),
        beta=_param_grad(xp, d_beta, beta),
    )


def _centring_vjp(
    layer: Layer,
    xp: Namespace,
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    precision: Precision,
    dtype: Any,
    layout: Layout,
) -> Grads | None:
    """The centring's gradients: ``dx`` is ``dy`` centred (the centring is linear and its own
    adjoint, so the forward's kernels compute it) and ``beta``'s the sum of ``dy`` over the
    axes it does not span: ``n`` times each group's mean, which the kernel gives, where
    ``beta`` has a value per group (mean-only batch norm); ``None`` with a ``gamma``, whose
    gradient the generic path takes."""
    if gamma is not None:
        return None
    part = layer.partition
    per_group = (
        beta is not None
        and not on_gpu(xp)
        and part.split_shape == tuple(x.shape)
        and part.group_axes == tuple(sorted(layer.param_axes))
    )
    means = xp.empty((layout.groups,), dtype=dtype) if per_group else None
    dx = forward(layer, xp, dy, None, None, precision, dy.dtype, means)
    if dx is None:
        return None
    if beta is None:
        return Grads(x=dx, gamma=None, beta=None)
    if means is not None:
        total = means * float(part.M)
    else:
        outer = tuple(a for a in range(x.ndim) if a not in layer.param_axes)
        total = xp.sum(dy, axis=outer, dtype=dtype)
    return Grads(x=dx, gamma=None, beta=to_dtype(xp, xp.reshape(total, beta.shape), beta.dtype))


def _param_grad(
    xp: Namespace, partials: Array, param: Array | None, scale: float = 1.0
) -> Array | None:
    """A parameter's gradient: its chunks' partial sums added and times ``scale``, in the
    parameter's shape and dtype."""
    if param is None:
        return None
    total = xp.sum(partials, axis=0) * scale
    return to_dtype(xp, xp.reshape(total, param.shape), param.dtype)
