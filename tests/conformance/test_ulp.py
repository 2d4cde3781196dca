"""Float formats: spacing and rounding against NumPy's own float16/float32 and ml_dtypes' bfloat16."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.checked.formats import DTYPES, largest, promote, round_to, ulp, unit_roundoff


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    exponents = rng.integers(-140, 140, size=4000)
    magnitudes = rng.random(4000) * np.ldexp(1.0, exponents)
    special = [0.0, 1.0, 65504.0, 65519.99, 65520.0, 6.1e-5, 6e-8, 3e-8, 2.0**-149, np.inf]
    values = np.concatenate([magnitudes, special])
    return np.concatenate([values, -values, [np.nan]])


@pytest.mark.parametrize(
    ("dtype", "numpy_dtype"), [("float16", np.float16), ("float32", np.float32)]
)
def test_rounding_matches_numpy_casts(dtype, numpy_dtype):
    values = _values()
    with np.errstate(over="ignore"):
        expected = values.astype(numpy_dtype).astype(np.float64)
    np.testing.assert_array_equal(round_to(values, dtype), expected)


def test_bfloat16_rounding_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (installed with jax) is absent")
    values = _values()
    with np.errstate(over="ignore"):
        expected = values.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(round_to(values, "bfloat16"), expected)


@pytest.mark.parametrize(
    ("dtype", "numpy_dtype"),
    [("float16", np.float16), ("float32", np.float32), ("float64", np.float64)],
)
def test_ulp_is_numpy_spacing(dtype, numpy_dtype):
    finite = _values()
    rounded = round_to(finite[np.isfinite(finite)], dtype)
    # below the largest value: NumPy's spacing there is the distance to infinity
    representable = rounded[np.abs(rounded) < largest(dtype)].astype(numpy_dtype)
    np.testing.assert_array_equal(
        ulp(representable, dtype), np.abs(np.spacing(np.abs(representable))).astype(np.float64)
    )


def test_unit_roundoff_and_largest():
    assert [unit_roundoff(d) for d in DTYPES] == [2.0**-11, 2.0**-8, 2.0**-24, 2.0**-53]
    assert largest("float16") == 65504.0
    assert largest("float32") == float(np.finfo(np.float32).max)


def test_promotion_follows_the_array_api():
    assert promote("bfloat16", "float32") == "float32"
    assert promote("float16", "bfloat16") == "float32"
    assert promote("float64", "float16") == "float64"


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match=r"dtype must be one of .*got 'int8'"):
        ulp(1.0, "int8")
