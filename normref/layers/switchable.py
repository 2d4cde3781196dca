r"""Switchable normalization (Luo et al., 2019): a learned mixture of instance, layer and batch
statistics (training mode).

For ``x`` of shape ``(N, C, *S)`` (channel axis ``axis``, batch axis 0) the
instance (:math:`k = 0`), layer (1) and batch (2) statistics of the element at
``(n, c, s)`` are the means and biased variances (two-pass) over

* instance: the spatial axes of ``(n, c)``, :math:`n_0 = |S|` values;
* layer: the channels and spatial axes of ``n``, :math:`n_1 = C|S|`;
* batch: the samples and spatial axes of ``c``, :math:`n_2 = N|S|`;

and with :math:`a = \operatorname{softmax}(\ell^\mu)`,
:math:`b = \operatorname{softmax}(\ell^\sigma)` of the logits ``mean_logits``
and ``var_logits`` (in that order):

.. math::

    \mu = \sum_k a_k \mu_k, \qquad v = \sum_k b_k v_k, \qquad
    y = \gamma\,\frac{x - \mu}{\sqrt{v + \epsilon}} + \beta.

Backward (derived by hand; :math:`g = \gamma \bar y`, :math:`\hat x = (x - \mu)/s`,
:math:`s = \sqrt{v + \epsilon}`, sums :math:`\Sigma_S` over each instance):
:math:`\bar\mu = -\Sigma_S g / s` and :math:`\bar v = -\Sigma_S (g \hat x)/(2 s^2)`
per ``(n, c)``; each statistic receives its weight times their sum over the
elements it is shared by (:math:`\bar\mu_1 = a_1 \sum_c \bar\mu`,
:math:`\bar\mu_2 = a_2 \sum_n \bar\mu`, ...), and

.. math::

    \bar x = \frac{g}{s} + \sum_k \Big(\frac{\bar\mu_k}{n_k}
        + \frac{2 \bar v_k (x - \mu_k)}{n_k}\Big), \qquad
    \bar a_k = \sum_{n, c} \bar\mu\,\mu_k, \quad \bar b_k = \sum_{n, c} \bar v\,v_k,

    \bar\ell^\mu = a \odot (\bar a - a^\top \bar a), \qquad
    \bar\ell^\sigma = b \odot (\bar b - b^\top \bar b).

Computation. Each instance's mean and sum of squared deviations are taken in
one pass over ``x`` (two-pass sums within the instance); the layer's and the
batch's come from them, :math:`M_2 = \sum_i M_{2,i} + n_0 \sum_i (\mu_i -
\mu)^2` over the instances they join (Chan, Golub and LeVeque's combination of
centred sums, without cancellation). The backward likewise needs two sums per
instance, :math:`\sum_S \bar y` and :math:`\sum_S \bar y \hat x`, and then one
pass that writes :math:`\bar x = g/s + \kappa (x - \mu) + o` with
:math:`\kappa = \sum_k 2\bar v_k/n_k` and :math:`o = \sum_k (\bar\mu_k/n_k +
2\bar v_k(\mu - \mu_k)/n_k)` per instance. On NumPy arrays with numba installed,
compiled kernels make these passes, with no copy of ``x`` (``normref._fused.mixture``:
the instances' sums pairwise, from one pass where that is as accurate as two);
elsewhere, where the array library writes in place, every pass takes a block of
instances at a time (``normref._lib.in_place``), so the temporaries are a block's.

Scaling. The statistics are taken of ``x`` times one power of two :math:`c`
for the whole input (``normref._lib.scaling``, from its largest
finite magnitude, so that a NaN or an infinity reaches only the statistics
that hold it, or from :math:`\sqrt\epsilon` where that is larger), with
:math:`\epsilon` scaled alike (:math:`c^2\epsilon`): the mixture adds
statistics of different groups, which must share one scale. So no sum of
squares overflows or underflows where the output is representable, and
multiplying ``x`` by :math:`2^k` and ``eps`` by :math:`4^k` leaves ``y``
unchanged, exactly (the compiled kernels choose the power of two as the smallest
of the instances' own, with the same law). An instance whose values are all below about
:math:`2^{-500}` times the input's largest magnitude (float64) loses its own
statistics' relative accuracy to underflow; the mixed variance is then
dominated by the others' terms unless their weights are as small.

Conventions. The authors' code (``SwitchNorm2d``) takes the instance variance
unbiased (``torch.var``) and builds the layer and batch variances from it as
:math:`\operatorname{mean}(v_0 + \mu_0^2) - \mu_k^2`, which is neither the
biased nor the unbiased variance of those groups (and loses accuracy where
:math:`|\mu| \gg \sigma`); normref computes the three biased variances
two-pass. In evaluation mode the code replaces the batch statistics by moving
averages; this is the training-mode layer.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from normref._fused import mixture
from normref._fused.factors import Layer
from normref._lib.checks import check_eps, check_rank, check_shape, normalize_axis
from normref._lib.in_place import assembled, blocks_of, written
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
    variance_algorithm,
)
from normref._lib.reductions import sum_of_products
from normref._lib.scaling import finite_max_magnitude, floored_scale, scaled_copy
from normref.affine import affine, affine_vjp_x_hat, check_param
from normref.layers.standardization import instance_norm_layer
from normref.ops.base import check_group_size, empty_like
from normref.ops.standardization import (
    STANDARDIZE,
    eps_magnitude,
    group_count,
    mean_and_m2,
    nonzero_divisor,
    scaled_divisors,
)
from normref.partition import instance_partition
from normref.types import Precision

MIXED = ("instance", "layer", "batch")
"""The statistics a switchable norm mixes, in the order of its logits."""


class SwitchableGrads(NamedTuple):
    """Gradients of :func:`switchable_norm` (``gamma``, ``beta``: ``None`` where they were)."""

    x: Array
    gamma: Array | None
    beta: Array | None
    mean_logits: Array
    var_logits: Array


SWITCHABLE_BLOCK_ELEMENTS = 1 << 17
"""Elements of a block of instances (``normref._lib.in_place``) that one step of
each pass takes, where the library writes in place: fewer, larger blocks than elementwise
operations take, as each step of a pass is several array operations."""


class _Mixture(NamedTuple):
    """The statistics of one call in the compute dtype ``dtype``, of ``x`` times the power of two
    ``scale``: per kind, its mean, variance (one value per instance, sample or channel, kept
    dims) and count; the mixture's weights; ``mu`` and the divisor ``s`` per instance (sample
    and channel); the blocks of instances the passes over ``x`` take and the spatial axes; and
    instance norm's layer of ``x`` where the kernels took the instances' sums, which then run
    the passes over ``x`` (``normref._fused.mixture``, which chose ``scale``), else ``None``."""

    means: tuple[Array, ...]
    variances: tuple[Array, ...]
    counts: tuple[int, ...]
    a: Array
    b: Array
    mu: Array
    s: Array
    scale: Array
    dtype: Any
    blocks: list[tuple[slice, ...]]
    spatial: tuple[int, ...]
    fused: Layer | None


def _softmax(xp: Any, logits: Array) -> Array:
    e = xp.exp(logits - xp.max(logits))
    return e / xp.sum(e)


def _weighted(weights: Array, values: tuple[Array, ...]) -> Array:
    total = weights[0] * values[0]
    for k in range(1, len(values)):
        total = total + weights[k] * values[k]
    return total


def _combined(
    xp: Any, mean: Array, second: Array, axis: int, count: int, algorithm: str
) -> tuple[Array, Array]:
    """The mean and variance of the groups that join the instances along ``axis`` of the
    per-instance means and ``second`` moments (``m2``, or the mean square for a ``"fast"``
    algorithm), each instance of ``count`` values.

    Two-pass: ``m2 = sum m2_i + count sum (mean_i - mean)**2`` (Chan, Golub and LeVeque's
    combination of centred sums: no cancellation); fast: ``mean(x**2) - mean**2``, the
    frameworks' form modelled.
    """
    joined = xp.mean(mean, axis=axis, keepdims=True)
    if algorithm != "two_pass":
        return joined, _fast_variance(
            xp, xp.mean(second, axis=axis, keepdims=True), joined, algorithm
        )
    apart = mean - joined
    m2 = xp.sum(second, axis=axis, keepdims=True) + count * xp.sum(
        apart * apart, axis=axis, keepdims=True
    )
    return joined, m2 / (count * mean.shape[axis])


def _fast_variance(xp: Any, square: Array, mean: Array, algorithm: str) -> Array:
    """``mean(x**2) - mean(x)**2`` (clamped at 0 for ``"fast_clamped"``)."""
    v = square - mean * mean
    return xp.clip(v, min=0.0) if algorithm == "fast_clamped" else v


def _mixture(
    xp: Any,
    x: Array,
    mean_logits: Array,
    var_logits: Array,
    channel: int,
    eps: float,
    dtype: Any,
    precision: Precision,
    layer: Layer,
) -> _Mixture:
    """The mixture's statistics of ``x``, from each instance's two sums: through the kernels
    where they run on ``layer`` (instance norm's; ``normref._fused.mixture``), else in one pass
    over the blocks (:func:`_combined` for the layer's and the batch's)."""
    shape = tuple(x.shape)
    spatial = tuple(a for a in range(x.ndim) if a not in (0, channel))
    blocks = blocks_of(xp, shape, (0, channel), SWITCHABLE_BLOCK_ELEMENTS)
    count = group_count(x, spatial)
    kept = tuple(1 if a in spatial else n for a, n in enumerate(shape))
    algorithm = variance_algorithm(precision)
    fused = mixture.instance_moments(layer, xp, x, precision)
    if fused is not None:
        scale = fused.scale
        mean0, second0 = xp.reshape(fused.mean, kept), xp.reshape(fused.m2, kept)
    else:
        scale, mean0, second0 = _block_moments(xp, x, blocks, spatial, eps, dtype, algorithm)
    if algorithm == "two_pass":
        v0 = second0 / count
    else:
        v0 = _fast_variance(xp, second0, mean0, algorithm)
    mean1, v1 = _combined(xp, mean0, second0, channel, count, algorithm)
    mean2, v2 = _combined(xp, mean0, second0, 0, count, algorithm)
    a, b = _softmax(xp, mean_logits), _softmax(xp, var_logits)
    means_k, variances_k = (mean0, mean1, mean2), (v0, v1, v2)
    s, _ = scaled_divisors(xp, _weighted(b, variances_k), scale, eps=eps, eps_mode="add")
    counts = (count, count * shape[channel], count * shape[0])
    return _Mixture(
        means_k,
        variances_k,
        counts,
        a,
        b,
        _weighted(a, means_k),
        nonzero_divisor(xp, s),
        scale,
        dtype,
        blocks,
        spatial,
        None if fused is None else layer,
    )


def _block_moments(
    xp: Any,
    x: Array,
    blocks: list[tuple[slice, ...]],
    spatial: tuple[int, ...],
    eps: float,
    dtype: Any,
    algorithm: str,
) -> tuple[Array, Array, Array]:
    """The power of two of the whole input and each instance's mean and ``m2`` (the mean square
    for a ``"fast"`` algorithm) of the values times it, kept dims, a block at a time."""
    shape = tuple(x.shape)
    # one power of two for the whole input, of its finite values: the mixture adds statistics
    # of different groups, and a NaN or inf reaches only those that hold it
    everything = tuple(range(x.ndim))
    largest = [finite_max_magnitude(xp, x[block], everything) for block in blocks]
    magnitude = to_dtype(xp, functools.reduce(xp.maximum, largest), dtype)
    scale = floored_scale(xp, magnitude, eps_magnitude(eps, "add"))

    def sums(block: tuple[slice, ...]) -> tuple[Array, Array]:
        values = scaled_copy(xp, x[block], dtype, scale)
        if algorithm == "two_pass":
            mean, m2, _ = mean_and_m2(xp, values, spatial, algorithm=algorithm, overwrite=True)
            return mean, m2
        mean = xp.mean(values, axis=spatial, keepdims=True)
        return mean, xp.mean(values * values, axis=spatial, keepdims=True)

    parts = [sums(block) for block in blocks]
    kept = tuple(1 if a in spatial else n for a, n in enumerate(shape))
    mean0 = assembled(xp, blocks, [mean for mean, _ in parts], kept)
    second0 = assembled(xp, blocks, [second for _, second in parts], kept)
    return scale, mean0, second0


def _prepared(
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean_logits: Array,
    var_logits: Array,
    eps: float,
    axis: int,
    precision: Precision,
    **more: Array,
) -> tuple[Any, Any, int, _Mixture | None]:
    xp = namespace_of(
        **more,
        x=x,
        gamma=gamma,
        beta=beta,
        mean_logits=mean_logits,
        var_logits=var_logits,
        optional=("gamma", "beta"),
    )
    eps = check_eps(eps)
    shape = tuple(x.shape)
    check_rank(shape, minimum=3, layout="N, C and at least one spatial axis")
    channel = normalize_axis(axis, x.ndim)
    if channel == 0:
        msg = f"axis={axis} names the batch axis 0; the channel axis must be another axis"
        raise ValueError(msg)
    for name, logits in (("mean_logits", mean_logits), ("var_logits", var_logits)):
        check_shape(logits.shape, (3,), name=name, what="one logit each for " + ", ".join(MIXED))
    check_param(gamma, shape, (channel,), name="gamma")
    check_param(beta, shape, (channel,), name="beta")
    check_group_size(
        instance_partition(shape, channel),
        op=STANDARDIZE,
        params={},
        where=f"switchable_norm(x of shape {shape}, axis={axis})",
    )
    dtype = compute_dtype(xp, x.dtype, precision)
    if math.prod(shape) == 0:  # no samples or no channels: nothing to normalize
        return xp, dtype, channel, None
    found = _mixture(
        xp,
        x,
        to_dtype(xp, mean_logits, dtype),
        to_dtype(xp, var_logits, dtype),
        channel,
        eps,
        dtype,
        precision,
        instance_norm_layer(x, (gamma, beta), eps, "add", 0, channel),
    )
    return xp, dtype, channel, found


def switchable_norm(
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean_logits: Array,
    var_logits: Array,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    precision: Precision = "highest",
) -> Array:
    r"""Switchable normalization in training mode (module docstring).

    Parameters
    ----------
    x
        ``(N, C, *S)`` with the channel axis at ``axis`` (batch axis 0, at least
        one spatial axis). An instance of one value has the instance variance 0; no
        spatial values is an error, no samples or no channels give an empty output.
    gamma, beta
        Per-channel scale and shift, shape ``(C,)``, or ``None``.
    mean_logits, var_logits
        The mixture's logits, shape ``(3,)``: instance, layer, batch.
    eps
        Finite, > 0, added to the mixed variance.
    axis
        The channel axis: 1 for ``(N, C, *S)``, -1 for channels-last.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape, in the promoted dtype of ``x``, ``gamma`` and ``beta``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> logits = np.zeros(3)  # equal weights of instance, layer and batch statistics
    >>> y = normref.switchable_norm(x, None, None, logits, logits)
    >>> print(np.round(y[0], 4))
    [[-0.6897 -0.0363  1.2704]
     [ 0.0554  1.0531 -1.4411]]

    References
    ----------
    - Luo, P., Ren, J., Peng, Z., Zhang, R. and Li, J. (2019). Differentiable
      learning-to-normalize via switchable normalization. ICLR.
      https://arxiv.org/abs/1806.10779
    """
    xp, dtype, channel, found = _prepared(
        x, gamma, beta, mean_logits, var_logits, eps, axis, precision
    )
    if found is None:
        return empty_like(xp, tuple(x.shape), output_dtype(xp, precision, x, gamma, beta), x)
    out_dtype = output_dtype(xp, precision, x, gamma, beta)
    if found.fused is not None:
        fused = mixture.normalized(
            found.fused,
            xp,
            x,
            gamma,
            beta,
            precision,
            found.scale,
            found.mu,
            1.0 / found.s,
            out_dtype,
        )
        if fused is not None:
            return fused
    gamma_c, beta_c = to_dtype(xp, gamma, dtype), to_dtype(xp, beta, dtype)

    def normalized(block: tuple[slice, ...]) -> Array:
        y = affine(
            xp,
            _normalized(xp, x, block, found),
            _channels(gamma_c, block, channel),
            _channels(beta_c, block, channel),
            (channel,),
            overwrite=True,
        )
        return to_dtype(xp, y, out_dtype)

    return written(xp, found.blocks, normalized, tuple(x.shape), out_dtype, x)


def _normalized(xp: Any, x: Array, block: tuple[slice, ...], found: _Mixture) -> Array:
    """``x_hat = (x c - mu) / s`` of a block of ``x``: an array of the caller's own."""
    x_hat = scaled_copy(xp, x[block], found.dtype, found.scale)
    x_hat -= found.mu[block]  # in place: the block's own scaled copy
    x_hat /= found.s[block]
    return x_hat


def _channels(param: Array | None, block: tuple[slice, ...], channel: int) -> Array | None:
    """A per-channel parameter's values at the block's channels."""
    return None if param is None else param[block[channel]]


def switchable_norm_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean_logits: Array,
    var_logits: Array,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    precision: Precision = "highest",
) -> SwitchableGrads:
    r"""VJP of :func:`switchable_norm` for ``x``, ``gamma``, ``beta`` and both logits (module
    docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> logits = np.zeros(3)  # equal weights of instance, layer and batch statistics
    >>> y = normref.switchable_norm(x, None, None, logits, logits)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.switchable_norm_vjp(dy, x, None, None, logits, logits)
    >>> print(g._fields)
    ('x', 'gamma', 'beta', 'mean_logits', 'var_logits')
    >>> print(np.round(g[0], 4))
    [[[-0.3125 -0.1792 -0.0313]
      [-0.096  -0.01    0.0926]]
    <BLANKLINE>
     [[-0.0019  0.0911  0.192 ]
      [ 0.1277  0.1024  0.0251]]]

    References
    ----------
    - Luo, P., Ren, J., Peng, Z., Zhang, R. and Li, J. (2019). Differentiable
      learning-to-normalize via switchable normalization. ICLR.
      https://arxiv.org/abs/1806.10779
    """
    xp, dtype, channel, found = _prepared(
        x, gamma, beta, mean_logits, var_logits, eps, axis, precision, dy=dy
    )
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    if found is None:
        return _no_gradients(xp, x, gamma, beta, mean_logits, var_logits)
    gamma_c = to_dtype(xp, gamma, dtype)

    def instance_sums(block: tuple[slice, ...]) -> tuple[Array, Array]:
        x_hat = _normalized(xp, x, block, found)
        dy_block = to_dtype(xp, dy[block], dtype)
        return (
            sum_of_products(xp, dy_block, x_hat, found.spatial),
            xp.sum(dy_block, axis=found.spatial, keepdims=True),
        )

    kept = tuple(found.mu.shape)
    fused = None
    if found.fused is not None:
        fused = mixture.cotangent_sums(
            found.fused, xp, dy, x, gamma, precision, found.scale, found.mu
        )
    if fused is not None:
        dy_sum = xp.reshape(fused[0], kept)
        dy_x_hat = xp.reshape(fused[1], kept) / found.s
    else:
        sums = [instance_sums(block) for block in found.blocks]
        dy_x_hat = assembled(xp, found.blocks, [d for d, _ in sums], kept)
        dy_sum = assembled(xp, found.blocks, [d for _, d in sums], kept)
        del sums
    # in the scaled values' terms: d_mu, d_var and dx / scale of the unscaled ones' (the
    # weights' gradients are unchanged); g = gamma dy, summed per instance
    g_sum = affine_vjp_x_hat(xp, dy_sum, gamma_c, (channel,))
    g_x_hat = affine_vjp_x_hat(xp, dy_x_hat, gamma_c, (channel,))
    d_mu = -g_sum / found.s
    d_var = -0.5 * g_x_hat / (found.s * found.s)
    # dx = g / s + sum_k (d_mean_k / n_k + (2 / n_k) d_var_k (x - mu_k))
    #    = g / s + slope (x - mu) + offset, per instance: slope = sum_k 2 d_var_k / n_k,
    #      offset = sum_k (d_mean_k / n_k + (2 / n_k) d_var_k (mu - mu_k))
    slope, offset = xp.zeros_like(d_mu), xp.zeros_like(d_mu)
    d_a, d_b = [], []
    for k in range(len(MIXED)):
        # the gradient of statistic k: its weight times the sum over the (n, c) sharing it
        shared = () if k == 0 else ((channel,) if k == 1 else (0,))
        d_mean_k = found.a[k] * (xp.sum(d_mu, axis=shared, keepdims=True) if shared else d_mu)
        d_var_k = found.b[k] * (xp.sum(d_var, axis=shared, keepdims=True) if shared else d_var)
        n = found.counts[k]
        slope = slope + (2.0 / n) * d_var_k
        offset = offset + (d_mean_k / n + (2.0 / n) * d_var_k * (found.mu - found.means[k]))
        d_a.append(xp.sum(d_mu * found.means[k]))
        d_b.append(xp.sum(d_var * found.variances[k]))

    def x_gradient(block: tuple[slice, ...]) -> Array:
        centred = scaled_copy(xp, x[block], dtype, found.scale)
        centred -= found.mu[block]  # in place: the block's own scaled copy
        centred *= slope[block]
        g = affine_vjp_x_hat(
            xp, to_dtype(xp, dy[block], dtype), _channels(gamma_c, block, channel), (channel,)
        )
        dx = g / found.s[block]
        dx += centred
        dx += offset[block]
        dx *= found.scale
        return to_dtype(xp, dx, x.dtype)

    def param_grad(per_instance: Array, param: Array | None) -> Array | None:
        """A per-channel parameter's gradient: its per-instance sums added over the samples."""
        if param is None:
            return None
        return to_dtype(xp, xp.reshape(xp.sum(per_instance, axis=0), param.shape), param.dtype)

    if fused is not None and found.fused is not None:
        # dx / scale as x_gradient's, times the scale: exact
        factors = (found.mu, found.scale / found.s, slope * found.scale, offset * found.scale)
        dx = mixture.affine_gradient(found.fused, xp, dy, x, gamma, precision, found.scale, factors)
    else:
        dx = written(xp, found.blocks, x_gradient, tuple(x.shape), x.dtype, x)
    return SwitchableGrads(
        x=dx,
        gamma=param_grad(dy_x_hat, gamma),
        beta=param_grad(dy_sum, beta),
        mean_logits=to_dtype(xp, _softmax_vjp(xp, found.a, d_a), mean_logits.dtype),
        var_logits=to_dtype(xp, _softmax_vjp(xp, found.b, d_b), var_logits.dtype),
    )


def _no_gradients(
    xp: Any,
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    mean_logits: Array,
    var_logits: Array,
) -> SwitchableGrads:
    """The gradients where ``x`` has no values: empty for ``x``, 0 for the parameters."""

    def zeros(a: Array | None) -> Array | None:
        return None if a is None else xp.zeros_like(a)

    return SwitchableGrads(
        xp.zeros_like(x),
        zeros(gamma),
        zeros(beta),
        xp.zeros_like(mean_logits),
        xp.zeros_like(var_logits),
    )


def _softmax_vjp(xp: Any, weights: Array, cotangent: list[Array]) -> Array:
    r""":math:`a \odot (\bar a - a^\top \bar a)`: the VJP of the softmax at its output ``a``."""
    bar = xp.stack(cotangent)
    return weights * (bar - xp.sum(weights * bar))
