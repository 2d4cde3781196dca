"""Every VJP against finite differences in float64, and the adjoint identity <J v, u> = <v, J^T u>."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normref.registry import OpSpec, Sample
from tests.registry_cases import array_args, derivative_params, draw, on_backend, output
from tests.support import Backend, assert_within, fd_jvp, fd_vjp


def _forward_numpy(spec: OpSpec, sample: Sample):
    def f(**arrays):
        return output(spec, sample.replace(**arrays))

    return f


def _vjp_on(spec: OpSpec, sample: Sample, dy: np.ndarray, backend: Backend):
    return spec.call_vjp(backend.asarray(dy, "float64"), on_backend(sample, backend))


@pytest.mark.parametrize("spec", derivative_params())
@pytest.mark.parametrize("seed", [0, 1])
def test_vjp_matches_finite_differences(spec: OpSpec, seed: int, backend: Backend):
    sample = draw(spec, seed)
    y = output(spec, sample)
    dy = np.random.default_rng(100 + seed).standard_normal(np.shape(y))
    grads = _vjp_on(spec, sample, dy, backend)
    assert tuple(grads._fields) == spec.differentiable
    f = _forward_numpy(spec, sample)
    args = array_args(spec, sample)
    for name in spec.differentiable:
        if name not in args:
            assert getattr(grads, name) is None
            continue
        expected, bound = fd_vjp(f, args, dy, name)
        assert_within(
            backend.to_numpy(getattr(grads, name)),
            expected,
            bound,
            what=f"d{name} of {spec.name} on {backend.name}",
        )


@pytest.mark.parametrize("spec", derivative_params())
def test_vjp_without_affine(spec: OpSpec, standard_backend: Backend):
    sample = spec.without_affine(draw(spec, 5))
    dy = np.random.default_rng(5).standard_normal(np.shape(output(spec, sample)))
    grads = _vjp_on(spec, sample, dy, standard_backend)
    for name in spec.affine_args:
        assert getattr(grads, name) is None
    expected, bound = fd_vjp(
        _forward_numpy(spec, sample), array_args(spec, sample), dy, spec.primary
    )
    assert_within(
        standard_backend.to_numpy(getattr(grads, spec.primary)),
        expected,
        bound,
        what=f"d{spec.primary} of {spec.name}",
    )


@pytest.mark.parametrize("spec", derivative_params())
def test_adjoint_identity(spec: OpSpec, standard_backend: Backend):
    """<J v, u> from a finite-difference JVP equals <v, J^T u> from the VJP, on a larger input."""
    rng = np.random.default_rng(11)
    sample = draw(spec, 11)
    x_shape = sample.args[spec.primary].shape
    sample = spec.sample(rng, tuple(2 * s if i < 2 else s for i, s in enumerate(x_shape)))
    args = array_args(spec, sample)
    u = rng.standard_normal(np.shape(output(spec, sample)))
    v = {
        name: rng.standard_normal(args[name].shape) for name in spec.differentiable if name in args
    }
    jv, jv_error = fd_jvp(_forward_numpy(spec, sample), args, v)
    grads = _vjp_on(spec, sample, u, standard_backend)
    products = [np.ravel(jv * u)]
    products += [-np.ravel(v[n] * standard_backend.to_numpy(getattr(grads, n))) for n in v]
    terms = np.concatenate(products)
    gap = math.fsum(terms)
    bound = 1e-9 * math.fsum(np.abs(terms)) + math.fsum(np.ravel(jv_error * np.abs(u)))
    assert abs(gap) <= bound, f"{spec.name}: <Jv,u> - <v,J^T u> = {gap:.3e} > {bound:.3e}"
