"""Independent float64 formulations of the whitening family, written differently from normref.

normref decomposes the covariance matrix (``eigh``, ``cholesky``); these
references never form it. They take the SVD of the centred data,
``X_c / sqrt(M) = A S V^T``, whose right singular vectors are the
eigenvectors of the covariance and ``S**2`` its eigenvalues (padded with zeros
when ``M < D``), and for Cholesky the QR factorization of the data stacked on
``sqrt(eps) I``, whose ``R^T R`` is the regularized covariance. Means are
exactly rounded sums (``math.fsum``); IterNorm is its scalar recursion on each
eigenvalue (the iterates are polynomials in the covariance, so they share its
eigenvectors). Groups are found from indices by the textbook definition of
each layer, not from :mod:`normref.partition`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

U64 = np.finfo(np.float64).eps

MAX_CONDITION = 1e3
"""Largest condition number of Σ = C + eps I (and ``‖C‖ / gap`` for PCA) the references accept.

The registry's samples are drawn well conditioned (``normref.registry``); the
references check it, so that the tolerance below rests on a checked premise.
"""

RTOL = 16 * 3 * U64 * MAX_CONDITION
"""Relative tolerance (of the output's size) of every whitening reference.

A float64 whitening of a covariance with condition number κ is exact to about
``c D u κ`` of its output: a backward-stable eigensolver or Cholesky
factorization perturbs the covariance by ``p(D) u ‖Σ‖``, which moves
``λ^-1/2`` by ``p(D) u κ / 2`` relatively, and PCA's eigenvectors (those of
``C``, which normref decomposes before adding eps) by ``p(D) u ‖C‖ / gap``. With ``D <= 3``, ``κ <= MAX_CONDITION`` and both
computations contributing, ``16 D u κ`` (about 1e-11) bounds the difference.
"""


def _centred(x: np.ndarray) -> np.ndarray:
    """``x`` (M, D) minus its column means, each an exactly rounded sum."""
    means = [math.fsum(x[:, d]) / x.shape[0] for d in range(x.shape[1])]
    return x - np.array(means)


def _spectrum(xc: np.ndarray, eps: float, *, gaps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of ``X_c^T X_c / M + eps I``, from the SVD of X_c.

    Checks the premise of :data:`RTOL`: the condition number of the regularized
    covariance, and with ``gaps`` that of its eigenvectors, ``‖C‖ / gap``.
    """
    m, d = xc.shape
    _, s, vt = np.linalg.svd(xc / math.sqrt(m), full_matrices=True)
    lam = np.zeros(d)
    lam[: s.size] = s**2
    condition = (lam[0] + eps) / (lam[-1] + eps)
    assert condition <= MAX_CONDITION, f"sample too ill-conditioned for RTOL: κ = {condition:.3g}"
    if gaps and d > 1:
        spread = lam[0] / np.min(lam[:-1] - lam[1:])
        assert spread <= MAX_CONDITION, f"eigenvalues too close for RTOL: ‖C‖/gap = {spread:.3g}"
    return lam + eps, vt.T


def _signed(v: np.ndarray) -> np.ndarray:
    """Each column times the sign of its entry of largest |.| (the first such entry on ties)."""
    out = v.copy()
    for k in range(v.shape[1]):
        column = [float(e) for e in v[:, k]]
        pivot = max(range(len(column)), key=lambda i: (abs(column[i]), -i))
        if column[pivot] < 0:
            out[:, k] = -out[:, k]
    return out


def _group_zca(x: np.ndarray, eps: float) -> np.ndarray:
    xc = _centred(x)
    lam, v = _spectrum(xc, eps)
    return xc @ v @ np.diag(lam**-0.5) @ v.T


def _group_pca(x: np.ndarray, eps: float) -> np.ndarray:
    xc = _centred(x)
    lam, v = _spectrum(xc, eps, gaps=True)
    return xc @ _signed(v) / np.sqrt(lam)


def _group_decorrelation(x: np.ndarray, eps: float) -> np.ndarray:
    xc = _centred(x)
    _, v = _spectrum(xc, eps, gaps=True)
    return xc @ _signed(v)


def _group_cholesky(x: np.ndarray, eps: float) -> np.ndarray:
    xc = _centred(x)
    m, d = xc.shape
    _spectrum(xc, eps)  # the premise of RTOL
    r = np.linalg.qr(np.vstack([xc / math.sqrt(m), math.sqrt(eps) * np.eye(d)]), mode="r")
    low = (r * np.sign(np.diag(r))[:, None]).T  # R^T R = Σ + eps I, with a positive diagonal
    return scipy.linalg.solve_triangular(low, xc.T, lower=True).T


def _group_iter_norm(x: np.ndarray, eps: float, iterations: int) -> np.ndarray:
    xc = _centred(x)
    lam, v = _spectrum(xc, eps)
    trace = math.fsum(lam)
    p = np.ones_like(lam)
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * p**3 * (lam / trace)
    return xc @ v @ np.diag(p / math.sqrt(trace)) @ v.T


GROUP_METHODS = {
    "zca": _group_zca,
    "pca": _group_pca,
    "cholesky": _group_cholesky,
    "iter_norm": _group_iter_norm,
}
"""Whitening of one group's ``(M, D)`` samples, by method name."""


def _float64(a):
    """Inputs may come rounded to a narrower dtype; the references compute in float64."""
    return None if a is None else np.asarray(a, dtype=np.float64)


def _per_group(method, x: np.ndarray, **params) -> np.ndarray:
    return np.stack([method(group, **params) for group in _float64(x)])


def decorrelate(x, *, eps):
    return _per_group(_group_decorrelation, x, eps=eps)


def pca_whiten(x, *, eps):
    return _per_group(_group_pca, x, eps=eps)


def zca_whiten(x, *, eps):
    return _per_group(_group_zca, x, eps=eps)


def cholesky_whiten(x, *, eps):
    return _per_group(_group_cholesky, x, eps=eps)


def iter_norm_whiten(x, *, eps, iterations):
    return _per_group(_group_iter_norm, x, eps=eps, iterations=iterations)


def _channel_groups(x: np.ndarray, axis: int, group_size: int) -> list[tuple[slice, np.ndarray]]:
    """For each group of ``group_size`` consecutive channels: its channels and its (M, k) samples."""
    rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    groups = []
    for start in range(0, x.shape[axis], group_size):
        channels = slice(start, start + group_size)
        groups.append((channels, rows[channels].T))
    return groups


def _from_rows(rows: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(x, axis, 0).shape
    return np.moveaxis(rows.reshape(moved), 0, axis)


def _affine(y: np.ndarray, gamma, beta, axis: int) -> np.ndarray:
    shape = [1] * y.ndim
    shape[axis] = -1
    if gamma is not None:
        y = y * np.reshape(gamma, shape)
    if beta is not None:
        y = y + np.reshape(beta, shape)
    return y


def batch_whiten(x, gamma=None, beta=None, *, group_size, eps, axis, method="zca", iterations=5):
    x, gamma, beta = _float64(x), _float64(gamma), _float64(beta)
    axis = axis % x.ndim
    params = {"iterations": iterations} if method == "iter_norm" else {}
    rows = np.empty((x.shape[axis], x.size // x.shape[axis]))
    for channels, samples in _channel_groups(x, axis, group_size):
        rows[channels] = GROUP_METHODS[method](samples, eps, **params).T
    return _affine(_from_rows(rows, x, axis), gamma, beta, axis)


def batch_whiten_inference(
    x, running_mean, running_whitening, gamma=None, beta=None, *, group_size, axis
):
    x, gamma, beta = _float64(x), _float64(gamma), _float64(beta)
    running_mean, running_whitening = _float64(running_mean), _float64(running_whitening)
    axis = axis % x.ndim
    rows = np.empty((x.shape[axis], x.size // x.shape[axis]))
    for g, (channels, samples) in enumerate(_channel_groups(x, axis, group_size)):
        rows[channels] = running_whitening[g] @ (samples - running_mean[channels]).T
    return _affine(_from_rows(rows, x, axis), gamma, beta, axis)


WHITENING_FORMULATIONS = {
    **{
        f.__name__: (f, RTOL)
        for f in (
            decorrelate,
            pca_whiten,
            zca_whiten,
            cholesky_whiten,
            iter_norm_whiten,
            batch_whiten,
        )
    },
    # a fixed linear map of well-scaled data: a few ulps of the output's size
    "batch_whiten_inference": (batch_whiten_inference, 1e-13),
}
"""``(compute, rtol)`` of each whitening operation, for ``tests.reference.REFERENCES``."""
