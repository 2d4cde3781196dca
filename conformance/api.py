"""The suite from Python: run frameworks, check one function, with settings recorded.

Implementations run in this process by default: a closure or a lambda cannot
be sent to another. ``isolate=True`` runs them in a worker process
(:mod:`conformance.judging.isolation`), as the command line does, so that a
hang (``timeout``), a crash or an exit fails a row instead of ending the run;
it needs an importable function. In this process nothing protects the run
from an implementation that hangs, aborts, segfaults or calls ``os._exit``, nor
the process from what it changes in global state (a library's settings,
``sys.modules``); an exit it raises (``SystemExit``) fails its row.
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from conformance.adapters import get_adapter
from conformance.adapters.base import Binding
from conformance.adapters.function import check_names, function_under_test, importable_name
from conformance.checked.backends import Backend, get_backend
from conformance.checked.cases import Case
from conformance.checked.formats import DTYPES
from conformance.checked.models import model_of, preset_name, with_changes
from conformance.checked.ops import CHECKED_OPS
from conformance.judging.isolation import DEFAULT_TIMEOUT, Recipe, isolate_all, worker_for
from conformance.judging.runner import RunInterrupted, run_bindings, run_result
from conformance.reports.results import CaseResult, RunResult, Status

DEFAULT_DTYPES: tuple[str, ...] = ("float32", "float64")
"""The dtypes a run checks unless told otherwise (``--dtypes`` adds float16 and bfloat16)."""

Progress = Callable[[int, str], None]


def _now() -> str:
    """The date and time, in ISO 8601 (UTC, to the second)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _environment(frameworks: dict[str, dict[str, str]], started: str) -> dict[str, Any]:
    import numpy

    return {
        "started": started,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "frameworks": frameworks,
    }


def _not_implemented(framework: str, op: str, dtypes: Sequence[str]) -> list[CaseResult]:
    return [
        CaseResult(
            implementation=framework,
            framework=framework,
            op=op,
            case=f"{op}/*",
            kind="op",
            seed=0,
            dtype=dtype,
            status=Status.NOT_IMPLEMENTED,
            model="",
            explanation=f"{framework} has no implementation of {op}",
        )
        for dtype in dtypes
    ]


def _timeout(isolate: bool, timeout: float | None) -> float | None:
    """The worker's timeout: ``None`` (no worker) unless ``isolate``."""
    if not isolate:
        if timeout is not None:
            msg = "timeout needs isolate=True (a call in this process cannot be stopped)"
            raise ValueError(msg)
        return None
    return DEFAULT_TIMEOUT if timeout is None else timeout


def _checked(
    bindings: list[Binding],
    recipes: list[Recipe],
    dtypes: Sequence[str],
    timeout: float | None,
    finish: Callable[[list[CaseResult], bool], RunResult],
    **options: Any,
) -> RunResult:
    """The rows of ``bindings`` (in a worker where ``timeout`` is given) made a run by
    ``finish(rows, interrupted)``; Ctrl-C raises :class:`RunInterrupted` holding the partial
    run."""
    with worker_for(timeout, recipes) as worker:
        try:
            results = run_bindings(isolate_all(bindings, recipes, worker), dtypes, **options)
        except RunInterrupted as stopped:
            stopped.run = finish(stopped.results, True)
            raise
    return finish(results, False)


def run(
    frameworks: Sequence[str] = ("torch",),
    *,
    ops: Sequence[str] | None = None,
    dtypes: Sequence[str] = DEFAULT_DTYPES,
    case: str | None = None,
    seed: int = 0,
    thorough: bool = False,
    compile: bool = False,
    progress: Progress | None = None,
    backend: str | Backend | None = None,
    isolate: bool = False,
    timeout: float | None = None,
    replicas: int | None = None,
) -> RunResult:
    """Check every op of ``ops`` (default all) that each framework has, at ``dtypes``.

    A framework that is not installed is skipped, with the reason, in
    ``RunResult.skipped``; an op it lacks gets "not implemented" rows.
    ``thorough`` checks every reduction length and realistic size at every dtype
    (:func:`conformance.checked.cases.large_cases`). ``compile`` also runs every
    binding of a framework with a compiler through it (``torch.compile``,
    ``jax.jit``), as implementations whose names end in ``" (compiled)"``.
    ``backend`` is the array library the reference runs on (``"numpy"``, the
    default, ``"cupy"`` or ``"torch"``; :mod:`conformance.checked.backends`).
    ``isolate`` runs the frameworks in a worker process, each call stopped
    after ``timeout`` seconds (default 60; module docstring). ``replicas`` adds each
    framework's batch norm across that many replicas, in a process of their own
    (:mod:`conformance.replicas`).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> import pytest
    >>> _ = pytest.importorskip("torch")  # the example checks torch: it skips without it
    >>> result = conformance.run(['torch'], ops=['rms_norm'], dtypes=['float64'])
    >>> print(result.ok, sorted({row.implementation for row in result.results}))
    True ['torch.nn.RMSNorm', 'torch.nn.functional.rms_norm']
    """
    started, date = time.perf_counter(), _now()
    limit = _timeout(isolate, timeout)
    reference = get_backend(backend)
    dtypes = check_names(dtypes, DTYPES, "dtypes")
    if case is not None:
        ops = [case.partition("/")[0]]
    ops = check_names(ops if ops is not None else CHECKED_OPS, CHECKED_OPS, "ops")
    bindings: list[Binding] = []
    recipes: list[Recipe] = []
    lacking: list[CaseResult] = []
    skipped: list[dict[str, str]] = []
    versions: dict[str, dict[str, str]] = {}
    for name in frameworks:
        adapter = get_adapter(name)
        reason = adapter.unavailable()
        if reason is not None:
            skipped.append({"framework": name, "reason": reason})
            continue
        versions[name] = adapter.versions()
        for compiled, found in ((False, adapter.bindings), (True, adapter.compiled_bindings())):
            for index, binding in enumerate(found):
                if binding.op in ops and (compile or not compiled):
                    bindings.append(binding)
                    recipes.append(Recipe(framework=name, index=index, compiled=compiled))
        for op in ops:
            if op not in adapter.ops():
                lacking += _not_implemented(name, op, dtypes)
    across: list[Binding] = []
    replicated: list[CaseResult] = []
    if replicas is not None:
        from conformance.replicas import run_replicas

        replicated, across, not_run = run_replicas(
            frameworks,
            replicas,
            ops=ops,
            dtypes=dtypes,
            case=case,
            seed=seed,
            backend=reference.name,
        )
        skipped += not_run

    def finish(results: list[CaseResult], interrupted: bool) -> RunResult:
        outcome = run_result(
            results + replicated + lacking,
            bindings + across,
            frameworks=list(frameworks),
            ops=list(ops),
            dtypes=list(dtypes),
            case=case,
            seed=seed,
            thorough=thorough,
            compile=compile,
            replicas=replicas,
            backend=reference.name,
            isolated=limit is not None,
            timeout=limit,
        )
        outcome.skipped = skipped
        outcome.environment = _environment(versions, date)
        outcome.interrupted = interrupted
        outcome.seconds = time.perf_counter() - started
        return outcome

    return _checked(
        bindings,
        recipes,
        dtypes,
        limit,
        finish,
        case_id=case,
        seed=seed,
        thorough=thorough,
        progress=progress,
        backend=reference,
    )


def check(
    fn: Callable[..., Any],
    op: str,
    convention: Any = None,
    *,
    array_type: str = "numpy",
    vjp: Callable[..., Any] | None = None,
    dtypes: Sequence[str] | None = None,
    case: str | None = None,
    seed: int = 0,
    thorough: bool = False,
    progress: Progress | None = None,
    backend: str | Backend | None = None,
    isolate: bool = False,
    timeout: float | None = None,
    cases: Sequence[Case] | None = None,
    changes: Sequence[str] = (),
) -> RunResult:
    """Check a function with normref's signature for ``op`` against normref.

    Parameters
    ----------
    fn
        The implementation: called like normref's function for ``op`` (e.g.
        ``fn(x, gamma, beta, axes=(-1,), eps=1e-5)`` for ``"layer_norm"``),
        with arrays of ``array_type``.
    op
        The op's name (``conformance.checked.ops.CHECKED_OPS``).
    convention
        The convention ``fn`` declares: a preset's name (``"torch"``), a
        :class:`~normref.conventions.Convention`, a
        :class:`~conformance.checked.models.Model`, or ``None`` for normref's own.
    array_type
        ``"numpy"`` (default), ``"torch"`` or ``"jax"``.
    vjp
        A hand-written VJP with normref's VJP signature; without it the
        backward is the framework's autograd, and NumPy functions are
        checked forward only.
    dtypes
        Default: every dtype the array type has.
    case
        Run the case of this id only (``"layer_norm/outlier-1e4"``).
    seed
        The suite's seed: it draws the cases' random data.
    thorough
        Every reduction length and realistic size at every dtype (a default
        run checks some of them, in float32).
    backend
        The array library normref's reference runs on: ``"numpy"`` (default),
        ``"cupy"`` (on the GPU) or ``"torch"`` (:mod:`conformance.checked.backends`).
    isolate
        Run ``fn`` (and ``vjp``) in a worker process, as the command line
        does: a hang, a crash or an exit fails its row only. ``fn`` must be
        importable by name (not a lambda or a local function).
    timeout
        With ``isolate``, the seconds one call may take (default 60).
    cases
        Run these cases (:class:`~conformance.checked.cases.Case`, those of
        ``op``) instead of the suite's.
    changes
        Changes to ``convention``, each ``"field=value"`` (``"rms_norm_eps=1e-5"``;
        :func:`~conformance.checked.models.with_changes`), as ``--set`` makes
        them on the command line.

    Returns
    -------
    RunResult
        ``.ok``, ``.failures``, ``.findings``, ``.results`` and ``.to_json()``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> result = conformance.check(normref.layer_norm, 'layer_norm', dtypes=['float64'])
    >>> print(result.ok, result.counts['pass'], result.counts['fail'])
    True 22 0
    """
    started, date = time.perf_counter(), _now()
    limit = _timeout(isolate, timeout)
    reference = get_backend(backend)
    model = with_changes(model_of(convention), changes)
    binding, chosen = function_under_test(fn, op, model, array_type, vjp, dtypes)
    names = {"impl": importable_name(fn), "impl_vjp": None if vjp is None else importable_name(vjp)}
    recipes = []
    if limit is not None:
        if names["impl"] is None or (vjp is not None and names["impl_vjp"] is None):
            msg = (
                "isolate=True runs the function in another process, which finds it by name: "
                "give a function importable as module:function (not a lambda, a local "
                "function or one of __main__)"
            )
            raise ValueError(msg)
        recipes = [
            Recipe(
                impl=names["impl"],
                op=op,
                array_type=array_type,
                vjp=names["impl_vjp"],
                convention=binding.model,
                label=binding.label,
            )
        ]

    def finish(results: list[CaseResult], interrupted: bool) -> RunResult:
        outcome = run_result(
            results,
            [binding],
            implementation=binding.label,
            **names,
            vjp=vjp is not None,
            op=op,
            convention=preset_name(model_of(convention)),
            changes=list(changes),
            dtypes=chosen,
            case=case,
            seed=seed,
            thorough=thorough,
            array_type=array_type,
            backend=reference.name,
            isolated=limit is not None,
            timeout=limit,
        )
        outcome.environment = _environment({}, date)
        outcome.interrupted = interrupted
        outcome.seconds = time.perf_counter() - started
        return outcome

    return _checked(
        [binding],
        recipes,
        chosen,
        limit,
        finish,
        case_id=case,
        seed=seed,
        thorough=thorough,
        progress=progress,
        backend=reference,
        cases=cases,
    )
