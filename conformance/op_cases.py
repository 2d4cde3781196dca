"""Edge cases of single ops, beside the ones every op gets (:mod:`conformance.cases`).

Each :class:`OpCase` derives an input from the op's typical sample: a zero
unit of a weight, a zero weight, an AGC unit exactly at its clipping threshold,
gradients whose global norm is so small that an ``eps`` of 1e-6 matters, one
case per nonlinearity, covariances with repeated eigenvalues (the gradient of
PCA whitening and of decorrelation does not exist there: normref raises, so the
case is an error path for them) or nearly singular ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.terms_whitening import CANONICAL_METHODS
from normref._lib.units import fan_in_axes
from normref.nonlinearities import NONLINEARITIES
from normref.registry import Sample

Make = Callable[[object, Sample, np.random.Generator], Sample]


class OpCase(NamedTuple):
    """A case of one op: its name, what it exercises, and how to make it from a sample."""

    name: str
    description: str
    make: Make


def _unit(sample: Sample, primary: str, index: int = 0) -> tuple[int, ...]:
    """The index of unit ``index`` of the weight ``primary`` (all of its fan-in)."""
    w = sample.args[primary]
    axis = sample.kwargs["out_axis"] % w.ndim
    return tuple(index if a == axis else slice(None) for a in range(w.ndim))


def _zero_unit(primary: str) -> Make:
    def make(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
        w = sample.args[primary].copy()
        w[_unit(sample, primary)] = 0.0
        return sample.replace(**{primary: w})

    return make


def _zero(*names: str) -> Make:
    def make(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
        return sample.replace(**{n: np.zeros_like(sample.args[n]) for n in names})

    return make


def _variance_at_eps(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    """Unit 0 scaled so that ``N var = eps``: the kink of ``max(N var, eps)``."""
    w = sample.args["w"].copy()
    index = _unit(sample, "w")
    unit = w[index]
    w[index] = unit * math.sqrt(sample.kwargs["eps"] / (unit.size * unit.var()))
    return sample.replace(w=w)


def _agc_units(sample: Sample) -> tuple[np.ndarray, tuple[int, ...]]:
    grad = sample.args["grad"]
    return grad, fan_in_axes(grad.ndim, sample.kwargs["out_axis"] % grad.ndim)


def _at_threshold(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    """Every unit's gradient norm exactly its threshold ``clipping * max(||W||, eps)``."""
    grad, axes = _agc_units(sample)
    param = sample.args["param"]
    norm = np.sqrt(np.sum(grad * grad, axis=axes, keepdims=True))
    threshold = sample.kwargs["clipping"] * np.maximum(
        np.sqrt(np.sum(param * param, axis=axes, keepdims=True)), sample.kwargs["eps"]
    )
    return sample.replace(grad=grad * threshold / norm)


def _zero_param_unit(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    param = sample.args["param"].copy()
    param[_unit(sample, "param")] = 0.0
    return sample.replace(param=param)


def _small_norm(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    """Gradients of global norm 4e-6, clipped to 2e-6: torch's 1e-6 changes the factor by 20%."""
    grad, bias = sample.args["grad"], sample.args["bias_grad"]
    scale = 4e-6 / math.sqrt(float(np.sum(grad * grad) + np.sum(bias * bias)))
    return sample.replace(grad=grad * scale, bias_grad=bias * scale, max_norm=2e-6)


def _below_max_norm(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    grad, bias = sample.args["grad"], sample.args["bias_grad"]
    norm = math.sqrt(float(np.sum(grad * grad) + np.sum(bias * bias)))
    return sample.replace(max_norm=2.0 * norm)


def _nonlinearity(name: str) -> Make:
    return lambda _op, sample, _rng: sample.replace(nonlinearity=name)


def _alpha_zero(_op: object, sample: Sample, _rng: np.random.Generator) -> Sample:
    return sample.replace(alpha=np.zeros_like(sample.args["alpha"]))


def _canonical(op: object, sample: Sample) -> tuple[object, np.ndarray]:
    partition = op.partition(sample)
    x = np.asarray(partition.to_canonical(xp_numpy, np.ascontiguousarray(sample.args["x"])))
    return partition, x


def _from_canonical(partition: object, x: np.ndarray) -> np.ndarray:
    return np.asarray(partition.from_canonical(xp_numpy, np.ascontiguousarray(x)))


def _repeated_eigenvalues(op: object, sample: Sample, rng: np.random.Generator) -> Sample:
    """Each group's samples ``+-a e_k`` (and zeros): its covariance is ``2 a^2 / M`` times the
    identity, exactly, in every dtype; every eigenvalue is repeated."""
    partition, x = _canonical(op, sample)
    g, m, d = x.shape
    groups = np.zeros_like(x)
    for k in range(min(d, m // 2)):
        groups[:, 2 * k, k], groups[:, 2 * k + 1, k] = 1.0, -1.0
    groups *= np.round(rng.uniform(1.0, 4.0, size=(g, 1, 1)) * 8) / 8
    return sample.replace(x=_from_canonical(partition, groups))


def _near_singular(op: object, sample: Sample, rng: np.random.Generator) -> Sample:
    """Feature 1 a copy of feature 0 up to 1e-3 of its scale: the covariance's smallest
    eigenvalue is about ``1e-6`` of the largest, plus ``eps``."""
    partition, x = _canonical(op, sample)
    if x.shape[2] < 2:
        return sample
    x = x.copy()
    x[..., 1] = x[..., 0] + 1e-3 * np.std(x[..., 0]) * rng.standard_normal(x[..., 0].shape)
    return sample.replace(x=_from_canonical(partition, x))


_SPECTRAL = (OpCase("zero-weight", "a zero weight: sigma is 0", _zero("w")),)
_WHITENING = (
    OpCase(
        "repeated-eigenvalues",
        "isotropic groups: every eigenvalue of the covariance repeated",
        _repeated_eigenvalues,
    ),
    OpCase(
        "near-singular",
        "one feature a copy of another up to 1e-3: a nearly singular covariance",
        _near_singular,
    ),
)

OP_CASES: dict[str, tuple[OpCase, ...]] = {
    "scaled_weight_standardize": (
        OpCase(
            "variance-at-eps", "unit 0 with N var = eps: the kink of max_fan_in", _variance_at_eps
        ),
    ),
    "weight_norm": (OpCase("zero-unit", "unit 0 all zeros: no direction", _zero_unit("v")),),
    "unitwise_norm": (OpCase("zero-unit", "unit 0 all zeros", _zero_unit("x")),),
    "spectral_norm": _SPECTRAL,
    "spectral_norm_train": _SPECTRAL,
    "adaptive_grad_clip": (
        OpCase(
            "clip-boundary",
            "every unit's gradient norm at its clipping threshold",
            _at_threshold,
        ),
        OpCase(
            "zero-weight-unit",
            "unit 0 of the parameter zero: its threshold is clipping * eps",
            _zero_param_unit,
        ),
        OpCase("zero-gradient-unit", "unit 0 of the gradient zero", _zero_unit("grad")),
    ),
    "clip_by_global_norm": (
        OpCase("below-max-norm", "global norm half of max_norm: no clipping", _below_max_norm),
        OpCase(
            "small-norm",
            "global norm 4e-6 clipped to 2e-6: an eps of 1e-6 changes the factor by 20%",
            _small_norm,
        ),
        OpCase("zero-gradients", "every gradient zero", _zero("grad", "bias_grad")),
    ),
    "gamma_scaled_nonlinearity": tuple(
        OpCase(name, f"{name} times its gain", _nonlinearity(name)) for name in NONLINEARITIES
    ),
    "skip_init_residual": (
        OpCase("alpha-zero", "alpha = 0: SkipInit at initialization", _alpha_zero),
    ),
    **dict.fromkeys((*CANONICAL_METHODS, "batch_whiten"), _WHITENING),
}
"""The edge cases of each op beside the common ones."""
