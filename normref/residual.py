r"""Residual blocks without normalization: SkipInit, NF-ResNet bookkeeping, signal propagation.

A residual network without normalization keeps its activations at a
predictable scale by construction (De & Smith, 2020; Brock et al., 2021):

SkipInit
    :math:`y = x + \alpha f(x)` with a learned :math:`\alpha` (initialized to
    0, so that every block starts as the identity).

Normalizer-free residual blocks
    :math:`x_{l+1} = x_l + \alpha f_l(x_l / \beta_l)`, where :math:`f_l`
    preserves the variance of a unit-variance input (Scaled WS weights and a
    nonlinearity scaled by its gamma) and :math:`\beta_l` is the expected
    standard deviation of :math:`x_l`. Then
    :math:`\operatorname{Var}(x_{l+1}) = \operatorname{Var}(x_l) + \alpha^2`:
    the variance grows linearly with depth. A transition block (the first of
    each stage, whose shortcut is a convolution of :math:`x_l/\beta_l`) has
    output variance :math:`1 + \alpha^2`, so the expected variance resets.
    Without the division by :math:`\beta_l` and with a variance-preserving
    branch, each block doubles the variance: :math:`2^l` after :math:`l` blocks.

Fixup (Zhang et al., 2019)
    No normalization and no learned scale at initialization: the last layer
    of each residual branch starts at 0 and the others are scaled by
    :math:`L^{-1/(2m-2)}` (:func:`fixup_scale`), with scalar biases and a
    scalar multiplier per branch (``docs/weights.md``, beside SkipInit).

Signal propagation
    Per layer, the average over channels of the squared channel mean, the
    average channel variance, and the average channel variance of the
    residual branch's output: the three curves of a signal propagation plot
    (the NFNets code's ``signal_metrics`` and ``res_avg_var``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from normref._lib.checks import (
    check_eps,
    check_finite_number,
    check_int,
    check_rank,
    check_shape,
    normalize_axis,
)
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    result_dtype,
    to_dtype,
)
from normref.stats import moments
from normref.types import Precision


class SkipInitGrads(NamedTuple):
    """Gradients of :func:`skip_init_residual` for ``x``, ``branch_out`` and ``alpha``."""

    x: Array
    branch_out: Array
    alpha: Array


class SignalPropagation(NamedTuple):
    """Signal propagation statistics, one entry per layer (arrays of shape ``(L,)``).

    ``squared_mean``: the average over channels of the squared channel mean;
    ``variance``: the average over channels of the (biased) channel variance;
    ``branch_variance``: the average channel variance of each residual
    branch's output, ``None`` where no branch outputs were given.
    """

    squared_mean: Array
    variance: Array
    branch_variance: Array | None


def _check_alpha_shape(alpha_shape: tuple[int, ...], x_shape: tuple[int, ...]) -> None:
    lead = len(x_shape) - len(alpha_shape)
    fits = lead >= 0 and all(a in (1, x_shape[lead + i]) for i, a in enumerate(alpha_shape))
    if not fits:
        msg = (
            f"alpha must be a scalar (shape ()) or broadcast to x's shape {tuple(x_shape)} "
            f"without changing it, got shape {tuple(alpha_shape)}"
        )
        raise ValueError(msg)


def _sum_to_shape(xp: Any, t: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``t`` over the axes along which an array of ``shape`` was broadcast to ``t``'s shape."""
    lead = t.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and t.shape[lead + i] != 1
    )
    total = xp.sum(t, axis=axes, keepdims=True) if axes else t
    return xp.reshape(total, shape)


def _skip_init_parts(
    x: Array, branch_out: Array, alpha: Array, precision: Precision, dy: Array | None = None
) -> tuple[Any, Any]:
    xp = namespace_of(x=x, branch_out=branch_out, alpha=alpha, dy=dy, optional=("dy",))
    check_shape(branch_out.shape, x.shape, name="branch_out", what="the shape of x")
    _check_alpha_shape(tuple(alpha.shape), tuple(x.shape))
    return xp, compute_dtype(xp, result_dtype(xp, x, branch_out, alpha), precision)


def skip_init_residual(
    x: Array, branch_out: Array, alpha: Array, *, precision: Precision = "highest"
) -> Array:
    r"""The SkipInit residual sum :math:`y = x + \alpha \, f(x)` (De & Smith, 2020).

    Parameters
    ----------
    x
        The block's input (the shortcut).
    branch_out
        The residual branch's output :math:`f(x)`, of ``x``'s shape.
    alpha
        The learned gain: a 0-d array (SkipInit, initialized to 0), or any
        shape that broadcasts to ``x``'s without changing it (per channel, as
        LayerScale).
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape, in the promoted dtype of the three inputs.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x, branch = np.array([1.0, 2.0]), np.array([10.0, 20.0])
    >>> y = normref.skip_init_residual(x, branch, np.array(0.5))
    >>> print(y)
    [ 6. 12.]

    References
    ----------
    - De, S. and Smith, S. L. (2020). Batch normalization biases residual blocks towards the
      identity function in deep networks. NeurIPS. https://arxiv.org/abs/2002.10444
    """
    xp, dtype = _skip_init_parts(x, branch_out, alpha, precision)
    y = to_dtype(xp, x, dtype) + to_dtype(xp, alpha, dtype) * to_dtype(xp, branch_out, dtype)
    return to_dtype(xp, y, output_dtype(xp, precision, x, branch_out, alpha))


def skip_init_residual_vjp(
    dy: Array, x: Array, branch_out: Array, alpha: Array, *, precision: Precision = "highest"
) -> SkipInitGrads:
    r"""VJP of :func:`skip_init_residual`.

    :math:`\bar x = \bar y`, :math:`\bar f = \alpha \bar y`, and
    :math:`\bar\alpha = \sum \bar y \, f` over the axes ``alpha`` is broadcast
    along (all of them for a scalar ``alpha``).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x, branch = np.array([1.0, 2.0]), np.array([10.0, 20.0])
    >>> y = normref.skip_init_residual(x, branch, np.array(0.5))
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.skip_init_residual_vjp(dy, x, branch, np.array(0.5))
    >>> print(g._fields)
    ('x', 'branch_out', 'alpha')
    >>> print(np.round(g[0], 4))
    [-1.  1.]

    References
    ----------
    - De, S. and Smith, S. L. (2020). Batch normalization biases residual blocks towards the
      identity function in deep networks. NeurIPS. https://arxiv.org/abs/2002.10444
    """
    xp, dtype = _skip_init_parts(x, branch_out, alpha, precision, dy=dy)
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    d_y = to_dtype(xp, dy, dtype)
    d_alpha = _sum_to_shape(xp, d_y * to_dtype(xp, branch_out, dtype), tuple(alpha.shape))
    return SkipInitGrads(
        x=xp.astype(d_y, x.dtype, copy=True),  # a new array: never the caller's dy
        branch_out=to_dtype(xp, to_dtype(xp, alpha, dtype) * d_y, branch_out.dtype),
        alpha=to_dtype(xp, d_alpha, alpha.dtype),
    )


def _branch_result(result: Any, x: Array, *, name: str) -> Array:
    namespace_of(x=x, **{name: result})
    check_shape(result.shape, x.shape, name=name, what="the shape of x")
    return result


def nf_residual(
    x: Array,
    branch_fn: Callable[[Array], Array],
    *,
    alpha: float,
    beta: float,
    shortcut_fn: Callable[[Array], Array] | None = None,
    precision: Precision = "highest",
) -> Array:
    r"""A normalizer-free residual block: :math:`y = x + \alpha \, f(x / \beta)`.

    ``beta`` is :math:`\beta_l`, the expected standard deviation of ``x``
    (from :func:`nf_expected_stds`); the NFNets code stores its inverse and
    multiplies. For a transition block, ``shortcut_fn`` replaces the identity
    shortcut: :math:`y = s(x/\beta) + \alpha f(x/\beta)`.

    Parameters
    ----------
    x
        The block's input.
    branch_fn
        The residual branch :math:`f`: takes an array of ``x``'s shape (in the
        compute dtype, float64 under ``precision="highest"``) and returns one
        of the same shape and library.
    alpha
        The residual branch's scale :math:`\alpha` (NFNets: 0.2), a finite number.
    beta
        :math:`\beta`, finite, > 0.
    shortcut_fn
        Optional shortcut :math:`s` of a transition block (a strided or
        channel-changing convolution), applied to :math:`x/\beta`.
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    Array of ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([1.0, -2.0, 3.0])
    >>> y = normref.nf_residual(x, lambda h: 2.0 * h, alpha=0.2, beta=2.0)
    >>> print(np.round(y, 4))  # x + alpha * branch(x / beta)
    [ 1.2 -2.4  3.6]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    xp = namespace_of(x=x)
    alpha = check_finite_number(alpha, name="alpha")
    beta = check_eps(beta, name="beta")
    for name, fn in (("branch_fn", branch_fn), ("shortcut_fn", shortcut_fn)):
        if fn is not None and not callable(fn):
            msg = f"{name} must be callable, got {type(fn).__name__}"
            raise TypeError(msg)
    dtype = compute_dtype(xp, x.dtype, precision)
    x_c = to_dtype(xp, x, dtype)
    scaled = x_c / beta
    branch = _branch_result(branch_fn(scaled), x, name="branch_fn(x / beta)")
    shortcut = x_c
    if shortcut_fn is not None:
        shortcut = _branch_result(shortcut_fn(scaled), x, name="shortcut_fn(x / beta)")
    y = to_dtype(xp, shortcut, dtype) + alpha * to_dtype(xp, branch, dtype)
    return to_dtype(xp, y, output_dtype(xp, precision, x))


def nf_expected_stds(num_blocks_per_stage: Sequence[int], alpha: float) -> tuple[float, ...]:
    r"""The expected standard deviation :math:`\beta_l` of each block's input in an NF-ResNet.

    Starting from a unit-variance input, in block order: the first block of
    each stage is a transition block, after which the variance is
    :math:`1 + \alpha^2`; every other block adds :math:`\alpha^2`:

    .. math::

        \beta_0 = 1, \qquad
        \beta_{l+1}^2 = \begin{cases} 1 + \alpha^2 & \text{block } l \text{ is a transition,} \\
        \beta_l^2 + \alpha^2 & \text{otherwise.} \end{cases}

    The NFNets reference code (``nf_resnet.py``, ``nfnet.py``) keeps the same
    running value and passes its inverse, ``beta = 1 / expected_std``, to each
    block.

    Parameters
    ----------
    num_blocks_per_stage
        Number of blocks of each stage, each >= 1 (ResNet-50: ``(3, 4, 6, 3)``).
    alpha
        The residual branches' scale, finite, >= 0.

    Returns
    -------
    One float per block, in order.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> y = normref.nf_expected_stds([2, 1], alpha=0.2)
    >>> print(np.round(y, 4))
    [1.     1.0198 1.0392]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    alpha = check_eps(alpha, name="alpha", allow_zero=True)
    if isinstance(num_blocks_per_stage, (str, bytes)) or not isinstance(
        num_blocks_per_stage, Sequence
    ):
        msg = f"num_blocks_per_stage must be a sequence of integers, got {num_blocks_per_stage!r}"
        raise TypeError(msg)
    stds: list[float] = []
    variance = 1.0
    for stage, blocks in enumerate(num_blocks_per_stage):
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            msg = f"num_blocks_per_stage[{stage}] must be an integer >= 1, got {blocks!r}"
            raise ValueError(msg)
        for block in range(blocks):
            stds.append(math.sqrt(variance))
            variance = (1.0 if block == 0 else variance) + alpha * alpha
    return tuple(stds)


def fixup_scale(num_branches: int, branch_layers: int) -> float:
    r"""Fixup's initialization scale :math:`L^{-1/(2m - 2)}` (Zhang et al., 2019).

    A network of :math:`L` residual branches of :math:`m` layers each keeps the
    variance of its output bounded at initialization when each branch's
    layers but the last are initialized as usual (He et al.) and then scaled
    by this factor, and the last layer of each branch is initialized to 0.

    Parameters
    ----------
    num_branches
        :math:`L`, the number of residual branches, an integer >= 1.
    branch_layers
        :math:`m`, the layers of each branch, an integer >= 2 (a branch of one
        layer, initialized to 0, has no layer to scale).

    Returns
    -------
    The scale, a float in (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> y = normref.fixup_scale(num_branches=16, branch_layers=2)
    >>> print(round(y, 4))
    0.25

    References
    ----------
    - Zhang, H., Dauphin, Y. N. and Ma, T. (2019). Fixup initialization: residual learning
      without normalization. ICLR. https://arxiv.org/abs/1901.09321
    """
    branches = check_int(num_branches, name="num_branches", minimum=1)
    layers = check_int(branch_layers, name="branch_layers", minimum=2)
    return float(branches ** (-1.0 / (2 * layers - 2)))


def _channel_stats(
    xp: Any, a: Array, name: str, channel_axis: int, precision: Precision
) -> tuple[Array, Array]:
    """Average over channels of the squared channel mean, and of the biased channel variance."""
    check_rank(tuple(a.shape), minimum=2, layout="a channel axis and sample axes", name=name)
    channel = normalize_axis(channel_axis, a.ndim, name="channel_axis")
    m = moments(a, tuple(i for i in range(a.ndim) if i != channel), precision=precision)
    return xp.mean(m.mean * m.mean), xp.mean(m.m2 / m.count)


def signal_propagation(
    activations: Sequence[Array],
    branch_outputs: Sequence[Array] | None = None,
    *,
    channel_axis: int = 1,
    precision: Precision = "highest",
) -> SignalPropagation:
    r"""Signal propagation statistics of a network's activations, layer by layer.

    For each activation :math:`a` with channels on ``channel_axis`` and
    :math:`\mu_c`, :math:`\sigma_c^2` the mean and biased variance of channel
    :math:`c` over all other axes (batch and spatial):

    .. math::

        \text{squared mean} = \frac1C \sum_c \mu_c^2, \qquad
        \text{variance} = \frac1C \sum_c \sigma_c^2,

    and the latter of each residual branch output for ``branch_variance``.

    Parameters
    ----------
    activations
        One array per layer (shapes may differ), e.g. ``(N, C, H, W)``.
    branch_outputs
        Optional: the residual branch output of each layer, one per activation.
    channel_axis
        1 for ``NCHW`` (torch), -1 for ``NHWC`` (the NFNets code).
    precision
        ``"highest"`` (float64, rounded once), ``"native"`` or a convention.

    Returns
    -------
    SignalPropagation
        Arrays of shape ``(len(activations),)``, in the promoted dtype of the
        inputs.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> acts = [np.ones((4, 2, 3)), 2.0 * np.ones((4, 2, 3))]
    >>> y = normref.signal_propagation(acts)
    >>> print(y._fields, np.round(y[0], 4))
    ('squared_mean', 'variance', 'branch_variance') [1. 4.]

    References
    ----------
    - Brock, A., De, S. and Smith, S. L. (2021). Characterizing signal propagation to close
      the performance gap in unnormalized ResNets. ICLR. https://arxiv.org/abs/2101.08692
    """
    layers = list(activations)
    if not layers:
        msg = "activations must hold at least one array, got an empty sequence"
        raise ValueError(msg)
    branches = None if branch_outputs is None else list(branch_outputs)
    if branches is not None and len(branches) != len(layers):
        msg = (
            f"branch_outputs must have one array per activation ({len(layers)}), "
            f"got {len(branches)}"
        )
        raise ValueError(msg)
    named = {f"activations[{i}]": a for i, a in enumerate(layers)}
    named.update({f"branch_outputs[{i}]": b for i, b in enumerate(branches or [])})
    xp = namespace_of(**named)
    stats = {
        name: _channel_stats(xp, a, name, channel_axis, precision) for name, a in named.items()
    }
    out = result_dtype(xp, *named.values())

    def per_layer(prefix: str, which: int) -> Array:
        values = [stats[name][which] for name in named if name.startswith(prefix)]
        return to_dtype(xp, xp.stack(values), out)

    return SignalPropagation(
        squared_mean=per_layer("activations", 0),
        variance=per_layer("activations", 1),
        branch_variance=None if branches is None else per_layer("branch_outputs", 1),
    )
