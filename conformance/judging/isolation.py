"""Implementations run in a worker process: a hang, a crash or an exit fails its row, not the run.

The suite runs other people's code, so it treats that code as hostile. On the
command line every call of an implementation goes to a worker process started
with the ``spawn`` method (a fresh interpreter: safe with jax's threads and
CUDA, which a forked process inherits half-initialized). One worker is reused
across rows, so the array library and the implementation are imported once;
it is restarted after a crash. For each call:

* the clock starts when the worker begins the call, after it has imported the
  implementation's modules (:data:`LOAD_LIMIT` bounds that); a call longer
  than the timeout is stopped, the worker killed, and the row fails with
  "timed out after N s". The first call of an implementation in a worker may
  compile (jax traces and compiles on first use, numba compiles its kernels):
  it is given :data:`FIRST_CALL_ALLOWANCE` more;
* a worker that dies during the call (``abort``, a segmentation fault, killed,
  ``os._exit``) fails the row with the signal or exit status;
* ``SystemExit``, ``KeyboardInterrupt`` raised by the implementation, or any
  other exception that is not an :class:`Exception`, fails the row
  (:class:`~conformance.judging.rows.ImplementationFailedError`); an
  :class:`Exception` is sent back as
  :class:`~conformance.judging.rows.ImplementationRaisedError`, with its type,
  message and traceback, and is judged
  as in-process exceptions are (a failing row, or a refusal on an input normref
  refuses);
* the worker ignores SIGINT: Ctrl-C stops the run in the parent, which kills
  the worker and reports the rows done so far.

A worker builds the bindings it runs from a :class:`Recipe` (an adapter's
binding by position, a function by its importable name), since a closure cannot
be sent to a fresh interpreter.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import signal
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from conformance.adapters import get_adapter
from conformance.adapters.arrays import Evaluation, array_kind, record_setup
from conformance.adapters.base import Binding, FrameworkLacksError
from conformance.adapters.function import function_binding, load_function
from conformance.checked.cases import Prepared
from conformance.checked.models import Model
from conformance.judging.rows import (
    ImplementationFailedError,
    ImplementationRaisedError,
    quietly,
)

DEFAULT_TIMEOUT = 60.0
"""Seconds one call of an implementation may take on the command line (``--timeout``)."""

LOAD_LIMIT = 600.0
"""Seconds a worker may take to start and import an implementation before its first call
(torch and jax take seconds on a loaded machine; a hang there is not a call's)."""

FIRST_CALL_ALLOWANCE = 60.0
"""Seconds the first call of an implementation in a worker is given beyond the timeout: it may
compile."""

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Recipe:
    """How a worker builds a binding: the ``index``-th binding of adapter ``framework`` (of its
    compiled bindings, ``compiled``), or a user's function ``impl`` (``"module:function"``) for
    ``op`` with its array type, VJP and convention."""

    framework: str | None = None
    index: int = 0
    compiled: bool = False
    impl: str | None = None
    op: str = ""
    array_type: str = "numpy"
    vjp: str | None = None
    convention: Model | None = None
    label: str | None = None

    def import_requirements(self) -> None:
        """Import the libraries the binding's calls will (a framework's, an array type's)."""
        if self.framework is not None:
            for module in get_adapter(self.framework).requires:
                importlib.import_module(module)
        else:
            array_kind(self.array_type)

    def build(self) -> Binding:
        """The binding this recipe names (in the worker: imports the implementation)."""
        if self.framework is not None:
            adapter = get_adapter(self.framework)
            found = adapter.compiled_bindings() if self.compiled else adapter.bindings
            return found[self.index]
        if self.impl is None:
            msg = "a recipe names an adapter's binding or a function"
            raise ValueError(msg)
        return function_binding(
            load_function(self.impl),
            self.op,
            array_type=self.array_type,
            vjp=None if self.vjp is None else load_function(self.vjp),
            convention=self.convention,
            label=self.label,
        )


def _serve(connection: Connection, preload: tuple[Recipe, ...] = ()) -> None:
    """The worker: build bindings from recipes (those of ``preload`` first, importing what they
    need while the parent prepares its cases), call them, send back what happened."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    built: dict[Recipe, Binding] = {}
    for recipe in preload:
        try:
            built[recipe] = recipe.build()
            recipe.import_requirements()
        except BaseException:  # noqa: BLE001 - it fails again, and is reported, on its call
            built.pop(recipe, None)
    while True:
        try:
            recipe, prepared, model, backward = connection.recv()
        except EOFError:
            return
        try:
            if recipe not in built:
                built[recipe] = recipe.build()
        except BaseException as error:  # noqa: BLE001 - reported to the parent, never raised here
            connection.send(("raised", type(error).__name__, str(error), traceback.format_exc()))
            continue
        connection.send(("started",))
        try:
            evaluation = quietly(built[recipe].run, prepared, model, backward)
        except FrameworkLacksError as error:
            connection.send(("lacks", str(error)))
        except Exception as error:  # noqa: BLE001 - the implementation's exception, sent back
            connection.send(("raised", type(error).__name__, str(error), traceback.format_exc()))
        except BaseException as error:  # noqa: BLE001 - an exit must not end the worker's loop
            connection.send(("fatal", type(error).__name__, str(error), traceback.format_exc()))
        else:
            connection.send(("result", evaluation))


def _death(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed: the worker process was killed by {name} ({-exitcode})"
    return f"crashed: the worker process exited with status {exitcode} during the call"


class Worker:
    """One worker process, started on first use and again after a crash or a timeout."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, preload: Sequence[Recipe] = ()) -> None:
        if not timeout > 0:
            msg = f"timeout must be a positive number of seconds, got {timeout!r}"
            raise ValueError(msg)
        self.timeout = float(timeout)
        self.preload = tuple(dict.fromkeys(preload))
        self._process: Any = None
        self._connection: Connection | None = None
        self._warm: set[Recipe] = set()

    def _start(self) -> Connection:
        if self._connection is not None and self._process.is_alive():
            return self._connection
        self._stop()
        parent, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(target=_serve, args=(child, self.preload), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent
        self._warm = set()
        return parent

    def _stop(self) -> None:
        """Kill the worker (it may be inside a call) and forget it."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
            self._process.close()
        if self._connection is not None:
            self._connection.close()
        self._process, self._connection = None, None

    def start(self) -> None:
        """Start the worker now (it imports what its preloaded recipes need meanwhile)."""
        self._start()

    def close(self) -> None:
        """Stop the worker."""
        self._stop()

    def _receive(self, limit: float, what: str, first: bool = False) -> tuple[Any, ...]:
        connection = self._connection
        assert connection is not None  # _start made it
        ready = wait([connection, self._process.sentinel], timeout=limit)
        if connection in ready or connection.poll():
            try:
                return tuple(connection.recv())
            except EOFError:
                pass
        if not ready:
            self._stop()
            why = " (the first call in a worker, which may compile, has more)" if first else ""
            raise ImplementationFailedError(f"{what} after {limit:g} s{why}")
        self._process.join()
        death = _death(self._process.exitcode)
        self._stop()
        raise ImplementationFailedError(death)

    def call(self, recipe: Recipe, prepared: Prepared, model: Model, backward: bool) -> Evaluation:
        """One call of the binding ``recipe`` names, in the worker (module docstring)."""
        connection = self._start()
        try:
            connection.send((recipe, prepared, model, backward))
            reply = self._receive(LOAD_LIMIT, "timed out loading the implementation")
            if reply[0] == "started":
                first = recipe not in self._warm
                limit = self.timeout + (FIRST_CALL_ALLOWANCE if first else 0.0)
                reply = self._receive(limit, "timed out", first)
                self._warm.add(recipe)
        except BaseException:
            # Ctrl-C (or any error here) leaves the worker mid-call: it goes
            self._stop()
            raise
        return _outcome(reply)


def _outcome(reply: tuple[Any, ...]) -> Evaluation:
    """The evaluation a worker sent back, or the exception it stands for."""
    what = reply[0]
    if what == "result":
        evaluation: Evaluation = reply[1]
        return evaluation
    if what == "lacks":
        raise FrameworkLacksError(reply[1])
    type_name, message, worker_traceback = reply[1:]
    if what == "raised":
        raise ImplementationRaisedError(type_name, message, worker_traceback)
    raise ImplementationFailedError(f"raised {type_name}: {message}".rstrip(": "), worker_traceback)


def isolated(binding: Binding, recipe: Recipe, worker: Worker) -> Binding:
    """``binding`` with every call made by ``worker`` (the binding ``recipe`` builds there)."""

    def run(prepared: Prepared, model: Model, backward: bool) -> Evaluation:
        evaluation = worker.call(recipe, prepared, model, backward)
        record_setup(evaluation.setup_seconds)  # the worker's compile time, on this side's clock
        return evaluation

    return dataclasses.replace(binding, run=run)


@contextmanager
def worker_for(timeout: float | None, preload: Sequence[Recipe] = ()) -> Iterator[Worker | None]:
    """A worker with ``timeout`` (``None``: no worker, calls run in this process), started at
    once to import what ``preload`` needs, and stopped on leaving."""
    if timeout is None:
        yield None
        return
    worker = Worker(timeout, preload)
    try:
        worker.start()
        yield worker
    finally:
        worker.close()


def isolate_all(
    bindings: Sequence[Binding], recipes: Sequence[Recipe], worker: Worker | None
) -> list[Binding]:
    """``bindings`` made to run in ``worker`` (as they are when it is ``None``)."""
    if worker is None:
        return list(bindings)
    return [isolated(b, r, worker) for b, r in zip(bindings, recipes, strict=True)]
