r"""Batch whitening layers: decorrelated batch normalization (DBN, Huang et al. 2018) and IterNorm.

Like every normref layer, batch whitening is a partition + an operation + an
affine: the partition is :func:`normref.partition.whitening_partition` (the
channels split into ``C / group_size`` groups of ``group_size`` features; every
other axis holds samples), the operation one of the whitenings of
:mod:`normref.ops.whitening` applied to each group's ``M x D`` samples, and the
affine per channel, shape ``(C,)``. For ``x`` of shape ``(N, C, *S)``, group
``g`` and the vector :math:`x_{n,s} \in \mathbb R^D` of its channels at batch
index ``n`` and spatial position ``s``:

.. math::

    y_{n,s} = \gamma \odot W_g (x_{n,s} - \mu_g) + \beta, \qquad
    \Sigma_g = \frac1M \sum_{n,s} (x_{n,s} - \mu_g)(x_{n,s} - \mu_g)^\top + \epsilon I

with :math:`W_g = W(\Sigma_g)` the ``method``'s whitening matrix: ``"zca"``
(DBN), ``"pca"``, ``"cholesky"`` or ``"iter_norm"`` (IterNorm). The covariance
is biased (:math:`1/M`), as in the authors' code.

Inference and running statistics
    :func:`batch_whiten_inference` applies given statistics, a running mean of
    shape ``(C,)`` and running whitening matrices of shape ``(C / group_size,
    group_size, group_size)``; :func:`running_whitening_update` is one update of
    either as a pure function. DBN and IterNorm average the *whitening
    matrices* (``running_wm = m W + (1 - m) running_wm`` with torch's momentum
    meaning, initialized to ``I``); averaging covariances with
    :func:`normref.stats.merge_comoments` and calling
    :func:`normref.ops.whitening_matrix` once is the alternative these functions
    also allow. :func:`batch_whiten_train` is one training step, as those
    implementations take it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from normref._lib.checks import check_momentum, check_shape, normalize_axis
from normref._lib.namespace import Array, compute_dtype, namespace_of, output_dtype, to_dtype
from normref.affine import affine, check_param
from normref.conventions import Convention, get_convention
from normref.layers.compose import Layer, NormGrads, affine_backward, normalize, normalize_vjp
from normref.ops.base import CANONICAL_AXES
from normref.ops.sample_blocks import Block, sample_blocks
from normref.ops.whitening import (
    WHITENING_OPS,
    batch_whitening,
    check_method,
    method_params,
    whitening_params,
)
from normref.partition import Partition, whitening_partition
from normref.types import Precision


class RunningWhitening(NamedTuple):
    """Running mean ``(C,)`` and running whitening matrices ``(C / k, k, k)`` of a whitening layer."""

    mean: Array
    whitening: Array


def _whitening_layer(
    x: Array, group_size: int, method: str, eps: float, correction: int, iterations: int, axis: int
) -> Layer:
    namespace_of(x=x)
    shape = tuple(x.shape)
    name = check_method(method)
    return Layer(
        "batch_whiten",
        whitening_partition(shape, group_size, axis),
        WHITENING_OPS[name],
        {**whitening_params(eps, correction), **method_params(name, iterations)},
        (normalize_axis(axis, len(shape)),),
        f"x of shape {shape}, group_size={group_size}, axis={axis}",
    )


def batch_whiten(
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    group_size: int,
    method: str = "zca",
    eps: float = 1e-5,
    correction: int = 0,
    iterations: int = 5,
    axis: int = 1,
    precision: Precision = "highest",
) -> Array:
    r"""Batch whitening in training mode (batch statistics): DBN, or IterNorm with ``method="iter_norm"``.

    Parameters
    ----------
    x
        Input with the channel axis at ``axis`` and rank >= 2; statistics over
        every other axis (``M = N·prod(S)`` samples, at least one; two with
        ``correction=1``).
    gamma, beta
        Optional per-channel scale and shift, shape ``(x.shape[axis],)``.
    group_size
        Channels whitened jointly (``D``); must divide the number of channels.
    method
        ``"zca"`` (default, DBN), ``"pca"``, ``"cholesky"`` or ``"iter_norm"``
        (see :mod:`normref.ops.whitening`; ``"pca"`` orders each group's output
        channels by descending eigenvalue).
    eps
        Finite, > 0; added to the diagonal of each group's covariance.
    correction
        0 (default) for the biased covariance :math:`X_c^\top X_c / M`, as DBN
        and IterNorm use; 1 for :math:`/(M - 1)`.
    iterations
        Newton–Schulz steps of ``"iter_norm"`` (ignored by the other methods).
    axis
        The channel axis: 1 for ``(N, C, *S)``, -1 for channels-last.
    precision
        ``"highest"`` (float64, default), ``"native"``, or a convention to model.

    Returns
    -------
    Array of ``x``'s shape, in the promoted dtype of ``x``, ``gamma`` and ``beta``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.batch_whiten(x, group_size=2)
    >>> print(np.round(y[:, 0], 4))
    [[-0.2454  0.5227  1.4844]
     [-0.9496 -1.4624  0.6503]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    layer = _whitening_layer(x, group_size, method, eps, correction, iterations, axis)
    return normalize(layer, x, gamma, beta, precision)


def batch_whiten_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    group_size: int,
    method: str = "zca",
    eps: float = 1e-5,
    correction: int = 0,
    iterations: int = 5,
    axis: int = 1,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`batch_whiten`: gradients for ``x``, ``gamma``, ``beta``.

    With ``method="pca"`` it raises :class:`ValueError` where a group's
    covariance has repeated eigenvalues (the gradient does not exist there).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.batch_whiten(x, group_size=2)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.batch_whiten_vjp(dy, x, group_size=2)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.5412 -0.3292  0.024 ]
      [-0.3531 -0.366  -0.0294]]
    <BLANKLINE>
     [[ 0.1367  0.1553  0.5544]
      [ 0.2751  0.2749  0.1985]]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    layer = _whitening_layer(x, group_size, method, eps, correction, iterations, axis)
    return normalize_vjp(layer, dy, x, gamma, beta, precision)


def _check_running(
    part: Partition,
    x: Array,
    running_mean: Array,
    running_whitening: Array,
    channel: tuple[int, ...],
) -> None:
    """A running mean of one value per channel, running matrices of one per group of channels."""
    check_param(running_mean, x.shape, channel, name="running_mean")
    check_shape(
        running_whitening.shape,
        (part.G, part.D, part.D),
        name="running_whitening",
        what="(C / group_size, group_size, group_size)",
    )


def _inference_parts(
    x: Array,
    running_mean: Array,
    running_whitening: Array,
    gamma: Array | None,
    beta: Array | None,
    group_size: int,
    axis: int,
    precision: Precision,
    **more: Array,
) -> tuple[Any, Any, tuple[int, ...], Partition, Array, Array]:
    xp = namespace_of(
        **more,
        x=x,
        running_mean=running_mean,
        running_whitening=running_whitening,
        gamma=gamma,
        beta=beta,
        optional=("gamma", "beta"),
    )
    part = whitening_partition(tuple(x.shape), group_size, axis)
    channel = (normalize_axis(axis, x.ndim),)
    _check_running(part, x, running_mean, running_whitening, channel)
    for name, value in (("gamma", gamma), ("beta", beta)):
        check_param(value, x.shape, channel, name=name)
    dtype = compute_dtype(xp, x.dtype, precision)
    mean = xp.reshape(to_dtype(xp, running_mean, dtype), (part.G, 1, part.D))
    return xp, dtype, channel, part, to_dtype(xp, running_whitening, dtype), mean


def batch_whiten_inference(
    x: Array,
    running_mean: Array,
    running_whitening: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    group_size: int,
    axis: int = 1,
    precision: Precision = "highest",
) -> Array:
    r"""Batch whitening with given (running) statistics, as in evaluation mode.

    :math:`y_{n,s} = \gamma \odot \hat W_g (x_{n,s} - \hat\mu_g) + \beta` for each
    group ``g`` of ``group_size`` channels.

    Parameters
    ----------
    x
        Input with the channel axis at ``axis``.
    running_mean
        Per-channel mean, shape ``(C,)``.
    running_whitening
        Whitening matrix of each group, shape ``(C / group_size, group_size,
        group_size)`` (e.g. from :func:`normref.ops.whitening_matrix`).
    gamma, beta, group_size, axis, precision
        As :func:`batch_whiten`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, whitening = np.array([2.0, 3.0]), np.eye(2)[None] / 2.0
    >>> y = normref.batch_whiten_inference(x, mean, whitening, group_size=2)
    >>> print(np.round(y[0], 4))
    [[-0.5  0.   1. ]
     [ 0.   1.  -1.5]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    xp, dtype, channel, part, w, mean = _inference_parts(
        x, running_mean, running_whitening, gamma, beta, group_size, axis, precision
    )
    rows = sample_blocks(xp, part, x)
    matrix = xp.matrix_transpose(w)
    factor, shift = (
        None if p is None else part.canonical_param(xp, to_dtype(xp, p, dtype), channel)
        for p in (gamma, beta)
    )

    def output(block: Block) -> Array:
        centred = rows.rows(block, dtype)
        centred -= mean
        return affine(
            xp, rows.times(centred, matrix), factor, shift, CANONICAL_AXES, overwrite=True
        )

    return rows.assembled(output, output_dtype(xp, precision, x, gamma, beta))


def batch_whiten_inference_vjp(
    dy: Array,
    x: Array,
    running_mean: Array,
    running_whitening: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    group_size: int,
    axis: int = 1,
    precision: Precision = "highest",
) -> NormGrads:
    r"""VJP of :func:`batch_whiten_inference`; the running statistics are constants.

    :math:`\bar x_{n,s} = \hat W_g^\top (\gamma \odot \bar y_{n,s})`,
    :math:`\bar\gamma = \sum \bar y \odot \hat x`, :math:`\bar\beta = \sum \bar y`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, whitening = np.array([2.0, 3.0]), np.eye(2)[None] / 2.0
    >>> y = normref.batch_whiten_inference(x, mean, whitening, group_size=2)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.batch_whiten_inference_vjp(dy, x, mean, whitening, group_size=2)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.5    -0.4091 -0.3182]
      [-0.2273 -0.1364 -0.0455]]
    <BLANKLINE>
     [[ 0.0455  0.1364  0.2273]
      [ 0.3182  0.4091  0.5   ]]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    xp, dtype, channel, part, w, mean = _inference_parts(
        x, running_mean, running_whitening, gamma, beta, group_size, axis, precision, dy=dy
    )
    centred = part.to_canonical(xp, to_dtype(xp, x, dtype)) - mean
    x_hat = part.from_canonical(xp, centred @ xp.matrix_transpose(w))

    def backward(d_x_hat: Array) -> tuple[Array, Array]:
        return part.from_canonical(xp, part.to_canonical(xp, d_x_hat) @ w), x_hat

    return affine_backward(xp, dtype, dy, x, gamma, beta, channel, backward)


def running_whitening_update(
    old: Array,
    new: Array,
    *,
    momentum: float,
    convention: Convention | str,
    precision: Precision = "highest",
) -> Array:
    r"""One running-average update of a running mean or running whitening matrices, pure.

    :math:`(1 - w)\,\mathrm{old} + w\,\mathrm{new}` with ``w`` the weight of the
    new batch under ``convention``'s momentum meaning (torch, IterNorm and DBN:
    ``w = momentum``; flax, keras, onnx: ``w = 1 - momentum``).

    Parameters
    ----------
    old, new
        The running value and this batch's value, of one shape.
    momentum
        In [0, 1], in the convention's meaning.
    convention
        A :class:`~normref.conventions.Convention` or preset name.
    precision
        ``"highest"`` (float64) or ``"native"``.

    Returns
    -------
    The updated value, in ``old``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> old, new = np.eye(2), 3.0 * np.eye(2)
    >>> y = normref.running_whitening_update(old, new, momentum=0.1, convention='torch')
    >>> print(np.round(y, 4))
    [[1.2 0. ]
     [0.  1.2]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    conv = get_convention(convention)
    xp = namespace_of(old=old, new=new)
    check_shape(new.shape, old.shape, name="new", what="the shape of old")
    w = conv.batch_weight(check_momentum(momentum))
    dtype = compute_dtype(xp, old.dtype, precision)
    updated = (1.0 - w) * to_dtype(xp, old, dtype) + w * to_dtype(xp, new, dtype)
    return to_dtype(xp, updated, old.dtype)


def batch_whiten_train(
    x: Array,
    running_mean: Array,
    running_whitening: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    group_size: int,
    momentum: float,
    convention: Convention | str,
    method: str = "zca",
    eps: float = 1e-5,
    correction: int = 0,
    iterations: int = 5,
    axis: int = 1,
    precision: Precision = "highest",
) -> tuple[Array, RunningWhitening]:
    """One training step of a batch-whitening layer, as DBN and IterNorm take it, pure.

    Returns the output of :func:`batch_whiten` (batch statistics) and the
    running statistics updated with :func:`running_whitening_update` from this
    batch's per-channel mean and the whitening matrices of its group
    covariances (``correction`` and ``eps`` as there). Nothing is modified in
    place.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, whitening = np.zeros(2), np.eye(2)[None]
    >>> y = normref.batch_whiten_train(x, mean, whitening, group_size=2, momentum=0.1, convention='torch')
    >>> print(np.round(y[1].mean, 4))  # the running mean
    [0.1333 0.35  ]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    xp = namespace_of(x=x, running_mean=running_mean, running_whitening=running_whitening)
    part = whitening_partition(tuple(x.shape), group_size, axis)
    _check_running(part, x, running_mean, running_whitening, (normalize_axis(axis, x.ndim),))
    y = batch_whiten(
        x,
        gamma,
        beta,
        group_size=group_size,
        method=method,
        eps=eps,
        correction=correction,
        iterations=iterations,
        axis=axis,
        precision=precision,
    )
    mean, w = batch_whitening(
        sample_blocks(xp, part, x),
        method=method,
        eps=eps,
        correction=correction,
        iterations=iterations,
        precision=precision,
    )
    return y, RunningWhitening(
        running_whitening_update(
            running_mean,
            xp.reshape(mean, (-1,)),
            momentum=momentum,
            convention=convention,
            precision=precision,
        ),
        running_whitening_update(
            running_whitening, w, momentum=momentum, convention=convention, precision=precision
        ),
    )
