"""Batch whitening (ZCA, DBN) forward + backward: normref against torch.linalg.eigh with autograd.

For an input of shape (128, 64, 8, 8) and group sizes 16 and 64, in float32 and
float64, each contender computes the whitened output and the gradient of
``sum(y * dy)`` with respect to ``x``:

* ``normref[numpy]`` / ``normref[torch]``: :func:`normref.batch_whiten` then
  :func:`normref.batch_whiten_vjp` on NumPy arrays / torch tensors (the VJP
  recomputes the forward, as a standalone backward must);
* ``torch-autograd``: the same layer written with ``torch.linalg.eigh`` and run
  backward by autograd, in the input's dtype.

normref's default ``precision="highest"`` computes float32 input in float64, so
float32 rows also show ``precision="native"``. Times are the minimum of
interleaved rounds (``benchmarks/timing.py``), ratios are to torch-autograd in
the same run. Run as ``python -m benchmarks.bench_whitening``; on a machine
shared with other work, pin every library to one thread
(``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1``): a BLAS thread
pool waiting for a descheduled worker can stall a single call for a second.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import normref
from benchmarks.timing import interleaved_minimum, ratios

SHAPE = (128, 64, 8, 8)
GROUP_SIZES = (16, 64)
DTYPES = ("float32", "float64")
EPS = 1e-5


def torch_zca_layer(x: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """ZCA batch whitening of (N, C, *S) x with torch operations (autograd-differentiable)."""
    n, c = x.shape[:2]
    g = c // group_size
    rows = x.transpose(0, 1).reshape(g, group_size, -1)  # (G, D, M)
    centred = rows - rows.mean(dim=-1, keepdim=True)
    eye = torch.eye(group_size, dtype=x.dtype)
    cov = centred @ centred.transpose(-1, -2) / centred.shape[-1] + eps * eye
    lam, u = torch.linalg.eigh(cov)
    w = (u * lam.rsqrt().unsqueeze(-2)) @ u.transpose(-1, -2)
    y = w @ centred
    return y.reshape(c, n, *x.shape[2:]).transpose(0, 1)


def _torch_autograd(x: np.ndarray, dy: np.ndarray, group_size: int) -> Callable[[], Any]:
    xt = torch.from_numpy(x)
    dyt = torch.from_numpy(dy)

    def run() -> Any:
        leaf = xt.detach().requires_grad_(True)
        torch_zca_layer(leaf, group_size, EPS).backward(dyt)
        return leaf.grad

    return run


def _normref(x: Any, dy: Any, group_size: int, precision: str) -> Callable[[], Any]:
    def run() -> Any:
        y = normref.batch_whiten(x, group_size=group_size, eps=EPS, precision=precision)
        grads = normref.batch_whiten_vjp(dy, x, group_size=group_size, eps=EPS, precision=precision)
        return y, grads.x

    return run


def _check_agreement(contenders: dict[str, Callable[[], Any]]) -> float:
    """Largest relative difference between normref's and torch's gradients (a sanity check)."""
    reference = contenders["torch-autograd"]().detach().numpy().astype(np.float64)
    _, grad = contenders["normref[numpy]"]()
    return float(
        np.max(np.abs(np.asarray(grad, np.float64) - reference)) / np.max(np.abs(reference))
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    cases = [(k, dtype) for k in GROUP_SIZES for dtype in DTYPES]
    print(f"batch_whiten (ZCA) forward + backward, x of shape {SHAPE}, torch {torch.__version__}")
    pinned = {v: os.environ.get(v, "unset") for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"torch threads: {torch.get_num_threads()}; {pinned}")
    print(f"{args.repeats} interleaved rounds per case, minimum reported")
    for i, (k, dtype) in enumerate(cases, 1):
        x = rng.standard_normal(SHAPE).astype(dtype)
        dy = rng.standard_normal(SHAPE).astype(dtype)
        contenders = {
            "torch-autograd": _torch_autograd(x, dy, k),
            "normref[numpy]": _normref(x, dy, k, "highest"),
            "normref[torch]": _normref(torch.from_numpy(x), torch.from_numpy(dy), k, "highest"),
        }
        if dtype == "float32":
            contenders["normref[numpy] native"] = _normref(x, dy, k, "native")
            contenders["normref[torch] native"] = _normref(
                torch.from_numpy(x), torch.from_numpy(dy), k, "native"
            )
        start = time.perf_counter()
        print(f"[{i}/{len(cases)}] group_size={k} {dtype}: timing {len(contenders)} contenders ...")
        difference = _check_agreement(contenders)
        times = interleaved_minimum(contenders, repeats=args.repeats)
        for name, ratio in ratios(times, "torch-autograd").items():
            rows.append((k, dtype, name, times[name], ratio))
        print(
            f"      done in {time.perf_counter() - start:.1f} s; "
            f"max |dx - dx_torch| / max |dx_torch| = {difference:.1e}"
        )
    print()
    print(f"{'group':>5}  {'dtype':<8} {'contender':<22} {'time (ms)':>10} {'vs torch':>9}")
    for k, dtype, name, seconds, ratio in rows:
        print(f"{k:>5}  {dtype:<8} {name:<22} {1e3 * seconds:>10.1f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
