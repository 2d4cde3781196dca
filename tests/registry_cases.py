"""Registry-driven parametrization: which ops to run a test over, and samples as backend arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from normref.registry import REGISTRY, OpSpec, Sample
from tests.support import Backend


def op_params(
    family: str | None = None, *, needs: str | None = None, with_vjp: bool = False
) -> list[Any]:
    """``pytest.param`` for every registry op (of ``family``; with property ``needs``; with a
    VJP)."""
    return [
        pytest.param(spec, id=name)
        for name, spec in REGISTRY.items()
        if (family is None or spec.family == family)
        and (needs is None or needs in spec.properties)
        and (not with_vjp or spec.vjp is not None)
    ]


HELD_CONSTANT = frozenset({"state_held_constant", "corrections_held_constant"})
"""Properties of ops whose VJP holds something the forward computes constant."""


def derivative_params() -> list[Any]:
    """The ops whose VJP is the derivative of their output ``y`` (every op with a VJP but those
    that hold their state or corrections constant, whose VJP is checked by a test of their
    own)."""
    return [p for p in op_params(with_vjp=True) if not HELD_CONSTANT & p.values[0].properties]


def outputs(spec: OpSpec, result: Any) -> dict[str, Any]:
    """A forward's (or an independent reference's) ``result`` by output name."""
    return spec.output_values(result)


def output(spec: OpSpec, sample: Sample) -> Any:
    """The forward's output ``y`` on ``sample`` (without the state some ops also return)."""
    return spec.output_values(spec.call(sample))["y"]


def draw(spec: OpSpec, seed: int, shape: tuple[int, ...] | None = None) -> Sample:
    """A valid float64 NumPy sample of ``spec``'s inputs, reproducible from ``seed``."""
    return spec.sample(np.random.default_rng(seed), shape)


def on_backend(sample: Sample, backend: Backend, dtype: str = "float64") -> Sample:
    """``sample`` with its arrays converted to ``backend`` arrays of ``dtype``."""

    def convert(value: Any) -> Any:
        return backend.asarray(value, dtype) if isinstance(value, np.ndarray) else value

    return Sample(
        {k: convert(v) for k, v in sample.args.items()},
        {k: convert(v) for k, v in sample.kwargs.items()},
    )


def rounded(sample: Sample, backend: Backend, dtype: str) -> Sample:
    """``sample`` with its arrays rounded to ``dtype`` by ``backend``, back as float64 NumPy."""
    on = on_backend(sample, backend, dtype)

    def back(name: str, value: Any) -> Any:
        if not isinstance(sample.args[name], np.ndarray):
            return value
        return np.asarray(backend.to_numpy(value), dtype=np.float64)

    return Sample({k: back(k, v) for k, v in on.args.items()}, sample.kwargs)


def array_args(spec: OpSpec, sample: Sample) -> dict[str, np.ndarray]:
    """The array arguments of ``sample`` that are not ``None``."""
    return {k: v for k, v in sample.args.items() if k in spec.arrays and v is not None}
