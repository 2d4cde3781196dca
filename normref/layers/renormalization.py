r"""Batch renormalization (Ioffe, 2017): batch norm corrected towards the running statistics.

Per channel, with the batch's mean :math:`\mu_B` and biased variance
:math:`\sigma_B^2` (over every axis but the channel axis), and the running
statistics :math:`\mu` and :math:`\sigma^2`:

.. math::

    y = \gamma \Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta, \qquad
    \sigma_B = \sqrt{\sigma_B^2 + \epsilon}, \quad \sigma = \sqrt{\sigma^2 + \epsilon},

    r = \operatorname{clip}\Big(\frac{\sigma_B}{\sigma}, \frac1{r_{max}}, r_{max}\Big), \qquad
    d = \operatorname{clip}\Big(\frac{\mu_B - \mu}{\sigma}, -d_{max}, d_{max}\Big).

Unclipped, :math:`\hat x r + d = (x - \mu)/\sigma`: the running statistics'
normalization; with :math:`r_{max} = 1`, :math:`d_{max} = 0` it is batch norm
(:math:`r = 1`, :math:`d = 0`). The gradient treats :math:`r` and :math:`d` as
constants, as the paper does (a stop-gradient): it is batch norm's backward
with :math:`\gamma r` for :math:`\gamma`, and
:math:`\bar\gamma = \sum \bar y\,(\hat x r + d)`, :math:`\bar\beta = \sum \bar y`.
So the layer is :func:`normref.batch_norm` with the affine
:math:`\gamma' = \gamma r`, :math:`\beta' = \gamma d + \beta` (computed in the
compute dtype), and nothing else.

Scaling. The batch's statistics are taken of each channel's values times a
power of two (``normref.ops.standardization.scaled_statistics``, or on NumPy
the fused path's kernels, without a float64 copy of ``x``; with
:math:`\epsilon` scaled alike), and :math:`r` is formed from
:math:`1/\sigma_B` and :math:`\sigma`, so that neither
:math:`\sigma_B^2` nor :math:`\sum (x - \mu_B)^2` overflows or underflows where
:math:`r` and :math:`d` are representable; :math:`r` and :math:`d` are ratios of
quantities that scale alike, unchanged when :math:`x`, :math:`\mu` are
multiplied by :math:`2^k` and :math:`\sigma^2`, :math:`\epsilon` by
:math:`4^k`. A ratio that overflows or underflows is clipped, as its exact
value is. A channel of one value has :math:`\sigma_B^2 = 0`
(:math:`\sigma_B = \sqrt\epsilon`): it computes, as batch norm does; a
training step refuses it only where the convention keeps an unbiased running
variance.

State. normref keeps the running mean and variance, as torch's batch norm
does, and updates them as :func:`normref.batch_norm_train` does
(:func:`batch_renorm_train`); :math:`r` and :math:`d` use the statistics from
before the update. The paper keeps a moving :math:`\sigma` instead of the
variance (:math:`\sigma \leftarrow \sigma + \alpha(\sigma_B - \sigma)`), and
tf-keras ``BatchNormalization(renorm=True)`` keeps ``renorm_mean`` and
``renorm_stddev`` updated with their own ``renorm_momentum``, beside the
moving mean and variance it uses in inference. A kept standard deviation
:math:`\sigma` is ``running_var`` :math:`= \sigma^2 - \epsilon` here:
compare such an implementation through its state translated so, not through
its update (``docs/literature.md``).
"""

from __future__ import annotations

from typing import Any

from normref import _fused
from normref._lib.checks import check_eps, check_finite_number, normalize_axis
from normref._lib.namespace import Array, compute_dtype, namespace_of, output_dtype, to_dtype
from normref._lib.scaling import scaled_mean
from normref.affine import check_param
from normref.conventions import Convention
from normref.layers.compose import NormGrads, normalize
from normref.layers.standardization import (
    batch_norm_layer,
    batch_norm_vjp,
    batch_running_update,
    check_running_stats,
    check_training_step,
)
from normref.ops.base import check_group_size
from normref.ops.standardization import STANDARDIZE, divisor, scaled_statistics
from normref.partition import batch_partition
from normref.stats import RunningStats
from normref.types import Precision


def _check_limits(r_max: object, d_max: object) -> tuple[float, float]:
    r = check_finite_number(r_max, name="r_max")
    d = check_finite_number(d_max, name="d_max")
    if r < 1.0:
        msg = f"r_max must be a finite number >= 1, got {r_max!r}"
        raise ValueError(msg)
    if d < 0.0:
        msg = f"d_max must be a finite number >= 0, got {d_max!r}"
        raise ValueError(msg)
    return r, d


def _batch_statistics(
    xp: Any,
    x: Array,
    eps: float,
    channel: int,
    reduced: tuple[int, ...],
    dtype: Any,
    precision: Precision,
) -> tuple[Array, Array]:
    r"""The batch's mean :math:`\mu_B` and :math:`1 / \sigma_B` per channel, shape ``(C,)``
    in ``dtype`` (the compute dtype): of each channel's values times a power of two, through
    the fused path where it runs (batch norm's statistics, without a float64 copy of ``x``)."""
    layer = batch_norm_layer(x, (None, None), eps, "add", 0, channel)
    fused = _fused.statistics(layer, xp, x, precision)
    if fused is not None:
        return fused.mean, fused.inverse
    xc = to_dtype(xp, x, dtype)
    batch = scaled_statistics(xp, xc, reduced, centre=True, eps=eps, eps_mode="add")
    mean = scaled_mean(xp, xc, reduced)
    return xp.reshape(mean, (-1,)), xp.reshape(batch.inverse, (-1,))


def _corrected_affine(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None,
    beta: Array | None,
    r_max: float,
    d_max: float,
    eps: float,
    axis: int,
    precision: Precision,
    **more: Array,
) -> tuple[Any, Array, Array, Array, Array]:
    """``(xp, r, d, gamma', beta')`` in the compute dtype, each of shape ``(C,)``."""
    xp = namespace_of(
        **more,
        x=x,
        running_mean=running_mean,
        running_var=running_var,
        gamma=gamma,
        beta=beta,
        optional=("gamma", "beta"),
    )
    r_limit, d_limit = _check_limits(r_max, d_max)
    eps = check_eps(eps)
    check_running_stats(x, running_mean, running_var, axis)
    channel = normalize_axis(axis, x.ndim)
    check_param(gamma, x.shape, (channel,), name="gamma")
    check_param(beta, x.shape, (channel,), name="beta")
    reduced = tuple(a for a in range(x.ndim) if a != channel)
    check_group_size(
        batch_partition(tuple(x.shape), channel),
        op=STANDARDIZE,
        params={},
        where=f"x of shape {tuple(x.shape)}, axis={axis}",
    )
    dtype = compute_dtype(xp, x.dtype, precision)
    batch_mean, batch_inverse = _batch_statistics(xp, x, eps, channel, reduced, dtype, precision)
    sigma = divisor(xp, to_dtype(xp, running_var, dtype), eps=eps, eps_mode="add")
    r = xp.clip(1.0 / (batch_inverse * sigma), 1.0 / r_limit, r_limit)
    d = xp.clip((batch_mean - to_dtype(xp, running_mean, dtype)) / sigma, -d_limit, d_limit)
    if gamma is None:
        scale, shift = r, d
    else:
        g = to_dtype(xp, gamma, dtype)
        scale, shift = g * r, g * d
    if beta is not None:
        shift = shift + to_dtype(xp, beta, dtype)
    return xp, r, d, scale, shift


def batch_renorm(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    r_max: float,
    d_max: float,
    eps: float = 1e-5,
    axis: int = 1,
    precision: Precision = "highest",
) -> Array:
    r"""Batch renormalization's output (training mode): see the module docstring.

    Parameters
    ----------
    x
        Input with the channel axis at ``axis``; each channel needs at least 1 value.
    running_mean, running_var
        The running statistics :math:`\mu`, :math:`\sigma^2`, shape ``(C,)``.
    gamma, beta
        Optional per-channel scale and shift, shape ``(C,)``.
    r_max, d_max
        The clipping limits, finite, :math:`r_{max} \ge 1` and :math:`d_{max} \ge 0`
        (the paper raises them from 1 and 0 to 3 and 5 during training).
    eps
        Finite, > 0, inside both square roots.
    axis
        The channel axis.
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
    >>> mean, var = np.array([2.0, 3.0]), np.array([4.0, 1.0])
    >>> y = normref.batch_renorm(x, mean, var, r_max=3.0, d_max=5.0)
    >>> print(np.round(y[:, 0], 4))
    [[-0.5  0.   1. ]
     [-1.  -1.5  0. ]]

    References
    ----------
    - Ioffe, S. (2017). Batch renormalization: towards reducing minibatch dependence in
      batch-normalized models. NeurIPS. https://arxiv.org/abs/1702.03275
    """
    xp, _, _, scale, shift = _corrected_affine(
        x, running_mean, running_var, gamma, beta, r_max, d_max, eps, axis, precision
    )
    layer = batch_norm_layer(x, (scale, shift), eps, "add", 0, axis)
    return normalize(
        layer, x, scale, shift, precision, out_dtype=output_dtype(xp, precision, x, gamma, beta)
    )


def batch_renorm_vjp(
    dy: Array,
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    r_max: float,
    d_max: float,
    eps: float = 1e-5,
    axis: int = 1,
    precision: Precision = "highest",
) -> NormGrads:
    r"""VJP of :func:`batch_renorm` with :math:`r` and :math:`d` held constant (as the paper).

    :math:`\bar x` is batch norm's backward of :math:`\gamma r \bar y`;
    :math:`\bar\gamma = r \sum \bar y \hat x + d \sum \bar y`,
    :math:`\bar\beta = \sum \bar y`. The running statistics get no gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.array([2.0, 3.0]), np.array([4.0, 1.0])
    >>> y = normref.batch_renorm(x, mean, var, r_max=3.0, d_max=5.0)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.batch_renorm_vjp(dy, x, mean, var, r_max=3.0, d_max=5.0)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.3893 -0.2213  0.0237]
      [-0.6749 -0.7026  0.0031]]
    <BLANKLINE>
     [[ 0.0791  0.0929  0.415 ]
      [ 0.5208  0.4931  0.3606]]]

    References
    ----------
    - Ioffe, S. (2017). Batch renormalization: towards reducing minibatch dependence in
      batch-normalized models. NeurIPS. https://arxiv.org/abs/1702.03275
    """
    xp, r, d, scale, shift = _corrected_affine(
        x, running_mean, running_var, gamma, beta, r_max, d_max, eps, axis, precision, dy=dy
    )
    grads = batch_norm_vjp(dy, x, scale, shift, eps=eps, axis=axis, precision=precision)
    d_gamma = None
    if gamma is not None:
        d_gamma = to_dtype(xp, grads.gamma * r + grads.beta * d, gamma.dtype)
    d_beta = None if beta is None else to_dtype(xp, grads.beta, beta.dtype)
    return NormGrads(to_dtype(xp, grads.x, x.dtype), d_gamma, d_beta)


def batch_renorm_train(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    r_max: float,
    d_max: float,
    momentum: float | None,
    convention: Convention | str,
    eps: float = 1e-5,
    axis: int = 1,
    num_batches_tracked: int | None = None,
    precision: Precision = "highest",
) -> tuple[Array, RunningStats]:
    """One training step of batch renormalization, as a pure function.

    Returns :func:`batch_renorm`'s output (with the running statistics given,
    from before this step) and the running statistics updated with this
    batch's mean and biased variance, as :func:`normref.batch_norm_train`
    updates them (``momentum`` in ``convention``'s meaning, its running-variance
    correction). Nothing is modified in place.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.zeros(2), np.ones(2)
    >>> y = normref.batch_renorm_train(x, mean, var, r_max=3.0, d_max=5.0, momentum=0.1, convention='torch')
    >>> print(np.round(y[1].mean, 4), np.round(y[1].var, 4))  # the running statistics
    [0.1333 0.35  ] [1.2067 1.49  ]

    References
    ----------
    - Ioffe, S. (2017). Batch renormalization: towards reducing minibatch dependence in
      batch-normalized models. NeurIPS. https://arxiv.org/abs/1702.03275
    """
    y = batch_renorm(
        x,
        running_mean,
        running_var,
        gamma,
        beta,
        r_max=r_max,
        d_max=d_max,
        eps=eps,
        axis=axis,
        precision=precision,
    )
    stats = batch_running_update(
        x,
        running_mean,
        running_var,
        axis=axis,
        momentum=momentum,
        convention=convention,
        num_batches_tracked=num_batches_tracked,
        precision=precision,
    )
    return y, stats


def batch_renorm_train_vjp(
    dy: Array,
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    r_max: float,
    d_max: float,
    momentum: float | None,
    convention: Convention | str,
    eps: float = 1e-5,
    axis: int = 1,
    num_batches_tracked: int | None = None,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`batch_renorm_train`'s output: that of :func:`batch_renorm` (the running
    statistics are state, not differentiated). The arguments are checked as the forward
    checks them.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.zeros(2), np.ones(2)
    >>> y = normref.batch_renorm_train(x, mean, var, r_max=3.0, d_max=5.0, momentum=0.1, convention='torch')
    >>> dy = np.linspace(-1.0, 1.0, y[0].size).reshape(y[0].shape)
    >>> g = normref.batch_renorm_train_vjp(dy, x, mean, var, r_max=3.0, d_max=5.0, momentum=0.1, convention='torch')
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.7787 -0.4427  0.0474]
      [-0.6749 -0.7026  0.0031]]
    <BLANKLINE>
     [[ 0.1581  0.1858  0.83  ]
      [ 0.5208  0.4931  0.3606]]]

    References
    ----------
    - Ioffe, S. (2017). Batch renormalization: towards reducing minibatch dependence in
      batch-normalized models. NeurIPS. https://arxiv.org/abs/1702.03275
    """
    check_training_step(
        x,
        running_mean,
        running_var,
        axis=axis,
        momentum=momentum,
        convention=convention,
        num_batches_tracked=num_batches_tracked,
    )
    return batch_renorm_vjp(
        dy,
        x,
        running_mean,
        running_var,
        gamma,
        beta,
        r_max=r_max,
        d_max=d_max,
        eps=eps,
        axis=axis,
        precision=precision,
    )
