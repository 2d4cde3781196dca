"""Independent float64 formulations of the other layers of the literature.

Element by element from each paper's formula, with ``math.fsum`` (exactly rounded
sums) over groups found from indices (which sample, channel, spatial position an
element is), sharing no code with normref: no partition, no engine, no reuse of
batch or instance norm.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from normref.conventions import get_convention


def _float64(*arrays: Any) -> list[Any]:
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _groups(x: np.ndarray, key: Callable[[tuple[int, ...]], Any]) -> dict[Any, list]:
    found: dict[Any, list] = defaultdict(list)
    for index in np.ndindex(*x.shape):
        found[key(index)].append(index)
    return found


def _mean_var(values: list[float], correction: int = 0) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - correction)


def _stats(x: np.ndarray, key: Callable, correction: int = 0) -> dict[Any, tuple[float, float]]:
    return {
        k: _mean_var([float(x[i]) for i in members], correction)
        for k, members in _groups(x, key).items()
    }


def conditional_norm(x, gamma, beta, *, eps, axis, key_of):
    """Per-group standardization with ``gamma[n, c]``, ``beta[n, c]`` (or per channel)."""
    x, gamma, beta = _float64(x, gamma, beta)
    c = axis % x.ndim
    y = np.empty(x.shape)
    stats = _stats(x, key_of(c))
    for index in np.ndindex(*x.shape):
        mean, var = stats[key_of(c)(index)]
        p = (index[0], index[c]) if gamma is not None and gamma.ndim == 2 else (index[c],)
        g = 1.0 if gamma is None else float(gamma[p])
        b = 0.0 if beta is None else float(beta[p])
        y[index] = g * (x[index] - mean) / math.sqrt(var + eps) + b
    return y


def conditional_batch_norm(x, gamma=None, beta=None, *, eps, axis):
    return conditional_norm(x, gamma, beta, eps=eps, axis=axis, key_of=lambda c: lambda i: i[c])


def conditional_instance_norm(x, gamma=None, beta=None, *, eps, axis):
    return conditional_norm(
        x, gamma, beta, eps=eps, axis=axis, key_of=lambda c: lambda i: (i[0], i[c])
    )


def mean_only_batch_norm(x, beta=None, *, axis):
    x, beta = _float64(x, beta)
    c = axis % x.ndim
    stats = _stats(x, lambda i: i[c])
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        y[index] = x[index] - stats[index[c]][0] + (0.0 if beta is None else beta[index[c]])
    return y


def batch_renorm(x, running_mean, running_var, gamma=None, beta=None, *, r_max, d_max, eps, axis):
    """Ioffe (2017), Algorithm 1: x_hat r + d with r, d clipped, then the affine."""
    x, running_mean, running_var, gamma, beta = _float64(x, running_mean, running_var, gamma, beta)
    c = axis % x.ndim
    stats = _stats(x, lambda i: i[c])
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        ch = index[c]
        mean_b, var_b = stats[ch]
        sigma_b, sigma = math.sqrt(var_b + eps), math.sqrt(running_var[ch] + eps)
        r = min(max(sigma_b / sigma, 1.0 / r_max), r_max)
        d = min(max((mean_b - running_mean[ch]) / sigma, -d_max), d_max)
        value = (x[index] - mean_b) / sigma_b * r + d
        g = 1.0 if gamma is None else gamma[ch]
        y[index] = g * value + (0.0 if beta is None else beta[ch])
    return y


def batch_renorm_train(
    x,
    running_mean,
    running_var,
    gamma=None,
    beta=None,
    *,
    r_max,
    d_max,
    eps,
    axis,
    momentum,
    convention,
):
    """The output from the given running statistics; then their update with the batch's mean
    and (convention's) variance, weighted by the batch's weight in the convention's meaning."""
    y = batch_renorm(
        x, running_mean, running_var, gamma, beta, r_max=r_max, d_max=d_max, eps=eps, axis=axis
    )
    preset = get_convention(convention)
    x, running_mean, running_var = _float64(x, running_mean, running_var)
    c = axis % x.ndim
    weight = momentum if preset.momentum_meaning == "batch_weight" else 1.0 - momentum
    stats = _stats(x, lambda i: i[c], preset.running_var_correction)
    new_mean = np.array(
        [(1 - weight) * running_mean[ch] + weight * stats[ch][0] for ch in range(x.shape[c])]
    )
    new_var = np.array(
        [(1 - weight) * running_var[ch] + weight * stats[ch][1] for ch in range(x.shape[c])]
    )
    return y, new_mean, new_var


def _softmax(logits: np.ndarray) -> list[float]:
    top = max(float(v) for v in logits)
    exps = [math.exp(float(v) - top) for v in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def switchable_norm(x, gamma, beta, mean_logits, var_logits, *, eps, axis):
    """Luo et al. (2019), eq. (3)-(4): each statistic from its own group of indices."""
    x, gamma, beta, mean_logits, var_logits = _float64(x, gamma, beta, mean_logits, var_logits)
    c = axis % x.ndim
    keys = (lambda i: (i[0], i[c]), lambda i: i[0], lambda i: i[c])
    stats = [_stats(x, key) for key in keys]
    a, b = _softmax(mean_logits), _softmax(var_logits)
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        parts = [s[key(index)] for s, key in zip(stats, keys, strict=True)]
        mean = math.fsum(w * p[0] for w, p in zip(a, parts, strict=True))
        var = math.fsum(w * p[1] for w, p in zip(b, parts, strict=True))
        g = 1.0 if gamma is None else gamma[index[c]]
        shift = 0.0 if beta is None else beta[index[c]]
        y[index] = g * (x[index] - mean) / math.sqrt(var + eps) + shift
    return y


def adaptive_instance_norm(x, style, *, eps, correction, axis):
    """Huang & Belongie (2017), eq. (8), each input's statistics over its own spatial axes."""
    x, style = _float64(x, style)
    c = axis % x.ndim
    content = _stats(x, lambda i: (i[0], i[c]), correction)
    styled = _stats(style, lambda i: (i[0], i[c]), correction)
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        mean_x, var_x = content[(index[0], index[c])]
        mean_s, var_s = styled[(index[0], index[c])]
        normalized = (x[index] - mean_x) / math.sqrt(var_x + eps)
        y[index] = math.sqrt(var_s + eps) * normalized + mean_s
    return y


def local_response_norm(x, size, *, alpha, beta, k, axis, window="torch"):
    """Krizhevsky et al. (2012), section 3.3, with each framework's window of an even size:
    torch pads ``size // 2`` channels before and ``(size - 1) // 2`` after (its avg_pool over
    the padded squares); ONNX sums ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``."""
    (x,) = _float64(x)
    c = axis % x.ndim
    channels = x.shape[c]
    if window == "torch":
        lo, hi = size // 2, (size - 1) // 2
    else:
        lo, hi = math.floor((size - 1) / 2), math.ceil((size - 1) / 2)
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        squares = []
        for j in range(index[c] - lo, index[c] + hi + 1):
            if 0 <= j < channels:
                other = tuple(j if a == c else i for a, i in enumerate(index))
                squares.append(float(x[other]) ** 2)
        y[index] = x[index] / (k + alpha / size * math.fsum(squares)) ** beta
    return y


# (compute, rtol): float64 evaluations of unit-scale data in groups of at most a few hundred
# values, each element a few operations from exactly rounded sums; the mixtures' and the
# renormalization's extra products and clips add a few roundings: 1e-13 (450 u of the output's
# largest magnitude) bounds both sides as in tests/reference.py. LRN's power errs by a few u.
LAYER_REFERENCES: dict[str, tuple[Callable[..., Any], float]] = {
    f.__name__: (f, 1e-13)
    for f in (
        conditional_batch_norm,
        conditional_instance_norm,
        mean_only_batch_norm,
        batch_renorm,
        batch_renorm_train,
        switchable_norm,
        adaptive_instance_norm,
        local_response_norm,
    )
}
