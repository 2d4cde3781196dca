"""Switchable norm through the kernels (``normref._fused.mixture``): the generic path's results.

On the ``numpy`` backend the registry-driven tests (values against the independent
references, gradients against finite differences, the adjoint identity, the scaling law
and the extremes against mpmath) run switchable norm through the kernels wherever they
take it. These tests add inputs of instances longer than a piece and more instances
than chunks of work, compare the kernels' results with the generic path's element by
element, and check where the kernels are taken and where not.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[fast]')")

import normref
from conformance.checked.formats import ulp
from normref import _fused
from normref._fused import kernels
from tests.support import assert_within, spy_on

U32 = float(np.finfo(np.float32).eps)
FLOAT64_RTOL = 1e-12
"""Two float64 computations of one result whose sums are added in different orders."""
NATIVE_FLOAT32_RTOL = 256 * U32
"""Two float32 computations of one result whose sums of a few hundred values each are added
in different orders (pairwise: a few roundings each)."""

KERNELS = ("statistics", "normalize_with", "cotangent_sums", "affine_gradient")
LOGITS = (np.array([0.3, -0.2, 0.5]), np.array([-0.4, 0.1, 0.2]))


@pytest.fixture
def kernel_calls(monkeypatch) -> list[str]:
    """Names of switchable norm's kernels called during the test."""
    return spy_on(monkeypatch, kernels, KERNELS)


def _inputs(shape: tuple[int, ...], axis: int, dtype: str, seed: int = 3):
    rng = np.random.default_rng(seed)
    x = (3.0 * rng.standard_normal(shape) + 2.0).astype(dtype)
    channels = shape[axis]
    gamma = (1.0 + 0.5 * rng.standard_normal(channels)).astype(dtype)
    beta = rng.standard_normal(channels).astype(dtype)
    return x, gamma, beta, rng.standard_normal(shape).astype(dtype)


def _both_paths(x, gamma, beta, dy, **options):
    """(y, grads) through the kernels and through the generic path."""
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            y = normref.switchable_norm(x, gamma, beta, *LOGITS, **options)
            grads = normref.switchable_norm_vjp(dy, x, gamma, beta, *LOGITS, **options)
        results.append((y, grads))
    return results


def _assert_paths_agree(results, dtype: str, precision: str, what: str) -> None:
    (y_f, g_f), (y_g, g_g) = results
    float64_arithmetic = precision == "highest" or dtype == "float64"
    rtol = FLOAT64_RTOL if float64_arithmetic else NATIVE_FLOAT32_RTOL
    pairs = [("y", y_f, y_g)] + [
        (name, a, b) for name, a, b in zip(g_f._fields, g_f, g_g, strict=True) if b is not None
    ]
    for name, a, b in pairs:
        assert a.dtype == b.dtype, name
        scale = float(np.max(np.abs(b.astype(np.float64)), initial=0.0))
        rounding = ulp(b, "float32") if b.dtype == np.float32 else 0.0
        assert_within(a, b, rtol * scale + rounding, what=f"{what}: {name}")


LAYOUTS = [
    pytest.param((9, 8, 17, 19), 1, id="channels_first"),
    pytest.param((6, 9, 7, 5), -1, id="channels_last"),
]


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("precision", ["highest", "native"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_the_kernels_give_the_generic_paths_results(
    kernel_calls, shape, axis, dtype, precision, affine
):
    """Instances of 323 values (two pieces) and 72 instances (more than the chunks of work)
    with their means away from 0, or channels last: every output and gradient is the generic
    path's, to float64 rounding (plus one float32 ulp of a float32 result) or, computing in
    float32, to the error bound of float32 sums of a few hundred values."""
    x, gamma, beta, dy = _inputs(shape, axis, dtype)
    params = (gamma, beta) if affine else (None, None)
    results = _both_paths(x, *params, dy, axis=axis, precision=precision)
    assert kernel_calls == ["statistics", "normalize_with", "statistics", *KERNELS[2:]]
    _assert_paths_agree(results, dtype, precision, f"{shape} {dtype} {precision}")


@pytest.mark.parametrize(
    ("dtype", "precision", "factor"),
    [
        pytest.param("float32", "native", 2.0**-40, id="float32_native"),
        pytest.param("float64", "highest", 2.0**-300, id="float64"),
    ],
)
def test_instances_far_apart_in_size_share_one_power_of_two(kernel_calls, dtype, precision, factor):
    """One instance ``factor`` times the others, so small that its sums of its values as they
    are would not be exact in the compute dtype: the kernels take them times its own power of
    two, brought to the one of the whole input. The results are the generic path's, and the
    same bits for the input times 2**-20 (with ``eps`` times 2**-40)."""
    x, gamma, beta, dy = _inputs((4, 6, 10, 30), 1, dtype)
    x[1, 2] *= x.dtype.type(factor)
    results = _both_paths(x, gamma, beta, dy, precision=precision)
    assert "normalize_with" in kernel_calls
    _assert_paths_agree(results, dtype, precision, f"far apart, {dtype} {precision}")
    y, grads = results[0]
    scaled = x.dtype.type(2.0**-20)
    options = {"eps": 1e-5 * 2.0**-40, "precision": precision}
    y_scaled = normref.switchable_norm(x * scaled, gamma, beta, *LOGITS, **options)
    grads_scaled = normref.switchable_norm_vjp(dy, x * scaled, gamma, beta, *LOGITS, **options)
    np.testing.assert_array_equal(y_scaled, y)
    np.testing.assert_array_equal(grads_scaled.x * scaled, grads.x)
    for name in ("gamma", "beta", "mean_logits", "var_logits"):
        np.testing.assert_array_equal(getattr(grads_scaled, name), getattr(grads, name))


def test_an_input_with_a_nan_takes_the_generic_path(kernel_calls):
    """A NaN reaches only the statistics that hold it, as the generic path keeps it."""
    x, gamma, beta, _ = _inputs((4, 6, 10, 30), 1, "float32")
    x[1, 2, 3, 4] = np.nan
    y = normref.switchable_norm(x, gamma, beta, *LOGITS)
    assert kernel_calls == ["statistics"]
    with _fused.enabled(False):
        expected = normref.switchable_norm(x, gamma, beta, *LOGITS)
    np.testing.assert_array_equal(y, expected)
    assert np.isnan(y[1]).all()  # the layer's statistics of sample 1 hold it
    assert not np.isnan(y[0, 0]).all()


def test_the_results_do_not_depend_on_the_number_of_threads(monkeypatch):
    """Each instance's sums are taken by one chunk of work, whatever thread runs it."""
    x, gamma, beta, dy = _inputs((9, 8, 32, 32), 1, "float32")
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NORMREF_THREADS", threads)
        y = normref.switchable_norm(x, gamma, beta, *LOGITS, precision="native")
        grads = normref.switchable_norm_vjp(dy, x, gamma, beta, *LOGITS, precision="native")
        results.append((y, *grads))
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision", ["highest", "native"])
def test_parameters_the_kernels_do_not_take_leave_those_passes_to_the_generic_path(
    kernel_calls, precision
):
    """A float16 ``gamma`` and ``beta`` (the kernels read float32 and float64 parameters): the
    kernels take the instances' sums, the generic path writes the output and takes the
    backward's sums and gradient, and every result is the generic path's."""
    x, gamma, beta, dy = _inputs((4, 6, 10, 30), 1, "float32")
    gamma, beta = gamma.astype(np.float16), beta.astype(np.float16)
    results = _both_paths(x, gamma, beta, dy, precision=precision)
    assert kernel_calls == ["statistics", "statistics"]
    _assert_paths_agree(results, "float32", precision, f"float16 parameters, {precision}")
