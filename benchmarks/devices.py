"""Where a benchmark runs: the CPU (NumPy, torch on the CPU) or a CUDA GPU (CuPy, torch on CUDA).

A :class:`Device` moves a case's NumPy arrays to the arrays normref computes
on (NumPy or CuPy) and names torch's device; :meth:`Device.synchronize` waits
for the work queued on the device, so that a contender's clock stops when its
results exist (a CUDA call returns when its kernels are queued, not done).
``--device cpu`` runs the very code ``--device cuda`` runs, with NumPy and
torch on the CPU, where synchronizing has nothing to wait for.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

DEVICES = ("cpu", "cuda")

NO_GPU_EXIT = 2
"""The exit status of a run asked for a GPU where none is usable."""


@dataclass(frozen=True)
class Device:
    """A device the contenders compute on: ``"cpu"`` or ``"cuda"``."""

    name: str

    def asarray(self, value: np.ndarray) -> Any:
        """``value`` as an array normref computes on there (NumPy, or CuPy on the GPU)."""
        if self.name == "cpu":
            return value
        import cupy

        return cupy.asarray(value)

    @property
    def torch(self) -> str:
        """torch's name of the device."""
        return self.name

    def synchronize(self) -> None:
        """Wait until the work queued on the device by normref (CuPy) and torch is done."""
        if self.name == "cpu":
            return
        import cupy
        import torch

        cupy.cuda.Device().synchronize()
        torch.cuda.synchronize()


CPU = Device("cpu")


def missing_gpu() -> str | None:
    """Why CuPy and torch cannot both compute on a CUDA GPU here, or ``None`` where they can."""
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install 'normref[gpu]')"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "torch finds no CUDA device"
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"CuPy finds no CUDA device ({error})"
    return None if count > 0 else "CuPy finds no CUDA device"


def device(name: str) -> Device:
    """The :class:`Device` called ``name``; a :class:`SystemExit` with status
    :data:`NO_GPU_EXIT` and the reason where ``"cuda"`` is asked for and no GPU is usable."""
    if name not in DEVICES:
        msg = f"--device must be one of {DEVICES}, got {name!r}"
        raise SystemExit(msg)
    if name == "cuda":
        reason = missing_gpu()
        if reason is not None:
            import sys

            print(f"--device cuda: no GPU to run on: {reason}", file=sys.stderr)
            raise SystemExit(NO_GPU_EXIT)
    return Device(name)
