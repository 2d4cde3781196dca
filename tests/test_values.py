"""Forward values against the independent float64 formulations of tests/reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.checked.formats import ulp
from normref.registry import REGISTRY
from tests.reference import REFERENCES
from tests.registry_cases import draw, on_backend, outputs, rounded
from tests.support import Backend, assert_close_to_scale

REFERENCED = [pytest.param(REGISTRY[name], id=name) for name in REFERENCES]


def test_every_registry_op_has_an_independent_reference():
    assert set(REGISTRY) == set(REFERENCES)


@pytest.mark.parametrize("spec", REFERENCED)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_float64_matches_reference(spec, seed, backend: Backend):
    sample = draw(spec, seed)
    reference = REFERENCES[spec.name]
    expected = outputs(spec, reference.compute(*sample.args.values(), **sample.kwargs))
    actual = outputs(spec, spec.call(on_backend(sample, backend)))
    for name, value in expected.items():
        assert_close_to_scale(
            backend.to_numpy(actual[name]),
            value,
            np.max(np.abs(value)),
            rtol=reference.rtol,
            what=f"{name} of {spec.name} on {backend.name}",
        )


@pytest.mark.parametrize("spec", REFERENCED)
def test_forward_without_affine_matches_reference(spec, standard_backend: Backend):
    sample = spec.without_affine(draw(spec, 7))
    reference = REFERENCES[spec.name]
    expected = outputs(spec, reference.compute(*sample.args.values(), **sample.kwargs))
    actual = outputs(spec, spec.call(on_backend(sample, standard_backend)))
    for name, value in expected.items():
        assert_close_to_scale(
            standard_backend.to_numpy(actual[name]),
            value,
            np.max(np.abs(value)),
            rtol=reference.rtol,
            what=f"{name} of {spec.name}",
        )


def _ulps_beyond_rounding(spec, y: np.ndarray, expected: np.ndarray, dtype: str) -> float:
    """How far (in ulps of ``dtype``) ``y`` is beyond its bound as a float64 result rounded once.

    normref's float64 result is within the reference's ``rtol * max|expected|`` of it
    (:func:`test_forward_float64_matches_reference`); rounding it to ``dtype`` adds half an ulp of
    itself, which is at most one ulp of ``expected`` (the two may lie on either side of a
    power of two). Positive: out of bound.
    """
    unit = ulp(expected, dtype)
    float64_error = REFERENCES[spec.name].rtol * np.max(np.abs(expected))
    return float(np.max(np.abs(y - expected) / unit - 1.0 - float64_error / unit))


@pytest.mark.parametrize("spec", REFERENCED)
def test_highest_precision_rounds_once_to_the_input_dtype(spec, backend: Backend):
    """float16/bfloat16/float32 output is the float64 result rounded once (see
    :func:`_ulps_beyond_rounding`)."""
    for dtype in (d for d in backend.dtypes if d != "float64"):
        sample = rounded(draw(spec, 3), backend, dtype)
        expected = REFERENCES[spec.name].compute(*sample.args.values(), **sample.kwargs)
        actual = outputs(spec, spec.call(on_backend(sample, backend, dtype)))
        for name, value in outputs(spec, expected).items():
            y = actual[name]
            assert str(y.dtype).endswith(dtype), f"{spec.name}: {name} {y.dtype} for {dtype}"
            excess = _ulps_beyond_rounding(spec, backend.to_numpy(y), value, dtype)
            assert excess <= 0.0, f"{name} of {spec.name} {dtype}: {excess:.2f} ulp over"


DTYPE_SCALES = {
    # float16 holds up to 65504: unit-normal data times 1e2 stays well inside it
    "float16": [1e-2, 1.0, 1e2],
    "float32": [1e-4, 1.0, 1e4],
}


@pytest.mark.parametrize("spec", REFERENCED)
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_any_shape_dtype_and_scale_rounds_once(spec, seed, data, standard_backend: Backend):
    """Hypothesis over shapes (drawn from the seed), axes, dtypes and scales: rounded once."""
    dtype = data.draw(st.sampled_from([d for d in standard_backend.dtypes if d in DTYPE_SCALES]))
    scale = data.draw(st.sampled_from(DTYPE_SCALES[dtype]))
    base = draw(spec, seed)
    scaled = base.replace(**{spec.primary: base.args[spec.primary] * scale})
    sample = rounded(scaled, standard_backend, dtype)
    expected = REFERENCES[spec.name].compute(*sample.args.values(), **sample.kwargs)
    actual = outputs(spec, spec.call(on_backend(sample, standard_backend, dtype)))
    for name, value in outputs(spec, expected).items():
        y = standard_backend.to_numpy(actual[name])
        assert _ulps_beyond_rounding(spec, y, value, dtype) <= 0.0, name
