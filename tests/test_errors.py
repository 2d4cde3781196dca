"""Bad input gets a clear error; inputs are never modified; edge values stay finite or propagate."""

from __future__ import annotations

import numpy as np
import pytest

import normref
from normref.registry import REGISTRY, OpSpec
from tests.registry_cases import draw, on_backend, op_params, output, outputs
from tests.support import Backend

ERROR_CASES = [
    pytest.param(spec, case, id=f"{name}-{case.description}")
    for name, spec in REGISTRY.items()
    for case in spec.errors
]


@pytest.mark.parametrize(("spec", "case"), ERROR_CASES)
def test_registered_error_cases(spec: OpSpec, case, standard_backend: Backend):
    invalid = case.modify(draw(spec, 0))
    bad = on_backend(invalid, standard_backend)
    with pytest.raises(case.exception, match=case.match):
        spec.call(bad)
    if spec.vjp is None:
        return
    # every op's output has its primary input's shape
    dy = standard_backend.asarray(np.ones(np.shape(invalid.args[spec.primary])), "float64")
    with pytest.raises(case.exception, match=case.match):
        spec.call_vjp(dy, bad)


@pytest.mark.parametrize("spec", op_params())
def test_integer_input_is_a_type_error(spec: OpSpec):
    sample = draw(spec, 0)
    name = spec.primary
    bad = sample.replace(**{name: np.ones(sample.args[name].shape, dtype=np.int64)})
    with pytest.raises(TypeError, match=f"{name} must have a real floating dtype, got int64"):
        spec.call(bad)


@pytest.mark.parametrize("spec", op_params())
def test_non_array_input_is_a_type_error(spec: OpSpec):
    sample = draw(spec, 0)
    name = spec.primary
    with pytest.raises(TypeError, match=f"{name} must be an array, got list"):
        spec.call(sample.replace(**{name: sample.args[name].tolist()}))


@pytest.mark.parametrize("spec", [p for p in op_params() if len(p.values[0].arrays) > 1])
def test_mixed_namespaces_name_the_arguments(spec: OpSpec):
    import array_api_strict

    sample = draw(spec, 0)
    other = next(n for n in spec.arrays[1:] if sample.args.get(n) is not None)
    mixed = sample.replace(**{other: array_api_strict.asarray(sample.args[other])})
    with pytest.raises(
        TypeError,
        match=rf"different array libraries \({spec.primary} is .*numpy, {other} is array_api_strict",
    ):
        spec.call(mixed)


@pytest.mark.parametrize("spec", [p for p in op_params() if "eps" in draw(p.values[0], 0).kwargs])
@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf")])
def test_eps_must_be_finite_and_positive(spec: OpSpec, eps: float):
    sample = draw(spec, 0).replace(eps=eps)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got"):
        spec.call(sample)


@pytest.mark.parametrize("spec", [p for p in op_params() if "eps" in draw(p.values[0], 0).kwargs])
def test_eps_may_be_a_numpy_scalar(spec: OpSpec):
    """``eps=np.finfo(np.float32).eps`` (a float32 scalar) is the number it holds."""
    sample = draw(spec, 0)
    eps = np.float32(sample.kwargs["eps"])
    from_numpy = outputs(spec, spec.call(sample.replace(eps=eps)))
    from_python = outputs(spec, spec.call(sample.replace(eps=float(eps))))
    for name, value in from_python.items():
        np.testing.assert_array_equal(np.asarray(from_numpy[name]), np.asarray(value), name)
    with pytest.raises(TypeError, match=r"eps must be a number, got bool"):
        spec.call(sample.replace(eps=True))


@pytest.mark.parametrize("spec", op_params(with_vjp=True))
def test_cotangent_of_the_wrong_shape(spec: OpSpec):
    sample = draw(spec, 0)
    dy = np.ones((*np.shape(output(spec, sample)), 2))
    with pytest.raises(ValueError, match="dy must have shape"):
        spec.call_vjp(dy, sample)


@pytest.mark.parametrize("spec", op_params())
@pytest.mark.parametrize("precision", ["float64", "exact", 3])
def test_unknown_precision(spec: OpSpec, precision):
    with pytest.raises((ValueError, TypeError), match="precision must be 'highest', 'native'"):
        spec.call(draw(spec, 0).replace(precision=precision))


@pytest.mark.parametrize(
    ("eps_mode", "divisor"),
    [
        ("add", lambda v, eps: np.sqrt(v + eps)),
        ("max", lambda v, eps: np.sqrt(np.maximum(v, eps))),
        ("add_std", lambda v, eps: np.sqrt(v) + eps),
    ],
)
def test_a_negative_running_variance_gives_what_the_formula_gives(eps_mode, divisor):
    """Unchecked, as documented: NaN where the square root's argument is negative."""
    running_var, eps = np.array([-1.0, -1e-9, 1.0]), 1e-5
    with np.errstate(invalid="ignore"):
        expected = 1.0 / divisor(running_var, eps)
        y = normref.batch_norm_inference(
            np.ones((2, 3)), np.zeros(3), running_var, eps=eps, eps_mode=eps_mode
        )
    np.testing.assert_allclose(
        y, np.broadcast_to(expected, (2, 3)), rtol=4 * np.finfo(np.float64).eps, equal_nan=True
    )


def test_eps_mode_must_be_known():
    with pytest.raises(ValueError, match=r"eps_mode must be one of \('add', 'max', 'add_std'\)"):
        normref.batch_norm(np.ones((2, 3)), eps_mode="inside")


@pytest.mark.parametrize("spec", op_params())
def test_inputs_are_never_modified(spec: OpSpec, backend: Backend):
    sample = on_backend(draw(spec, 2), backend)
    before = {k: backend.to_numpy(v).copy() for k, v in sample.args.items() if hasattr(v, "shape")}
    y = output(spec, sample)
    dy = backend.asarray(np.ones(backend.to_numpy(y).shape), "float64")
    dy_before = backend.to_numpy(dy).copy()
    if spec.vjp is not None:
        spec.call_vjp(dy, sample)
    for k, v in before.items():
        np.testing.assert_array_equal(backend.to_numpy(sample.args[k]), v, err_msg=k)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_before)


def _group_constant(spec: OpSpec, sample) -> np.ndarray:
    import array_api_compat.numpy as xp

    part = spec.partition(sample)
    values = np.arange(part.G * part.D, dtype=np.float64).reshape(part.G, 1, part.D)
    return np.asarray(part.from_canonical(xp, np.broadcast_to(values, (part.G, part.M, part.D))))


@pytest.mark.parametrize("spec", [p for p in op_params() if p.values[0].partition is not None])
def test_constant_groups_give_finite_outputs_and_gradients(spec: OpSpec, standard_backend: Backend):
    """A constant group gives finite outputs and gradients, or, where the gradient does not exist
    there (every eigenvalue of its covariance is eps: they all coincide), the documented error."""
    sample = draw(spec, 3)
    constant = sample.replace(**{spec.primary: _group_constant(spec, sample)})
    y = output(spec, on_backend(constant, standard_backend))
    assert np.all(np.isfinite(standard_backend.to_numpy(y)))
    if spec.vjp is None:
        return
    dy = standard_backend.asarray(np.ones(np.shape(output(spec, constant))), "float64")
    if "gradient_undefined_at_ties" in spec.properties:
        with pytest.raises(ValueError, match="repeated eigenvalues"):
            spec.call_vjp(dy, on_backend(constant, standard_backend))
        return
    grads = spec.call_vjp(dy, on_backend(constant, standard_backend))
    for name in spec.differentiable:
        if getattr(grads, name) is not None:
            assert np.all(np.isfinite(standard_backend.to_numpy(getattr(grads, name)))), name


@pytest.mark.parametrize("spec", [p for p in op_params() if p.values[0].partition is not None])
def test_nan_propagates_to_its_group_only(spec: OpSpec, standard_backend: Backend):
    """A NaN poisons its group: all M samples of its D jointly normalized features (D = 1 for
    per-feature operations); with fixed statistics, only its own sample's D features."""
    import array_api_compat.numpy as xp

    sample = spec.without_affine(draw(spec, 4))
    x = sample.args[spec.primary].copy()
    x.flat[0] = np.nan
    part = spec.partition(sample)
    poisoned_sample = sample.replace(**{spec.primary: x})
    y = standard_backend.to_numpy(output(spec, on_backend(poisoned_sample, standard_backend)))
    canonical = np.asarray(part.to_canonical(xp, y))
    nan_in = np.isnan(np.asarray(part.to_canonical(xp, x)))
    if "fixed_statistics" in spec.properties:
        poisoned = nan_in.any(axis=2, keepdims=True)
    else:
        poisoned = nan_in.any(axis=(1, 2), keepdims=True)
    poisoned = np.broadcast_to(poisoned, canonical.shape)
    assert np.isnan(canonical[poisoned]).all()
    assert np.isfinite(canonical[~poisoned]).all()


@pytest.mark.parametrize("axis", [True, 1.0, "1", None])
def test_axis_must_be_an_integer(axis):
    with pytest.raises(TypeError, match=f"axis must be an integer, got {type(axis).__name__}"):
        normref.batch_norm(np.ones((4, 3)), axis=axis)
