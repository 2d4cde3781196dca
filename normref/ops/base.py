"""What an operation on groups is, and how it runs on the canonical ``(G, M, D)`` layout.

An operation acts on an array whose statistics are reductions over some of its
axes (the *sample axes*); every other axis indexes an independent group. Layers
apply it to a partition's split view of ``x`` (no transpose needed), and the
public functions of :mod:`normref.ops` apply it to the canonical ``(G, M, D)``
array. Both go through this module, so an operation is written once.

An operation that treats the ``D`` features of a group *jointly* (whitening:
its statistics are a ``D x D`` covariance) sets ``joint_features``; it reads
the canonical ``(G, M, D)`` rows of its input a block of samples at a time
(:mod:`normref.ops.sample_blocks`), in layers too, with the layer's per-feature
affine applied to each block, and writes its result the same way: no whole
canonical copy of the input is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from array_api_compat import device

from normref._lib.checks import check_shape
from normref._lib.namespace import (
    Array,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
    variance_algorithm,
)
from normref.ops.sample_blocks import sample_blocks
from normref.partition import FEATURE, GROUP, SAMPLE, Partition
from normref.types import Precision

CANONICAL_SAMPLE_AXES = (1,)

CANONICAL_AXES = (0, 1, 2)
"""Every axis of a canonical ``(G, M, D)`` array (or block of its rows), along which a
parameter laid out for it (``(G or 1, 1, D or 1)``) lies."""


class XGrad(NamedTuple):
    """Gradient of an operation with one differentiable argument, ``x``."""

    x: Array


@dataclass(frozen=True)
class GroupOp:
    r"""A normalization operation (NOP) on groups.

    Attributes
    ----------
    name
        The operation's name.
    forward
        ``forward(xp, x, axes, **params) -> y``: the operation on ``x`` with
        statistics reduced over ``axes``; ``y`` is a new array, which its caller
        may overwrite. For joint-feature operations:
        ``forward(xp, x, gamma, beta, *, dtype, out_dtype, **params) -> y``, with
        ``x`` the :class:`~normref.ops.sample_blocks.SampleBlocks` of the input and
        ``gamma``, ``beta`` a per-feature affine of shape ``(G, 1, D)`` (``None``
        for none), computed in ``dtype``; ``y`` is new, of the input's shape, in
        ``out_dtype``.
    vjp
        ``vjp(xp, dy, x, axes, **params) -> (dx, y)``: the vector-Jacobian product
        and the forward output (which the affine gradient needs). For
        joint-feature operations: ``vjp(xp, dy, x, gamma, *, dtype, out_dtype,
        **params)``, the VJP of ``gamma * forward(x) + beta`` with ``dy`` and ``x``
        as :class:`~normref.ops.sample_blocks.SampleBlocks`: its ``dx`` (new, of the
        input's shape, in ``out_dtype``), and the sums over samples ``dy_dot_y``,
        :math:`\sum_i \bar y_i y_i`, and ``dy_sum``, :math:`\sum_i \bar y_i`, of
        shape ``(G, 1, D)``, that the affine's gradients are, as attributes of what
        it returns.
    needs_variance
        Whether the operation takes a (centred) variance, so that a ``correction``
        needs more samples than it (``sample_rule``).
    joint_features
        Whether the operation acts on the ``D`` features of each group jointly
        (the signatures above).
    """

    name: str
    forward: Callable[..., Array]
    vjp: Callable[..., Any]
    needs_variance: bool
    joint_features: bool = False


def sample_rule(op: GroupOp, params: dict[str, Any]) -> tuple[int, str]:
    """The fewest samples a group of ``op`` with ``params`` needs, and why.

    One: a mean, a mean square or a biased variance (0 for a lone sample) exists for
    any group with samples; a variance with ``correction`` c needs more than c.
    """
    correction = params.get("correction", 0)
    if not op.needs_variance or correction == 0:
        return 1, ""
    return correction + 1, (
        f"{op.name} with correction={correction} (the unbiased variance) needs at least "
        f"{correction + 1} samples per group"
    )


def check_group_size(
    partition: Partition, *, op: GroupOp, params: dict[str, Any], where: str, name: str = "x"
) -> None:
    """The groups of ``partition`` of the input ``name`` must hold the samples ``op`` needs
    (:func:`sample_rule`)."""
    minimum, why = sample_rule(op, params)
    partition.check_samples(minimum=minimum, what=why, where=where, name=name)


def canonical_partition(shape: tuple[int, ...]) -> Partition:
    """The partition of a canonical ``(G, M, D)`` array: axis 1 holds the samples."""
    return Partition(tuple(shape), tuple(shape), (GROUP, SAMPLE, FEATURE))


def empty_like(xp: Any, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
    """The result of an operation on an input without groups (a size 0 that is not reduced):
    an array of ``shape`` with no elements, in ``dtype`` on ``like``'s device."""
    return xp.zeros(shape, dtype=dtype, device=device(like))


def _canonical_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) != 3:
        msg = f"{name} must have the canonical shape (G, M, D) (rank 3), got shape {tuple(shape)}"
        raise ValueError(msg)


def run_canonical(op: GroupOp, x: Array, precision: Precision, params: dict[str, Any]) -> Array:
    """Apply ``op`` to a canonical ``(G, M, D)`` array ``x``."""
    xp = namespace_of(x=x)
    _canonical_shape(x.shape, "x")
    partition = canonical_partition(tuple(x.shape))
    check_group_size(partition, op=op, params=params, where=f"x of shape {tuple(x.shape)}")
    dtype = compute_dtype(xp, x.dtype, precision)
    out = output_dtype(xp, precision, x)
    if x.size == 0:
        return empty_like(xp, tuple(x.shape), out, x)
    kwargs = {**params, **_algorithm(op, precision)}
    if op.joint_features:
        blocks = sample_blocks(xp, partition, x)
        return op.forward(xp, blocks, None, None, dtype=dtype, out_dtype=out, **kwargs)
    y = op.forward(xp, to_dtype(xp, x, dtype), CANONICAL_SAMPLE_AXES, **kwargs)
    return to_dtype(xp, y, out)


def run_canonical_vjp(
    op: GroupOp, dy: Array, x: Array, precision: Precision, params: dict[str, Any]
) -> XGrad:
    """The VJP of ``op`` on a canonical ``(G, M, D)`` array ``x`` with cotangent ``dy``."""
    xp = namespace_of(dy=dy, x=x)
    _canonical_shape(x.shape, "x")
    check_shape(dy.shape, x.shape, name="dy", what="the shape of x")
    partition = canonical_partition(tuple(x.shape))
    check_group_size(partition, op=op, params=params, where=f"x of shape {tuple(x.shape)}")
    dtype = compute_dtype(xp, x.dtype, precision)
    if x.size == 0:
        return XGrad(x=empty_like(xp, tuple(x.shape), x.dtype, x))
    kwargs = {**params, **_algorithm(op, precision)}
    if op.joint_features:
        grads = op.vjp(
            xp,
            sample_blocks(xp, partition, dy),
            sample_blocks(xp, partition, x),
            None,
            dtype=dtype,
            out_dtype=x.dtype,
            **kwargs,
        )
        return XGrad(x=grads.dx)
    dx, _ = op.vjp(
        xp,
        to_dtype(xp, dy, dtype),
        to_dtype(xp, x, dtype),
        CANONICAL_SAMPLE_AXES,
        **kwargs,
    )
    return XGrad(x=to_dtype(xp, dx, x.dtype))


def _algorithm(op: GroupOp, precision: Precision) -> dict[str, str]:
    """The ``algorithm`` keyword for operations that take a centred variance."""
    return {"algorithm": variance_algorithm(precision)} if op.needs_variance else {}
