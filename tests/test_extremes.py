"""Results at the extremes of the floating-point range against exact (mpmath) values.

The scaling laws (``tests/test_scaling_laws.py``) hold exactly wherever the scaled numbers
are normal; beyond that, where the inputs are subnormal or where ``eps``, scaled alike,
would underflow or overflow, the law says nothing, so every operation with a law is
compared here with its definition evaluated in mpmath (``tests/reference_extremes.py``),
at a fixed ``eps``: its inputs that scale with the primary one (power 1 in its law)
are set subnormal (integer multiples of the smallest subnormal), tiny (times
``2**-600``, where ``eps`` dominates), huge (times ``2**600``, where sums of squares of
the unscaled values overflow) and at the top of the range (largest magnitude ``2**1020``).

Bounds: a forward is held to its independent reference's tolerance
(``tests/reference.py``: ``rtol`` times the output's largest magnitude), a gradient to
:data:`tests.support.FD_RTOL` of the gradient's largest magnitude (as every gradient test
does against finite differences); both plus a few of the smallest subnormal, the spacing
of results that underflow into the subnormal range.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest

from normref.registry import OpSpec, Sample
from tests import reference_extremes as exact
from tests.reference import REFERENCES
from tests.registry_cases import op_params
from tests.support import FD_RTOL

SMALLEST = 2.0**-1074
SUBNORMAL_SLACK = 8 * SMALLEST
"""Results in the subnormal range are rounded to multiples of the smallest subnormal, once
or through a few operations: a few of it absolute."""

SCALES = ("subnormal", "tiny", "huge", "largest")

LAWFUL = [p for p in op_params() if not p.values[0].scaling.reason]


def _small_sample(spec: OpSpec) -> Sample:
    """The registry's sample with the fewest values of the primary input among a few seeds,
    of groups of 3 samples or more: a group of two normalizes to +-1 whatever its values
    (with eps negligible), so that its gradient is 0 by an exact cancellation of terms the
    differences do not see."""
    samples = [spec.sample(np.random.default_rng(seed)) for seed in range(24)]
    if spec.partition is not None:
        samples = [s for s in samples if spec.partition(s).M >= 3]
    return min(samples, key=lambda s: np.size(s.args[spec.primary]))


def _extreme(value: np.ndarray, scale: str, largest: float) -> np.ndarray:
    if scale == "subnormal":
        return np.round(value * 16) * SMALLEST
    if scale == "largest":
        return value * 2.0 ** (1020 - np.frexp(largest)[1])
    return value * 2.0 ** (-600 if scale == "tiny" else 600)


def _at(spec: OpSpec, sample: Sample, scale: str) -> Sample:
    """``sample`` with the arguments of power 1 in the law (arrays and numbers) at ``scale``."""
    names = [n for n, p in spec.scaling.inputs.items() if p == 1]
    values = {n: sample.args[n] if n in sample.args else sample.kwargs[n] for n in names}
    values = {n: v for n, v in values.items() if v is not None}  # affine parameters left out
    largest = max(float(np.max(np.abs(v))) for v in values.values())
    return sample.replace(
        **{n: _extreme(np.asarray(v, dtype=np.float64), scale, largest) for n, v in values.items()}
    )


def _check(actual: Any, expected: np.ndarray, scale: Any, rtol: float, what: str) -> None:
    """``actual`` within ``rtol`` of ``scale`` (the size of the terms of each element) plus
    :data:`SUBNORMAL_SLACK` of ``expected``; infinite exactly where ``expected`` overflows."""
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, what
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite], err_msg=what)
    error = np.abs(actual[finite] - expected[finite])
    bound = (rtol * np.broadcast_to(scale, expected.shape) + SUBNORMAL_SLACK)[finite]
    worst = int(np.argmax(error - bound)) if error.size else 0
    assert np.all(error <= bound), (
        f"{what}: error {error[worst]:.3e} > bound {bound[worst]:.3e}, "
        f"actual {actual[finite][worst]!r}, exact {expected[finite][worst]!r}"
    )


@pytest.mark.parametrize("spec", LAWFUL)
@pytest.mark.parametrize("scale", SCALES)
def test_extreme_inputs_against_mpmath(spec: OpSpec, scale: str):
    sample = _at(spec, spec.without_affine(_small_sample(spec)), scale)
    arrays = {n: exact._mp(v) for n, v in sample.args.items() if n in spec.arrays and v is not None}
    dy = np.random.default_rng(7).standard_normal(np.shape(sample.args[spec.primary]))
    with mpmath.workprec(exact.PRECISION), np.errstate(over="ignore", under="ignore"):
        expected = {k: exact.as_float(v) for k, v in exact.outputs(spec, sample, arrays).items()}
        grads = exact.gradients(spec, sample, arrays, dy) if spec.vjp is not None else {}
    with np.errstate(over="ignore"):  # a result that overflows does, with a warning
        actual = spec.output_values(spec.call(sample))
        found = spec.call_vjp(dy, sample) if grads else None
    for name, value in expected.items():
        size = np.max(np.abs(value[np.isfinite(value)]), initial=0.0)
        rtol = REFERENCES[spec.name].rtol
        _check(actual[name], value, size, rtol, f"{spec.name} {name} ({scale})")
    for name, (value, terms) in grads.items():
        what = f"{spec.name} d{name} ({scale})"
        _check(getattr(found, name), exact.as_float(value), exact.as_float(terms), FD_RTOL, what)
