"""Normalization operations (NOP) on the canonical ``(G, M, D)`` layout.

Each operation acts on ``G`` independent groups of ``M`` samples of ``D``
features and has a hand-derived vector-Jacobian product ``<name>_vjp``.
"""

from normref.ops._group_op import XGrad
from normref.ops.standardization import (
    center,
    center_vjp,
    rms_scale,
    rms_scale_vjp,
    scale,
    scale_vjp,
    standardize,
    standardize_vjp,
)

__all__ = [
    "XGrad",
    "center",
    "center_vjp",
    "rms_scale",
    "rms_scale_vjp",
    "scale",
    "scale_vjp",
    "standardize",
    "standardize_vjp",
]
