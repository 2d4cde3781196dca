r"""Named normalization layers: each is a partition + an operation + an affine.

=================  ===========================================  ================  =================
layer              partition (:mod:`normref.partition`)          operation         gamma, beta shape
=================  ===========================================  ================  =================
batch_norm         one group per channel                        standardize       ``(C,)``
layer_norm         one group per index outside ``axes``         standardize       ``x.shape[axes]``
instance_norm      one group per (sample, channel)              standardize       ``(C,)``
group_norm         one group per (sample, channel group)        standardize       ``(C,)``
ghost_batch_norm   one group per (virtual batch, channel)       standardize       ``(C,)``
rms_norm           as layer norm                                rms_scale         ``x.shape[axes]``
=================  ===========================================  ================  =================

:func:`mean_only_batch_norm` is batch norm's partition with the centring
operation and ``beta`` alone. The channel layers (batch, instance, group and
ghost batch norm) also take per-sample ``gamma`` and ``beta`` of shape
``(N, C)`` (conditional normalization: the conditional batch norm of de Vries
et al., 2017, the conditional instance norm of Dumoulin et al., 2017, FiLM of
Perez et al., 2018), whose gradients have that shape
(:func:`normref.affine.channel_param_axes`).

For one group with samples :math:`x_i`, :math:`i = 1..n`, and the affine
parameters of the element's channel (or normalized position):

.. math::

    y_i = \gamma \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \qquad
    \mu = \frac1n \sum_i x_i, \qquad \sigma^2 = \frac1n \sum_i (x_i - \mu)^2

(biased variance; ``eps_mode`` moves :math:`\epsilon`, see
:mod:`normref.ops.standardization`), and for RMS norm
:math:`y_i = \gamma x_i / \sqrt{\frac1n \sum_j x_j^2 + \epsilon}`.

All layers compute batch statistics (training mode) except
:func:`batch_norm_inference`, which uses given running statistics. Every
``*_vjp`` takes the cotangent ``dy`` first and then exactly the forward's
arguments, and returns a NamedTuple with one field per differentiable
argument (``None`` where that argument was ``None``); the backward formulas
are in :mod:`normref.ops.standardization` and :mod:`normref.affine`.

Every group's statistics are taken of its values times a power of two, so that
they are exact at any magnitude (:mod:`normref.ops.standardization`). A group
of one value has the biased variance 0: its output is ``beta`` and its gradient
0 (the unbiased variance, ``correction=1``, needs two values). A size 0 along a
reduced axis (a group without values) raises :class:`ValueError` naming the
axis; a size 0 along another axis (no groups) gives an empty output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from normref._lib.checks import check_eps, check_eps_mode, normalize_axes, normalize_axis
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
)
from normref.affine import (
    affine,
    broadcast_param,
    channel_param_axes,
    check_param,
)
from normref.conventions import Convention
from normref.layers.compose import (
    Layer,
    NormGrads,
    ScaleNormGrads,
    affine_backward,
    normalize,
    normalize_vjp,
)
from normref.ops.base import GroupOp
from normref.ops.standardization import (
    CENTER,
    RMS_SCALE,
    STANDARDIZE,
    divisor,
    group_count,
    rms_params,
    std_params,
)
from normref.partition import (
    Partition,
    batch_partition,
    ghost_batch_partition,
    group_partition,
    instance_partition,
    layer_partition,
)
from normref.stats import (
    RunningStats,
    batch_weight,
    check_running_count,
    mean_and_variance,
    running_update,
)
from normref.types import Precision


def _shape(x: Array) -> tuple[int, ...]:
    namespace_of(x=x)
    return tuple(x.shape)


def _channel_layer(
    name: str,
    x: Array,
    params: tuple[Array | None, Array | None],
    eps: float,
    eps_mode: str,
    correction: int,
    axis: int,
    make_partition: Callable[..., Partition],
    **config: int,
) -> Layer:
    """A standardizing layer whose ``params`` (gamma and beta) are per channel (``axis``), or
    per sample and channel (:func:`normref.affine.channel_param_axes`)."""
    shape = _shape(x)
    described = ", ".join(f"{k}={v}" for k, v in {**config, "axis": axis}.items())
    partition = make_partition(shape, *config.values(), axis)
    return Layer(
        name,
        partition,
        STANDARDIZE,
        std_params(eps, eps_mode, correction),
        channel_param_axes(shape, axis, *params),
        f"x of shape {shape}, {described}",
    )


def batch_norm_layer(
    x: Array,
    params: tuple[Array | None, Array | None],
    eps: float,
    eps_mode: str,
    correction: int,
    axis: int,
) -> Layer:
    """Batch norm's layer for ``x`` with the per-channel ``params`` (gamma and beta): also for a
    layer that forms its own affine parameters (batch renormalization)."""
    return _channel_layer("batch_norm", x, params, eps, eps_mode, correction, axis, batch_partition)


def instance_norm_layer(
    x: Array,
    params: tuple[Array | None, Array | None],
    eps: float,
    eps_mode: str,
    correction: int,
    axis: int,
) -> Layer:
    """Instance norm's layer for ``x`` with the per-channel or per-sample-and-channel
    ``params`` (gamma and beta): also for a layer that forms its own (AdaIN)."""
    return _channel_layer(
        "instance_norm", x, params, eps, eps_mode, correction, axis, instance_partition
    )


def _axes_layer(name: str, x: Array, op: GroupOp, params: dict[str, Any], axes: Any) -> Layer:
    """A layer over the normalized ``axes``, whose parameters have those axes' shape."""
    shape = _shape(x)
    return Layer(
        name,
        layer_partition(shape, axes),
        op,
        params,
        normalize_axes(axes, len(shape)),
        f"x of shape {shape}, axes={axes}",
    )


def batch_norm(
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Batch normalization in training mode (batch statistics).

    Statistics per channel over every axis except ``axis`` (N and the spatial
    axes for ``(N, C, *S)``), biased variance:
    :math:`y = \gamma (x - \mu_c)/\sqrt{\sigma_c^2 + \epsilon} + \beta`.

    Parameters
    ----------
    x
        Input with the channel axis at ``axis``; each channel needs at least one value
        (two with ``correction=1``: a lone value's biased variance is 0, and its output
        ``beta``). A size 0 along a reduced axis is an error; along the channel axis, the
        output is empty.
    gamma, beta
        Optional per-channel scale and shift, shape ``(x.shape[axis],)``; or both per
        sample and channel, shape ``(x.shape[0], x.shape[axis])`` (conditional batch norm).
    eps
        Finite, > 0.
    axis
        The channel axis: 1 for ``(N, C, *S)``, -1 for channels-last.
    eps_mode
        ``"add"`` (default), ``"max"`` or ``"add_std"``: where ``eps`` enters.
    correction
        The variance's correction: 0 (biased, :math:`\frac1n`, what every framework
        normalizes with; the default) or 1 (unbiased, :math:`\frac1{n-1}`).
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
    >>> y = normref.batch_norm(x)
    >>> print(np.round(y[:, 0], 4))
    [[-0.2085  0.417   1.6681]
     [-0.8341 -1.4596  0.417 ]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return normalize(
        batch_norm_layer(x, (gamma, beta), eps, eps_mode, correction, axis),
        x,
        gamma,
        beta,
        precision,
    )


def batch_norm_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`batch_norm`: gradients for ``x``, ``gamma``, ``beta``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.batch_norm(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.batch_norm_vjp(dy, x)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.4871 -0.2769  0.0297]
      [-0.3044 -0.3169  0.0014]]
    <BLANKLINE>
     [[ 0.0989  0.1162  0.5192]
      [ 0.2349  0.2224  0.1626]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    return normalize_vjp(
        batch_norm_layer(x, (gamma, beta), eps, eps_mode, correction, axis),
        dy,
        x,
        gamma,
        beta,
        precision,
    )


def layer_norm(
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    axes: Any = (-1,),
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Layer normalization: statistics over the normalized ``axes``, one group per other index.

    :math:`y = \gamma (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta` with
    :math:`\mu, \sigma^2` over ``axes`` (torch: the trailing ``normalized_shape``).

    Parameters
    ----------
    x
        Input; the normalized axes together need at least one value (two with
        ``correction=1``).
    gamma, beta
        Optional, of shape ``tuple(x.shape[a] for a in sorted(axes))``.
    axes
        The normalized axes (an int or a tuple); default the last axis.
    eps, eps_mode, correction, precision
        As :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.layer_norm(x)
    >>> print(np.round(y[0], 4))
    [[-1.069  -0.2673  1.3363]
     [ 0.1622  1.1355 -1.2978]]

    References
    ----------
    - Ba, J. L., Kiros, J. R. and Hinton, G. E. (2016). Layer normalization.
      https://arxiv.org/abs/1607.06450
    """
    return normalize(
        _axes_layer("layer_norm", x, STANDARDIZE, std_params(eps, eps_mode, correction), axes),
        x,
        gamma,
        beta,
        precision,
    )


def layer_norm_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    axes: Any = (-1,),
    eps: float = 1e-5,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`layer_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.layer_norm(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.layer_norm_vjp(dy, x)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.0208  0.0312 -0.0104]
      [-0.0815  0.0489  0.0326]]
    <BLANKLINE>
     [[-0.125   0.0833  0.0417]
      [-0.007   0.0116 -0.0047]]]

    References
    ----------
    - Ba, J. L., Kiros, J. R. and Hinton, G. E. (2016). Layer normalization.
      https://arxiv.org/abs/1607.06450
    """
    return normalize_vjp(
        _axes_layer("layer_norm", x, STANDARDIZE, std_params(eps, eps_mode, correction), axes),
        dy,
        x,
        gamma,
        beta,
        precision,
    )


def instance_norm(
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Instance normalization: statistics per (sample, channel) over the spatial axes.

    ``x`` has shape ``(N, C, *S)`` (channel axis ``axis``, batch axis 0, at
    least one spatial axis); ``gamma`` and ``beta`` have shape ``(C,)``, or
    ``(N, C)`` for conditional instance norm (one per sample and channel).
    Other parameters as :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.instance_norm(x)
    >>> print(np.round(y[0], 4))
    [[-1.069  -0.2673  1.3363]
     [ 0.1622  1.1355 -1.2978]]

    References
    ----------
    - Ulyanov, D., Vedaldi, A. and Lempitsky, V. (2016). Instance normalization: the missing
      ingredient for fast stylization. https://arxiv.org/abs/1607.08022
    """
    return normalize(
        instance_norm_layer(x, (gamma, beta), eps, eps_mode, correction, axis),
        x,
        gamma,
        beta,
        precision,
    )


def instance_norm_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`instance_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.instance_norm(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.instance_norm_vjp(dy, x)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.0208  0.0312 -0.0104]
      [-0.0815  0.0489  0.0326]]
    <BLANKLINE>
     [[-0.125   0.0833  0.0417]
      [-0.007   0.0116 -0.0047]]]

    References
    ----------
    - Ulyanov, D., Vedaldi, A. and Lempitsky, V. (2016). Instance normalization: the missing
      ingredient for fast stylization. https://arxiv.org/abs/1607.08022
    """
    return normalize_vjp(
        instance_norm_layer(x, (gamma, beta), eps, eps_mode, correction, axis),
        dy,
        x,
        gamma,
        beta,
        precision,
    )


def group_norm(
    x: Array,
    num_groups: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Group normalization: channels split into ``num_groups`` contiguous groups per sample.

    Statistics per (sample, group) over the group's ``C / num_groups`` channels
    and the spatial axes. ``gamma`` and ``beta`` are per *channel*, shape
    ``(C,)`` (as torch and onnx opset 21; onnx opset 18 had one per group), or
    ``(N, C)``, per sample and channel. ``num_groups`` must divide ``C``. Other
    parameters as :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.group_norm(x, 1)
    >>> print(np.round(y[0], 4))
    [[-0.8783 -0.2928  0.8783]
     [ 0.2928  1.4638 -1.4638]]

    References
    ----------
    - Wu, Y. and He, K. (2018). Group normalization. ECCV. https://arxiv.org/abs/1803.08494
    """
    layer = _channel_layer(
        "group_norm",
        x,
        (gamma, beta),
        eps,
        eps_mode,
        correction,
        axis,
        group_partition,
        num_groups=num_groups,
    )
    return normalize(layer, x, gamma, beta, precision)


def group_norm_vjp(
    dy: Array,
    x: Array,
    num_groups: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`group_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.group_norm(x, 1)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.group_norm_vjp(dy, x, 1)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.2525 -0.1551 -0.0669]
      [ 0.0487  0.1369  0.289 ]]
    <BLANKLINE>
     [[-0.0754  0.0358 -0.0207]
      [ 0.0486  0.0341 -0.0223]]]

    References
    ----------
    - Wu, Y. and He, K. (2018). Group normalization. ECCV. https://arxiv.org/abs/1803.08494
    """
    layer = _channel_layer(
        "group_norm",
        x,
        (gamma, beta),
        eps,
        eps_mode,
        correction,
        axis,
        group_partition,
        num_groups=num_groups,
    )
    return normalize_vjp(layer, dy, x, gamma, beta, precision)


def ghost_batch_norm(
    x: Array,
    virtual_batch_size: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""Ghost batch normalization (Hoffer et al., 2017): batch norm within virtual batches.

    The batch axis 0 is split into consecutive virtual batches of
    ``virtual_batch_size`` samples (which must divide ``N``); each is
    batch-normalized on its own. Other parameters as :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.ghost_batch_norm(x, 1)
    >>> print(np.round(y[:, 0], 4))
    [[-1.069  -0.2673  1.3363]
     [-0.2673 -1.069   1.3363]]

    References
    ----------
    - Hoffer, E., Hubara, I. and Soudry, D. (2017). Train longer, generalize better: closing
      the generalization gap in large batch training of neural networks. NeurIPS.
      https://arxiv.org/abs/1705.08741
    """
    layer = _channel_layer(
        "ghost_batch_norm",
        x,
        (gamma, beta),
        eps,
        eps_mode,
        correction,
        axis,
        ghost_batch_partition,
        virtual_batch_size=virtual_batch_size,
    )
    return normalize(layer, x, gamma, beta, precision)


def ghost_batch_norm_vjp(
    dy: Array,
    x: Array,
    virtual_batch_size: int,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`ghost_batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.ghost_batch_norm(x, 1)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ghost_batch_norm_vjp(dy, x, 1)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.0208  0.0312 -0.0104]
      [-0.0815  0.0489  0.0326]]
    <BLANKLINE>
     [[-0.125   0.0833  0.0417]
      [-0.007   0.0116 -0.0047]]]

    References
    ----------
    - Hoffer, E., Hubara, I. and Soudry, D. (2017). Train longer, generalize better: closing
      the generalization gap in large batch training of neural networks. NeurIPS.
      https://arxiv.org/abs/1705.08741
    """
    layer = _channel_layer(
        "ghost_batch_norm",
        x,
        (gamma, beta),
        eps,
        eps_mode,
        correction,
        axis,
        ghost_batch_partition,
        virtual_batch_size=virtual_batch_size,
    )
    return normalize_vjp(layer, dy, x, gamma, beta, precision)


class MeanOnlyGrads(NamedTuple):
    """Gradients of :func:`mean_only_batch_norm` with respect to ``x`` and ``beta``."""

    x: Array
    beta: Array | None


def _mean_only_layer(x: Array, axis: int) -> Layer:
    shape = _shape(x)
    return Layer(
        "mean_only_batch_norm",
        batch_partition(shape, axis),
        CENTER,
        {},
        (normalize_axis(axis, len(shape)),),
        f"x of shape {shape}, axis={axis}",
    )


def mean_only_batch_norm(
    x: Array, beta: Array | None = None, *, axis: int = 1, precision: Precision = "highest"
) -> Array:
    r"""Mean-only batch normalization (Salimans & Kingma, 2016): each channel centred, no scaling.

    :math:`y = x - \mu_c + \beta` with :math:`\mu_c` the batch mean of channel
    ``c`` over every axis but ``axis`` (training mode): the centring-only layer
    of the survey of Huang et al., which Salimans & Kingma pair with weight
    normalization. It is the centring operation
    (:func:`normref.ops.center`) on batch norm's partition, whose mean is
    summed as the values times a power of two (no overflow where the mean is
    finite); a channel of one value is allowed (its output is ``beta``).

    Parameters
    ----------
    x
        Input with the channel axis at ``axis``.
    beta
        Optional per-channel shift, shape ``(x.shape[axis],)``.
    axis
        The channel axis: 1 for ``(N, C, *S)``, -1 for channels-last.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape, in the promoted dtype of ``x`` and ``beta``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.mean_only_batch_norm(x)
    >>> print(y[:, 0])
    [[-0.33333333  0.66666667  2.66666667]
     [-1.33333333 -2.33333333  0.66666667]]

    References
    ----------
    - Salimans, T. and Kingma, D. P. (2016). Weight normalization: a simple
      reparameterization to accelerate training of deep neural networks. NeurIPS.
      https://arxiv.org/abs/1602.07868
    """
    return normalize(_mean_only_layer(x, axis), x, None, beta, precision)


def mean_only_batch_norm_vjp(
    dy: Array,
    x: Array,
    beta: Array | None = None,
    *,
    axis: int = 1,
    precision: Precision = "highest",
) -> MeanOnlyGrads:
    r"""VJP of :func:`mean_only_batch_norm`: :math:`\bar x = \bar y - \operatorname{mean}_c(\bar y)`,
    :math:`\bar\beta = \sum \bar y` per channel.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.mean_only_batch_norm(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.mean_only_batch_norm_vjp(dy, x)
    >>> print(g._fields)
    ('x', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.7273 -0.5455 -0.3636]
      [-0.7273 -0.5455 -0.3636]]
    <BLANKLINE>
     [[ 0.3636  0.5455  0.7273]
      [ 0.3636  0.5455  0.7273]]]

    References
    ----------
    - Salimans, T. and Kingma, D. P. (2016). Weight normalization: a simple
      reparameterization to accelerate training of deep neural networks. NeurIPS.
      https://arxiv.org/abs/1602.07868
    """
    grads = normalize_vjp(_mean_only_layer(x, axis), dy, x, None, beta, precision)
    return MeanOnlyGrads(grads.x, grads.beta)


def rms_norm(
    x: Array,
    gamma: Array | None = None,
    *,
    axes: Any = (-1,),
    eps: float = 1e-6,
    eps_mode: str = "add",
    precision: Precision = "highest",
) -> Array:
    r"""RMS normalization (Zhang & Sennrich, 2019): scale by the root mean square, no centring.

    :math:`y = \gamma x / \sqrt{\frac1n \sum x^2 + \epsilon}` over ``axes``;
    ``gamma`` has the normalized axes' shape; there is no ``beta``. Torch's
    ``eps=None`` means the machine epsilon of the compute dtype: pass it
    explicitly (``1.1920929e-07`` for float32). Other parameters as
    :func:`layer_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.rms_norm(x)
    >>> print(np.round(y[0], 4))
    [[0.378  0.7559 1.5119]
     [0.8911 1.4852 0.    ]]

    References
    ----------
    - Zhang, B. and Sennrich, R. (2019). Root mean square layer normalization. NeurIPS.
      https://arxiv.org/abs/1910.07467
    """
    return normalize(
        _axes_layer("rms_norm", x, RMS_SCALE, rms_params(eps, eps_mode), axes),
        x,
        gamma,
        None,
        precision,
    )


def rms_norm_vjp(
    dy: Array,
    x: Array,
    gamma: Array | None = None,
    *,
    axes: Any = (-1,),
    eps: float = 1e-6,
    eps_mode: str = "add",
    precision: Precision = "highest",
) -> ScaleNormGrads:
    """VJP of :func:`rms_norm`: gradients for ``x`` and ``gamma``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> y = normref.rms_norm(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.rms_norm_vjp(dy, x)
    >>> print(g._fields)
    ('x', 'gamma')
    >>> print(np.round(g[0], 4))
    [[[-0.2847 -0.1227  0.1325]
      [-0.0635  0.0381 -0.027 ]]
    <BLANKLINE>
     [[ 0.0704  0.3098  0.1549]
      [ 0.0629  0.031  -0.0357]]]

    References
    ----------
    - Zhang, B. and Sennrich, R. (2019). Root mean square layer normalization. NeurIPS.
      https://arxiv.org/abs/1910.07467
    """
    grads = normalize_vjp(
        _axes_layer("rms_norm", x, RMS_SCALE, rms_params(eps, eps_mode), axes),
        dy,
        x,
        gamma,
        None,
        precision,
    )
    return ScaleNormGrads(grads.x, grads.gamma)


def _inference_parts(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None,
    beta: Array | None,
    eps: float,
    eps_mode: str,
    axis: int,
    precision: Precision,
    **more: Array,
) -> tuple[Any, Any, tuple[int, ...], Array, Array]:
    xp = namespace_of(
        **more,
        x=x,
        running_mean=running_mean,
        running_var=running_var,
        gamma=gamma,
        beta=beta,
        optional=("gamma", "beta"),
    )
    channel = (normalize_axis(axis, x.ndim),)
    for name, value in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("gamma", gamma),
        ("beta", beta),
    ):
        check_param(value, x.shape, channel, name=name)
    dtype = compute_dtype(xp, x.dtype, precision)
    s = divisor(
        xp, to_dtype(xp, running_var, dtype), eps=check_eps(eps), eps_mode=check_eps_mode(eps_mode)
    )
    s = broadcast_param(xp, s, x.ndim, channel)
    mean = broadcast_param(xp, to_dtype(xp, running_mean, dtype), x.ndim, channel)
    x_hat = (to_dtype(xp, x, dtype) - mean) / s
    return xp, dtype, channel, x_hat, s


def batch_norm_inference(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    precision: Precision = "highest",
) -> Array:
    r"""Batch normalization with given (running) statistics, as in evaluation mode.

    :math:`y = \gamma (x - \hat\mu_c)/\sqrt{\hat\sigma_c^2 + \epsilon} + \beta`
    with ``running_mean`` :math:`\hat\mu` and ``running_var`` :math:`\hat\sigma^2`
    of shape ``(C,)``; the divisor is ``eps_mode``'s :math:`s(\hat\sigma^2)` (the
    formula shows ``"add"``). The running variance's sign is not checked: a
    negative one gives what the formula gives, NaN where the square root's
    argument is negative (``"add"``: :math:`\hat\sigma^2 + \epsilon < 0`;
    ``"add_std"``: :math:`\hat\sigma^2 < 0`) and :math:`\sqrt\epsilon` under
    ``"max"``. Other parameters as :func:`batch_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.array([2.0, 3.0]), np.array([4.0, 1.0])
    >>> y = normref.batch_norm_inference(x, mean, var)
    >>> print(np.round(y[0], 4))
    [[-0.5  0.   1. ]
     [ 0.   2.  -3. ]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    xp, dtype, channel, x_hat, _ = _inference_parts(
        x, running_mean, running_var, gamma, beta, eps, eps_mode, axis, precision
    )
    y = affine(xp, x_hat, to_dtype(xp, gamma, dtype), to_dtype(xp, beta, dtype), channel)
    return to_dtype(xp, y, output_dtype(xp, precision, x, gamma, beta))


def batch_norm_inference_vjp(
    dy: Array,
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    precision: Precision = "highest",
) -> NormGrads:
    r"""VJP of :func:`batch_norm_inference`; the running statistics are constants.

    :math:`\bar x = \gamma \bar y / s`, :math:`\bar\gamma = \sum \bar y \hat x`,
    :math:`\bar\beta = \sum \bar y`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.array([2.0, 3.0]), np.array([4.0, 1.0])
    >>> y = normref.batch_norm_inference(x, mean, var)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.batch_norm_inference_vjp(dy, x, mean, var)
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.5    -0.4091 -0.3182]
      [-0.4545 -0.2727 -0.0909]]
    <BLANKLINE>
     [[ 0.0455  0.1364  0.2273]
      [ 0.6364  0.8182  1.    ]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    xp, dtype, channel, x_hat, s = _inference_parts(
        x, running_mean, running_var, gamma, beta, eps, eps_mode, axis, precision, dy=dy
    )
    return affine_backward(
        xp, dtype, dy, x, gamma, beta, channel, lambda d_x_hat: (d_x_hat / s, x_hat)
    )


def check_running_stats(x: Array, running_mean: Array, running_var: Array, axis: int) -> None:
    """The running statistics must be arrays of one value per channel, of ``x``'s library."""
    namespace_of(x=x, running_mean=running_mean, running_var=running_var)
    channel = (normalize_axis(axis, x.ndim),)
    check_param(running_mean, x.shape, channel, name="running_mean")
    check_param(running_var, x.shape, channel, name="running_var")


def check_training_step(
    x: Array,
    running_mean: Array,
    running_var: Array,
    *,
    axis: int,
    momentum: float | None,
    convention: Convention | str,
    num_batches_tracked: int | None,
) -> None:
    """What a training step's running update refuses, checked where only the VJP of its output
    is taken: the running statistics, the momentum, and the values per channel the
    convention's running variance needs (:func:`normref.stats.check_running_count`)."""
    check_running_stats(x, running_mean, running_var, axis)
    batch_weight(momentum, convention, num_batches_tracked)
    channel = normalize_axis(axis, x.ndim)
    check_running_count(convention, group_count(x, tuple(a for a in range(x.ndim) if a != channel)))


def batch_norm_train(
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    momentum: float | None,
    convention: Convention | str,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    num_batches_tracked: int | None = None,
    precision: Precision = "highest",
) -> tuple[Array, RunningStats]:
    """One training step of a batch-norm layer, as frameworks do it, as a pure function.

    Returns the normalized output (as :func:`batch_norm`, with batch
    statistics) and the updated running statistics (as
    :func:`normref.stats.running_update` with this batch's mean and biased
    variance, under ``convention``'s momentum meaning and running-variance
    correction). ``eps``, ``eps_mode`` and ``correction`` are the
    normalization's; nothing is modified in place.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.zeros(2), np.ones(2)
    >>> y = normref.batch_norm_train(x, mean, var, momentum=0.1, convention='torch')
    >>> print(np.round(y[1].mean, 4), np.round(y[1].var, 4))  # the running statistics
    [0.1333 0.35  ] [1.2067 1.49  ]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    check_running_stats(x, running_mean, running_var, axis)
    y = batch_norm(
        x,
        gamma,
        beta,
        eps=eps,
        axis=axis,
        eps_mode=eps_mode,
        correction=correction,
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


def batch_running_update(
    x: Array,
    running_mean: Array,
    running_var: Array,
    *,
    axis: int,
    momentum: float | None,
    convention: Convention | str,
    num_batches_tracked: int | None,
    precision: Precision,
) -> RunningStats:
    """The running statistics after a training step on ``x``: :func:`normref.stats.running_update`
    with the batch's per-channel mean and biased variance (two-pass, in the compute dtype)."""
    channel = normalize_axis(axis, x.ndim)
    reduced = tuple(a for a in range(x.ndim) if a != channel)
    mean, var = mean_and_variance(x, reduced, precision=precision)
    return running_update(
        running_mean,
        running_var,
        mean,
        var,
        group_count(x, reduced),
        momentum=momentum,
        convention=convention,
        num_batches_tracked=num_batches_tracked,
        precision=precision,
    )


def batch_norm_train_vjp(
    dy: Array,
    x: Array,
    running_mean: Array,
    running_var: Array,
    gamma: Array | None = None,
    beta: Array | None = None,
    *,
    momentum: float | None,
    convention: Convention | str,
    eps: float = 1e-5,
    axis: int = 1,
    eps_mode: str = "add",
    correction: int = 0,
    num_batches_tracked: int | None = None,
    precision: Precision = "highest",
) -> NormGrads:
    """VJP of :func:`batch_norm_train`'s output: that of :func:`batch_norm`.

    The running statistics are state, not differentiated: their update depends
    on ``x`` but is not part of the output a loss is taken of. The arguments
    are checked as the forward checks them.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]], [[0.0, -1.0, 2.0], [2.0, 4.0, 7.0]]])  # (N, C, L)
    >>> mean, var = np.zeros(2), np.ones(2)
    >>> y = normref.batch_norm_train(x, mean, var, momentum=0.1, convention='torch')
    >>> dy = np.linspace(-1.0, 1.0, y[0].size).reshape(y[0].shape)
    >>> g = normref.batch_norm_train_vjp(dy, x, mean, var, momentum=0.1, convention='torch')
    >>> print(g._fields)
    ('x', 'gamma', 'beta')
    >>> print(np.round(g[0], 4))
    [[[-0.4871 -0.2769  0.0297]
      [-0.3044 -0.3169  0.0014]]
    <BLANKLINE>
     [[ 0.0989  0.1162  0.5192]
      [ 0.2349  0.2224  0.1626]]]

    References
    ----------
    - Ioffe, S. and Szegedy, C. (2015). Batch normalization: accelerating deep network
      training by reducing internal covariate shift. ICML. https://arxiv.org/abs/1502.03167
    """
    namespace_of(dy=dy)
    check_training_step(
        x,
        running_mean,
        running_var,
        axis=axis,
        momentum=momentum,
        convention=convention,
        num_batches_tracked=num_batches_tracked,
    )
    return batch_norm_vjp(
        dy,
        x,
        gamma,
        beta,
        eps=eps,
        axis=axis,
        eps_mode=eps_mode,
        correction=correction,
        precision=precision,
    )
