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

Scaling. The statistics are taken of ``x`` times one power of two :math:`c`
for the whole input (``normref._lib.scaling``, from its largest
finite magnitude, so that a NaN or an infinity reaches only the statistics
that hold it, or from :math:`\sqrt\epsilon` where that is larger), with
:math:`\epsilon` scaled alike (:math:`c^2\epsilon`): the mixture adds
statistics of different groups, which must share one scale. So no sum of
squares overflows or underflows where the output is representable, and
multiplying ``x`` by :math:`2^k` and ``eps`` by :math:`4^k` leaves ``y``
unchanged, exactly. An instance whose values are all below about
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

import math
from typing import Any, NamedTuple

from normref._lib.checks import check_eps, check_rank, check_shape, normalize_axis
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
    variance_algorithm,
)
from normref._lib.scaling import finite_group_scale
from normref.affine import affine, affine_vjp_params, affine_vjp_x_hat, check_param
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


class _Mixture(NamedTuple):
    """The statistics of one call in the compute dtype, of ``x`` times the power of two
    ``scale`` (``x``: the scaled values): per kind, its reduced axes, mean, variance and
    count; the mixture's weights; ``mu`` and the divisor ``s`` per (sample, channel)."""

    axes: tuple[tuple[int, ...], ...]
    means: tuple[Array, ...]
    variances: tuple[Array, ...]
    counts: tuple[int, ...]
    a: Array
    b: Array
    mu: Array
    s: Array
    scale: Array
    x: Array


def _softmax(xp: Any, logits: Array) -> Array:
    e = xp.exp(logits - xp.max(logits))
    return e / xp.sum(e)


def _weighted(weights: Array, values: tuple[Array, ...]) -> Array:
    total = weights[0] * values[0]
    for k in range(1, len(values)):
        total = total + weights[k] * values[k]
    return total


def _mixture(
    xp: Any,
    x: Array,
    mean_logits: Array,
    var_logits: Array,
    channel: int,
    eps: float,
    algorithm: str,
) -> _Mixture:
    spatial = tuple(a for a in range(x.ndim) if a not in (0, channel))
    axes = (spatial, tuple(range(1, x.ndim)), tuple(a for a in range(x.ndim) if a != channel))
    # one power of two for the whole input, of its finite values: the mixture adds statistics
    # of different groups, and a NaN or inf reaches only those that hold it
    scale = finite_group_scale(xp, x, tuple(range(x.ndim)), floor=eps_magnitude(eps, "add"))
    xs = x * scale
    means, variances = [], []
    for reduced in axes:
        mean, m2, _ = mean_and_m2(xp, xs, reduced, algorithm=algorithm)
        means.append(mean)
        variances.append(m2 / group_count(x, reduced))
    a, b = _softmax(xp, mean_logits), _softmax(xp, var_logits)
    mu = _weighted(a, tuple(means))
    s, _ = scaled_divisors(xp, _weighted(b, tuple(variances)), scale, eps=eps, eps_mode="add")
    counts = tuple(group_count(x, reduced) for reduced in axes)
    return _Mixture(
        axes, tuple(means), tuple(variances), counts, a, b, mu, nonzero_divisor(xp, s), scale, xs
    )


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
    xc = to_dtype(xp, x, dtype)
    if math.prod(shape) == 0:  # no samples or no channels: nothing to normalize
        return xp, dtype, channel, None
    found = _mixture(
        xp,
        xc,
        to_dtype(xp, mean_logits, dtype),
        to_dtype(xp, var_logits, dtype),
        channel,
        eps,
        variance_algorithm(precision),
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
    x_hat = (found.x - found.mu) / found.s
    y = affine(
        xp,
        x_hat,
        to_dtype(xp, gamma, dtype),
        to_dtype(xp, beta, dtype),
        (channel,),
        overwrite=True,
    )
    return to_dtype(xp, y, output_dtype(xp, precision, x, gamma, beta))


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
    dy_c = to_dtype(xp, dy, dtype)
    instance = found.axes[0]
    # in the scaled values' terms: d_mu, d_var and dx / scale of the unscaled ones' (the
    # weights' gradients are unchanged)
    x_hat = (found.x - found.mu) / found.s
    g = affine_vjp_x_hat(xp, dy_c, to_dtype(xp, gamma, dtype), (channel,))
    d_mu = -xp.sum(g, axis=instance, keepdims=True) / found.s
    d_var = -0.5 * xp.sum(g * x_hat, axis=instance, keepdims=True) / (found.s * found.s)
    dx = g / found.s
    d_a, d_b = [], []
    for k in range(len(MIXED)):
        # the gradient of statistic k: its weight times the sum over the (n, c) sharing it
        shared = tuple(a for a in found.axes[k] if a not in instance)
        d_mean_k = found.a[k] * (xp.sum(d_mu, axis=shared, keepdims=True) if shared else d_mu)
        d_var_k = found.b[k] * (xp.sum(d_var, axis=shared, keepdims=True) if shared else d_var)
        n = found.counts[k]
        dx += d_mean_k / n + (2.0 / n) * d_var_k * (found.x - found.means[k])
        d_a.append(xp.sum(d_mu * found.means[k]))
        d_b.append(xp.sum(d_var * found.variances[k]))
    dx *= found.scale
    d_gamma, d_beta = affine_vjp_params(
        xp, dy_c, x_hat, (channel,), has_gamma=gamma is not None, has_beta=beta is not None
    )
    return SwitchableGrads(
        x=to_dtype(xp, dx, x.dtype),
        gamma=None if gamma is None else to_dtype(xp, d_gamma, gamma.dtype),
        beta=None if beta is None else to_dtype(xp, d_beta, beta.dtype),
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
