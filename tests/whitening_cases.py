"""Data with a prescribed covariance spectrum, for the whitening tests.

``with_spectrum`` builds samples whose biased covariance is ``V diag(lam) V^T``
for a random orthogonal ``V``: ``X = sqrt(M) Q diag(sqrt(lam)) V^T + mean`` with
``Q`` orthonormal, centred columns (the QR factor of centred Gaussian data).
So the eigenvalues every test expects are known before any decomposition.
Orthogonal ``±1`` (Hadamard) columns give covariances that are *exactly*
diagonal in floating point, for exactly repeated eigenvalues.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

import normref
from tests.support import Backend, assert_within, fd_vjp

U64 = np.finfo(np.float64).eps

METHODS = ("zca", "pca", "cholesky", "iter_norm")
WHITENINGS = ("zca", "pca", "cholesky")
"""The methods whose output covariance is exactly the identity (up to eps); IterNorm approaches it."""


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def with_spectrum(
    rng: np.random.Generator, lam: np.ndarray, m: int, *, groups: int = 1, rotate: bool = True
) -> np.ndarray:
    """``(groups, m, D)`` samples whose biased covariance is ``V diag(lam) V^T`` (per group).

    ``lam`` has ``D`` entries, of which at most ``m - 1`` are nonzero (``m``
    centred samples span at most ``m - 1`` directions).
    """
    lam = np.asarray(lam, dtype=np.float64)
    d = lam.size
    rank = int(np.count_nonzero(lam))
    assert rank <= m - 1, f"{m} samples cannot carry {rank} nonzero eigenvalues"
    out = []
    for _ in range(groups):
        z = rng.standard_normal((m, rank))
        q = np.linalg.qr(z - z.mean(axis=0))[0]
        order = np.argsort(-lam, kind="stable")
        v = random_orthogonal(rng, d) if rotate else np.eye(d)
        # columns of v for the nonzero eigenvalues, in lam's order
        basis = v[:, order[:rank]]
        x = math.sqrt(m) * q * np.sqrt(lam[order[:rank]]) @ basis.T
        out.append(x + rng.standard_normal(d))
    return np.stack(out)


def hadamard_columns(m: int, scales: tuple[float, ...]) -> np.ndarray:
    """``(1, m, D)`` samples with orthogonal ``±1`` columns times ``scales``: covariance exactly diagonal.

    Columns 1..D of the Sylvester-Hadamard matrix of order ``m`` (a power of 2)
    have mean 0 and are orthogonal in exact integer arithmetic, so the biased
    covariance is exactly ``diag(scales**2)``: equal scales give exactly equal
    eigenvalues.
    """
    h = scipy.linalg.hadamard(m).astype(np.float64)
    return (h[:, 1 : len(scales) + 1] * np.asarray(scales))[None]


def sample_covariance(y: np.ndarray) -> np.ndarray:
    """Biased covariance of each group of ``(G, M, D)`` ``y``."""
    yc = y - y.mean(axis=1, keepdims=True)
    return np.einsum("gmd,gme->gde", yc, yc) / y.shape[1]


def condition(lam: np.ndarray, eps: float) -> float:
    """Condition number of ``diag(lam) + eps I``."""
    return float((np.max(lam) + eps) / (np.min(lam) + eps))


def assert_batch_whiten_gradients(
    backend: Backend,
    dy: np.ndarray,
    args: dict[str, np.ndarray],
    kwargs: dict[str, Any],
) -> None:
    """``batch_whiten_vjp``'s gradients of ``x``, ``gamma`` and ``beta`` (``args``) on
    ``backend`` against finite differences of ``batch_whiten`` (float64)."""
    grads = normref.batch_whiten_vjp(
        backend.asarray(dy, "float64"),
        *(backend.asarray(args[k], "float64") for k in ("x", "gamma", "beta")),
        **kwargs,
    )

    def f(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> Any:
        return normref.batch_whiten(x, gamma, beta, **kwargs)

    for name in args:
        expected, bound = fd_vjp(f, args, dy, name)
        actual = backend.to_numpy(getattr(grads, name))
        assert_within(actual, expected, bound, what=f"d{name} of batch_whiten({kwargs})")
