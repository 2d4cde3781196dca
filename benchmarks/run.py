"""Measure one case: normref against torch and jax, forward + backward, time and peak memory.

The contenders of a case run interleaved in the same rounds
(:func:`benchmarks.timing.interleaved_minimum`): normref in each precision
mode (its forward, then its ``*_vjp``) as a user calls it, which on NumPy is
the fused path where numba is installed and the operation has one, and then
the same with the fused path switched off (the generic Array API code on
NumPy); torch (its counterpart of :mod:`benchmarks.frameworks`, then
``backward`` through autograd) and jax (forward and ``jax.vjp`` in one
``jax.jit`` program). All run on the CPU in the same process; torch, XLA,
normref's fused path and NumPy's BLAS and LAPACK calls (matrix products,
``eigh``) use their default thread pools, NumPy's other work one thread.
Every contender works on a copy of the data of its own (as torch and jax do
anyway), so none finds its inputs in cache because another contender just
read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.cases import Case
from benchmarks.frameworks import JAX, TORCH
from benchmarks.memory import torch_peak, traced_peak, xla_planned
from benchmarks.timing import interleaved_minimum
from normref import compiled
from normref.registry import REGISTRY, OpSpec, Sample

TIME_TARGETS = {"input": 1.5, "float64": 3.0}
"""Time relative to torch that normref aims at, computing in the input dtype or in float64."""

MEMORY_TARGETS = {"input": 3.0, "float64": 6.0}
"""Peak memory (multiples of the input's size) that normref aims at, likewise."""

TARGET_FAMILIES = ("standardization", "whitening", "weights", "gradients")
"""The registry families the targets are set for (every benchmarked one); rows of another
family would be measured without a verdict."""


def compute_kind(dtype: str, precision: str) -> str:
    """``"float64"`` where normref upcasts a narrower input, else ``"input"``."""
    return "float64" if precision == "highest" and dtype != "float64" else "input"


@dataclass(frozen=True)
class Result:
    """One row: a case in one dtype and precision mode.

    ``seconds`` and ``memory`` have the keys ``"normref"`` (as called, fused
    where it applies), ``"generic"`` (the fused path switched off; ``None``
    where numba is not installed or the operation has no fused path),
    ``"torch"`` and ``"jax"`` (``None`` where a contender is absent or not
    measurable); memory is the peak of a forward or backward call as a
    multiple of the input's size (see :mod:`benchmarks.memory`). ``variant``
    is the case's (:attr:`benchmarks.cases.Case.variant`). ``compiled_path`` says
    whether normref's compiled path ran the row: ``"on"``, ``"off"`` (the operation
    has one, but numba is not installed) or ``"none"`` (the operation has none).
    """

    op: str
    shape: tuple[int, ...]
    source: str
    dtype: str
    precision: str
    seconds: dict[str, float | None]
    memory: dict[str, float | None]
    variant: str = ""
    compiled_path: str = "none"

    @property
    def name(self) -> str:
        """The operation's name and the variant, as the tables print it."""
        return f"{self.op} ({self.variant})" if self.variant else self.op

    def ratio(self, other: str, mine: str = "normref") -> float | None:
        """``mine``'s time over ``other``'s (> 1: ``mine`` is slower)."""
        theirs, ours = self.seconds.get(other), self.seconds.get(mine)
        return None if theirs is None or ours is None else ours / theirs

    @property
    def meets_targets(self) -> bool | None:
        """Whether the time and memory targets (:data:`TIME_TARGETS`, ...) hold for this row.

        ``None`` (no verdict) for an operation outside :data:`TARGET_FAMILIES`, and
        where either target cannot be evaluated: torch was not timed (not installed,
        or left out by ``--frameworks``) or normref's memory was not measured.
        """
        if REGISTRY[self.op].family not in TARGET_FAMILIES:
            return None
        kind = compute_kind(self.dtype, self.precision)
        vs_torch = self.ratio("torch")
        memory = self.memory["normref"]
        if vs_torch is None or memory is None:
            return None
        return vs_torch <= TIME_TARGETS[kind] and memory <= MEMORY_TARGETS[kind]


@dataclass(frozen=True)
class Contender:
    """One implementation of a case: a forward + backward step, and its peak memory in bytes."""

    step: Callable[[], Any]
    peak_bytes: Callable[[], int | None]


def _normref(
    spec: OpSpec, sample: Sample, dy: np.ndarray, precision: str, *, fused: bool
) -> Contender:
    chosen = sample.replace(precision=precision)

    def forward() -> Any:
        with compiled.enabled(fused):
            return spec.call(chosen)

    def backward() -> Any:
        with compiled.enabled(fused):
            return spec.call_vjp(dy, chosen)

    def step() -> None:
        forward()
        backward()

    return Contender(step, lambda: max(traced_peak(forward), traced_peak(backward)))


def _torch(spec: OpSpec, sample: Sample, dy: np.ndarray) -> Contender:
    import torch

    f = TORCH[spec.name](sample)
    leaves = [torch.tensor(sample.args[name], requires_grad=True) for name in spec.differentiable]
    cotangent = torch.tensor(dy)

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        f(*leaves).backward(cotangent)

    def peak_bytes() -> int | None:
        for leaf in leaves:
            leaf.grad = None
        forward_peak, y = torch_peak(lambda: f(*leaves))
        backward_peak, _ = torch_peak(lambda: y.backward(cotangent))
        if forward_peak is None or backward_peak is None:
            return None
        return max(forward_peak, backward_peak)

    return Contender(step, peak_bytes)


def _jax(spec: OpSpec, sample: Sample, dy: np.ndarray) -> Contender:
    import jax
    import jax.numpy as jnp

    f = JAX[spec.name](sample)
    args = tuple(jnp.asarray(sample.args[name]) for name in spec.differentiable)
    cotangent = jnp.asarray(dy)

    def forward_backward(args: tuple[Any, ...], dy: Any) -> Any:
        y, pullback = jax.vjp(f, *args)
        return y, pullback(dy)

    def backward(args: tuple[Any, ...], dy: Any) -> Any:
        return jax.vjp(f, *args)[1](dy)

    compiled = jax.jit(forward_backward).lower(args, cotangent).compile()

    def peak_bytes() -> int | None:
        planned = [
            xla_planned(jax.jit(f).lower(*args).compile()),
            xla_planned(jax.jit(backward).lower(args, cotangent).compile()),
        ]
        return None if None in planned else max(planned)

    return Contender(lambda: jax.block_until_ready(compiled(args, cotangent)), peak_bytes)


def contenders(
    case: Case, dtype: str, precisions: tuple[str, ...], frameworks: tuple[str, ...]
) -> dict[str, Contender]:
    """normref in each of ``precisions`` and each framework of ``frameworks`` with a counterpart."""
    spec = case.spec

    def data() -> tuple[Sample, np.ndarray]:
        """A fresh copy of the case's inputs, and a cotangent of the output's shape and dtype.

        (The output has the primary input's shape; all arrays have one dtype.)
        """
        cotangent = np.random.default_rng(1).standard_normal(case.shape).astype(dtype)
        return case.sample(dtype), cotangent

    found = {f"normref {p}": _normref(spec, *data(), p, fused=True) for p in precisions}
    if case.fused and compiled.available():
        for p in precisions:
            found[f"generic {p}"] = _normref(spec, *data(), p, fused=False)
    if "torch" in frameworks and spec.name in TORCH:
        found["torch"] = _torch(spec, *data())
    if "jax" in frameworks and spec.name in JAX:
        found["jax"] = _jax(spec, *data())
    return found


def compiled_path_of(case: Case) -> str:
    """``"on"`` where normref's compiled path runs ``case``, ``"off"`` where it would but numba
    is not installed, ``"none"`` where the operation has no compiled path."""
    if not case.fused:
        return "none"
    return "on" if compiled.available() else "off"


def measure(
    case: Case,
    dtype: str,
    precisions: tuple[str, ...],
    *,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    repeats: int,
) -> list[Result]:
    """One :class:`Result` per precision mode for ``case`` in ``dtype``."""
    found = contenders(case, dtype, precisions, frameworks)
    seconds = interleaved_minimum({k: c.step for k, c in found.items()}, repeats=repeats)
    input_bytes = np.dtype(dtype).itemsize * int(np.prod(case.shape))

    def multiple(name: str) -> float | None:
        if name not in found:
            return None
        peak = found[name].peak_bytes()
        return None if peak is None else peak / input_bytes

    framework_memory = {name: multiple(name) for name in ("torch", "jax")}
    return [
        Result(
            case.op,
            case.shape,
            case.source,
            dtype,
            p,
            {
                "normref": seconds[f"normref {p}"],
                "generic": seconds.get(f"generic {p}"),
                "torch": seconds.get("torch"),
                "jax": seconds.get("jax"),
            },
            {
                "normref": multiple(f"normref {p}"),
                "generic": multiple(f"generic {p}"),
                **framework_memory,
            },
            case.variant,
            compiled_path_of(case),
        )
        for p in precisions
    ]
