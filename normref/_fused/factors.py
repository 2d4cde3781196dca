"""The per-group factors the fused kernels apply, from their per-group sums.

Both fused paths (the numba kernels on NumPy, :mod:`normref._fused.cuda` on
CuPy) take each group's sums of its values times a power of two ``scale`` and
form these factors from them with the generic path's own scalar formulas
(:mod:`normref.ops.standardization`), on arrays of one value per group.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from normref._lib.namespace import Array, Namespace
from normref.ops.base import GroupOp
from normref.ops.standardization import (
    divisor,
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


def variance(layer: Layer, m2: Array, n: int) -> tuple[Array, int]:
    """The variance (or mean square) from the sum of squares, and the count it divides by."""
    count = n - layer.params.get("correction", 0)
    return m2 / count, count


def forward_factor(layer: Layer, xp: Namespace, scale: Array, m2: Array, n: int) -> Array:
    """``1 / s`` of each group's scaled values, from their sum of squares ``m2`` over ``n``.

    The divisor of the scaled values alone: a constant group's centred values are 0, and
    any divisor but 0 gives it beta (:func:`scaled_divisors`' care of ``s(0)`` is for the
    backward).
    """
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
