"""Independent float64 formulations of the weights, gradients and residual ops.

Written element by element from each method's published formula, with
``math.fsum`` (exactly rounded sums) over explicitly collected output units
(the unit of an element is its index along ``out_axis``), sharing no code with
normref: no partition, no layer machinery, no reuse of the standardize or
RMS operations that normref reduces these ops to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np


def _float64(*arrays):
    """The arrays as float64 (inputs may arrive rounded to a narrower dtype)."""
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _units(x: np.ndarray, out_axis: int) -> dict[int, list[tuple[int, ...]]]:
    """Indices of ``x`` grouped by output unit; a scalar or vector is one unit."""
    units: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    axis = out_axis % max(x.ndim, 1)
    for index in np.ndindex(*x.shape):
        units[index[axis] if x.ndim >= 2 else 0].append(index)
    return units


def _mean_var(values: list[float], correction: int = 0) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - correction)


def weight_standardize(w, *, out_axis, eps, eps_mode="add", correction=0):
    (w,) = _float64(w)
    y = np.empty(w.shape)
    for members in _units(w, out_axis).values():
        mean, var = _mean_var([float(w[i]) for i in members], correction)
        s = {
            "add": math.sqrt(var + eps),
            "max": math.sqrt(max(var, eps)),
            "add_std": math.sqrt(var) + eps,
        }[eps_mode]
        for i in members:
            y[i] = (w[i] - mean) / s
    return y


def scaled_weight_standardize(w, gain=None, *, gamma, out_axis, eps, eps_mode="max_fan_in"):
    """NFNets' form: (w - mean) * gain * gamma / sqrt(max(N var, eps)), and its variants."""
    w, gain = _float64(w, gain)
    y = np.empty(w.shape)
    for unit, members in _units(w, out_axis).items():
        n = len(members)
        mean, var = _mean_var([float(w[i]) for i in members])
        divisor = {
            "max_fan_in": math.sqrt(max(n * var, eps)),
            "max": math.sqrt(max(var, eps)) * math.sqrt(n),
            "add": math.sqrt(var + eps) * math.sqrt(n),
        }[eps_mode]
        g = 1.0 if gain is None else float(gain[unit])
        for i in members:
            y[i] = (w[i] - mean) * g * gamma / divisor
    return y


def weight_norm(v, g=None, *, out_axis, eps=0.0):
    v, g = _float64(v, g)
    y = np.empty(v.shape)
    for unit, members in _units(v, out_axis).items():
        norm = math.sqrt(math.fsum(float(v[i]) ** 2 for i in members) + eps)
        scale = 1.0 if g is None else float(g[unit])
        for i in members:
            y[i] = scale * v[i] / norm
    return y


def centered_weight_norm(v, g=None, *, out_axis, eps=0.0):
    """Huang et al. (2017): v - mean over the unit, divided by its norm (a constant unit, whose
    centred norm is 0 with eps = 0, is 0)."""
    v, g = _float64(v, g)
    y = np.empty(v.shape)
    for unit, members in _units(v, out_axis).items():
        mean = math.fsum(float(v[i]) for i in members) / len(members)
        centred = {i: float(v[i]) - mean for i in members}
        norm = math.sqrt(math.fsum(c * c for c in centred.values()) + eps)
        scale = 1.0 if g is None else float(g[unit])
        for i in members:
            y[i] = 0.0 if norm == 0.0 else scale * centred[i] / norm
    return y


MAX_GRAM_CONDITION = 1e3
"""The largest condition number of ``V_c V_c^T + eps I`` the orthogonalization references
accept (the registry's samples are drawn well conditioned; checked, so that :data:`GRAM_RTOL`
rests on a checked premise)."""

GRAM_RTOL = 16 * 4 * np.finfo(np.float64).eps * MAX_GRAM_CONDITION
"""Relative tolerance of OWN and ONI: a float64 inverse square root of a matrix of condition
number k is exact to about ``c D u k`` of its output (see tests/reference_whitening.py), with
``D <= 4`` units per group."""


def _unit_groups(v: np.ndarray, out_axis: int, group_size: int | None) -> list[list[int]]:
    units = v.shape[out_axis % v.ndim]
    size = units if group_size is None else group_size
    return [list(range(start, start + size)) for start in range(0, units, size)]


def _orthogonalized(v, out_axis, group_size, eps, transform):
    """Each group's rows ``V`` (units x fan-in, in the fan-in's row-major order), centred, as
    ``U f(s) V^T`` from the SVD ``V_c = U diag(s) V^T``: ``transform(s, nu)`` gives the
    singular values of the result from those of ``V_c`` and the eigenvalues of the Gram matrix
    plus ``eps``."""
    (v,) = _float64(v)
    axis = out_axis % v.ndim
    rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
    out = np.empty(rows.shape)
    for group in _unit_groups(v, axis, group_size):
        block = rows[group]
        means = [math.fsum(row) / row.size for row in block]
        centred = block - np.array(means)[:, None]
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
        gram = s**2 + eps
        assert gram.max() / gram.min() <= MAX_GRAM_CONDITION, "group too ill-conditioned"
        out[group] = u @ np.diag(transform(s, gram)) @ vt
    moved = tuple(v.shape[a] for a in (axis, *(a for a in range(v.ndim) if a != axis)))
    return np.moveaxis(out.reshape(moved), 0, axis)


def orthogonal_weight_norm(v, *, group_size, eps, out_axis):
    """Huang et al. (2018): W = (V_c V_c^T + eps I)^-1/2 V_c, from the SVD of V_c."""
    return _orthogonalized(v, out_axis, group_size, eps, lambda s, gram: s / np.sqrt(gram))


def oni_weight_norm(v, *, iterations, group_size, eps, out_axis):
    """The ONI code's Newton-Schulz steps on S / ||S||_F, each a polynomial in S: on its
    eigenvalues nu = (s^2 + eps) / ||S||_F as the scalar recursion b <- 1.5 b - 0.5 b^3 nu."""

    def transform(s, gram):
        norm = math.sqrt(math.fsum(gram**2))
        b = np.ones_like(gram)
        for _ in range(iterations):
            b = 1.5 * b - 0.5 * b**3 * (gram / norm)
        return b * s / math.sqrt(norm)

    return _orthogonalized(v, out_axis, group_size, eps, transform)


def gradient_centralize(grad, *, out_axis):
    """Yong et al. (2020): each unit of a gradient of rank > 1 minus its mean; vectors as they
    are."""
    (grad,) = _float64(grad)
    if grad.ndim <= 1:
        return grad.copy()
    y = np.empty(grad.shape)
    for members in _units(grad, out_axis).values():
        mean = math.fsum(float(grad[i]) for i in members) / len(members)
        for i in members:
            y[i] = grad[i] - mean
    return y


def spectral_norm_weight(w, u, v, *, n_power_iterations, out_axis, eps):
    """w / (u^T W v) with u, v fixed (n_power_iterations = 0), the fan-in flattened in order."""
    assert n_power_iterations == 0, "the registry samples the fixed-u, v forward"
    w, u, v = _float64(w, u, v)
    axis = out_axis % w.ndim
    fan_in_shape = tuple(s for a, s in enumerate(w.shape) if a != axis)
    terms = []
    for index in np.ndindex(*w.shape):
        rest = tuple(k for a, k in enumerate(index) if a != axis)
        f = int(np.ravel_multi_index(rest, fan_in_shape)) if rest else 0
        terms.append(float(u[index[axis]]) * float(w[index]) * float(v[f]))
    return w / math.fsum(terms)


def adaptive_grad_clip(grad, param, *, clipping, eps, out_axis):
    """The NFNets rule: where ||G|| > m, G * m / ||G||, with m = clipping * max(||W||, eps)."""
    grad, param = _float64(grad, param)
    y = grad.copy()
    for members in _units(grad, out_axis).values():
        g_norm = math.sqrt(math.fsum(float(grad[i]) ** 2 for i in members))
        p_norm = math.sqrt(math.fsum(float(param[i]) ** 2 for i in members))
        max_norm = clipping * max(p_norm, eps)
        if g_norm > max_norm:
            for i in members:
                y[i] = grad[i] * max_norm / g_norm
    return y


def skip_init_residual(x, branch_out, alpha):
    x, branch_out, alpha = _float64(x, branch_out, alpha)
    y = np.empty(x.shape)
    a = np.broadcast_to(alpha, x.shape)
    for i in np.ndindex(*x.shape):
        y[i] = float(x[i]) + float(a[i]) * float(branch_out[i])
    return y


def _l2_normalized(values: list[float], eps: float) -> list[float]:
    norm = max(math.sqrt(math.fsum(v * v for v in values)), eps)
    return [v / norm for v in values]


def spectral_norm_train(w, u, v, *, n_power_iterations, out_axis, eps):
    """Power iteration as Miyato et al. write it, ``v <- W^T u / ||.||``, ``u <- W v / ||.||``
    (norms floored at ``eps``), on W as a (units, fan-in) matrix in row-major fan-in order;
    then ``sigma = u^T W v`` and ``W / sigma``."""
    w, u, v = _float64(w, u, v)
    axis = out_axis % w.ndim
    matrix = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    rows, cols = matrix.shape
    vec_u, vec_v = [float(a) for a in u], [float(a) for a in v]
    for _ in range(n_power_iterations):
        vec_v = _l2_normalized(
            [math.fsum(float(matrix[i, j]) * vec_u[i] for i in range(rows)) for j in range(cols)],
            eps,
        )
        vec_u = _l2_normalized(
            [math.fsum(float(matrix[i, j]) * vec_v[j] for j in range(cols)) for i in range(rows)],
            eps,
        )
    sigma = math.fsum(
        vec_u[i] * float(matrix[i, j]) * vec_v[j] for i in range(rows) for j in range(cols)
    )
    return w / sigma, np.array(vec_u), np.array(vec_v), np.array(sigma)


def clip_by_global_norm(grad, bias_grad, *, max_norm, eps=0.0):
    """Both gradients times ``max_norm / max(||(grad, bias_grad)|| + eps, max_norm)``."""
    grad, bias_grad = _float64(grad, bias_grad)
    squares = [float(a) ** 2 for a in np.ravel(grad)] + [float(a) ** 2 for a in np.ravel(bias_grad)]
    factor = max_norm / max(math.sqrt(math.fsum(squares)) + eps, max_norm)
    return grad * factor, bias_grad * factor


def unitwise_norm(x, *, out_axis):
    """Each element replaced by the Euclidean norm of its output unit (a scalar or a vector is
    one unit)."""
    (x,) = _float64(x)
    y = np.empty(x.shape)
    for members in _units(x, out_axis).values():
        norm = math.sqrt(math.fsum(float(x[i]) ** 2 for i in members))
        for i in members:
            y[i] = norm
    return y


def gamma_scaled_nonlinearity(x, *, nonlinearity, gammas="exact"):
    """relu(x) times its gain in closed form: relu(z), z ~ N(0, 1), has mean 1/sqrt(2 pi) and
    mean square 1/2, so gamma = 1 / sqrt(1/2 - 1/(2 pi))."""
    assert (nonlinearity, gammas) == ("relu", "exact"), "the registry samples exact relu"
    (x,) = _float64(x)
    gain = 1.0 / math.sqrt(0.5 - 0.5 / math.pi)
    return gain * np.maximum(x, 0.0)


# (compute, rtol) of each op, merged into tests.reference.REFERENCES as References.
# Each is a few float64 operations per element on well-conditioned, unit-scale data
# (|mean| / std ~ 1 per unit, sigma ~ 3 for spectral norm, norms ~ 1 for AGC): both
# formulations agree to a small multiple of float64's epsilon times the output's size.
WEIGHT_REFERENCES: dict[str, tuple[Callable[..., np.ndarray], float]] = {
    "weight_standardize": (weight_standardize, 1e-13),
    "scaled_weight_standardize": (scaled_weight_standardize, 1e-13),
    "weight_norm": (weight_norm, 1e-13),
    "spectral_norm": (spectral_norm_weight, 1e-13),
    "adaptive_grad_clip": (adaptive_grad_clip, 1e-13),
    "skip_init_residual": (skip_init_residual, 1e-13),
    "spectral_norm_train": (spectral_norm_train, 1e-13),
    "clip_by_global_norm": (clip_by_global_norm, 1e-13),
    "unitwise_norm": (unitwise_norm, 1e-13),
    "gamma_scaled_nonlinearity": (gamma_scaled_nonlinearity, 1e-14),
    "centered_weight_norm": (centered_weight_norm, 1e-13),
    "gradient_centralize": (gradient_centralize, 1e-13),
    "orthogonal_weight_norm": (orthogonal_weight_norm, GRAM_RTOL),
    "oni_weight_norm": (oni_weight_norm, GRAM_RTOL),
}
