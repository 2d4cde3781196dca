"""Test support: array backends, finite differences and scaled comparisons.

Expected values in the tests never come from normref itself: they come from
the independent loops of ``tests/reference.py``, from finite differences of the
forward (for gradients), or from identities.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    """An array library under test: its namespace and conversions from and to NumPy."""

    name: str
    xp: Any
    dtypes: tuple[str, ...]
    asarray: Callable[[np.ndarray, str], Any]
    to_numpy: Callable[[Any], np.ndarray]

    def __repr__(self) -> str:
        return self.name


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _numpy_backend() -> Backend:
    import array_api_compat.numpy as xp

    return Backend(
        "numpy",
        xp,
        ("float16", "float32", "float64"),
        lambda a, dtype: np.asarray(a, dtype=dtype),
        np.asarray,
    )


def _strict_backend() -> Backend:
    import array_api_strict as xp

    return Backend(
        "array_api_strict",
        xp,
        ("float32", "float64"),
        lambda a, dtype: xp.asarray(np.asarray(a, dtype=dtype)),
        lambda a: np.from_dlpack(a),
    )


def _torch_backend() -> Backend:
    import array_api_compat.torch as xp
    import torch

    def to_numpy(a: Any) -> np.ndarray:
        a = a.detach().cpu()
        return (a.double() if a.dtype == torch.bfloat16 else a).numpy()

    return Backend(
        "torch",
        xp,
        ("float16", "bfloat16", "float32", "float64"),
        lambda a, dtype: torch.asarray(np.asarray(a, dtype=np.float64)).to(getattr(torch, dtype)),
        to_numpy,
    )


def _jax_backend() -> Backend:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return Backend(
        "jax",
        jnp,
        ("float16", "bfloat16", "float32", "float64"),
        lambda a, dtype: jnp.asarray(np.asarray(a, dtype=np.float64), dtype=getattr(jnp, dtype)),
        lambda a: np.asarray(a.astype(jnp.float64)),
    )


def _cupy_backend() -> Backend:
    import array_api_compat.cupy as xp
    import cupy

    return Backend(
        "cupy",
        xp,
        ("float16", "float32", "float64"),
        lambda a, dtype: cupy.asarray(np.asarray(a, dtype=dtype)),
        cupy.asnumpy,
    )


def dask_backend() -> Backend:
    """``dask.array``, every axis of every array in two chunks (a merge along every axis).

    Not among :data:`BACKEND_FACTORIES`: Dask does not run every operation
    (``tests/test_dask.py`` says which), so its tests choose their operations.
    """
    import array_api_compat.dask.array as xp
    import dask.array as da

    def asarray(a: np.ndarray, dtype: str) -> Any:
        a = np.asarray(a, dtype=dtype)
        return da.from_array(a, chunks=tuple(max(1, -(-size // 2)) for size in a.shape))

    return Backend("dask", xp, ("float32", "float64"), asarray, lambda a: np.asarray(a.compute()))


def _gpu_present() -> bool:
    if not _installed("cupy"):
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


BACKEND_FACTORIES: dict[str, tuple[Callable[[], Backend], Callable[[], bool], str]] = {
    "numpy": (_numpy_backend, lambda: True, ""),
    "array_api_strict": (
        _strict_backend,
        lambda: _installed("array_api_strict"),
        "array-api-strict is not installed (pip install -e '.[test]')",
    ),
    "torch": (
        _torch_backend,
        lambda: _installed("torch"),
        "torch is not installed (pip install -e '.[torch]')",
    ),
    "jax": (
        _jax_backend,
        lambda: _installed("jax"),
        "jax is not installed (pip install -e '.[jax]')",
    ),
    "cupy": (_cupy_backend, _gpu_present, "CuPy or a CUDA GPU is not available"),
}


# ---------------------------------------------------------------------------
# Finite differences (float64).


FD_STEPS = (1e-2, 2.5e-3, 6.25e-4, 1.5625e-4)
"""Steps tried for finite differences, relative to the largest input value (at least 1)."""

FD_RTOL = 1e-8
"""Part of a VJP's bound against finite differences relative to the scale of its terms.

The finite differences' own error is added separately, but as an *estimate* (from
successive steps, :func:`fd_jvp`), not a bound: this term covers what it may miss.
It is not tuned to any operation: a float64 VJP itself errs by ~1e-13 of that scale,
and a wrong or missing term of a gradient by order 1 of it, which 1e-8 separates.
"""


def _stencil(g: Callable[[float], np.ndarray], h: float) -> np.ndarray:
    """Fourth-order central difference of ``g`` at 0 with step ``h``."""
    return (-g(2 * h) + 8 * g(h) - 8 * g(-h) + g(-2 * h)) / (12 * h)


def fd_jvp(
    f: Callable[..., np.ndarray],
    args: dict[str, np.ndarray],
    directions: dict[str, np.ndarray],
    *,
    steps: tuple[float, ...] = FD_STEPS,
    forward_ulps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directional derivative of ``f(**args)`` along ``directions`` (a JVP) and its error estimate.

    Fourth-order central differences at a decreasing sequence of ``steps``; the
    result is the one at the step where two successive estimates agree best,
    and the error estimate is their difference (plus the rounding noise of the
    float64 forward, ``forward_ulps`` ulps of its largest output (default
    :data:`FORWARD_ULPS`), amplified by the stencil's 1.5 / h). Degenerate inputs
    (a group of nearly equal values) need small steps, smooth ones large; a
    function that varies on a scale far below the input's (an eigenvector near
    a repeated eigenvalue) needs ``steps`` below that scale, and its forward is
    only as accurate as its conditioning allows (``forward_ulps`` times it).
    """

    def along(t: float) -> np.ndarray:
        moved = {k: v + t * directions[k] if k in directions else v for k, v in args.items()}
        return np.asarray(f(**moved), dtype=np.float64)

    size = max(1.0, *(float(np.max(np.abs(v), initial=0.0)) for v in args.values()))
    largest = float(np.max(np.abs(along(0.0)), initial=0.0))
    estimates = [_stencil(along, step * size) for step in steps]
    best = None
    for k in range(1, len(estimates)):
        ulps = FORWARD_ULPS if forward_ulps is None else forward_ulps
        noise = ulps * np.finfo(np.float64).eps * largest * 1.5 / (steps[k] * size)
        error = np.abs(estimates[k] - estimates[k - 1]) + noise
        if best is None or np.max(error) < np.max(best[1]):
            best = (estimates[k], error)
    assert best is not None
    return best


FORWARD_ULPS = 16
"""A float64 forward is trusted to this many ulps of its largest output when bounding FD noise."""


def fd_vjp(
    f: Callable[..., np.ndarray],
    args: dict[str, np.ndarray],
    dy: np.ndarray,
    wrt: str,
    *,
    rtol: float = FD_RTOL,
    steps: tuple[float, ...] = FD_STEPS,
    forward_ulps: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``J^T dy`` for the argument ``wrt`` from the finite-difference Jacobian, and its error bound.

    The bound is ``rtol * (|J|^T |dy|)`` (the scale of the terms that sum to
    each gradient element, which may cancel) plus the finite differences' own
    error estimate carried through the sum.
    """
    base = np.asarray(args[wrt], dtype=np.float64)
    grad = np.zeros(base.shape)
    bound = np.zeros(base.shape)
    for index in np.ndindex(*base.shape):
        direction = np.zeros(base.shape)
        direction[index] = 1.0
        column, error = fd_jvp(f, args, {wrt: direction}, steps=steps, forward_ulps=forward_ulps)
        grad[index] = math.fsum((column * dy).ravel())
        bound[index] = rtol * math.fsum(np.abs(column * dy).ravel()) + math.fsum(
            (error * np.abs(dy)).ravel()
        )
    return grad, bound


def assert_within(
    actual: np.ndarray, expected: np.ndarray, bound: np.ndarray | float, *, what: str
) -> None:
    """``|actual - expected| <= bound`` elementwise, with an index-localized message."""
    assert_close_to_scale(actual, expected, bound, rtol=1.0, what=what)


def assert_close_to_scale(
    actual: np.ndarray, expected: np.ndarray, scale: np.ndarray | float, *, rtol: float, what: str
) -> None:
    """``|actual - expected| <= rtol * scale`` elementwise, with an index-localized message.

    ``scale`` is the size of the terms that make up ``expected`` (not
    ``|expected|`` itself, which may be small because they cancel).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bound = rtol * np.broadcast_to(np.asarray(scale, dtype=np.float64), expected.shape)
    error = np.abs(actual - expected)
    bad = ~(error <= bound)
    if bad.any():
        worst = np.unravel_index(
            np.argmax(np.where(bad, error / np.maximum(bound, 1e-300), 0)), error.shape
        )
        raise AssertionError(
            f"{what}: {int(bad.sum())} / {bad.size} elements differ by more than "
            f"rtol={rtol} of their scale; worst at {tuple(int(i) for i in worst)}: "
            f"actual {actual[worst]!r}, expected {expected[worst]!r}, "
            f"error {error[worst]:.3e} > bound {bound[worst]:.3e}"
        )


# ---------------------------------------------------------------------------
# Exact statistics.


def fsum_comoments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean and cross-product matrix of (M, D) samples, each sum exactly rounded."""
    m, d = x.shape
    mean = np.array([math.fsum(x[:, j]) / m for j in range(d)])
    dev = x - mean
    cross = np.array([[math.fsum(dev[:, i] * dev[:, j]) for j in range(d)] for i in range(d)])
    return m, mean, cross


def spy_on(monkeypatch: Any, module: Any, names: tuple[str, ...]) -> list[str]:
    """Replace the functions ``names`` of ``module`` (for the test, through ``monkeypatch``) by
    ones that record their name, in call order, in the list returned, then run the original."""
    calls: list[str] = []
    for name in names:
        original = getattr(module, name)

        def spy(*args: Any, _original: Callable[..., Any] = original, _name: str = name) -> Any:
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, name, spy)
    return calls
