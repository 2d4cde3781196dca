"""Known-wrong (and right) implementations of the weights, gradients and whitening ops.

Each is written directly in NumPy (float64 inside, rounded once), independently of
normref, with normref's signature for its op, so that a test can plant it and
assert that the suite reports the bug it contains.
"""

from __future__ import annotations

import numpy as np


def _fan_in(w: np.ndarray, out_axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(w.ndim) if a != out_axis % w.ndim)


def _norms(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.sqrt(np.sum(x * x, axis=axes, keepdims=True))


# ----------------------------------------------------------------------------- AGC


def _agc(grad, param, clipping, eps, axes):
    g, p = grad.astype(np.float64), param.astype(np.float64)
    n, m = _norms(g, axes), clipping * np.maximum(_norms(p, axes), eps)
    return (g * m / np.maximum(n, m)).astype(grad.dtype)


def agc(grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """Right: unit-wise norms over the fan-in."""
    return _agc(grad, param, clipping, eps, _fan_in(grad, out_axis))


def agc_by_tensor_norm(grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """Wrong: clips by the norms of the whole tensors instead of each unit's."""
    return _agc(grad, param, clipping, eps, tuple(range(grad.ndim)))


def agc_by_rank(grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """The NFNets code's units, with the unit axis moved last: a squeezed vector is one unit,
    rank 2 and 3 reduce axis 0 only, rank 4 axes 0 to 2."""
    moved_g, moved_p = np.moveaxis(grad, out_axis, -1), np.moveaxis(param, out_axis, -1)
    if np.squeeze(moved_g).ndim <= 1:
        axes = tuple(range(moved_g.ndim))
    else:
        axes = {2: (0,), 3: (0,), 4: (0, 1, 2)}[moved_g.ndim]
    return np.moveaxis(_agc(moved_g, moved_p, clipping, eps, axes), -1, out_axis)


def agc_vjp_clipping_at_the_threshold(dy, grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """The derivative of the clipped branch wherever ``||G|| >= m`` (the other side of the kink
    from normref's), written from ``y = G m / ||G||``."""
    axes = _fan_in(grad, out_axis)
    g, p, d = (a.astype(np.float64) for a in (grad, param, dy))
    n, p_norm = _norms(g, axes), _norms(p, axes)
    m = clipping * np.maximum(p_norm, eps)
    clipped = n >= m
    s = np.sum(d * g, axis=axes, keepdims=True)
    d_grad = np.where(clipped, m / n * d - m * s / n**3 * g, d)
    d_param = np.where(clipped & (p_norm >= eps), clipping * s / (n * p_norm) * p, 0.0)
    return d_grad.astype(grad.dtype), d_param.astype(param.dtype)


# ----------------------------------------------------------------------------- weights


def weight_norm_whole_tensor(v, g=None, *, out_axis=0, eps=0.0):
    """Wrong: one norm for the whole tensor (torch's ``dim=-1``), not one per unit."""
    w = v.astype(np.float64) / np.sqrt(np.sum(v.astype(np.float64) ** 2) + eps)
    if g is not None:
        shape = [1] * v.ndim
        shape[out_axis % v.ndim] = -1
        w = w * g.reshape(shape)
    return w.astype(v.dtype)


def weight_standardize_unbiased(w, *, out_axis=0, eps=1e-5):
    """Wrong where biased is declared: standardizes with the unbiased variance."""
    axes = _fan_in(w, out_axis)
    x = w.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=1)
    return ((x - mean) / np.sqrt(var + eps)).astype(w.dtype)


def _matrix(w, out_axis):
    return np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)


def _normalize(t, eps):
    return t / max(float(np.sqrt(np.sum(t * t))), eps)


def spectral_norm_u_first(w, u, v=None, *, n_power_iterations=1, eps=1e-12, out_axis=0, **_):
    """torch's parametrization order: ``u <- n(W v)``, then ``v <- n(W^T u)``; returns
    ``(w / sigma, u, v, sigma)``, ``w`` unscaled where ``sigma`` is 0."""
    m = _matrix(w.astype(np.float64), out_axis)
    u, v = u.astype(np.float64), v.astype(np.float64)
    for _ in range(n_power_iterations):
        u = _normalize(m @ v, eps)
        v = _normalize(m.T @ u, eps)
    sigma = float(u @ m @ v)
    dtype = w.dtype
    y = w / (sigma if sigma != 0.0 else 1.0)
    return y.astype(dtype), u.astype(dtype), v.astype(dtype), np.asarray(sigma, dtype)


def clip_by_global_norm_plus_eps(grad, bias_grad, *, max_norm, eps=0.0):
    """torch's ``clip_grad_norm_`` formula: ``max_norm / (norm + 1e-6)``, whatever ``eps``."""
    g, b = grad.astype(np.float64), bias_grad.astype(np.float64)
    norm = np.sqrt(np.sum(g * g) + np.sum(b * b))
    factor = np.minimum(1.0, max_norm / (norm + 1e-6))
    return (g * factor).astype(grad.dtype), (b * factor).astype(bias_grad.dtype)


# ----------------------------------------------------------------------------- whitening


def _zca_parts(x, ddof=0):
    """Centred groups and covariances; a group that is not finite gets the identity as its
    covariance and NaN in its centred values, so that its output is NaN."""
    x = x.astype(np.float64)
    finite = np.all(np.isfinite(x), axis=(1, 2), keepdims=True)
    centred = np.where(finite, x - x.mean(axis=1, keepdims=True), np.nan)
    cov = np.swapaxes(centred, -1, -2) @ centred / (x.shape[1] - ddof)
    return x, centred, np.where(finite, cov, np.eye(x.shape[2]))


def _zca(x, eps, ddof):
    _, centred, cov = _zca_parts(x, ddof)
    lam, u = np.linalg.eigh(cov)
    w = (u / np.sqrt(lam + eps)[..., None, :]) @ np.swapaxes(u, -1, -2)
    return (centred @ w).astype(x.dtype)


def zca_whiten(x, *, eps=1e-5):
    """Right: ``Sigma^-1/2 (x - mean)`` per group of ``(G, M, D)``, by NumPy's ``eigh``."""
    return _zca(x, eps, 0)


def zca_whiten_unbiased(x, *, eps=1e-5):
    """Wrong where biased is declared: whitens with the unbiased covariance."""
    return _zca(x, eps, 1)


def zca_whiten_vjp_without_symmetric_part(dy, x, *, eps=1e-5):
    """Wrong: the covariance's cotangent is doubled instead of symmetrized,
    ``2 S`` for ``S + S^T``; the rest is the ZCA backward, derived here from
    ``d(Sigma^-1/2) = U (F o U^T dSigma U) U^T`` with ``F`` the divided differences of
    ``lambda^-1/2``."""
    _, centred, cov = _zca_parts(x)
    m = x.shape[1]
    lam, u = np.linalg.eigh(cov)
    root = np.sqrt(lam + eps)
    w = (u / root[..., None, :]) @ np.swapaxes(u, -1, -2)
    g = dy.astype(np.float64)
    w_bar = np.swapaxes(g, -1, -2) @ centred
    a, b = root[..., :, None], root[..., None, :]
    divided = -1.0 / (a * b * (a + b))
    ut = np.swapaxes(u, -1, -2)
    sigma_bar = u @ (divided * (ut @ w_bar @ u)) @ ut
    direct = g @ w
    dx = direct - direct.mean(axis=1, keepdims=True) + centred @ (2 * sigma_bar) / m
    return (dx.astype(x.dtype),)


def agc_inverted(grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """Wrong: scales the units below the threshold up to it and leaves those above it."""
    axes = _fan_in(grad, out_axis)
    g, p = grad.astype(np.float64), param.astype(np.float64)
    n, m = _norms(g, axes), clipping * np.maximum(_norms(p, axes), eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where((n < m) & (n > 0), g * m / n, g)
    return y.astype(grad.dtype)


def agc_without_eps_floor(grad, param, *, clipping=0.01, eps=1e-3, out_axis=0):
    """Wrong: the threshold is ``clipping * ||W||``, without the floor ``max(||W||, eps)``."""
    axes = _fan_in(grad, out_axis)
    g, p = grad.astype(np.float64), param.astype(np.float64)
    n, m = _norms(g, axes), clipping * _norms(p, axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(n > m, g * m / np.where(n > 0, n, 1.0), g)
    return y.astype(grad.dtype)


def weight_standardize_ignoring_out_axis(w, *, out_axis=0, eps=1e-5):
    """Wrong: one unit per index of axis 0 whatever ``out_axis`` says."""
    axes = _fan_in(w, 0)
    x = w.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps)).astype(w.dtype)


def zca_whiten_returning_pca(x, *, eps=1e-5):
    """Wrong: the PCA-whitened result ``(x - mean) U Lambda^-1/2``, NumPy's eigenvector order
    and signs, for ZCA's ``(x - mean) U Lambda^-1/2 U^T``."""
    _, centred, cov = _zca_parts(x)
    lam, u = np.linalg.eigh(cov)
    return ((centred @ u) / np.sqrt(lam + eps)[..., None, :]).astype(x.dtype)
