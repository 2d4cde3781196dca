"""The per-group factors the fused kernels apply, from their per-group sums, and the
operations the fused paths run.

The fused paths take each group's sums of its values times a power of two
``scale`` and form these factors from them with the generic path's own scalar
formulas (:mod:`normref.ops.standardization`): :mod:`normref._fused.cuda` on
CuPy arrays of one value per group, here; the numba kernels one group at a time
(:func:`normref._fused.kernels.forward_factor` and
:func:`~normref._fused.kernels.vjp_factors`, which compute the same formulas in
the same order, bit for bit, as a test checks against these), so that each group's
output is written while its values are in cache.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from normref._lib.namespace import Array, Namespace
from normref.ops.base import GroupOp
from normref.ops.standardization import (
    CENTER,
    RMS_SCALE,
    STANDARDIZE,
    divisor,
    eps_magnitude,
    nonzero_divisor,
    scaled_divisors,
    scaled_eps,
    variance_term,
)
from normref.partition import Partition


class Layer(Protocol):
    """What this path reads of a layer (:class:`normref.layers.compose.Layer`)."""

    @property
    def partition(self) -> Partition:
        """Which elements share statistics."""

    @property
    def op(self) -> GroupOp:
        """The operation on each group."""

    @property
    def params(self) -> dict[str, Any]:
        """The operation's parameters (``eps``, ``eps_mode``, ``correction``)."""

    @property
    def param_axes(self) -> tuple[int, ...]:
        """The axes of ``x`` the affine parameters span."""

    @property
    def affine_scale(self) -> float:
        """A constant factor of ``gamma``."""


class FusedOp(NamedTuple):
    """What the fused paths do to each group: subtract its mean (``centred``), and divide by
    its divisor :math:`s` (``divides``: standardize and rms_scale; the centring alone does not)."""

    centred: bool
    divides: bool


FUSED_OPS = {
    STANDARDIZE.name: FusedOp(centred=True, divides=True),
    RMS_SCALE.name: FusedOp(centred=False, divides=True),
    CENTER.name: FusedOp(centred=True, divides=False),
}
"""The operations the fused paths run, by name."""


def scaling_floor(layer: Layer) -> float:
    """The magnitude under which a group's power of two does not go: that at which ``eps``
    matters (:func:`~normref.ops.standardization.eps_magnitude`), 0 for an operation without
    one (the centring)."""
    if "eps" not in layer.params:
        return 0.0
    return eps_magnitude(layer.params["eps"], layer.params["eps_mode"])


def variance(layer: Layer, m2: Array, n: int) -> tuple[Array, int]:
    """The variance (or mean square) from the sum of squares, and the count it divides by."""
    count = n - layer.params.get("correction", 0)
    return m2 / count, count


def forward_factor(layer: Layer, xp: Namespace, scale: Array, m2: Array, n: int) -> Array:
    """``1 / s`` of each group's scaled values, from their sum of squares ``m2`` over ``n``.

    The divisor of the scaled values alone: a constant group's centred values are 0, and
    any divisor but 0 gives it beta (:func:`scaled_divisors`' care of ``s(0)`` is for the
    backward). For the centring, which divides by nothing, ``1 / scale``: the centred scaled
    values back at the values' own size (exactly: ``scale`` is a power of two).
    """
    if not FUSED_OPS[layer.op.name].divides:
        return 1.0 / scale
    v, _ = variance(layer, m2, n)
    eps, eps_mode = layer.params["eps"], layer.params["eps_mode"]
    s = divisor(xp, v, eps=scaled_eps(eps, eps_mode, scale), eps_mode=eps_mode)
    return 1.0 / nonzero_divisor(xp, s)


class VjpFactors(NamedTuple):
    """Per group: ``1/s`` of the scaled values, ``inverse`` (``1/s`` of the unscaled ones),
    ``coef`` (the variance term over ``s``) and the mean of ``dyh`` (0 unless centred)."""

    inv_s: Array
    inverse: Array
    coef: Array
    dyh_mean: Array


def vjp_factors(
    layer: Layer,
    xp: Namespace,
    scale: Array,
    m2: Array,
    dyh: Array,
    dyh_centred: Array,
    n: int,
    *,
    centred: bool,
) -> VjpFactors:
    """The factors of ``dx = ((dyh - dyh_mean) + d * coef) * inverse``, ``d`` the scaled
    centred values, from each group's sums: ``m2`` of ``d**2``, ``dyh`` and ``dyh_centred``
    of ``dyh`` and ``dyh * d`` (``dyh = dy * gamma``)."""
    eps, eps_mode = layer.params["eps"], layer.params["eps_mode"]
    v, count = variance(layer, m2, n)
    s, inverse = scaled_divisors(xp, v, scale, eps=eps, eps_mode=eps_mode)
    inv_s = 1.0 / nonzero_divisor(xp, s)
    k = variance_term(
        xp,
        v,
        s,
        dyh_centred * inv_s,
        count=count,
        eps=scaled_eps(eps, eps_mode, scale),
        eps_mode=eps_mode,
    )
    dyh_mean = dyh / n if centred else xp.zeros_like(dyh)
    return VjpFactors(inv_s, inverse, k * inv_s, dyh_mean)  # dx = (P(dyh) + y K) / s, y = d/s
