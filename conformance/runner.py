"""Running bindings over cases and dtypes, and judging each row.

The verdict on one (implementation, case, dtype):

1. every output within budget of the reference under :data:`~conformance.models.NORMREF`
   (normref's own definition): **pass**;
2. otherwise, every output within budget under the convention the framework
   declares: **differs by convention**, explained by the fields of that
   convention that, applied alone to normref's definition, account for it
   (or by all of its differing fields when none does alone);
3. otherwise **fails**; the diagnosis names a single-field change of the
   declared convention that would account for it, if one does, and
   non-finite outputs where the exact result is finite.

An exception of the implementation fails the row (with its traceback) and the
run goes on; :class:`~conformance.adapters.base.FrameworkLacksError` makes it
"not implemented". On an input normref refuses, the row records whether the
implementation refuses too or which value it returns.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.adapters.base import Binding, FrameworkLacksError
from conformance.arrays import Evaluation, NumpyKind
from conformance.cases import Case, cases_for, find_case
from conformance.compare import OutputCheck, compare_output
from conformance.models import ARITHMETIC_FIELDS, NORMREF, Model, variations
from conformance.ops import get_op
from conformance.reference import Expected, Prepared, expected, model_sample, prepare
from conformance.results import CaseResult, RunResult, Status
from conformance.tolerances import arithmetic_of
from conformance.ulp import largest, promote

Progress = Callable[[str], None]


def _semantic(model: Model) -> Model:
    """``model`` with the fields that do not change exact values set to the baseline's."""
    return model.replace(**{f: NORMREF.get(f) for f in (*ARITHMETIC_FIELDS, "output_dtype")})


class _Cache:
    """A bounded memo: the oldest entries go first once ``size`` are held."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.entries:
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = make()
        return self.entries[key]


_PREPARED = _Cache(4096)
"""Cases rounded to a dtype, shared by every binding of the op."""
_EXPECTED = _Cache(8192)
"""References under a model, shared by every binding of the op."""

CaseKey = tuple[str, int, str, str]


def _prepared(case: Case, dtype: str) -> tuple[CaseKey, Prepared]:
    key = (case.id, case.seed, repr(sorted(case.parameters.items())), dtype)
    return key, _PREPARED.get(key, lambda: prepare(case, dtype))


@dataclass
class Row:
    """One binding on one prepared case: the implementation's outcomes and their checks."""

    binding: Binding
    key: CaseKey
    prepared: Prepared

    def __post_init__(self) -> None:
        self._outcomes: dict[Any, Evaluation] = {}

    @classmethod
    def of(cls, binding: Binding, case: Case, dtype: str) -> Row:
        """The row of ``binding`` on ``case`` at ``dtype``."""
        key, prepared = _prepared(case, dtype)
        return cls(binding, key, prepared)

    def outcome(self, model: Model) -> Evaluation:
        call = model.convention.momentum_meaning if self.binding.model_dependent else None
        if call not in self._outcomes:
            self._outcomes[call] = quietly(
                self.binding.run, self.prepared, model, self.binding.backward
            )
        return self._outcomes[call]

    def expected_dtype(self, name: str, model: Model) -> str:
        dtype, params = self.prepared.dtype, self.binding.param_dtype(self.prepared.dtype)
        op = self.prepared.op
        if name == "y":
            has_params = any(self.prepared.sample.args.get(a) is not None for a in op.affine_args)
            return (
                promote(dtype, params)
                if model.convention.output_dtype == "promote" and (has_params)
                else dtype
            )
        if name.startswith("running_") or name[1:] in op.affine_args:
            return params
        return dtype

    def expected(self, model: Model) -> Expected:
        """The reference under ``model``'s semantic fields (shared across bindings)."""
        semantic, backward = _semantic(model), self.binding.backward
        return _EXPECTED.get(
            (self.key, semantic, backward),
            lambda: expected(self.prepared, semantic, backward=backward),
        )

    def checks(self, model: Model) -> list[OutputCheck]:
        reference = self.expected(model)
        outcome = self.outcome(model)
        arithmetic = arithmetic_of(model, self.prepared.dtype)
        primary = self.prepared.sample.args[self.prepared.op.spec.primary]
        return [
            compare_output(
                name,
                outcome.values.get(name),
                outcome.dtypes.get(name),
                exact,
                reference.terms,
                self.expected_dtype(name, model),
                arithmetic,
                primary,
            )
            for name, exact in reference.values.items()
        ]

    def passes(self, model: Model) -> bool:
        return all(c.ok for c in self.checks(model))


def quietly(run: Callable[..., Any], *args: Any) -> Any:
    """``run(*args)`` with warnings silenced: an implementation's warnings (overflow in a cast,
    say) are not verdicts, and must not become errors where warnings are errors (pytest)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return run(*args)


def _relevant(binding: Binding) -> tuple[str, ...]:
    fields = get_op(binding.op).relevant_fields()
    if not binding.model_dependent:
        # a framework's adapter translates the momentum itself: its meaning cannot differ
        fields = tuple(f for f in fields if f != "momentum_meaning")
    return fields


def _describe(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())


@dataclass
class Verdict:
    """A row's status, the checks it rests on, and why.

    ``baseline`` holds the outputs that are out of budget of normref's own
    definition (how much a convention finding differs from it); ``evidence``
    what normref modelling an explaining arithmetic gives on the same input.
    """

    status: Status
    checks: list[OutputCheck]
    model: str
    fields: dict[str, Any] | None = None
    text: str | None = None
    baseline: list[OutputCheck] | None = None
    evidence: str | None = None


def judge(row: Row) -> Verdict:
    """The verdict on ``row`` (see the module docstring)."""
    base = row.checks(NORMREF)
    if all(c.ok for c in base):
        return Verdict(Status.PASS, base, NORMREF.name)
    off_base = [c for c in base if not c.ok]
    declared = row.binding.model
    relevant = _relevant(row.binding)
    checks = base
    if declared != NORMREF:
        checks = row.checks(declared)
        if all(c.ok for c in checks):
            differing = {f: declared.get(f) for f in relevant if declared.get(f) != NORMREF.get(f)}
            alone = {f: v for f, v in differing.items() if row.passes(NORMREF.replace(**{f: v}))}
            fields = alone or differing
            text = (
                f"{declared.name} convention: {_describe(fields)} (normref: "
                + _describe({f: NORMREF.get(f) for f in fields})
                + ")"
            )
            evidence = _witness(row, declared, base) if set(fields) & set(MODELLED_FIELDS) else None
            return Verdict(
                Status.CONVENTION, checks, declared.name, fields, text, off_base, evidence
            )
    text = _diagnose_failure(row, declared, relevant, checks)
    return Verdict(Status.FAIL, checks, declared.name, None, text, off_base)


MODELLED_FIELDS = ("variance_algorithm", "low_precision_compute")
"""Arithmetic fields normref itself can model (``precision=<Convention>``)."""


def _witness(row: Row, model: Model, base: list[OutputCheck]) -> str | None:
    """How far normref lands when it models ``model``'s arithmetic on this input, next to the
    implementation: evidence that the arithmetic explains the difference."""
    prepared, op = row.prepared, row.prepared.op
    if prepared.dtype not in NumpyKind.dtypes or op.running_stats:
        return None
    sample = model_sample(prepared, NORMREF)
    args = [
        np.asarray(v, dtype=prepared.dtype) if isinstance(v, np.ndarray) else v
        for v in sample.args.values()
    ]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        modelled = op.spec.forward(*args, **sample.kwargs, precision=model.convention)
    reference = row.expected(NORMREF)
    y = reference.values["y"]
    unit = compare_output(
        "y",
        np.asarray(modelled),
        prepared.dtype,
        y,
        reference.terms,
        prepared.dtype,
        arithmetic_of(model, prepared.dtype),
        prepared.sample.args[op.spec.primary],
    )
    implementation = next((c.max_ulps for c in base if c.name == "y"), 0.0)
    return (
        f"normref modelling this arithmetic (precision={model.convention.name!r}) errs by up "
        f"to {unit.max_ulps:.3g} ulp on this input, the implementation by {implementation:.3g}"
    )


def _diagnose_failure(
    row: Row, declared: Model, relevant: tuple[str, ...], checks: list[OutputCheck]
) -> str:
    notes = []
    for field_name, value, model in variations(declared, relevant):
        try:
            explained = row.passes(model)
        except Exception:  # noqa: BLE001 - a variation the implementation cannot take explains nothing
            explained = False
        if explained:
            notes.append(
                f"explained by {field_name}={value!r} instead of the declared "
                f"{declared.get(field_name)!r}"
            )
    failing = [c for c in checks if not c.ok]
    for check in failing:
        if check.problem:
            notes.append(f"{check.name}: {check.problem}")
        elif check.max_ulps == float("inf"):
            notes.append(f"{check.name}: non-finite values where the exact result is finite")
    overflow = _overflow_note(row.prepared)
    if overflow:
        notes.append(overflow)
    if not notes:
        names = ", ".join(f"{c.name} ({c.direction})" for c in failing)
        notes.append(f"out of budget: {names}; no single convention field explains it")
    return "; ".join(notes)


def _overflow_note(prepared: Prepared) -> str | None:
    x = prepared.sample.args[prepared.op.spec.primary]
    with np.errstate(over="ignore", invalid="ignore"):
        squares = float(np.nanmax(np.abs(x), initial=0.0)) ** 2
    if squares > largest(prepared.dtype):
        return (
            f"the squares of the inputs (up to {squares:.3g}) exceed {prepared.dtype}'s largest "
            f"value ({largest(prepared.dtype):.3g}): squares or sums computed in "
            f"{prepared.dtype} overflow"
        )
    return None


def _accepted_value(evaluation: Evaluation, prepared: Prepared) -> str:
    y = evaluation.values["y"]
    beta = prepared.sample.args.get("beta")
    finite = np.isfinite(y)
    parts = [f"y of shape {y.shape}, {int(finite.sum())} of {y.size} finite"]
    if finite.any():
        parts.append(f"values in [{np.min(y[finite]):.6g}, {np.max(y[finite]):.6g}]")
    if beta is not None and np.shape(y) == np.shape(prepared.sample.args["x"]):
        op = prepared.op
        import array_api_compat.numpy as xp_numpy

        from normref.affine import broadcast_param

        spread = np.broadcast_to(
            broadcast_param(xp_numpy, beta, y.ndim, op.param_axes(prepared.sample)), y.shape
        )
        if np.array_equal(y, spread):
            parts.append("exactly beta (the normalized value of a lone sample taken as 0)")
    return "; ".join(parts)


def check_row(binding: Binding, case: Case, dtype: str) -> CaseResult:
    """The verdict on ``binding`` for ``case`` at ``dtype``."""
    started = time.perf_counter()
    op = get_op(case.op)
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
        forward_only=not binding.backward,
        description=case.description,
    )
    if dtype not in binding.dtypes:
        result.status = Status.NOT_IMPLEMENTED
        result.explanation = f"{binding.label} does not take {dtype}"
        return result
    row = Row.of(binding, case, dtype)
    prepared = row.prepared
    partition = op.partition(prepared.sample) if case.kind != "error" else None
    if partition is not None:
        from conformance.terms import group_stats

        stats = group_stats(prepared.sample.args[op.spec.primary], partition)
        result.group_size, result.conditioning = stats.n, stats.conditioning()
    try:
        if case.kind == "error":
            _error_path(row, result)
        else:
            verdict = judge(row)
            result.status, result.model = verdict.status, verdict.model
            result.explained_by = verdict.fields
            result.outputs = [c.to_json() for c in verdict.checks]
            if verdict.baseline is not None:
                result.baseline = [c.to_json() for c in verdict.baseline]
            if verdict.status is Status.CONVENTION:
                result.explanation, result.evidence = verdict.text, verdict.evidence
            elif verdict.status is Status.FAIL:
                result.diagnosis = verdict.text
    except FrameworkLacksError as error:
        result.status, result.explanation = Status.NOT_IMPLEMENTED, str(error)
        result.outputs = []
    except Exception as error:  # noqa: BLE001 - an implementation's crash fails its row only
        result.status = Status.FAIL
        result.diagnosis = f"raised {type(error).__name__}: {error}"
        result.traceback = traceback.format_exc()
        result.outputs = []
    result.seconds = time.perf_counter() - started
    return result


def _error_path(row: Row, result: CaseResult) -> None:
    case = row.prepared.case
    try:
        evaluation = quietly(row.binding.run, row.prepared, row.binding.model, False)
    except FrameworkLacksError:
        raise
    except Exception as error:  # noqa: BLE001 - refusing is the expected behaviour here
        result.status = Status.REFUSES
        result.explanation = f"raises {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        return
    result.status = Status.ACCEPTS
    result.explanation = _accepted_value(evaluation, row.prepared)
    result.diagnosis = f"normref raises: {case.error}"


def select_cases(op: str, *, case_id: str | None = None, seed: int = 0) -> list[Case]:
    """The cases of ``op``: all of them, or the one named ``case_id``."""
    if case_id is None:
        return cases_for(op, suite_seed=seed)
    case = find_case(case_id, suite_seed=seed)
    return [case] if case.op == op else []


def run_bindings(
    bindings: Iterable[Binding],
    dtypes: Iterable[str],
    *,
    case_id: str | None = None,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
) -> list[CaseResult]:
    """Every binding on every case of its op at every dtype (``progress(total, label)`` first
    with the total, then once per row)."""
    plan = [
        (binding, case, dtype)
        for binding in bindings
        for case in select_cases(binding.op, case_id=case_id, seed=seed)
        for dtype in dtypes
    ]
    if progress is not None:
        progress(len(plan), "")
    results = []
    for binding, case, dtype in plan:
        results.append(check_row(binding, case, dtype))
        if progress is not None:
            progress(0, f"{binding.label} {case.id} {dtype}")
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
            "backward": b.backward,
            "notes": b.notes,
        }
        for b in bindings
    ]
    return RunResult(results, settings=settings, implementations=implementations)
