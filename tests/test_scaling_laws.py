"""The scaling law every operation declares, checked exactly over the whole exponent range.

For each registered operation, ``f(law(sample, k)) == law(f(sample), k)`` bit for bit
(:class:`normref.registry.ScalingLaw`): its primary input (and what scales with it)
multiplied by ``2**k``, ``eps`` by its power of ``2**k``, every output and gradient by
theirs. The identity is exact in real arithmetic and, where every number involved is a
normal number, in floating point too, so it holds for every ``k`` for which the scaled
inputs, ``eps`` and the scaled results are normal numbers: the tests take every such ``k``
(float64: about -510 to 510 where ``eps`` is scaled as a variance, -1000 to 1000 without
it), on the generic path and on the compiled one, in float64 and in float32, float16 and
bfloat16 computed in their own dtype. Outside that range the results are compared with
an mpmath reference instead (``tests/test_extremes.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from normref import compiled
from normref.registry import REGISTRY, OpSpec, Sample
from tests.registry_cases import draw, on_backend, op_params
from tests.support import BACKEND_FACTORIES, Backend, spy_on

LAWFUL = [p for p in op_params() if not p.values[0].scaling.reason]


def test_every_operation_declares_its_scaling_law():
    """A law names every output and gradient of its operation, or says why it has none."""
    for name, spec in REGISTRY.items():
        law = spec.scaling
        assert law is not None, f"{name} declares no scaling law"
        if law.reason:
            assert not law.inputs, name
            assert not law.outputs, name
            assert not law.gradients, name
            continue
        assert law.inputs.get(spec.primary) == 1, f"{name}: the primary input has power 1"
        assert set(law.outputs) == set(spec.outputs), name
        expected_gradients = set(spec.differentiable) if spec.vjp is not None else set()
        assert set(law.gradients) == expected_gradients, name


@pytest.mark.parametrize("spec", [p for p in op_params() if p.values[0].scaling.reason])
def test_an_operation_without_a_law_says_why(spec: OpSpec):
    pytest.skip(f"{spec.name} has no power-of-two scaling law: {spec.scaling.reason}")


def _exponent_bounds(dtype: Any) -> tuple[int, int]:
    """The exponents of the normal numbers of ``dtype``: ``2**lo <= |v| < 2**hi``."""
    info = np.finfo(dtype) if dtype != "bfloat16" else None
    if info is None:  # bfloat16: float32's exponent range
        return -126, 128
    return math.frexp(float(info.smallest_normal))[1] - 1, math.frexp(float(info.max))[1]


def _magnitudes(value: Any) -> tuple[int, int] | None:
    """``(lowest, highest)`` binary exponents of the nonzero values (``None`` if all are 0)."""
    a = np.abs(np.asarray(value, dtype=np.float64)).ravel()
    a = a[a > 0]
    if not a.size:
        return None
    return math.frexp(float(a.min()))[1] - 1, math.frexp(float(a.max()))[1] - 1


def _k_range(
    values: list[tuple[Any, int]], bounds: tuple[int, int], skip: int = 1
) -> Iterator[int]:
    """Every ``k`` (every ``skip``-th) for which each ``value * 2**(k p)`` is normal."""
    lo_exp, hi_exp = bounds
    lo, hi = -10_000, 10_000
    for value, power in values:
        found = _magnitudes(value)
        if found is None or power == 0:
            continue
        smallest, largest = found
        # lo_exp <= smallest + k p and largest + k p < hi_exp
        low, high = (lo_exp - smallest) / power, (hi_exp - 1 - largest) / power
        if power < 0:
            low, high = high, low
        lo, hi = max(lo, math.ceil(low)), min(hi, math.floor(high))
    ks = list(range(lo, hi + 1, skip))
    if ks and ks[-1] != hi:
        ks.append(hi)
    return iter(ks)


@contextlib.contextmanager
def _path(name: str) -> Iterator[None]:
    with compiled.enabled(name == "compiled"):
        yield


def _results(spec: OpSpec, sample: Sample, dy: Any) -> dict[str, Any]:
    """Every output and gradient of ``spec`` on ``sample`` (gradients as ``d<name>``)."""
    found = dict(spec.output_values(spec.call(sample)))
    if spec.vjp is not None:
        grads = spec.call_vjp(dy, sample)
        found.update({f"d{n}": getattr(grads, n) for n in grads._fields})
    return {k: v for k, v in found.items() if v is not None}


def _powers(spec: OpSpec) -> dict[str, int]:
    law = spec.scaling
    return {**law.outputs, **{f"d{n}": p for n, p in law.gradients.items()}}


def _check_law(spec: OpSpec, sample: Sample, backend: Backend, dtype: str, *, skip: int = 1) -> int:
    """Check the law at every ``k`` of its range (every ``skip``-th); the number checked."""
    law = spec.scaling
    sample = on_backend(sample, backend, dtype)
    y = spec.output_values(spec.call(sample))["y"]
    dy = backend.asarray(np.random.default_rng(3).standard_normal(np.shape(y)), dtype)
    base = {k: backend.to_numpy(v) for k, v in _results(spec, sample, dy).items()}
    powers = _powers(spec)
    scaled_inputs = [
        (backend.to_numpy(v) if hasattr(v, "shape") else v, p)
        for name, p in law.powers(spec, sample).items()
        for v in [sample.args[name] if name in sample.args else sample.kwargs[name]]
    ]
    values = scaled_inputs + [(base[name], powers[name]) for name in base]
    checked = 0
    for k in _k_range(values, _exponent_bounds(dtype), skip):
        got = _results(spec, law.scaled(spec, sample, k), dy)
        assert set(got) == set(base), spec.name
        for name, value in got.items():
            expected = np.ldexp(base[name], k * powers[name])
            np.testing.assert_array_equal(
                backend.to_numpy(value), expected, err_msg=f"{spec.name} {name} at k={k}"
            )
        checked += 1
    return checked


def _numpy() -> Backend:
    return BACKEND_FACTORIES["numpy"][0]()


def _contiguous(sample: Sample) -> Sample:
    def contiguous(value: Any) -> Any:
        return np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value

    return Sample({k: contiguous(v) for k, v in sample.args.items()}, sample.kwargs)


def _takes_the_compiled_path(spec: OpSpec, sample: Sample) -> bool:
    """Whether ``spec`` on the NumPy ``sample`` runs the compiled kernels."""
    from normref._fused import kernels

    with pytest.MonkeyPatch.context() as patch:
        # the kernels that write a layer's output
        calls = spy_on(patch, kernels, ("normalize", "normalize_with"))
        with _path("compiled"):
            spec.call(sample)
    return bool(calls)


@pytest.mark.parametrize("spec", LAWFUL)
@pytest.mark.parametrize("path", ["generic", "compiled"])
def test_the_law_holds_at_every_k_in_float64(spec: OpSpec, path: str):
    sample = _contiguous(draw(spec, 0))  # channels-last samples are views the kernels do not take
    if path == "compiled":
        if not compiled.available():
            pytest.skip("numba is not installed: no compiled path (pip install -e '.[fast]')")
        if not _takes_the_compiled_path(spec, sample):
            pytest.skip(f"{spec.name} has no compiled path: the generic run checks it")
    with _path(path):
        checked = _check_law(spec, sample, _numpy(), "float64")
    assert checked > 400, f"{spec.name}: only {checked} exponents in range"


NARROW = [
    pytest.param("numpy", "float32", id="float32"),
    pytest.param("numpy", "float16", id="float16"),
    pytest.param("torch", "bfloat16", id="bfloat16"),
]


@pytest.mark.parametrize("spec", [p for p in LAWFUL if p.values[0].capabilities.native_precision])
@pytest.mark.parametrize(("library", "dtype"), NARROW)
def test_the_law_holds_computing_in_a_narrow_dtype(spec: OpSpec, library: str, dtype: str):
    """``precision="native"``: computed in the input's dtype, the law holds over its range."""
    factory, available, reason = BACKEND_FACTORIES[library]
    if not available():
        pytest.skip(reason)
    sample = _contiguous(draw(spec, 0)).replace(precision="native")
    eps = sample.kwargs.get("eps")
    if eps is not None and dtype != "float32":
        sample = sample.replace(eps=max(eps, 1e-3))  # representable in float16's normal range
    backend = factory()
    paths = ["generic"]
    if dtype == "float32" and compiled.available():  # the kernels take float32 and float64
        paths += (
            ["compiled"]
            if _takes_the_compiled_path(spec, on_backend(sample, backend, dtype))
            else []
        )
    for path in paths:
        with _path(path):
            checked = _check_law(spec, sample, backend, dtype)
        assert checked > 0, f"{spec.name}: no exponent in range"


@pytest.mark.parametrize("spec", LAWFUL)
def test_the_law_holds_on_array_api_strict(spec: OpSpec):
    """Every 37th exponent of the range, on the generic Array API code alone."""
    factory, available, reason = BACKEND_FACTORIES["array_api_strict"]
    if not available():
        pytest.skip(reason)
    assert _check_law(spec, draw(spec, 1), factory(), "float64", skip=37) > 10
