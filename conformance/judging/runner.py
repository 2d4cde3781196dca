"""Running bindings over cases and dtypes: one :class:`~conformance.reports.results.CaseResult` per row.

An exception of the implementation fails its row (with its traceback) and the
run goes on (an exception of the suite itself is not blamed on it: it ends the
run, a bug to report); :class:`~conformance.adapters.base.FrameworkLacksError` makes it
"not implemented"; a timeout, a crash or an exit
(:class:`~conformance.judging.rows.ImplementationFailedError`) fails its row too,
even on an input normref refuses. An implementation that writes into an input
fails its row ("modifies its input x"). On an input normref refuses, the row
records whether the implementation refuses too or which value it returns. The
verdicts are :mod:`conformance.judging.verdicts`'; once every row has run,
:mod:`conformance.judging.causes` keeps in each failing row's diagnosis only the
causes that reproduce every failing row of its implementation and op. Ctrl-C
stops the run with :class:`RunInterrupted`, which holds the rows done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from conformance.adapters.arrays import setup_clock
from conformance.adapters.base import Binding, FrameworkLacksError
from conformance.checked.backends import NUMPY, Backend
from conformance.checked.cases import Case, cases_for, find_case
from conformance.checked.models import NORMREF
from conformance.checked.ops import get_op
from conformance.judging.causes import settle
from conformance.judging.reference import Refusal, reference_or_refusal
from conformance.judging.rows import (
    ImplementationFailedError,
    ImplementationRaisedError,
    Row,
    call_implementation,
)
from conformance.judging.verdicts import accepted_value, judge, modified_text
from conformance.reports.results import CaseResult, RunResult, Status


def check_row(binding: Binding, case: Case, dtype: str, backend: Backend = NUMPY) -> CaseResult:
    """The verdict on ``binding`` for ``case`` at ``dtype`` (the reference on ``backend``); its
    time leaves out what a compiled implementation spends compiling."""
    with setup_clock() as compiling:
        result = _check_row(binding, case, dtype, backend)
    result.seconds -= compiling.seconds
    return result


def _check_row(binding: Binding, case: Case, dtype: str, backend: Backend) -> CaseResult:
    started = time.perf_counter()
    row = Row.of(binding, case, dtype, backend)
    result = CaseResult(
        implementation=binding.label,
        framework=binding.framework,
        op=case.op,
        case=case.id,
        kind=case.kind,
        seed=case.seed,
        dtype=dtype,
        status=Status.PASS,
        model=binding.model.name,
        forward_only=not row.backward,
        description=case.description,
    )
    if dtype not in binding.dtypes:
        result.status = Status.NOT_IMPLEMENTED
        result.explanation = f"{binding.label} does not take {dtype}"
        return result
    try:
        reference = reference_or_refusal(
            row.prepared,
            NORMREF,
            backward=row.backward,
            backend=backend,
            evaluate=lambda: row.expected(NORMREF),
        )
        if not isinstance(reference, Refusal) and binding.model is not NORMREF:
            # the binding's convention may refuse what normref's computes (an unbiased
            # running variance of one value per channel)
            reference = reference_or_refusal(
                row.prepared,
                binding.model,
                backward=row.backward,
                backend=backend,
                evaluate=lambda: row.expected(binding.model),
            )
        if isinstance(reference, Refusal):
            _error_path(row, result, reference)
        else:
            _state_conditioning(row, result)
            verdict = judge(row)
            result.status, result.model = verdict.status, verdict.model
            result.explained_by = verdict.fields
            result.outputs = [c.to_json() for c in verdict.checks]
            result.modified_inputs = list(verdict.modified)
            result.causes = verdict.causes
            if verdict.baseline is not None:
                result.baseline = [c.to_json() for c in verdict.baseline]
            if verdict.status is Status.CONVENTION:
                result.explanation, result.evidence = verdict.text, verdict.evidence
            elif verdict.status is Status.FAIL:
                result.diagnosis, result.evidence = verdict.text, verdict.evidence
    except FrameworkLacksError as error:
        result.status, result.explanation = Status.NOT_IMPLEMENTED, str(error)
        result.outputs = []
    except ImplementationFailedError as error:
        result.status, result.diagnosis = Status.FAIL, str(error)
        result.traceback = error.traceback_text
        result.outputs = []
    except ImplementationRaisedError as error:  # its exception fails its row only
        result.status = Status.FAIL
        result.diagnosis = f"raised {error.type_name}: {error}"
        result.traceback = error.traceback_text
        result.outputs = []
    result.seconds = time.perf_counter() - started
    return result


def raised_type(error: BaseException) -> str:
    """The name of the exception an implementation raised (in this process, or in a worker)."""
    return error.type_name if isinstance(error, ImplementationRaisedError) else type(error).__name__


def _state_conditioning(row: Row, result: CaseResult) -> None:
    """The input's conditioning and group size, from the reference's terms."""
    terms = row.expected(NORMREF).terms
    conditioning = terms.stated_conditioning()
    if terms.stats is not None:
        result.group_size = terms.stats.n
    if conditioning is not None:
        result.conditioning, result.conditioning_measure = conditioning.value, conditioning.what


def _error_path(row: Row, result: CaseResult, refusal: Refusal) -> None:
    backward = refusal.where == "backward" and row.backward
    try:
        evaluation = call_implementation(row.binding.run, row.prepared, row.binding.model, backward)
    except (FrameworkLacksError, ImplementationFailedError):
        raise
    except Exception as raised:  # noqa: BLE001 - refusing is the expected behaviour here
        result.status = Status.REFUSES
        first = str(raised).splitlines()[0][:200] if str(raised) else ""
        result.explanation = f"raises {raised_type(raised)}: {first}"
        return
    written = tuple(sorted(set(evaluation.modified) - set(row.binding.in_place)))
    if written:
        result.status, result.diagnosis = Status.FAIL, modified_text(written)
        result.modified_inputs = list(written)
        return
    result.status = Status.ACCEPTS
    result.explanation = accepted_value(evaluation, row.prepared, backward)
    result.diagnosis = f"normref raises: {refusal.error}"


def select_cases(
    op: str, *, case_id: str | None = None, seed: int = 0, thorough: bool = False
) -> list[Case]:
    """The cases of ``op``: all of them (every length and size ``thorough``), or the one named
    ``case_id``."""
    if case_id is None:
        return cases_for(op, suite_seed=seed, thorough=thorough)
    case = find_case(case_id, suite_seed=seed)
    return [case] if case.op == op else []


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``results`` holds the rows done (``run`` then the partial
    :class:`~conformance.reports.results.RunResult` where the API made one)."""

    def __init__(self, results: list[CaseResult], planned: int) -> None:
        super().__init__()
        self.results, self.planned = results, planned
        self.run: Any = None


def run_bindings(
    bindings: Iterable[Binding],
    dtypes: Iterable[str],
    *,
    case_id: str | None = None,
    seed: int = 0,
    thorough: bool = False,
    progress: Callable[[int, str], None] | None = None,
    backend: Backend = NUMPY,
    cases: Sequence[Case] | None = None,
) -> list[CaseResult]:
    """Every binding on every case of its op at every dtype the case runs at (or on ``cases``,
    those of its op), the reference on ``backend`` (``progress(total, label)`` first with the
    total, then once per row). The failing rows' causes are then those that hold for all of an
    implementation's failing rows together (:func:`conformance.judging.causes.settle`); Ctrl-C
    raises :class:`RunInterrupted` with the rows done, settled alike."""
    plan = [
        (binding, case, dtype)
        for binding in bindings
        for case in (
            select_cases(binding.op, case_id=case_id, seed=seed, thorough=thorough)
            if cases is None
            else [c for c in cases if c.op == binding.op]
        )
        for dtype in dtypes
        if case.runs_at(dtype)
    ]
    if progress is not None:
        progress(len(plan), "")
    results: list[CaseResult] = []
    try:
        for binding, case, dtype in plan:
            results.append(check_row(binding, case, dtype, backend))
            if progress is not None:
                progress(0, f"{binding.label} {case.id} {dtype}")
    except KeyboardInterrupt:
        settle(results)
        raise RunInterrupted(results, len(plan)) from None
    settle(results)
    return results


def run_result(
    results: list[CaseResult], bindings: Iterable[Binding], **settings: Any
) -> RunResult:
    """A :class:`RunResult` of ``results`` with the implementations' descriptions."""
    implementations = [
        {
            "implementation": b.label,
            "framework": b.framework,
            "op": b.op,
            "convention": b.model.to_json(),
            "convention_name": b.model.name,
            "backward": b.backward and bool(get_op(b.op).differentiable),
            "notes": b.notes,
        }
        for b in bindings
    ]
    return RunResult(results, settings=settings, implementations=implementations)
