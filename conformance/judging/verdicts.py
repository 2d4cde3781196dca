"""Verdicts: whether a row is within budget, differs by convention, or fails, and why.

1. every output within budget of the reference under :data:`~conformance.checked.models.NORMREF`
   (normref's own definition): **pass**;
2. otherwise, every output within budget under the convention the framework
   declares: **differs by convention**, explained by the fields of that
   convention that, applied alone to normref's definition, account for it
   (or by all of its differing fields when none does alone); where an
   arithmetic field explains it, normref modelling that arithmetic on the same
   input is the evidence;
3. otherwise **fails**. An implementation that wrote into an input fails
   whatever its values ("modifies its input x"), unless its binding declares
   that input updated in place. A failing row's diagnosis says which outputs
   are out of budget and which within, names non-finite outputs where the
   exact result is finite and values where normref gives NaN or infinity and
   the implementation another value; its evidence says where within an output
   the failure is (:mod:`conformance.judging.localize`). Its candidate causes
   (:mod:`conformance.judging.causes`) are checked on it here, and named once
   every row of the implementation has run, where they hold for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.adapters.arrays import Evaluation, NumpyKind
from conformance.adapters.base import Binding
from conformance.bounds.budgets import arithmetic_of
from conformance.bounds.compare import OutputCheck, compare_output
from conformance.checked.cases import Prepared
from conformance.checked.models import NORMREF, Model
from conformance.checked.ops import get_op
from conformance.judging.causes import Candidates, candidate_causes
from conformance.judging.localize import elements_line, outputs_line
from conformance.judging.reference import normref_computing
from conformance.judging.rows import Row
from conformance.reports.results import Status
from normref.affine import broadcast_param
from normref.nonlinearities import nonlinearity_gain

MODELLED_FIELDS = ("variance_algorithm", "low_precision_compute")
"""Arithmetic fields normref itself can model (``precision=<Convention>``)."""


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
    what normref modelling an explaining arithmetic gives on the same input, or
    for a failing row where within its outputs it fails; ``modified`` the inputs
    the implementation wrote into; ``causes`` a failing row's candidate causes.
    """

    status: Status
    checks: list[OutputCheck]
    model: str
    fields: dict[str, Any] | None = None
    text: str | None = None
    baseline: list[OutputCheck] | None = None
    evidence: str | None = None
    modified: tuple[str, ...] = ()
    causes: Candidates | None = field(default=None, repr=False)


def modified_text(names: Sequence[str]) -> str:
    """``"modifies its input x"`` (or inputs)."""
    return f"modifies its input{'s' if len(names) > 1 else ''} {', '.join(names)}"


def judge(row: Row) -> Verdict:
    """The verdict on ``row`` (see the module docstring)."""
    base = row.checks(NORMREF)
    modified = row.modified_inputs()
    if modified and all(c.ok for c in base):
        return Verdict(
            Status.FAIL, base, NORMREF.name, text=modified_text(modified), modified=modified
        )
    if all(c.ok for c in base):
        return Verdict(Status.PASS, base, NORMREF.name)
    off_base = [c for c in base if not c.ok]
    declared = row.binding.model
    relevant = _relevant(row.binding)
    checks = base
    if declared != NORMREF:
        checks = row.checks(declared)
        if modified and all(c.ok for c in checks):
            return Verdict(
                Status.FAIL,
                checks,
                declared.name,
                text=modified_text(modified),
                baseline=off_base,
                modified=modified,
            )
        if all(c.ok for c in checks):
            differing = {f: declared.get(f) for f in relevant if declared.get(f) != NORMREF.get(f)}
            alone = {f: v for f, v in differing.items() if row.passes(NORMREF.replace(**{f: v}))}
            fields = alone or differing
            text = (
                f"{declared.convention.name} convention: {_describe(fields)} (normref: "
                + _describe({f: NORMREF.get(f) for f in fields})
                + ")"
            )
            evidence = (
                _witness(row, declared, base)
                if set(fields) & set(MODELLED_FIELDS)
                else _semantic_evidence(row, declared, fields)
            )
            return Verdict(
                Status.CONVENTION, checks, declared.name, fields, text, off_base, evidence
            )
    text, evidence = failure_symptoms(row, declared, checks, modified)
    causes = candidate_causes(row, declared, relevant)
    return Verdict(
        Status.FAIL, checks, declared.name, None, text, off_base, evidence, modified, causes
    )


def _witness(row: Row, model: Model, base: list[OutputCheck]) -> str | None:
    """How far normref lands when it models ``model``'s arithmetic on this input, next to the
    implementation: evidence that the arithmetic explains the difference."""
    prepared, op = row.prepared, row.prepared.op
    if prepared.dtype not in NumpyKind.dtypes or len(op.outputs) > 1:
        return None
    try:
        modelled = normref_computing(prepared, model.convention, prepared.dtype)["y"]
    except Exception:  # noqa: BLE001 - normref refusing that arithmetic (float16 eigh): no evidence
        return None
    reference = row.expected(NORMREF)
    y = reference.values["y"]
    unit = compare_output(
        "y",
        modelled,
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


def _semantic_evidence(row: Row, model: Model, fields: dict[str, Any]) -> str | None:
    """For the nonlinearity gains: the gain the model uses against the exact one."""
    if "nonlinearity_gammas" not in fields:
        return None
    name = row.prepared.sample.kwargs["nonlinearity"]
    exact = nonlinearity_gain(name, "exact")
    used = nonlinearity_gain(name, model.convention.nonlinearity_gammas)
    return (
        f"gain of {name}: {used!r} ({model.convention.nonlinearity_gammas}) against the exact {exact!r}, "
        f"relative difference {used / exact - 1:+.3e}"
    )


def failure_symptoms(
    row: Row, declared: Model, checks: list[OutputCheck], modified: tuple[str, ...]
) -> tuple[str, str | None]:
    """A failing row's symptoms (the written inputs, non-finite values, which outputs are out of
    budget and which within) and where within its outputs it fails."""
    notes = [modified_text(modified)] if modified else []
    failing = [c for c in checks if not c.ok]
    for check in failing:
        if check.problem:
            notes.append(f"{check.name}: {check.problem}")
        elif _nonfinite_at_finite(check):
            notes.append(f"{check.name}: non-finite values where the exact result is finite")
        if check.nonfinite_mismatches:
            notes.append(
                f"{check.name}: {check.nonfinite_mismatches} values where normref gives NaN or "
                "infinity and the implementation another value"
            )
    notes.append(outputs_line(checks))
    where = [elements_line(row, declared, c.name) for c in failing if not c.problem]
    return "; ".join(notes), "; ".join(w for w in where if w) or None


def _nonfinite_at_finite(check: OutputCheck) -> bool:
    """Whether the worst element is a non-finite value where the exact one is finite (the worst
    element is one of those if there are any: :func:`~conformance.bounds.compare.worst_element`)."""
    if check.actual is None or check.expected is None:
        return False
    return bool(np.isfinite(check.expected) and not np.isfinite(check.actual))


def accepted_value(evaluation: Evaluation, prepared: Prepared, backward: bool = False) -> str:
    """What an implementation returned on an input normref refuses (its gradient, where
    normref refuses the gradient)."""
    name = f"d{prepared.op.spec.primary}" if backward else "y"
    y = evaluation.values[name]
    beta = prepared.sample.args.get("beta")
    finite = np.isfinite(y)
    parts = [f"{name} of shape {y.shape}, {int(finite.sum())} of {y.size} finite"]
    if finite.any():
        parts.append(f"values in [{np.min(y[finite]):.6g}, {np.max(y[finite]):.6g}]")
    if not backward and beta is not None and np.shape(y) == np.shape(prepared.sample.args["x"]):
        op = prepared.op
        spread = np.broadcast_to(
            broadcast_param(xp_numpy, beta, y.ndim, op.param_axes(prepared.sample)), y.shape
        )
        if np.array_equal(y, spread):
            parts.append("exactly beta (the normalized value of a lone sample taken as 0)")
    return "; ".join(parts)
