"""The fused CuPy path (:mod:`normref._fused.cuda`): the generic path's results, on CuPy arrays.

Without a GPU the CUDA kernels cannot run, but everything around them can: the
kernels' own expressions (the map, reduce and body strings CuPy compiles) are
evaluated here by a NumPy stand-in for ``cupy.ReductionKernel`` and
``cupy.ElementwiseKernel`` (a type placeholder ``C(v)`` or ``T(v)`` is a cast to
that dtype, as in CUDA), behind the very dispatch that picks the kernels for
CuPy arrays, and the results are compared with the generic path's element by
element, as ``tests/test_fused.py`` compares the numba kernels. Where CuPy
finds a GPU, the same comparisons run on CuPy arrays with the real kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from normref import _fused
from normref._fused import cuda
from normref.registry import REGISTRY
from tests.support import BACKEND_FACTORIES
from tests.test_fused import (
    CASES,
    CENTRING_CASES,
    CENTRING_PRECISIONS,
    FLOAT64_RTOL,
    NATIVE_FLOAT32_RTOL,
    _as,
    _both_paths,
    _compare,
    _term_scales,
    compare_centring_paths,
)

EMULATED_CASES = CASES


def _names(params: str) -> list[tuple[str, str]]:
    """``(type placeholder, name)`` of each parameter of a kernel's parameter list."""
    return [tuple(p.split()) for p in params.split(",")]  # type: ignore[misc]


def _bind(params: str, args: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments by name, and each type placeholder's dtype (from its first argument)."""
    values, types = {}, {}
    for (placeholder, name), value in zip(_names(params), args, strict=False):
        values[name] = value
        types.setdefault(placeholder, np.asarray(value).dtype)
    return values, types


def _casts(types: dict[str, Any]) -> dict[str, Any]:
    return {p: (lambda v, d=d: np.asarray(v).astype(d)) for p, d in types.items()}


class NumpyReduction:
    """``cupy.ReductionKernel`` evaluated by NumPy: the map expression over the broadcast
    arguments, summed (the only reduction the kernels use) over ``axis`` in the output's
    dtype."""

    def __init__(
        self,
        inputs: str,
        output: str,
        map_expr: str,
        reduce: str,
        post: str,
        identity: str,
        *,
        name: str,
    ) -> None:
        assert (reduce, post, identity) == ("a + b", f"{output.split()[1]} = a", "0"), name
        self.inputs, self.output, self.map_expr = inputs, output, map_expr

    def __call__(self, *args: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
        values, types = _bind(self.inputs, args)
        mapped = eval(self.map_expr, _casts(types), values)  # the kernel's own text
        dtype = types[self.output.split()[0]]
        return np.sum(
            np.broadcast_to(mapped, np.broadcast_shapes(*(np.shape(a) for a in args))),
            axis=axis,
            keepdims=keepdims,
            dtype=dtype,
        )


class NumpyElementwise:
    """``cupy.ElementwiseKernel`` evaluated by NumPy: the body over the broadcast inputs,
    written into the output array (the last argument)."""

    def __init__(self, inputs: str, output: str, body: str, *, name: str) -> None:
        self.inputs, self.output, self.body = inputs, output, body

    def __call__(self, *args: Any) -> None:
        *inputs, out = args
        values, types = _bind(self.inputs, tuple(inputs))
        ((placeholder, name),) = _names(self.output)
        types.setdefault(placeholder, out.dtype)
        exec(self.body + ";", _casts(types), values)  # noqa: S102 (the kernel's own text)
        out[...] = values[name]


@pytest.fixture
def emulated_gpu(monkeypatch):
    """NumPy arrays through the CuPy dispatch and the kernels' expressions."""
    calls: list[str] = []
    built = cuda.build(NumpyReduction, NumpyElementwise)

    def counted() -> cuda.Kernels:
        calls.append("kernels")
        return built

    monkeypatch.setattr(_fused, "on_gpu", lambda xp: True)
    monkeypatch.setattr(cuda, "kernels", counted)
    return calls


@pytest.mark.parametrize(("name", "make"), EMULATED_CASES)
@pytest.mark.parametrize("with_affine", [True, False])
def test_float64_kernels_match_generic(name, make, with_affine, emulated_gpu):
    spec = REGISTRY[name]
    sample = _as(make(0), "float64")
    if not with_affine:
        sample = spec.without_affine(sample)
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape)
    paths = _both_paths(spec, sample, dy)
    assert emulated_gpu, "the CUDA kernels did not run"
    _compare(
        spec, *paths, _term_scales(spec, sample, dy), rtol=FLOAT64_RTOL, ulps_of=None, what=name
    )


@pytest.mark.parametrize(("name", "make"), EMULATED_CASES)
def test_highest_float32_kernels_match_generic(name, make, emulated_gpu):
    """float64 sums of float32 elements, rounded once: within a float32 ulp of the generic."""
    spec = REGISTRY[name]
    sample = _as(make(0), "float32")
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape).astype(np.float32)
    _compare(
        spec,
        *_both_paths(spec, sample, dy),
        _term_scales(spec, sample, dy),
        rtol=FLOAT64_RTOL,
        ulps_of="float32",
        what=f"{name} float32 highest",
    )


@pytest.mark.parametrize(("name", "make"), EMULATED_CASES[:3])
def test_native_float32_kernels_are_as_accurate_as_generic(name, make, emulated_gpu):
    spec = REGISTRY[name]
    sample = _as(make(0), "float32", precision="native")
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape).astype(np.float32)
    exact = _both_paths(spec, _as(sample, "float64", precision="highest"), dy.astype(np.float64))
    fused = _both_paths(spec, sample, dy)[0]
    assert fused[0].dtype == np.float32
    _compare(
        spec,
        fused,
        exact[1],
        _term_scales(spec, sample, dy),
        rtol=NATIVE_FLOAT32_RTOL,
        ulps_of=None,
        what=f"{name} native float32",
    )


@pytest.mark.parametrize(("name", "make"), CENTRING_CASES)
@pytest.mark.parametrize(("dtype", "precision", "rtol", "ulps_of"), CENTRING_PRECISIONS)
def test_the_centring_kernels_match_generic(
    name, make, dtype, precision, rtol, ulps_of, emulated_gpu
):
    """Mean-only batch norm and gradient centralization: the forward's kernels, forward and
    backward (the centring's VJP is the centring of ``dy``)."""
    compare_centring_paths(name, make, dtype, precision, rtol, ulps_of)
    assert emulated_gpu, "the CUDA kernels did not run"


def test_huge_values_are_scaled_as_the_generic_path_scales_them(emulated_gpu):
    """Values near float64's largest, whose squares overflow: the statistics of the values
    times a power of two give finite results, those of the generic path (which scales too)
    to the rounding of sums in another order (y and dx * 2**1000 are of order 1)."""
    spec = REGISTRY["layer_norm"]
    sample = _as(CASES[5].values[1](0), "float64")
    dy = np.random.default_rng(1).standard_normal(sample.args["x"].shape)
    huge = sample.replace(x=sample.args["x"] * 2.0**1000)
    (y, grads), (y_generic, grads_generic) = _both_paths(spec, huge, dy)
    assert np.all(np.isfinite(y))
    assert np.all(np.isfinite(grads.x))
    np.testing.assert_allclose(y, y_generic, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads.x * 2.0**1000, grads_generic.x * 2.0**1000, rtol=0, atol=1e-11)


def test_numpy_arrays_do_not_take_the_cuda_kernels(monkeypatch):
    """Without the stand-in, CuPy's namespace alone selects them."""
    monkeypatch.setattr(cuda, "kernels", lambda: pytest.fail("CUDA kernels on NumPy arrays"))
    spec = REGISTRY["layer_norm"]
    sample = _as(CASES[5].values[1](0), "float64")
    spec.call(sample)
    import array_api_compat.numpy as xp

    assert not _fused.on_gpu(xp)


def test_the_broadcast_shape_of_parameters_follows_their_slots():
    layout = _fused.layout.Layout((2, 1, 4, 3, 5), (0, 0, 3, 1, 0))  # group norm: G2 and S3
    assert cuda.param_shape(layout) == (1, 1, 4, 3, 1)
    flat = np.arange(12)
    np.testing.assert_array_equal(
        flat.reshape(cuda.param_shape(layout))[0, 0, 2, 1, 0], flat[2 * 3 + 1 * 1]
    )


_, GPU_PRESENT, NO_GPU = BACKEND_FACTORIES["cupy"]


@pytest.mark.skipif(not GPU_PRESENT(), reason=NO_GPU)
@pytest.mark.parametrize(("name", "make"), EMULATED_CASES)
@pytest.mark.parametrize("precision", ["highest", "native"])
def test_on_the_gpu_the_kernels_match_the_generic_path(name, make, precision):
    import cupy

    spec = REGISTRY[name]
    host = _as(make(0), "float32", precision=precision)
    dy = np.random.default_rng(1).standard_normal(host.args["x"].shape).astype(np.float32)
    on_gpu = host.replace(
        **{k: cupy.asarray(v) for k, v in host.args.items() if isinstance(v, np.ndarray)}
    )
    results = []
    for fused in (True, False):
        with _fused.enabled(fused):
            y = spec.call(on_gpu)
            grads = spec.call_vjp(cupy.asarray(dy), on_gpu)
        results.append(
            (cupy.asnumpy(y), type(grads)(*(None if g is None else cupy.asnumpy(g) for g in grads)))
        )
    highest = precision == "highest"
    _compare(
        spec,
        *results,
        _term_scales(spec, host, dy),
        rtol=FLOAT64_RTOL if highest else NATIVE_FLOAT32_RTOL,
        ulps_of="float32" if highest else None,
        what=f"{name} {precision} on the GPU",
    )
