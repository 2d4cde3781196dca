r"""Moments with exact merging, and running (population) statistics as pure functions.

Moments
    :class:`Moments` holds ``(count, mean, m2)`` with :math:`m_2 = \sum (x - \bar x)^2`.
    Two sets of moments of disjoint data merge exactly (Chan, Golub & LeVeque,
    1979):

    .. math::

        n = n_a + n_b, \quad \delta = \bar x_b - \bar x_a, \quad
        \bar x = \bar x_a + \delta \frac{n_b}{n}, \quad
        m_2 = m_{2,a} + m_{2,b} + \delta^2 \frac{n_a n_b}{n},

    so statistics can be taken chunk by chunk, per device, or over a data set
    larger than memory, and combined in any tree order.

Running statistics
    :func:`running_update` is one update of a batch-norm layer's running mean
    and variance, written as a pure function of the old values, the batch's
    statistics, the momentum and the convention: nothing is updated in place.
    With ``w`` the weight of the new batch (``w = momentum`` under torch's
    meaning, ``w = 1 - momentum`` under flax/keras/onnx's, ``w = 1/k`` for the
    ``k``-th batch of a cumulative average, ``momentum=None``):

    .. math::

        \mu_{new} = (1 - w)\,\mu_{old} + w\,\mu_B, \qquad
        \sigma^2_{new} = (1 - w)\,\sigma^2_{old} + w\,\sigma^2_B \cdot
        \begin{cases} n/(n-1) & \text{unbiased running variance (torch)} \\
        1 & \text{biased (flax, keras, onnx)} \end{cases}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from normref._lib.checks import (
    check_correction,
    check_int,
    check_momentum,
    check_rank,
    check_shape,
    normalize_axes,
)
from normref._lib.namespace import Array, compute_dtype, namespace_of, to_dtype
from normref._lib.scaling import group_scale
from normref.conventions import Convention, get_convention
from normref.ops.standardization import group_count, mean_and_m2
from normref.ops.whitening import group_cross
from normref.types import Precision


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations of some data, per statistic.

    ``count`` is a Python int; ``mean`` and ``m2`` are arrays in the dtype the
    moments were computed in (float64 under ``precision="highest"``): they are
    accumulators, meant to be merged before they are rounded.
    """

    count: int  # type: ignore[assignment]  # a field named as tuple.count, which it shadows
    mean: Array
    m2: Array


class RunningStats(NamedTuple):
    """Running (population) mean and variance of a batch-norm layer."""

    mean: Array
    var: Array


def moments(x: Array, axis: int | tuple[int, ...], *, precision: Precision = "highest") -> Moments:
    r"""Moments of ``x`` reduced over ``axis`` (an int or a tuple of ints).

    ``mean`` and ``m2`` have ``x``'s shape without the reduced axes. The mean is
    :math:`\frac1n \sum x` and :math:`m_2 = \sum (x - \bar x)^2`, both by two
    passes in the compute dtype of ``precision``.

    On a Dask array it is one pass instead, lazy: the moments of each chunk
    merged exactly up a tree (:mod:`normref._lib.dask_tree`); ``mean`` and ``m2`` are
    Dask arrays of one graph, to be computed together
    (``dask.compute(m.mean, m.m2)``).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]])
    >>> m = normref.stats.moments(x, axis=1)
    >>> print(m.count, np.round(m.mean, 4), np.round(normref.stats.variance(m), 4))
    3 [2.3333 0.6667] [1.5556 2.8889]

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    xp = namespace_of(x=x)
    axes = _statistic_axes(x, axis)
    dtype = compute_dtype(xp, x.dtype, precision)
    if array_api_compat.is_dask_namespace(xp):
        return _dask_moments(x, axes, dtype, precision)
    mean, m2, scale = _scaled_moments(xp, to_dtype(xp, x, dtype), axes)
    return Moments(
        group_count(x, axes),
        xp.squeeze(mean / scale, axis=axes),
        xp.squeeze((m2 / scale) / scale, axis=axes),
    )


def mean_and_variance(
    x: Array,
    axis: int | tuple[int, ...],
    *,
    correction: int = 0,
    precision: Precision = "highest",
) -> tuple[Array, Array]:
    r"""Mean and variance :math:`m_2/(n - c)` of ``x`` over ``axis``, as :func:`moments` and
    :func:`variance` give them, but finite wherever the variance is: :math:`m_2 = n v` may
    overflow where :math:`v` does not.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([1.0, 2.0, 4.0, 7.0])
    >>> mean, var = normref.stats.mean_and_variance(x, 0)
    >>> print(float(mean), float(var), float(np.var(x)))
    3.5 5.25 5.25
    >>> mean, var = normref.stats.mean_and_variance(x * 4e153, 0)  # 4 var exceeds float64's range
    >>> print(bool(np.isfinite(var)), bool(np.isclose(var / 4e153 / 4e153, 5.25, rtol=1e-15)))
    True True

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    xp = namespace_of(x=x)
    axes = _statistic_axes(x, axis)
    c = check_correction(correction)
    n = group_count(x, axes)
    if n - c < 1:
        msg = f"a variance with correction={c} needs more than {c} values, got {n}"
        raise ValueError(msg)
    mean, m2, scale = _scaled_moments(
        xp, to_dtype(xp, x, compute_dtype(xp, x.dtype, precision)), axes
    )
    variance = ((m2 / (n - c)) / scale) / scale
    return xp.squeeze(mean / scale, axis=axes), xp.squeeze(variance, axis=axes)


def _statistic_axes(x: Array, axis: object) -> tuple[int, ...]:
    """``axis`` normalized; none of them of size 0 (no statistic exists of no values)."""
    axes = normalize_axes(axis, x.ndim, name="axis")
    empty = [a for a in axes if x.shape[a] == 0]
    if empty:
        msg = (
            f"x of shape {tuple(x.shape)} has size 0 along axis {empty[0]}, which axis={axis!r} "
            "reduces: there is no statistic of no values"
        )
        raise ValueError(msg)
    return axes


def _scaled_moments(xp: Any, x: Array, axes: tuple[int, ...]) -> tuple[Array, Array, Array]:
    """The mean and ``m2`` of ``x`` times the power of two of each statistic (keeping dims), and
    that power (``normref._lib.scaling``): they do not overflow or underflow where the
    unscaled ones would."""
    scale = group_scale(xp, x, axes)
    mean, m2, _ = mean_and_m2(xp, x * scale, axes, algorithm="two_pass", overwrite=True)
    return mean, m2, scale


def _check_moments(m: object, name: str) -> Moments:
    """``m`` must be :class:`Moments` with a count that is an integer >= 0."""
    if not isinstance(m, Moments):
        msg = (
            f"{name} must be Moments (count, mean, m2), as normref.stats.moments returns them, "
            f"got {type(m).__name__}"
        )
        raise TypeError(msg)
    check_int(m.count, name=f"{name}.count", minimum=0)
    return m


def merge(a: Moments, b: Moments) -> Moments:
    """Exact moments of the union of the data behind ``a`` and ``b`` (Chan et al.).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([1.0, 2.0, 4.0, 7.0])
    >>> a, b = normref.stats.moments(x[:2], 0), normref.stats.moments(x[2:], 0)
    >>> m = normref.stats.merge(a, b)
    >>> print(m.count, float(m.mean), float(normref.stats.variance(m)))
    4 3.5 5.25
    >>> print(float(np.var(x)))
    5.25

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    a, b = _check_moments(a, "a"), _check_moments(b, "b")
    xp = namespace_of(a_mean=a.mean, a_m2=a.m2, b_mean=b.mean, b_m2=b.m2)
    check_shape(b.mean.shape, a.mean.shape, name="b.mean", what="the shape of a.mean")
    for name, m in (("a", a), ("b", b)):
        check_shape(m.m2.shape, a.mean.shape, name=f"{name}.m2", what="the shape of a.mean")
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = b.mean - a.mean
    # an infinite mean makes delta inf or NaN: the weighted sum gives the mean of the union
    # (inf, or NaN for infinities of both signs) as a whole-data mean would
    mean = xp.where(
        xp.isfinite(delta),
        a.mean + delta * (b.count / n),
        a.mean * (a.count / n) + b.mean * (b.count / n),
    )
    m2 = a.m2 + b.m2 + (delta * delta) * (a.count * b.count / n)
    dtype = xp.result_type(a.mean.dtype, b.mean.dtype)
    return Moments(n, to_dtype(xp, mean, dtype), to_dtype(xp, m2, dtype))


def variance(m: Moments, correction: int = 0) -> Array:
    r"""Variance :math:`m_2 / (n - c)` from moments; ``correction`` c is 0 or 1.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> m = normref.stats.moments(np.array([1.0, 2.0, 4.0, 7.0]), 0)
    >>> print(float(normref.stats.variance(m)), float(normref.stats.variance(m, correction=1)))
    5.25 7.0

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    m = _check_moments(m, "m")
    c = check_correction(correction)
    if m.count - c < 1:
        msg = f"variance with correction={c} needs count > {c}, got count={m.count}"
        raise ValueError(msg)
    return m.m2 / (m.count - c)


def running_update(
    running_mean: Array,
    running_var: Array,
    batch_mean: Array,
    batch_var: Array,
    count: int,
    *,
    momentum: float | None,
    convention: Convention | str,
    num_batches_tracked: int | None = None,
    precision: Precision = "highest",
) -> RunningStats:
    """One update of running batch-norm statistics (see the module docstring).

    Parameters
    ----------
    running_mean, running_var
        The running statistics before this batch, shape ``(C,)``.
    batch_mean, batch_var
        This batch's mean and *biased* variance, shape ``(C,)``.
    count
        Number of values behind each batch statistic (``n``); the unbiased
        running variance needs ``count >= 2``.
    momentum
        In the convention's meaning (torch: weight of the batch; flax, keras,
        onnx: weight of the old value); ``None``: cumulative average, which
        needs ``num_batches_tracked``.
    convention
        A :class:`~normref.conventions.Convention` or preset name: it gives
        the momentum's meaning and whether the running variance is unbiased.
    num_batches_tracked
        With ``momentum=None``: how many batches have been seen, this one
        included (torch increments its counter before the update).
    precision
        ``"highest"`` (float64) or ``"native"``.

    Returns
    -------
    RunningStats
        New ``(mean, var)`` in the dtypes of ``running_mean`` and ``running_var``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> mean, var = normref.stats.running_update(np.zeros(2), np.ones(2), np.array([1.0, 2.0]), np.array([4.0, 4.0]), 5, momentum=0.1, convention='torch')
    >>> print(np.round(mean, 4), np.round(var, 4))  # var: 0.9 * 1 + 0.1 * 4 * 5 / 4
    [0.1 0.2] [1.4 1.4]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    conv = get_convention(convention)
    xp = namespace_of(
        running_mean=running_mean,
        running_var=running_var,
        batch_mean=batch_mean,
        batch_var=batch_var,
    )
    shape = tuple(running_mean.shape)
    for name, value in (
        ("running_var", running_var),
        ("batch_mean", batch_mean),
        ("batch_var", batch_var),
    ):
        check_shape(value.shape, shape, name=name, what="the shape of running_mean")
    n = check_running_count(conv, count)
    w = batch_weight(momentum, conv, num_batches_tracked)
    dtype = compute_dtype(xp, running_mean.dtype, precision)
    var_b = to_dtype(xp, batch_var, dtype)
    if conv.running_var_correction == 1:
        var_b = var_b * (n / (n - 1))
    new_mean = (1.0 - w) * to_dtype(xp, running_mean, dtype) + w * to_dtype(xp, batch_mean, dtype)
    new_var = (1.0 - w) * to_dtype(xp, running_var, dtype) + w * var_b
    return RunningStats(
        to_dtype(xp, new_mean, running_mean.dtype), to_dtype(xp, new_var, running_var.dtype)
    )


def check_running_count(convention: Convention | str, count: object) -> int:
    """``count``, the values behind each batch statistic, as an integer: at least 2 where
    ``convention`` keeps an unbiased running variance (a lone value has none).

    Examples
    --------
    >>> import normref
    >>> normref.stats.check_running_count("torch", 8)
    8
    >>> normref.stats.check_running_count("torch", 1)
    Traceback (most recent call last):
    ...
    ValueError: convention 'torch' keeps an unbiased running variance, which needs count >= 2 values per statistic, got count=1
    """
    conv = get_convention(convention)
    n = check_int(count, name="count", minimum=0)
    if conv.running_var_correction == 1 and n < 2:
        msg = (
            f"convention {conv.name!r} keeps an unbiased running variance, which needs "
            f"count >= 2 values per statistic, got count={count}"
        )
        raise ValueError(msg)
    return n


def batch_weight(
    momentum: float | None, convention: Convention | str, num_batches_tracked: int | None = None
) -> float:
    """The weight of the new batch in a running-average update (checked arguments).

    ``momentum`` in ``convention``'s meaning; ``None`` is the cumulative average,
    :math:`1/\text{num\\_batches\\_tracked}`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> print(normref.stats.batch_weight(0.1, 'torch'), normref.stats.batch_weight(0.9, 'flax'))
    0.1 0.09999999999999998

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    conv = get_convention(convention)
    m = check_momentum(momentum, allow_none=True)
    if m is not None:
        return conv.batch_weight(m)
    if num_batches_tracked is None:
        msg = "momentum=None (cumulative average) needs num_batches_tracked >= 1, got None"
        raise ValueError(msg)
    return 1.0 / check_int(num_batches_tracked, name="num_batches_tracked", minimum=1)


class Comoments(NamedTuple):
    r"""Count, mean and cross-product matrix of some ``D``-feature data, per statistic.

    ``cross`` is :math:`\sum_i (x_i - \bar x)(x_i - \bar x)^\top`, the matrix
    generalization of ``m2``: its diagonal is the ``m2`` of each feature.
    ``count`` is a Python int; ``mean`` (``(..., D)``) and ``cross``
    (``(..., D, D)``) are accumulators in the compute dtype, meant to be merged
    before they are rounded. Two sets of comoments merge exactly, as
    :class:`Moments` do:

    .. math::

        \bar x = \bar x_a + \delta \frac{n_b}{n}, \qquad
        C = C_a + C_b + \delta \delta^\top \frac{n_a n_b}{n}, \qquad
        \delta = \bar x_b - \bar x_a.
    """

    count: int  # type: ignore[assignment]  # a field named as tuple.count, which it shadows
    mean: Array
    cross: Array


def comoments(x: Array, *, precision: Precision = "highest") -> Comoments:
    r"""Comoments of the samples ``x[..., i, :]`` (``M`` samples of ``D`` features).

    ``x`` has shape ``(..., M, D)`` (e.g. the canonical ``(G, M, D)``); every
    leading index is an independent statistic. Two passes in the compute dtype of
    ``precision``: :math:`\bar x = \frac1M \sum_i x_i`, then
    :math:`C = \sum_i (x_i - \bar x)(x_i - \bar x)^\top`.

    On a Dask array it is one pass instead, lazy, as :func:`moments` is:
    ``mean`` and ``cross`` are Dask arrays of one graph (:mod:`normref._lib.dask_tree`).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]])
    >>> c = normref.stats.comoments(x)
    >>> print(c.count, np.round(c.mean, 4))
    4 [1.5 2. ]
    >>> print(np.round(normref.stats.covariance(c), 4))
    [[1.25 1.75]
     [1.75 3.5 ]]

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    xp = namespace_of(x=x)
    check_rank(tuple(x.shape), minimum=2, layout="samples and features, (..., M, D)")
    dtype = compute_dtype(xp, x.dtype, precision)
    if array_api_compat.is_dask_namespace(xp):
        return _dask_comoments(x, dtype, precision)
    m, d = x.shape[-2], x.shape[-1]
    if m == 0:
        msg = f"x of shape {tuple(x.shape)} has no samples (axis -2 has size 0): no comoments"
        raise ValueError(msg)
    if d == 0:  # statistics of no features
        return Comoments(
            m,
            xp.zeros((*x.shape[:-2], 0), dtype=dtype),
            xp.zeros((*x.shape[:-2], 0, 0), dtype=dtype),
        )
    wide = to_dtype(xp, x, dtype)
    scale = group_scale(xp, wide, (-2, -1))  # the sums of products of values times it
    mean, _, cross = group_cross(xp, wide * scale, algorithm="two_pass", overwrite=True)
    return Comoments(m, (mean / scale)[..., 0, :], (cross / scale) / scale)


def merge_comoments(a: Comoments, b: Comoments) -> Comoments:
    """Exact comoments of the union of the data behind ``a`` and ``b`` (Chan et al.).

    Counts and means merge as :func:`merge` merges them (which also checks them).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]])
    >>> c = normref.stats.merge_comoments(normref.stats.comoments(x[:2]), normref.stats.comoments(x[2:]))
    >>> print(np.round(normref.stats.covariance(c), 4))
    [[1.25 1.75]
     [1.75 3.5 ]]
    >>> print(np.round(np.cov(x.T, bias=True), 4))
    [[1.25 1.75]
     [1.75 3.5 ]]

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    for name, c in (("a", a), ("b", b)):
        if not isinstance(c, Comoments):
            msg = (
                f"{name} must be Comoments (count, mean, cross), as normref.stats.comoments "
                f"returns them, got {type(c).__name__}"
            )
            raise TypeError(msg)
    xp = namespace_of(a_mean=a.mean, a_cross=a.cross, b_mean=b.mean, b_cross=b.cross)
    means = merge(
        Moments(a.count, a.mean, xp.zeros_like(a.mean)),
        Moments(b.count, b.mean, xp.zeros_like(b.mean)),
    )
    for name, c in (("a", a), ("b", b)):
        check_shape(
            c.cross.shape,
            (*a.mean.shape, a.mean.shape[-1]),
            name=f"{name}.cross",
            what="(..., D, D) with D from a.mean",
        )
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    delta = b.mean - a.mean
    outer = delta[..., :, None] * delta[..., None, :]
    cross = a.cross + b.cross + outer * (a.count * b.count / means.count)
    return Comoments(means.count, means.mean, to_dtype(xp, cross, means.mean.dtype))


def covariance(c: Comoments, correction: int = 0) -> Array:
    r"""Covariance matrices :math:`C / (n - c)` from comoments; ``correction`` c is 0 or 1.

    The matrix form of :func:`variance` (whose diagonal it is), computed by it.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]])
    >>> print(np.round(normref.stats.covariance(normref.stats.comoments(x), correction=1), 4))
    [[1.6667 2.3333]
     [2.3333 4.6667]]

    References
    ----------
    - Chan, T. F., Golub, G. H. and LeVeque, R. J. (1983). Algorithms for computing the
      sample variance: analysis and recommendations. The American Statistician 37(3).
    """
    return variance(Moments(c.count, c.mean, c.cross), correction)


def _dask_moments(x: Array, axes: tuple[int, ...], dtype: Any, precision: Precision) -> Moments:
    """Lazy :class:`Moments` of the Dask array ``x`` over ``axes``: :func:`moments` of each
    chunk, merged up a tree by :func:`merge` (:mod:`normref._lib.dask_tree`)."""
    from normref._lib import dask_tree  # imports dask, an optional dependency

    tree = dask_tree.tree_reduction(
        x,
        lambda chunk, axis: moments(chunk, axis, precision=precision),
        merge,
        axes,
        dtype,
        "normref-moments",
    )
    count = dask_tree.known_count(x, axes)
    return Moments(count, dask_tree.field(tree, "mean", dtype), dask_tree.field(tree, "m2", dtype))


def _dask_comoments(x: Array, dtype: Any, precision: Precision) -> Comoments:
    """Lazy :class:`Comoments` of the Dask array ``x`` of shape ``(..., M, D)``: as
    :func:`_dask_moments`, with the feature axis made one chunk first."""
    from normref._lib import dask_tree  # imports dask, an optional dependency

    samples = (x.ndim - 2,)
    tree = dask_tree.tree_reduction(
        dask_tree.whole_features(x),
        lambda chunk, _axis: comoments(chunk, precision=precision),
        merge_comoments,
        samples,
        dtype,
        "normref-comoments",
    )
    mean = dask_tree.field(tree, "mean", dtype)
    cross = dask_tree.field(tree, "cross", dtype, new_axis=tree.ndim)
    return Comoments(dask_tree.known_count(x, samples), mean, cross)
