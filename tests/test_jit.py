"""The registry's traceability is true both ways: ``jax.jit`` traces what it says is traceable,
with the eager result, and refuses what reads values."""

from __future__ import annotations

import numpy as np
import pytest

from normref.registry import REGISTRY, OpSpec, Sample
from tests.registry_cases import draw, output

jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
jnp = jax.numpy


@pytest.fixture(autouse=True)
def _x64():
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _arrays(sample: Sample) -> dict[str, object]:
    return {k: jnp.asarray(v) for k, v in sample.args.items() if isinstance(v, np.ndarray)}


def _vjp(spec: OpSpec, sample: Sample, arrays: dict[str, object]) -> object:
    on = sample.replace(**arrays)
    return spec.call_vjp(jnp.ones_like(output(spec, on)), on)


@pytest.mark.parametrize("spec", [pytest.param(s, id=n) for n, s in REGISTRY.items()])
def test_jit_traces_exactly_what_the_registry_says(spec: OpSpec):
    sample = draw(spec, 0)
    arrays = _arrays(sample)
    forward = jax.jit(lambda a: spec.call(sample.replace(**a)))
    steps = [
        (
            "forward",
            forward,
            spec.call(sample.replace(**arrays)),
            spec.capabilities.traceable_forward,
        )
    ]
    if spec.vjp is not None:
        vjp = jax.jit(lambda a: _vjp(spec, sample, a))
        eager = _vjp(spec, sample, arrays) if spec.capabilities.traceable_forward else None
        steps.append(("vjp", vjp, eager, spec.capabilities.traceable_vjp))
    for what, traced, eager, traceable in steps:
        if not traceable:
            with pytest.raises(jax.errors.JAXTypeError):
                traced(arrays)
            continue
        found, expected = jax.tree.leaves(traced(arrays)), jax.tree.leaves(eager)
        assert len(found) == len(expected), what
        for a, b in zip(found, expected, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
