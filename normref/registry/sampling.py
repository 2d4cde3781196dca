"""What the registry's families share: drawing valid inputs, deriving invalid ones, and
deriving special ones.

Samplers take a ``numpy.random.Generator`` from the caller (random numbers are
not part of the Array API) and return float64 NumPy arrays; the special inputs
change them with the Array API functions of their namespace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat

from normref.partition import fan_in_axes
from normref.registry.spec import ErrorCase, OpSpec, Rng, Sample, ScalingLaw, SpecialInput

EPS_MODE = (("eps_mode", "eps_mode"),)
"""The convention keyword of the operations that take the convention's ``eps_mode``."""

VARIANCE_EPS = {"add": 2, "max": 2, "add_std": 1}
"""The power of ``eps`` in a scaling law, by ``eps_mode``: compared with a variance (2) or
added to a standard deviation (1)."""


def normalizing_law(
    primary: str = "x", *parameters: str, eps: dict[str, int] | None = None
) -> ScalingLaw:
    """The law of an operation that normalizes ``primary``: ``eps`` scaled alike (by default as
    a variance), the output unchanged, the gradient of ``primary`` times ``2**-k``, those of
    the affine ``parameters`` unchanged."""
    return ScalingLaw(
        inputs={primary: 1},
        outputs={"y": 0},
        gradients={primary: -1, **dict.fromkeys(parameters, 0)},
        eps=VARIANCE_EPS if eps is None else eps,
    )


SINGLE_SAMPLE = "needs at least 2 samples per group"
"""What the refusal of a group of one sample with the unbiased variance (``correction=1``)
says: a lone sample has a biased variance, 0, but no unbiased one."""


def normal(rng: Rng, shape: tuple[int, ...]) -> Any:
    """Standard normal values of ``shape``."""
    return rng.standard_normal(shape)


def positive(rng: Rng, shape: tuple[int, ...]) -> Any:
    """Values in [0.5, 1.5) of ``shape`` (a variance, a scale)."""
    return 0.5 + rng.random(shape)


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def x_shape(sample: Sample) -> tuple[int, ...]:
    """The shape of the sample's ``x``."""
    return tuple(sample.args["x"].shape)


def replace_arg(name: str, make: Callable[[Any], Any]) -> Callable[[Sample], Sample]:
    """A modification of a sample that replaces argument ``name`` by ``make(value)``."""
    return lambda s: s.replace(**{name: make(s.args[name])})


def wrong_param(name: str) -> ErrorCase:
    """``name`` (a parameter of one value per channel or position) of another shape."""

    def modify(sample: Sample) -> Sample:
        bad = sample.args[name]
        return sample.replace(**{name: bad[:-1] if bad.shape[-1] > 1 else bad.reshape((1, 1))})

    return ErrorCase(f"{name} of the wrong shape", modify, ValueError, f"{name} must have shape")


CHANNEL_ERRORS = (
    wrong_param("gamma"),
    wrong_param("beta"),
    ErrorCase(
        "axis out of range", lambda s: s.replace(axis=9), ValueError, r"axis=9 is out of range"
    ),
)
"""The invalid inputs of every layer with per-channel parameters."""

CANONICAL_RANK = ErrorCase(
    "x not of rank 3",
    lambda s: s.replace(x=s.args["x"].reshape((-1,))),
    ValueError,
    r"canonical shape \(G, M, D\)",
)
"""An operation on the canonical ``(G, M, D)`` layout given another rank."""


def one_sample_canonical(sample: Sample) -> Sample:
    """The canonical ``x`` cut to one sample per group, with the unbiased variance."""
    return sample.replace(x=sample.args["x"][:, :1, :], correction=1)


# ---------------------------------------------------------------------------
# Weights and gradients: one axis of output units (``out_axis``), the rest the fan-in.


def weight_shape(rng: Rng, shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], int]:
    """A weight shape and its out_axis (0 or -1), every unit with a fan-in >= 2."""
    if shape is None:
        rank = int(rng.integers(2, 5))
        units, fan_in_sizes = int(rng.integers(2, 5)), [int(rng.integers(2, 4))]
        fan_in_sizes += [int(s) for s in rng.integers(1, 3, size=rank - 2)]
        out_axis = int(rng.choice([0, -1]))
        shape = (units, *fan_in_sizes) if out_axis == 0 else (*fan_in_sizes, units)
        return shape, out_axis
    out_axis = int(rng.choice([0, -1]))
    if math.prod(shape) // shape[out_axis] < 2:
        out_axis = -1 - out_axis  # the other layout has the larger fan-in
    return tuple(shape), out_axis


def unit_param(rng: Rng, shape: tuple[int, ...], out_axis: int) -> Any:
    """One value near 1 per output unit (a gain, weight norm's ``g``)."""
    return 1.0 + 0.5 * rng.standard_normal((shape[out_axis],))


def unit_index(sample: Sample, primary: str, index: int = 0) -> tuple[Any, ...]:
    """The index of unit ``index`` of the weight ``primary`` (all of its fan-in)."""
    w = sample.args[primary]
    axis = sample.kwargs["out_axis"] % w.ndim
    return tuple(index if a == axis else slice(None) for a in range(w.ndim))


def sample_fan_in_axes(sample: Sample, primary: str) -> tuple[int, ...]:
    """The fan-in axes of the sample's weight ``primary``."""
    w = sample.args[primary]
    return fan_in_axes(w.ndim, sample.kwargs["out_axis"] % w.ndim)


def zero_unit(primary: str, name: str, description: str) -> SpecialInput:
    """Unit 0 of the weight ``primary`` all zeros."""

    def make(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
        w = sample.args[primary]
        xp = array_api_compat.array_namespace(w)
        w = xp.asarray(w, copy=True)
        w[unit_index(sample, primary)] = 0.0
        return sample.replace(**{primary: w})

    return SpecialInput(name, description, make)


def zeros(name: str, description: str, *arrays: str) -> SpecialInput:
    """Every one of ``arrays`` all zeros."""

    def make(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
        xp = array_api_compat.array_namespace(sample.args[arrays[0]])
        return sample.replace(**{n: xp.zeros_like(sample.args[n]) for n in arrays})

    return SpecialInput(name, description, make)
