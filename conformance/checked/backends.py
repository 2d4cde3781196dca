"""Backends: the array library the float64 reference is evaluated with.

normref runs unchanged on any Array-API library, so the suite can evaluate its
reference on NumPy arrays (the default), on CuPy arrays (on the GPU) or on
torch tensors (on the CPU: the same path without a GPU). Cases, error terms
and comparisons stay in NumPy: only normref's own functions run on the
backend, and their float64 results come back as NumPy arrays. A backend that
cannot run here is refused with :class:`BackendUnavailableError`, a usage error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class BackendUnavailableError(ValueError):
    """The backend's library is not installed, or has no device to run on."""


@dataclass(frozen=True)
class Backend:
    """An array library for normref's reference: float64 arrays in, float64 NumPy arrays out.

    ``put`` makes a float64 array of the library from a NumPy array; ``fetch``
    returns one to NumPy.
    """

    name: str
    put: Callable[[np.ndarray], Any]
    fetch: Callable[[Any], np.ndarray]

    def to_backend(self, value: Any) -> Any:
        """``value`` on the backend if it is a NumPy array, else unchanged."""
        return self.put(value) if isinstance(value, np.ndarray) else value

    def to_numpy(self, value: Any) -> Any:
        """An array of the backend (or a tuple of them) back as float64 NumPy; others unchanged."""
        if isinstance(value, tuple):
            return tuple(self.to_numpy(v) for v in value)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return np.asarray(self.fetch(value), dtype=np.float64)


NUMPY = Backend("numpy", lambda a: np.asarray(a, dtype=np.float64), np.asarray)
"""The default backend."""


def _torch() -> Backend:
    if importlib.util.find_spec("torch") is None:
        msg = "backend 'torch' needs torch (pip install -e '.[torch]')"
        raise BackendUnavailableError(msg)
    import torch

    return Backend(
        "torch",
        lambda a: torch.from_numpy(np.array(a, dtype=np.float64)),
        lambda t: t.detach().cpu().numpy(),
    )


def _cupy() -> Backend:
    if importlib.util.find_spec("cupy") is None:
        msg = "backend 'cupy' needs cupy and a CUDA GPU (pip install cupy-cuda12x)"
        raise BackendUnavailableError(msg)
    import cupy

    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        msg = f"backend 'cupy' has no CUDA device here: {error}"
        raise BackendUnavailableError(msg) from error
    if devices == 0:
        msg = "backend 'cupy' has no CUDA device here"
        raise BackendUnavailableError(msg)
    return Backend("cupy", lambda a: cupy.asarray(a, dtype=cupy.float64), cupy.asnumpy)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "numpy": lambda: NUMPY,
    "torch": _torch,
    "cupy": _cupy,
}
"""Every backend, by name (its library is imported when it is asked for)."""


def get_backend(name: str | Backend | None) -> Backend:
    """The backend ``name`` (``None``: NumPy); :class:`BackendUnavailableError` if it cannot run
    here, :class:`ValueError` for an unknown name."""
    if name is None:
        return NUMPY
    if isinstance(name, Backend):
        return name
    try:
        factory = BACKENDS[name]
    except KeyError:
        msg = f"backend must be one of {sorted(BACKENDS)}, got {name!r}"
        raise ValueError(msg) from None
    return factory()
