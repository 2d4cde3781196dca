"""Independent float64 formulations of the forward of every standardization op.

Written element by element with explicit group keys and ``math.fsum`` (exactly
rounded sums), sharing no code with normref: the group of each element is
computed from its index by the layer's textbook definition, not from
:mod:`normref.partition`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from normref.conventions import get_convention
from tests.reference_layers import LAYER_REFERENCES
from tests.reference_weights import WEIGHT_REFERENCES
from tests.reference_whitening import WHITENING_FORMULATIONS

Key = Callable[[tuple[int, ...]], Any]


def _grouped(x: np.ndarray, key: Key) -> dict[Any, list[tuple[int, ...]]]:
    groups: dict[Any, list[tuple[int, ...]]] = defaultdict(list)
    for index in np.ndindex(*x.shape):
        groups[key(index)].append(index)
    return groups


def _normalize_by_groups(
    x: np.ndarray, key: Key, transform: Callable[[list[float]], list[float]]
) -> np.ndarray:
    y = np.empty(x.shape)
    for members in _grouped(x, key).values():
        for index, value in zip(members, transform([float(x[i]) for i in members]), strict=False):
            y[index] = value
    return y


def _standardized(
    values: list[float], eps: float, *, center: bool = True, divide: bool = True
) -> list[float]:
    n = len(values)
    mean = math.fsum(values) / n
    centred = [v - mean for v in values]
    if not divide:
        return centred
    s = math.sqrt(math.fsum(c * c for c in centred) / n + eps)
    return [(c if center else v) / s for c, v in zip(centred, values, strict=False)]


def _rms_scaled(values: list[float], eps: float) -> list[float]:
    s = math.sqrt(math.fsum(v * v for v in values) / len(values) + eps)
    return [v / s for v in values]


def _affine(
    y: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    param_index: Callable[[tuple[int, ...]], tuple[int, ...]],
) -> np.ndarray:
    out = np.empty(y.shape)
    for index in np.ndindex(*y.shape):
        p = param_index(index)
        value = y[index] * (1.0 if gamma is None else float(gamma[p]))
        out[index] = value + (0.0 if beta is None else float(beta[p]))
    return out


def _axis(axis: int, ndim: int) -> int:
    return axis % ndim


def _per_channel(
    x: np.ndarray, gamma: Any, beta: Any, axis: int, key: Key, eps: float
) -> np.ndarray:
    c = _axis(axis, x.ndim)
    y = _normalize_by_groups(x, key, lambda v: _standardized(v, eps))
    return _affine(y, gamma, beta, lambda i: (i[c],))


def batch_norm(x, gamma=None, beta=None, *, eps, axis):
    c = _axis(axis, x.ndim)
    return _per_channel(x, gamma, beta, axis, lambda i: i[c], eps)


def instance_norm(x, gamma=None, beta=None, *, eps, axis):
    c = _axis(axis, x.ndim)
    return _per_channel(x, gamma, beta, axis, lambda i: (i[0], i[c]), eps)


def group_norm(x, num_groups, gamma=None, beta=None, *, eps, axis):
    c = _axis(axis, x.ndim)
    per_group = x.shape[c] // num_groups
    return _per_channel(x, gamma, beta, axis, lambda i: (i[0], i[c] // per_group), eps)


def ghost_batch_norm(x, virtual_batch_size, gamma=None, beta=None, *, eps, axis):
    c = _axis(axis, x.ndim)
    return _per_channel(x, gamma, beta, axis, lambda i: (i[0] // virtual_batch_size, i[c]), eps)


def _trailing(x: np.ndarray, axes: tuple[int, ...]) -> tuple[tuple[int, ...], Key, Callable]:
    reduced = sorted(a % x.ndim for a in axes)
    kept = [a for a in range(x.ndim) if a not in reduced]
    return (
        tuple(reduced),
        (lambda i: tuple(i[a] for a in kept)),
        (lambda i: tuple(i[a] for a in reduced)),
    )


def layer_norm(x, gamma=None, beta=None, *, axes, eps):
    _, key, param_index = _trailing(x, axes)
    y = _normalize_by_groups(x, key, lambda v: _standardized(v, eps))
    return _affine(y, gamma, beta, param_index)


def rms_norm(x, gamma=None, *, axes, eps):
    _, key, param_index = _trailing(x, axes)
    y = _normalize_by_groups(x, key, lambda v: _rms_scaled(v, eps))
    return _affine(y, gamma, None, param_index)


def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, *, eps, axis):
    c = _axis(axis, x.ndim)
    y = np.empty(x.shape)
    for index in np.ndindex(*x.shape):
        ch = index[c]
        y[index] = (x[index] - running_mean[ch]) / math.sqrt(running_var[ch] + eps)
    return _affine(y, gamma, beta, lambda i: (i[c],))


def batch_norm_train(
    x, running_mean, running_var, gamma=None, beta=None, *, eps, axis, momentum, convention
):
    """batch_norm's output, and the running statistics updated with the batch's mean and its
    variance (biased, or unbiased where the convention keeps an unbiased running variance),
    weighted by the batch's weight in the convention's meaning of ``momentum``."""
    preset = get_convention(convention)
    c = _axis(axis, x.ndim)
    y = batch_norm(x, gamma, beta, eps=eps, axis=axis)
    weight = momentum if preset.momentum_meaning == "batch_weight" else 1.0 - momentum
    new_mean, new_var = np.empty(running_mean.shape), np.empty(running_var.shape)
    for ch, members in _grouped(x, lambda i: i[c]).items():
        values = [float(x[i]) for i in members]
        n = len(values)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - preset.running_var_correction)
        new_mean[ch] = (1.0 - weight) * float(running_mean[ch]) + weight * mean
        new_var[ch] = (1.0 - weight) * float(running_var[ch]) + weight * var
    return y, new_mean, new_var


def _canonical_key(i: tuple[int, ...]) -> tuple[int, int]:
    return (i[0], i[2])


def center(x):
    return _normalize_by_groups(x, _canonical_key, lambda v: _standardized(v, 0.0, divide=False))


def standardize(x, *, eps):
    return _normalize_by_groups(x, _canonical_key, lambda v: _standardized(v, eps))


def scale(x, *, eps):
    return _normalize_by_groups(x, _canonical_key, lambda v: _standardized(v, eps, center=False))


def rms_scale(x, *, eps):
    return _normalize_by_groups(x, _canonical_key, lambda v: _rms_scaled(v, eps))


class Reference(NamedTuple):
    """An independent forward, and the relative tolerance (of the output's size) it is held to.

    ``compute`` returns the output, or a tuple of the outputs in the order of the op's
    :attr:`~normref.registry.OpSpec.outputs`.
    """

    compute: Callable[..., Any]
    rtol: float


# Both are float64 evaluations of unit-normal data in groups of n <= 100 (the samplers' shapes).
# normref's pairwise sums err by at most ceil(log2 n) u of the summed magnitudes, the reference's
# fsum by u/2; by Samuelson's inequality |x_i - mean| / std <= sqrt(n - 1) < 10, so the centred
# values, the divisor and the affine (about 6 roundings an element) leave each output within
# (ceil(log2 n) + 6) * 10 * u ~ 130 u of the output's largest magnitude: 1e-13 is 450 u.
STANDARDIZATION_REFERENCES: dict[str, Reference] = {
    f.__name__: Reference(f, 1e-13)
    for f in (
        batch_norm,
        instance_norm,
        group_norm,
        ghost_batch_norm,
        layer_norm,
        rms_norm,
        batch_norm_inference,
        batch_norm_train,
        center,
        standardize,
        scale,
        rms_scale,
    )
}

REFERENCES: dict[str, Reference] = {
    **STANDARDIZATION_REFERENCES,
    **{name: Reference(*entry) for name, entry in LAYER_REFERENCES.items()},
    **{name: Reference(*entry) for name, entry in WEIGHT_REFERENCES.items()},
    **{name: Reference(*pair) for name, pair in WHITENING_FORMULATIONS.items()},
}
