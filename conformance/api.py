"""The suite from Python: run frameworks, check one function, with settings recorded."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from conformance.adapters import get_adapter
from conformance.adapters.base import Binding
from conformance.adapters.function import check_names, function_under_test, importable_name
from conformance.checked.backends import Backend, get_backend
from conformance.checked.formats import DTYPES
from conformance.checked.models import preset_name
from conformance.checked.ops import CHECKED_OPS
from conformance.judging.runner import run_bindings, run_result
from conformance.reports.results import CaseResult, RunResult, Status

DEFAULT_DTYPES: tuple[str, ...] = ("float32", "float64")
"""The dtypes a run checks unless told otherwise (``--dtypes`` adds float16 and bfloat16)."""

Progress = Callable[[int, str], None]


def _environment(frameworks: dict[str, dict[str, str]]) -> dict[str, Any]:
    import numpy

    return {
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


def run(
    frameworks: Sequence[str] = ("torch",),
    *,
    ops: Sequence[str] | None = None,
    dtypes: Sequence[str] = DEFAULT_DTYPES,
    case: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    backend: str | Backend | None = None,
    replicas: int | None = None,
) -> RunResult:
    """Check every op of ``ops`` (default all) that each framework has, at ``dtypes``.

    A framework that is not installed is skipped, with the reason, in
    :attr:`RunResult.skipped`; an op it lacks gets "not implemented" rows.
    ``backend`` is the array library the reference runs on (``"numpy"``, the
    default, ``"cupy"`` or ``"torch"``; :mod:`conformance.checked.backends`).
    ``replicas`` adds each framework's batch norm across that many replicas
    (:mod:`conformance.replicas`).
    """
    started = time.perf_counter()
    reference = get_backend(backend)
    dtypes = check_names(dtypes, DTYPES, "dtypes")
    if case is not None:
        ops = [case.partition("/")[0]]
    ops = check_names(ops if ops is not None else CHECKED_OPS, CHECKED_OPS, "ops")
    bindings: list[Binding] = []
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
        bindings += [b for b in adapter.bindings if b.op in ops]
        for op in ops:
            if op not in adapter.ops():
                lacking += _not_implemented(name, op, dtypes)
    results = run_bindings(
        bindings, dtypes, case_id=case, seed=seed, progress=progress, backend=reference
    )
    if replicas is not None:
        from conformance.replicas import run_replicas

        more, across, not_run = run_replicas(
            frameworks,
            replicas,
            ops=ops,
            dtypes=dtypes,
            case=case,
            seed=seed,
            backend=reference.name,
        )
        results, bindings, skipped = results + more, bindings + across, skipped + not_run
    outcome = run_result(
        results + lacking,
        bindings,
        frameworks=list(frameworks),
        ops=list(ops),
        dtypes=list(dtypes),
        case=case,
        seed=seed,
        backend=reference.name,
    )
    outcome.skipped = skipped
    outcome.environment = _environment(versions)
    outcome.seconds = time.perf_counter() - started
    return outcome


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
    progress: Progress | None = None,
    backend: str | Backend | None = None,
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
    case, seed
        One case id only; the suite's seed.
    backend
        The array library normref's reference runs on: ``"numpy"`` (default),
        ``"cupy"`` (on the GPU) or ``"torch"`` (:mod:`conformance.checked.backends`).

    Returns
    -------
    RunResult
        ``.ok``, ``.failures``, ``.findings``, ``.results`` and ``.to_json()``.
    """
    started = time.perf_counter()
    reference = get_backend(backend)
    binding, chosen = function_under_test(fn, op, convention, array_type, vjp, dtypes)
    results = run_bindings(
        [binding], chosen, case_id=case, seed=seed, progress=progress, backend=reference
    )
    outcome = run_result(
        results,
        [binding],
        implementation=binding.label,
        impl=importable_name(fn),
        impl_vjp=None if vjp is None else importable_name(vjp),
        vjp=vjp is not None,
        op=op,
        convention=preset_name(binding.model),
        dtypes=chosen,
        case=case,
        seed=seed,
        array_type=array_type,
        backend=reference.name,
    )
    outcome.environment = _environment({})
    outcome.seconds = time.perf_counter() - started
    return outcome
