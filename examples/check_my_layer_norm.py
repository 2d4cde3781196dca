"""Check your own layer norm against normref, and let the suite say what is wrong with it.

Two NumPy layer norms with normref's signature: one as torch defines it, one
with a classic slip (eps added to the standard deviation instead of inside the
square root). :func:`conformance.check` runs every layer-norm case of the
suite (edge cases and drawn ones, every dtype) against normref's float64
reference; :func:`conformance.diagnose` tries every convention preset and
every single-field variation and reports which explains the function.

Run ``python -m examples.check_my_layer_norm``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import conformance


def _layer_norm(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    axes: tuple[int, ...],
    divisor: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """(x - mean) / divisor(var) then the affine, with torch's dtype handling.

    Like torch, statistics of float16 input are taken in float32 (their squares
    overflow float16 beyond 256), and the result is returned in x's dtype.
    """
    xf = x.astype(np.promote_types(x.dtype, np.float32))
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (xf - mean) / divisor(var)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y.astype(x.dtype)


def layer_norm(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    axes: tuple[int, ...] = (-1,),
    eps: float = 1e-5,
) -> np.ndarray:
    """Layer norm as torch defines it: (x - mean) / sqrt(var + eps), biased variance."""
    return _layer_norm(x, gamma, beta, axes, lambda var: np.sqrt(var + eps))


def layer_norm_eps_on_std(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    axes: tuple[int, ...] = (-1,),
    eps: float = 1e-5,
) -> np.ndarray:
    """The slip: (x - mean) / (sqrt(var) + eps)."""
    return _layer_norm(x, gamma, beta, axes, lambda var: np.sqrt(var) + eps)


def main() -> dict[str, object]:
    """Check both functions and diagnose the slip; print the diagnosis first, then each
    function's verdict, and return them."""
    outcome: dict[str, object] = {
        fn.__name__: conformance.check(fn, op="layer_norm", convention="torch")
        for fn in (layer_norm, layer_norm_eps_on_std)
    }
    diagnosis = conformance.diagnose(layer_norm_eps_on_std, op="layer_norm")
    outcome["diagnosis"] = diagnosis
    print(diagnosis.verdict)
    for name in ("layer_norm", "layer_norm_eps_on_std"):
        result = outcome[name]
        assert isinstance(result, conformance.RunResult)
        rows = len(result.results)
        if result.ok:
            print(f"  {name}: conforms ({rows} rows within budget or refused as normref)")
            continue
        causes = sorted({row.diagnosis for row in result.failures if row.diagnosis})
        print(f"  {name}: {len(result.failures)} of {rows} rows fail: {'; '.join(causes)}")
    return outcome


if __name__ == "__main__":
    main()
