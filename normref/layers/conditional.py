r"""Adaptive instance normalization (AdaIN, Huang & Belongie, 2017): instance norm whose affine
is another input's statistics.

For each sample ``n`` and channel ``c``, with :math:`\mu(t)` and
:math:`\sigma(t) = \sqrt{\operatorname{var}(t) + \epsilon}` taken over the
spatial axes of ``t`` alone:

.. math::

    y = \sigma(s)\,\frac{x - \mu(x)}{\sigma(x)} + \mu(s),

``x`` the content and ``s`` the style, whose spatial size may differ from
``x``'s. This is conditional instance normalization
(:func:`normref.instance_norm` with per-sample ``gamma`` and ``beta`` of shape
``(N, C)``) with :math:`\gamma = \sigma(s)` and :math:`\beta = \mu(s)`; the
gradient flows through the style's statistics:

.. math::

    \bar s = \frac{\bar\beta}{n_s} + \bar\gamma\,\frac{s - \mu(s)}{(n_s - c)\,\sigma(s)},
    \qquad \bar\gamma = \sum \bar y \hat x, \quad \bar\beta = \sum \bar y

per sample and channel (sums over ``x``'s spatial axes, :math:`n_s` the
style's spatial size, :math:`c` the variance's correction).

Scaling. The style's statistics are taken of each of its instances times a
power of two (``normref.ops.standardization.scaled_statistics``, with
:math:`\epsilon` scaled alike), and the content's by
:func:`normref.instance_norm`: :math:`\sigma(s)`, :math:`\mu(s)` and the
style's gradient are exact wherever they are representable, whatever the
magnitude of the style; multiplying ``x`` and ``style`` by :math:`2^k` and
``eps`` by :math:`4^k` multiplies ``y`` by :math:`2^k`.

Conventions. The authors' Torch code takes the content's statistics as
instance norm does (biased variance, ``eps`` inside) and the style's standard
deviation biased and without ``eps``; the widely used PyTorch port
(``calc_mean_std``) takes the unbiased variance plus ``eps = 1e-5`` for both,
which is ``correction=1``. ``docs/conventions.md`` has the sources.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from normref._lib.checks import check_correction, check_eps, check_rank, normalize_axis
from normref._lib.namespace import Array, compute_dtype, namespace_of, output_dtype, to_dtype
from normref._lib.scaling import scaled_mean
from normref.layers.compose import normalize
from normref.layers.standardization import instance_norm_layer, instance_norm_vjp
from normref.ops.base import check_group_size
from normref.ops.standardization import (
    STANDARDIZE,
    Scaled,
    group_count,
    nonzero_divisor,
    scaled_statistics,
)
from normref.partition import instance_partition
from normref.types import Precision


class AdaINGrads(NamedTuple):
    """Gradients of :func:`adaptive_instance_norm` with respect to ``x`` and ``style``."""

    x: Array
    style: Array


class _StyleStats(NamedTuple):
    r"""The style's statistics in the compute dtype: per (sample, channel) of shape ``(N, C)``
    (``mean``, ``sigma``); its statistics taken of its values times a power of two
    (``scaled``: their centred values over their divisor are the style standardized,
    :math:`(s - \mu(s))/\sigma(s)`, which the backward forms); and its number of spatial
    values ``size``."""

    xp: Any
    spatial: tuple[int, ...]
    mean: Array
    sigma: Array
    scaled: Scaled
    size: int


def _style_stats(
    x: Array,
    style: Array,
    eps: float,
    correction: int,
    axis: int,
    precision: Precision,
    **more: Array,
) -> _StyleStats:
    xp = namespace_of(**more, x=x, style=style)
    eps, correction = check_eps(eps), check_correction(correction)
    check_rank(tuple(x.shape), minimum=3, layout="N, C and at least one spatial axis")
    channel = normalize_axis(axis, x.ndim)
    if channel == 0:
        msg = f"axis={axis} names the batch axis 0; the channel axis must be another axis"
        raise ValueError(msg)
    if style.ndim != x.ndim or (style.shape[0], style.shape[channel]) != (
        x.shape[0],
        x.shape[channel],
    ):
        msg = (
            f"style must have x's rank {x.ndim}, batch size x.shape[0]={x.shape[0]} and "
            f"channels x.shape[{channel}]={x.shape[channel]} (its spatial sizes may differ), "
            f"got shape {tuple(style.shape)}"
        )
        raise ValueError(msg)
    where = f"adaptive_instance_norm(x of shape {tuple(x.shape)}, axis={axis})"
    params = {"correction": correction}
    check_group_size(
        instance_partition(tuple(x.shape), channel), op=STANDARDIZE, params=params, where=where
    )
    check_group_size(
        instance_partition(tuple(style.shape), channel),
        op=STANDARDIZE,
        params=params,
        where=where,
        name="style",
    )
    spatial = tuple(a for a in range(x.ndim) if a not in (0, channel))
    wide = to_dtype(xp, style, compute_dtype(xp, x.dtype, precision))
    found = scaled_statistics(
        xp,
        wide,
        spatial,
        centre=True,
        eps=eps,
        eps_mode="add",
        correction=correction,
    )
    # sigma(s) = 1 / inverse; the centred values over sigma(s) are the scaled ones over s
    sigma = 1.0 / found.inverse
    return _StyleStats(
        xp,
        spatial,
        xp.squeeze(scaled_mean(xp, wide, spatial), axis=spatial),
        xp.squeeze(sigma, axis=spatial),
        found,
        group_count(style, spatial),
    )


def adaptive_instance_norm(
    x: Array,
    style: Array,
    *,
    eps: float = 1e-5,
    correction: int = 0,
    axis: int = 1,
    precision: Precision = "highest",
) -> Array:
    r"""AdaIN: ``x`` instance-normalized, then scaled and shifted by ``style``'s statistics.

    :math:`y = \sigma(s)(x - \mu(x))/\sigma(x) + \mu(s)` per sample and channel
    (module docstring).

    Parameters
    ----------
    x
        Content, ``(N, C, *S)`` with the channel axis at ``axis`` (batch axis 0,
        at least one spatial axis); each instance needs at least one value (two with
        ``correction=1``). An instance of one value has the biased variance 0: its
        output is :math:`\mu(s)`. No samples or no channels give an empty output.
    style
        Style, ``x``'s rank, batch size and channels; its spatial sizes may
        differ from ``x``'s (each instance needs at least one value, two with
        ``correction=1``).
    eps
        Finite, > 0, inside both standard deviations.
    correction
        The variances' correction, for both: 0 (biased, default) or 1 (unbiased,
        the PyTorch port's).
    axis
        The channel axis: 1 for ``(N, C, *S)``, -1 for channels-last.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape, in the promoted dtype of ``x`` and ``style``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> style = np.array([[[0.0, 2.0, 1.0], [1.0, 1.0, 4.0]], [[5.0, 5.0, 2.0], [0.0, 4.0, 2.0]]])
    >>> y = normref.adaptive_instance_norm(x, style)
    >>> print(np.round(y[0], 4))
    [[0.1271 0.7818 2.0911]
     [2.2294 3.6059 0.1647]]

    References
    ----------
    - Huang, X. and Belongie, S. (2017). Arbitrary style transfer in real-time with adaptive
      instance normalization. ICCV. https://arxiv.org/abs/1703.06868
    """
    stats = _style_stats(x, style, eps, correction, axis, precision)
    params = (stats.sigma, stats.mean)
    layer = instance_norm_layer(x, params, eps, "add", correction, axis)
    return normalize(
        layer, x, *params, precision, out_dtype=output_dtype(stats.xp, precision, x, style)
    )


def adaptive_instance_norm_vjp(
    dy: Array,
    x: Array,
    style: Array,
    *,
    eps: float = 1e-5,
    correction: int = 0,
    axis: int = 1,
    precision: Precision = "highest",
) -> AdaINGrads:
    r"""VJP of :func:`adaptive_instance_norm` for ``x`` and ``style`` (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> style = np.array([[[0.0, 2.0, 1.0], [1.0, 1.0, 4.0]], [[5.0, 5.0, 2.0], [0.0, 4.0, 2.0]]])
    >>> y = normref.adaptive_instance_norm(x, style)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.adaptive_instance_norm_vjp(dy, x, style)
    >>> print(g._fields)
    ('x', 'style')
    >>> print(np.round(g[0], 4))
    [[[-0.017   0.0255 -0.0085]
      [-0.1153  0.0692  0.0461]]
    <BLANKLINE>
     [[-0.1767  0.1178  0.0589]
      [-0.0114  0.019  -0.0076]]]

    References
    ----------
    - Huang, X. and Belongie, S. (2017). Arbitrary style transfer in real-time with adaptive
      instance normalization. ICCV. https://arxiv.org/abs/1703.06868
    """
    stats = _style_stats(x, style, eps, correction, axis, precision, dy=dy)
    xp = stats.xp
    grads = instance_norm_vjp(
        dy,
        x,
        stats.sigma,
        stats.mean,
        eps=eps,
        axis=axis,
        correction=correction,
        precision=precision,
    )
    channel = normalize_axis(axis, x.ndim)
    shape = [1] * x.ndim
    shape[0], shape[channel] = x.shape[0], x.shape[channel]
    d_gamma = xp.reshape(grads.gamma, tuple(shape))
    d_beta = xp.reshape(grads.beta, tuple(shape))
    standardized = stats.scaled.values / nonzero_divisor(xp, stats.scaled.s)
    d_style = standardized * (d_gamma / (stats.size - correction))
    d_style += d_beta / stats.size
    return AdaINGrads(to_dtype(xp, grads.x, x.dtype), to_dtype(xp, d_style, style.dtype))
