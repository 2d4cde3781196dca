"""Normalization operations (NOP) on the canonical ``(G, M, D)`` layout.

Each operation acts on ``G`` independent groups of ``M`` samples of ``D``
features and has a hand-derived vector-Jacobian product ``<name>_vjp``.
"""

from normref.ops.base import XGrad
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
from normref.ops.whitening import (
    cholesky_whiten,
    cholesky_whiten_vjp,
    decorrelate,
    decorrelate_vjp,
    iter_norm_whiten,
    iter_norm_whiten_vjp,
    pca_whiten,
    pca_whiten_vjp,
    whitening_matrix,
    zca_whiten,
    zca_whiten_vjp,
)

__all__ = [
    "XGrad",
    "center",
    "center_vjp",
    "cholesky_whiten",
    "cholesky_whiten_vjp",
    "decorrelate",
    "decorrelate_vjp",
    "iter_norm_whiten",
    "iter_norm_whiten_vjp",
    "pca_whiten",
    "pca_whiten_vjp",
    "rms_scale",
    "rms_scale_vjp",
    "scale",
    "scale_vjp",
    "standardize",
    "standardize_vjp",
    "whitening_matrix",
    "zca_whiten",
    "zca_whiten_vjp",
]
