"""Measure one case: normref against torch and jax, forward + backward, time and temporaries.

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
read them. On a GPU (:mod:`benchmarks.devices`) normref computes on CuPy
arrays and torch on CUDA, each step waiting for its device's work to finish;
jax is left out there, and memory is not measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.cases import Case
from benchmarks.devices import CPU, Device
from benchmarks.frameworks import JAX, TORCH
from benchmarks.memory import torch_peak, traced_temporaries, xla_temporaries
from benchmarks.timing import interleaved_minimum
from normref import compiled
from normref.registry import REGISTRY, OpSpec, Sample

TIME_TARGETS = {"input": 1.0, "float64": 1.25}
"""Time relative to torch's that normref aims at, computing in the input dtype or in float64
(against torch computing in the input's dtype either way)."""

JAX_TIME_TARGET = 1.0
"""Time relative to ``jax.jit``'s that normref aims at computing in the input dtype."""

FAMILY_TIME_TARGETS = {"whitening": {"input": 1.0, "float64": 1.5}}
"""Families whose time targets differ from :data:`TIME_TARGETS`: whitening in float64 runs
a float64 ``eigh`` against torch's float32 one."""

CUDA_TIME_TARGET = 1.5
"""Time relative to torch on CUDA (computing in the input dtype) that normref on CuPy aims at."""

MEMORY_TARGETS = {"input": 0.5, "float64": 2.0}
"""Temporaries (one call's peak minus its outputs, :mod:`benchmarks.memory`) that normref
aims at, as multiples of the primary input's size, likewise."""

TARGET_FAMILIES = ("standardization", "whitening", "weights", "gradients")
"""The registry families the targets are set for (every benchmarked one); rows of another
family would be measured without a verdict."""

STREAMING_FAMILIES = ("standardization",)
"""Families whose rows report how close they come to the memory bandwidth
(:attr:`Result.copy_share`): each must read its inputs and write its outputs at least."""

COPY = "copy"
"""The contender that copies an array of the primary input's size into another (NumPy,
one thread), timed in the same rounds: the bytes per second the memory moves at that size."""


def time_targets(op: str, kind: str) -> float:
    """The time target relative to torch for ``op`` computing in ``kind``."""
    return FAMILY_TIME_TARGETS.get(REGISTRY[op].family, TIME_TARGETS)[kind]


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
    multiple of the input's size: one call's temporaries, the larger of a
    forward's and a backward's (see :mod:`benchmarks.memory`). ``variant``
    is the case's (:attr:`benchmarks.cases.Case.variant`), ``device`` where
    normref and torch ran (:mod:`benchmarks.devices`). ``compiled_path`` says
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
    device: str = "cpu"
    copy_share: float | None = None
    """Bytes the step must move at least (its inputs read, its outputs written, forward
    and backward, :func:`minimum_bytes`) per second of normref's time, as a share of the bytes
    per second (read and written) of copying the primary input, timed in the same rounds
    (:data:`COPY`); ``None`` outside :data:`STREAMING_FAMILIES` or where not measured."""

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

        On the CPU: time relative to torch within :func:`time_targets`, relative to jax
        within :data:`JAX_TIME_TARGET` where normref computes in the input dtype and jax
        was timed, temporaries within :data:`MEMORY_TARGETS`. On CUDA: time relative to
        torch within :data:`CUDA_TIME_TARGET` (memory is not measured there).
        ``None`` (no verdict) for an operation outside :data:`TARGET_FAMILIES`, and
        where a target cannot be evaluated: torch was not timed (not installed, or left
        out by ``--frameworks``) or normref's memory was not measured on the CPU.
        """
        if REGISTRY[self.op].family not in TARGET_FAMILIES:
            return None
        kind = compute_kind(self.dtype, self.precision)
        vs_torch = self.ratio("torch")
        if vs_torch is None:
            return None
        if self.device == "cuda":
            return vs_torch <= CUDA_TIME_TARGET
        memory = self.memory["normref"]
        if memory is None:
            return None
        vs_jax = self.ratio("jax")
        jax_met = vs_jax is None or kind != "input" or vs_jax <= JAX_TIME_TARGET
        return (
            vs_torch <= time_targets(self.op, kind) and jax_met and memory <= MEMORY_TARGETS[kind]
        )


@dataclass(frozen=True)
class Contender:
    """One implementation of a case: a forward + backward step, and the bytes of its
    temporaries (the larger of a forward's and a backward's; ``None`` where not measured)."""

    step: Callable[[], Any]
    temporary_bytes: Callable[[], int | None]


def _normref(
    spec: OpSpec,
    sample: Sample,
    dy: Any,
    precision: str,
    *,
    fused: bool,
    device: Device = CPU,
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
        device.synchronize()

    def temporary_bytes() -> int | None:
        if device.name != "cpu":
            return None
        return max(traced_temporaries(forward), traced_temporaries(backward))

    return Contender(step, temporary_bytes)


def _torch(spec: OpSpec, sample: Sample, dy: np.ndarray, device: Device = CPU) -> Contender:
    import torch

    f = TORCH[spec.name](sample)
    leaves = [
        torch.tensor(sample.args[name], requires_grad=True, device=device.torch)
        for name in spec.differentiable
    ]
    cotangent = torch.tensor(dy, device=device.torch)

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        f(*leaves).backward(cotangent)
        device.synchronize()

    def temporary_bytes() -> int | None:
        if device.name != "cpu":
            return None
        for leaf in leaves:
            leaf.grad = None
        forward_peak, y = torch_peak(lambda: f(*leaves))
        backward_peak, _ = torch_peak(lambda: y.backward(cotangent))
        if forward_peak is None or backward_peak is None:
            return None
        grads = sum(leaf.grad.nbytes for leaf in leaves if leaf.grad is not None)
        return max(forward_peak - y.nbytes, backward_peak - grads)

    return Contender(step, temporary_bytes)


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

    def temporary_bytes() -> int | None:
        planned = [
            xla_temporaries(jax.jit(f).lower(*args).compile()),
            xla_temporaries(jax.jit(backward).lower(args, cotangent).compile()),
        ]
        return None if None in planned else max(p for p in planned if p is not None)

    return Contender(lambda: jax.block_until_ready(compiled(args, cotangent)), temporary_bytes)


def contenders(
    case: Case,
    dtype: str,
    precisions: tuple[str, ...],
    frameworks: tuple[str, ...],
    device: Device = CPU,
) -> dict[str, Contender]:
    """normref in each of ``precisions`` (on ``device``) and each framework of ``frameworks``
    with a counterpart (jax on the CPU only); for :data:`STREAMING_FAMILIES` on the CPU, a
    copy of an array of the primary input's size (:data:`COPY`)."""
    spec = case.spec

    def data() -> tuple[Sample, np.ndarray]:
        """A fresh copy of the case's inputs, and a cotangent of the output's shape and dtype.

        (The output has the primary input's shape; all arrays have one dtype.)
        """
        cotangent = np.random.default_rng(1).standard_normal(case.shape).astype(dtype)
        return case.sample(dtype), cotangent

    def on_device() -> tuple[Sample, Any]:
        sample, cotangent = data()
        moved = Sample(
            {
                k: device.asarray(v) if isinstance(v, np.ndarray) else v
                for k, v in sample.args.items()
            },
            sample.kwargs,
        )
        return moved, device.asarray(cotangent)

    found = {
        f"normref {p}": _normref(spec, *on_device(), p, fused=True, device=device)
        for p in precisions
    }
    if case.fused and (compiled.available() or device.name == "cuda"):
        for p in precisions:
            found[f"generic {p}"] = _normref(spec, *on_device(), p, fused=False, device=device)
    if "torch" in frameworks and spec.name in TORCH:
        found["torch"] = _torch(spec, *data(), device)
    if "jax" in frameworks and spec.name in JAX and device.name == "cpu":
        found["jax"] = _jax(spec, *data())
    if spec.family in STREAMING_FAMILIES and device.name == "cpu":
        source = data()[1]
        target = np.empty_like(source)
        found[COPY] = Contender(lambda: np.copyto(target, source), lambda: None)
    return found


def compiled_path_of(case: Case) -> str:
    """``"on"`` where normref's compiled path runs ``case``, ``"off"`` where it would but numba
    is not installed, ``"none"`` where the operation has no compiled path."""
    if not case.fused:
        return "none"
    return "on" if compiled.available() else "off"


def minimum_bytes(case: Case, dtype: str) -> int:
    """Bytes forward + backward must move at least: every array argument read by each, the
    output written by the forward, the cotangent read and the gradients written by the
    backward (the output and the cotangent have the primary input's shape)."""
    sample = case.sample(dtype)
    arrays = [v for v in sample.args.values() if isinstance(v, np.ndarray)]
    inputs = sum(a.nbytes for a in arrays)
    differentiable = sum(sample.args[name].nbytes for name in case.spec.differentiable)
    primary = sample.args[case.spec.primary].nbytes
    return (inputs + primary) + (primary + inputs + differentiable)


def measure(
    case: Case,
    dtype: str,
    precisions: tuple[str, ...],
    *,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    repeats: int,
    device: Device = CPU,
) -> list[Result]:
    """One :class:`Result` per precision mode for ``case`` in ``dtype``."""
    found = contenders(case, dtype, precisions, frameworks, device)
    seconds = interleaved_minimum({k: c.step for k, c in found.items()}, repeats=repeats)
    input_bytes = np.dtype(dtype).itemsize * int(np.prod(case.shape))
    streaming = COPY in seconds
    moved = minimum_bytes(case, dtype) if streaming else 0
    copy_rate = 2 * input_bytes / seconds[COPY] if streaming else 0.0

    def multiple(name: str) -> float | None:
        if name not in found:
            return None
        temporaries = found[name].temporary_bytes()
        return None if temporaries is None else temporaries / input_bytes

    def share(elapsed: float) -> float | None:
        return moved / elapsed / copy_rate if streaming else None

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
            device.name,
            share(seconds[f"normref {p}"]),
        )
        for p in precisions
    ]


def median_run(runs: list[list[Result]]) -> list[Result]:
    """Of several runs of the same rows, each row from the run in which its time relative
    to torch (else to jax, else its own time) is the median (the lower middle of an even
    number): a row's figures and verdict come from one run, its minima over rounds."""

    def key(result: Result) -> float:
        for other in ("torch", "jax"):
            ratio = result.ratio(other)
            if ratio is not None:
                return ratio
        return result.seconds["normref"] or 0.0

    rows = []
    for same in zip(*runs, strict=True):
        ordered = sorted(same, key=key)
        rows.append(ordered[(len(ordered) - 1) // 2])
    return rows
