"""Array kinds: NumPy, torch, JAX and TensorFlow arrays, converted exactly and differentiated by autograd.

An implementation under test receives arrays of one kind; its backward is
taken with that framework's own autograd (``torch.autograd.grad``,
``jax.vjp``, ``tf.GradientTape``). NumPy has no autograd, so a NumPy implementation is checked
forward only unless a hand-written VJP is given. Frameworks are imported only
when their kind is used.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

Native = Any
Function = Callable[[dict[str, Native]], tuple[Native, dict[str, Native]]]
"""An implementation as the runner calls it: arrays by name -> (y, running statistics by name)."""


class ArrayKindUnavailableError(RuntimeError):
    """The framework of an array kind is not installed."""


@dataclass
class SetupClock:
    """Seconds spent compiling while it was open (not counted in a row's time)."""

    seconds: float = 0.0


_COMPILING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "conformance_compiling", default=False
)
_SETUP: contextvars.ContextVar[SetupClock | None] = contextvars.ContextVar(
    "conformance_setup", default=None
)


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Within the block, implementations run compiled: ``torch.compile`` (``dynamic=True``,
    ``fullgraph=True``) for torch tensors, ``jax.jit`` of the forward and the backward
    together for JAX arrays. Each evaluation compiles first (timed on the open
    :func:`setup_clock`), then runs again for the values it reports."""
    token = _COMPILING.set(True)
    try:
        yield
    finally:
        _COMPILING.reset(token)


def record_setup(seconds: float) -> None:
    """Add ``seconds`` of compilation to the open :func:`setup_clock`, if any."""
    clock = _SETUP.get()
    if clock is not None:
        clock.seconds += seconds


@contextlib.contextmanager
def setup_clock() -> Iterator[SetupClock]:
    """A clock of the compilation done in the block (:func:`compiling`)."""
    clock = SetupClock()
    token = _SETUP.set(clock)
    try:
        yield clock
    finally:
        _SETUP.reset(token)


@dataclass(frozen=True)
class Evaluation:
    """What one call produced, as float64 NumPy arrays with the native dtypes' names, and the
    inputs it wrote into (``modified``: their names)."""

    values: dict[str, np.ndarray]
    dtypes: dict[str, str]
    modified: tuple[str, ...] = ()
    setup_seconds: float = 0.0
    """Seconds the call spent compiling (:func:`compiling`), not counted in a row's time."""


class ArrayKind:
    """Conversions and autograd for one array library (subclasses below)."""

    name = ""
    dtypes: tuple[str, ...] = ()
    has_autograd = True

    def asarray(self, values: np.ndarray, dtype: str) -> Native:
        """``values`` (exactly representable in ``dtype``) as a new native array of ``dtype``
        (never sharing memory with ``values``: an implementation may write into its input)."""
        raise NotImplementedError

    def modified(self, arrays: dict[str, Native], given: dict[str, np.ndarray]) -> tuple[str, ...]:
        """The names of ``arrays`` whose values are no longer ``given`` ones (NaN equal to NaN):
        inputs an implementation wrote into."""
        return tuple(
            name
            for name, array in arrays.items()
            if not np.array_equal(self.to_numpy(array), given[name], equal_nan=True)
        )

    def to_numpy(self, array: Native) -> np.ndarray:
        """A native array as a float64 NumPy array (exact)."""
        raise NotImplementedError

    def dtype_name(self, array: Native) -> str:
        """The name of a native array's dtype (``"float32"``, ...)."""
        return str(array.dtype).rsplit(".", 1)[-1]

    def vjp(
        self, fn: Function, arrays: dict[str, Native], wrt: tuple[str, ...], dy: np.ndarray
    ) -> tuple[Native, dict[str, Native], dict[str, Native | None]]:
        """``fn`` on ``arrays`` and the gradients of its ``y`` along ``dy`` for ``wrt``."""
        raise NotImplementedError

    def compiled(self, fn: Function) -> Function:
        """``fn`` compiled by this kind's compiler (forward only; the backward of a compiled
        forward is compiled by the same autograd)."""
        msg = f"{self.name} arrays have no compiler"
        raise NotImplementedError(msg)

    def evaluate(
        self,
        fn: Function,
        inputs: dict[str, tuple[np.ndarray, str]],
        wrt: tuple[str, ...],
        dy: np.ndarray | None,
    ) -> Evaluation:
        """Run ``fn`` on ``inputs`` (values and dtypes) and, given ``dy``, its backward; within
        :func:`compiling`, compiled, after a first run that compiles it."""
        setup = 0.0
        if _COMPILING.get():
            started = time.perf_counter()
            fn = self.compiled(fn)
            self._outputs(fn, self._arrays(inputs), wrt, dy)
            setup = time.perf_counter() - started
            record_setup(setup)
        arrays = self._arrays(inputs)
        y, state, grads = self._outputs(fn, arrays, wrt, dy)
        outputs = {"y": y, **state}
        values = {k: self.to_numpy(v) for k, v in outputs.items()}
        dtypes = {k: self.dtype_name(v) for k, v in outputs.items()}
        modified = self.modified(arrays, {name: given for name, (given, _) in inputs.items()})
        for name, grad in grads.items():
            if grad is None:  # y does not depend on it: its gradient is zero
                values[f"d{name}"] = np.zeros(np.shape(inputs[name][0]))
                dtypes[f"d{name}"] = inputs[name][1]
            else:
                values[f"d{name}"] = self.to_numpy(grad)
                dtypes[f"d{name}"] = self.dtype_name(grad)
        return Evaluation(values, dtypes, modified, setup)

    def _arrays(self, inputs: dict[str, tuple[np.ndarray, str]]) -> dict[str, Native]:
        """The inputs as arrays of this kind, each a new one."""
        return {name: self.asarray(values, dtype) for name, (values, dtype) in inputs.items()}

    def _outputs(
        self, fn: Function, arrays: dict[str, Native], wrt: tuple[str, ...], dy: np.ndarray | None
    ) -> tuple[Native, dict[str, Native], dict[str, Native | None]]:
        """``fn`` on ``arrays``: its output, its state and (given ``dy``) the gradients."""
        if dy is None:
            y, state = fn(arrays)
            return y, state, {}
        return self.vjp(fn, arrays, wrt, dy)


class NumpyKind(ArrayKind):
    """NumPy arrays (float16, float32, float64; no bfloat16, no autograd)."""

    name = "numpy"
    dtypes = ("float16", "float32", "float64")
    has_autograd = False

    def asarray(self, values: np.ndarray, dtype: str) -> Native:
        return np.array(values, dtype=dtype)

    def to_numpy(self, array: Native) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)


class TorchKind(ArrayKind):
    """torch tensors on ``device`` (the CPU unless told); gradients by ``torch.autograd.grad``.

    On ``"cuda"`` the case's values are rounded to the dtype on the host and moved, and
    results come back to the host in float64: torch's CUDA kernels (cuDNN's among them)
    are judged against the same reference as its CPU ones.
    """

    name = "torch"
    dtypes = ("float16", "bfloat16", "float32", "float64")

    def __init__(self, device: str = "cpu") -> None:
        try:
            import torch
        except ImportError as error:
            msg = "torch is not installed (pip install -e '.[torch]')"
            raise ArrayKindUnavailableError(msg) from error
        self.torch = torch
        self.device = device

    def asarray(self, values: np.ndarray, dtype: str) -> Native:
        torch = self.torch
        host = torch.from_numpy(np.array(values, dtype=np.float64)).to(getattr(torch, dtype))
        return host if self.device == "cpu" else host.to(self.device)

    def to_numpy(self, array: Native) -> np.ndarray:
        return array.detach().to(self.torch.float64).cpu().numpy()

    def vjp(
        self, fn: Function, arrays: dict[str, Native], wrt: tuple[str, ...], dy: np.ndarray
    ) -> tuple[Native, dict[str, Native], dict[str, Native | None]]:
        torch = self.torch
        leaves = [arrays[name].requires_grad_(True) for name in wrt]
        y, state = fn(arrays)
        cotangent = torch.from_numpy(np.array(dy, dtype=np.float64)).to(y.dtype).to(y.device)
        grads = torch.autograd.grad(y, leaves, grad_outputs=cotangent, allow_unused=True)
        return y, state, dict(zip(wrt, grads, strict=True))

    def compiled(self, fn: Function) -> Function:
        """``torch.compile(fn, dynamic=True, fullgraph=True)``, from a fresh cache: a graph
        break or a failed compile raises instead of running eagerly."""
        self.torch._dynamo.reset()
        compiled: Function = self.torch.compile(fn, dynamic=True, fullgraph=True)
        return compiled


class JaxKind(ArrayKind):
    """JAX arrays (64-bit mode enabled, for float64); gradients by ``jax.vjp``."""

    name = "jax"
    dtypes = ("float16", "bfloat16", "float32", "float64")

    def __init__(self) -> None:
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as error:
            msg = "jax is not installed (pip install -e '.[jax]')"
            raise ArrayKindUnavailableError(msg) from error
        jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp

    def asarray(self, values: np.ndarray, dtype: str) -> Native:
        return self.jnp.asarray(
            np.asarray(values, dtype=np.float64), dtype=getattr(self.jnp, dtype)
        )

    def to_numpy(self, array: Native) -> np.ndarray:
        return np.asarray(array.astype(self.jnp.float64))

    def vjp(
        self, fn: Function, arrays: dict[str, Native], wrt: tuple[str, ...], dy: np.ndarray
    ) -> tuple[Native, dict[str, Native], dict[str, Native | None]]:
        def on(*primals: Native) -> tuple[Native, dict[str, Native]]:
            return fn({**arrays, **dict(zip(wrt, primals, strict=True))})

        y, pullback, state = self.jax.vjp(on, *(arrays[n] for n in wrt), has_aux=True)
        grads = pullback(self.jnp.asarray(dy, dtype=y.dtype))
        return y, state, dict(zip(wrt, grads, strict=True))

    def compiled(self, fn: Function) -> Function:
        """``jax.jit(fn)``; its VJP is then the transpose of the compiled computation, run
        compiled too."""
        compiled: Function = self.jax.jit(fn)
        return compiled


class TensorflowKind(ArrayKind):
    """TensorFlow tensors on the CPU; gradients by ``tf.GradientTape``."""

    name = "tensorflow"
    dtypes = ("float16", "bfloat16", "float32", "float64")

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner on every import
        try:
            import tensorflow as tf
        except ImportError as error:
            msg = "tensorflow is not installed (pip install -e '.[tf-keras]')"
            raise ArrayKindUnavailableError(msg) from error
        self.tf = tf

    def asarray(self, values: np.ndarray, dtype: str) -> Native:
        tf = self.tf
        return tf.cast(tf.constant(np.asarray(values, dtype=np.float64)), getattr(tf, dtype))

    def to_numpy(self, array: Native) -> np.ndarray:
        return np.asarray(self.tf.cast(array, self.tf.float64).numpy())

    def dtype_name(self, array: Native) -> str:
        return str(array.dtype.name)

    def vjp(
        self, fn: Function, arrays: dict[str, Native], wrt: tuple[str, ...], dy: np.ndarray
    ) -> tuple[Native, dict[str, Native], dict[str, Native | None]]:
        tf = self.tf
        with tf.GradientTape() as tape:
            for name in wrt:
                tape.watch(arrays[name])
            y, state = fn(arrays)
        cotangent = tf.cast(tf.constant(np.asarray(dy, dtype=np.float64)), y.dtype)
        grads = tape.gradient(y, [arrays[n] for n in wrt], output_gradients=cotangent)
        return y, state, dict(zip(wrt, grads, strict=True))


ARRAY_KINDS: dict[str, Callable[[], ArrayKind]] = {
    "numpy": NumpyKind,
    "torch": TorchKind,
    "jax": JaxKind,
    "tensorflow": TensorflowKind,
}
"""Every array kind, by name (created on first use)."""


def array_kind(name: str) -> ArrayKind:
    """The array kind ``name``; :class:`ValueError` for an unknown one."""
    try:
        factory = ARRAY_KINDS[name]
    except KeyError:
        msg = f"array type must be one of {sorted(ARRAY_KINDS)}, got {name!r}"
        raise ValueError(msg) from None
    return factory()
