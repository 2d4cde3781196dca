"""Causes of a failure, each stated only where it was checked.

A failing row gets *candidate causes*, each an alternative model that
reproduces the implementation's outputs within budget on that row (nothing is
inferred from the input alone):

* a single-field change of the declared convention
  (:func:`conformance.checked.models.variations`): semantic fields change the
  exact values; arithmetic fields only widen the budget, so a row within the
  wider budget is consistent with that arithmetic (:func:`arithmetic_accounts`
  also takes as accounted for an output that normref itself computing in that
  arithmetic, :func:`~conformance.judging.reference.normref_computing`,
  reproduces, or one out of budget only in the groups whose squares overflow
  the arithmetic's dtype, and non-finite or collapsed to 0 in some of them, or with
  other groups within budget; the row's evidence
  says which);
* a structural hypothesis (:mod:`conformance.judging.alternatives`: a term of
  the gradient missing, statistics over the wrong axes, ...);
* computing in a lower precision than the input's (float16 for float32,
  float32 for float64), accounted for alike, and with an error of the same
  order (within a factor :data:`SAME_ORDER`) as normref's own computing in it,
  so that a small semantic error is not taken for rounding.

Once an implementation's rows are done, :func:`settle` names in each failing
row only the causes that reproduce *every* failing row of that implementation
and op that has outputs to judge (not those that raised, timed out or
crashed) and whose input is finite (a NaN in the input may be propagated
otherwise, a difference of its own; such a row says whether the cause named
for the others reproduces it), except a lower arithmetic on a row whose every
group's squares overflow it, where it is undefined and its values are no
evidence either way (the row says so): the semantic ones, or only where none does the
arithmetic ones. A cause that fits one row by coincidence (interleaved groups
that one row's values happen to match under ``eps_mode='add_std'``) is not
named. Where no cause holds for all, the row says so, and where the failing
rows are across dtypes and conditioning (:func:`~conformance.judging.localize.rows_line`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.bounds.budgets import Arithmetic, arithmetic_of
from conformance.bounds.compare import OutputCheck, compare_output
from conformance.checked.formats import largest
from conformance.checked.models import Model, arithmetic_only, variations
from conformance.judging.alternatives import alternatives
from conformance.judging.localize import rows_line
from conformance.judging.reference import Refusal, normref_computing, reference_or_refusal
from conformance.judging.rows import Row
from conformance.reports.results import CaseResult, Status

SAME_ORDER = 32.0
"""How far (a factor either way) an implementation's largest error may be from normref's own
computing in a lower precision for that precision to be named."""

LOWER_PRECISIONS: dict[str, tuple[str, ...]] = {"float64": ("float32",), "float32": ("float16",)}
"""The lower precisions tried for an input dtype (NumPy's: normref computes in them itself)."""


@dataclass(frozen=True)
class Cause:
    """A candidate cause checked on one row: ``key`` identifies it across rows, ``text`` says
    it in the report's words, ``semantic`` whether it changes the exact values (not only the
    budget), ``note`` what the row shows for it (non-finite values normref's own arithmetic
    reproduces)."""

    key: str
    text: str
    semantic: bool = True
    note: str | None = None


def _fits(row: Row, model: Model, failing: Sequence[str], **options: Any) -> bool:
    """Whether every output is within budget under ``model`` (and ``options``), the ``failing``
    ones checked first; or whether ``model`` leaves the row undefined (:func:`_undefined_under`);
    ``False`` where it cannot be evaluated otherwise (the implementation raises under it)."""
    if _undefined_under(row, model):
        return True
    try:
        return row.passes(model, first=failing, **options)
    except Exception:  # noqa: BLE001 - an alternative that cannot be evaluated explains nothing
        return False


def _undefined_under(row: Row, model: Model) -> bool:
    """Whether normref refuses the row's input under ``model`` (its statistics are not defined
    there: the unbiased variance of a lone sample) while the implementation returns an output
    that is non-finite throughout: what computing that undefined quantity gives (0/0)."""
    found = reference_or_refusal(
        row.prepared,
        model,
        backward=row.backward,
        backend=row.backend,
        evaluate=lambda: row.expected(model),
    )
    if not isinstance(found, Refusal):
        return False
    try:
        values = row.outcome(model).values.values()
    except Exception:  # noqa: BLE001 - an implementation that raises shows no undefined value
        return False
    return any(
        np.size(v) and not np.isfinite(np.asarray(v, dtype=np.float64)).any() for v in values
    )


def _overflowing(row: Row, dtype: str) -> tuple[np.ndarray, float] | None:
    """On the primary input's layout, the elements of the groups whose largest square exceeds
    ``dtype``'s largest value (where arithmetic in ``dtype`` overflows, whatever its algorithm),
    and the largest square; ``None`` for an op without groups, or where none overflows."""
    op, sample = row.prepared.op, row.prepared.sample
    if op.spec.partition is None:
        return None
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    try:
        partition = op.partition(sample)
    except ValueError:
        return None
    if partition is None:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.asarray(partition.to_canonical(xp_numpy, x)) ** 2
        largest_square = np.nanmax(squares, axis=1, keepdims=True, initial=0.0)
    over = np.broadcast_to(largest_square > largest(dtype), squares.shape)
    if not over.any():
        return None
    mask = np.asarray(partition.from_canonical(xp_numpy, np.ascontiguousarray(over)))
    return mask, float(np.max(largest_square))


def arithmetic_accounts(
    row: Row,
    model: Model,
    arithmetic: Arithmetic,
    computing: Any,
    dtype: str,
    *,
    same_order: bool = False,
) -> tuple[bool, str | None]:
    """Whether computing in ``arithmetic`` accounts for the row's outputs under ``model``, and
    what shows it: each output within that arithmetic's budget (and, with ``same_order``, erring
    about as much as normref itself computing so, within :data:`SAME_ORDER`: an implementation
    far more accurate has made a small semantic error instead); or reproduced, within that
    budget and non-finite at the same elements, by normref computing so (``precision=computing``
    on the inputs as ``dtype``); or out of that budget only in groups whose squares exceed the
    arithmetic's largest value, where it overflows whatever its algorithm, and non-finite or 0
    (divided by an infinite root) in some of them, or with some other group within budget
    (normref's own computing in it is
    scaled and does not overflow: it cannot reproduce those groups; wrong finite values where
    every group overflows are no evidence of one)."""
    try:
        checks = row.checks(model, arithmetic=arithmetic)
        outcome = row.outcome(model)
    except Exception:  # noqa: BLE001 - a model the implementation cannot be judged under
        return False, None
    failing = [c for c in checks if not c.ok]
    if not failing and not same_order:
        return True, None
    reference = row.expected(model)
    primary = row.prepared.sample.args[row.prepared.op.spec.primary]
    try:
        modelled = normref_computing(
            row.prepared, computing, dtype, backward=row.backward, model=model
        )
    except Exception:  # noqa: BLE001 - normref refusing that arithmetic (float16 eigh) models nothing
        modelled = {}
    overflow = _overflowing(row, arithmetic.dtype)
    notes = []
    for check in checks:
        actual, exact = outcome.values.get(check.name), reference.values.get(check.name)
        value = modelled.get(check.name)
        if check.problem or actual is None or exact is None:
            return False, None
        if value is not None and np.shape(value) == np.shape(actual):
            same = np.array_equal(~np.isfinite(actual), ~np.isfinite(value))
            reproduced = compare_output(
                check.name,
                actual,
                check.dtype,
                value,
                reference.terms,
                check.expected_dtype,
                arithmetic,
                primary,
            )
            if same and reproduced.ok and not check.ok:
                notes.append(f"{check.name}: as normref computing in {dtype} gives it")
                continue
            if (
                check.ok
                and same_order
                and not _same_order(check, value, exact, reference, arithmetic, primary)
            ):
                return False, None
        if check.ok:
            if same_order and value is None:
                return False, None
            continue
        if overflow is not None and np.shape(actual) == overflow[0].shape:
            bad = row.ratios(model, check.name, arithmetic=arithmetic)
            # evidence of an overflow: where it overflows, non-finite values or 0 where the exact
            # value is not (values divided by the infinite root of an overflowed sum), or errors
            # confined to those groups while others are computed within budget
            collapsed = ~np.isfinite(actual) | ((actual == 0) & (exact != 0))
            broken = collapsed & np.isfinite(exact) & overflow[0]
            if (
                bad is not None
                and (broken.any() or (np.any(~overflow[0]) and np.any((bad > 1.0) & overflow[0])))
                and not np.any((bad > 1.0) & ~overflow[0])
            ):
                notes.append(
                    f"{check.name}: out of budget only in the groups whose squares (up to "
                    f"{overflow[1]:.3g}) exceed {arithmetic.dtype}'s largest value "
                    f"({largest(arithmetic.dtype):.3g}): {arithmetic.dtype} arithmetic "
                    "overflows there"
                )
                continue
        return False, None
    return True, "; ".join(notes) or None


def _same_order(
    check: OutputCheck,
    value: np.ndarray,
    exact: np.ndarray,
    reference: Any,
    arithmetic: Arithmetic,
    primary: np.ndarray,
) -> bool:
    """Whether ``check``'s largest error is within :data:`SAME_ORDER` of that of ``value``
    (normref computing in the arithmetic), both measured alike."""
    own = compare_output(
        check.name,
        value,
        check.expected_dtype,
        exact,
        reference.terms,
        check.expected_dtype,
        arithmetic,
        primary,
    ).max_ulps
    theirs = check.max_ulps
    if not (np.isfinite(own) and np.isfinite(theirs)):
        return False
    if own == 0:
        return theirs == 0
    return own / SAME_ORDER <= theirs <= own * SAME_ORDER


def overflows_everywhere(row: Row, dtype: str) -> bool:
    """Whether every group's squares exceed ``dtype``'s largest value: arithmetic in it is
    undefined on the whole row, and what an implementation computes there is no evidence for
    or against that arithmetic."""
    overflow = _overflowing(row, dtype)
    return overflow is not None and bool(overflow[0].all())


def _field_causes(
    row: Row, declared: Model, relevant: tuple[str, ...], failing: Sequence[str]
) -> tuple[list[Cause], list[str]]:
    """The single-field changes that reproduce the row, and the arithmetic ones it cannot test
    (:func:`overflows_everywhere`)."""
    found: list[Cause] = []
    untestable: list[str] = []
    for field_name, value, model in variations(declared, relevant):
        semantic = not arithmetic_only([field_name])
        text = f"{field_name}={value!r} instead of the declared {declared.get(field_name)!r}"
        key = f"field:{field_name}={value!r}"
        if semantic:
            if _fits(row, model, failing):
                found.append(Cause(key, text, semantic))
            continue
        arithmetic = arithmetic_of(model, row.prepared.dtype)
        held, note = arithmetic_accounts(
            row, model, arithmetic, model.convention, row.prepared.dtype
        )
        if held:
            found.append(Cause(key, text, semantic, note))
        elif overflows_everywhere(row, arithmetic.dtype):
            untestable.append(key)
    return found, untestable


def _structural_causes(row: Row, declared: Model, failing: Sequence[str]) -> list[Cause]:
    found = []
    for alternative in alternatives(row, declared, set(failing)):
        options = {"exact": alternative.values, "terms": alternative.terms}
        if _fits(row, declared, failing, **options):
            found.append(
                Cause(f"structure:{alternative.key}", alternative.text, note=alternative.note)
            )
    return found


def _precision_causes(row: Row, declared: Model) -> tuple[list[Cause], list[str]]:
    """The lower precision that accounts for the row, and those that cannot be checked on it
    (every group's squares overflow that precision: whatever it computes there is no evidence
    for or against it)."""
    dtype = row.prepared.dtype
    untestable: list[str] = []
    for lower in LOWER_PRECISIONS.get(dtype, ()):
        arithmetic = Arithmetic(lower, lower, declared.convention.variance_algorithm)
        computing = dataclasses.replace(declared.convention, low_precision_compute="input")
        held, note = arithmetic_accounts(
            row, declared, arithmetic, computing, lower, same_order=True
        )
        if held:
            text = f"computing in {lower}, a lower precision than the {dtype} input's"
            return [Cause(f"precision:{lower}", text, semantic=False, note=note)], untestable
        if overflows_everywhere(row, lower):
            untestable.append(f"precision:{lower}")
    return [], untestable


@dataclass(frozen=True)
class Candidates:
    """The causes that reproduce one failing row, and whether its input is finite (a row whose
    input holds NaN or an infinity may differ in how it propagates them, a difference of its
    own: the causes named for an implementation must hold on its rows of finite input)."""

    causes: list[Cause]
    finite_input: bool
    untestable: tuple[str, ...] = ()


def candidate_causes(
    row: Row,
    declared: Model,
    relevant: tuple[str, ...],
    *,
    fields: bool = True,
) -> Candidates:
    """Every cause that reproduces the failing ``row`` (out of budget under ``declared``):
    single-field changes (unless not ``fields``: a diagnosis tries those as
    hypotheses of their own), structural hypotheses, a lower precision."""
    arrays = [v for v in row.prepared.sample.args.values() if isinstance(v, np.ndarray)]
    finite = all(bool(np.all(np.isfinite(a))) for a in arrays)
    try:
        failing = [c.name for c in row.checks(declared) if not c.ok]
    except Exception:  # noqa: BLE001 - a row without outputs to judge has no cause to check
        return Candidates([], finite)
    by_field, untestable_fields = (
        _field_causes(row, declared, relevant, failing) if fields else ([], [])
    )
    precision, untestable = _precision_causes(row, declared)
    causes = [*by_field, *_structural_causes(row, declared, failing), *precision]
    return Candidates(causes, finite, (*untestable_fields, *untestable))


def common(candidates: Sequence[Candidates]) -> list[str]:
    """The keys of the causes that every row of finite input holds (every row, where none has a
    finite input), in the first such row's order: held there, or untestable there
    (:attr:`Candidates.untestable`) and held on some other row."""
    held = [c for c in candidates if c.finite_input] or list(candidates)
    keys = [c.key for cs in held for c in cs.causes]
    return [
        k
        for k in dict.fromkeys(keys)
        if all(any(c.key == k for c in cs.causes) or k in cs.untestable for cs in held)
    ]


def chosen(causes: Sequence[Cause], keys: Sequence[str]) -> tuple[list[Cause], bool]:
    """Of ``causes``, those of ``keys`` to name: the semantic ones, or only where there are none
    the arithmetic ones; and whether they are semantic."""
    held = [c for c in causes if c.key in keys]
    semantic = [c for c in held if c.semantic]
    return (semantic, True) if semantic else (held, False)


def cause_text(causes: Sequence[Cause], semantic: bool) -> str:
    """``"explained by a"``, ``"explained by any one of: a; b"``, or, for arithmetic causes,
    ``"within the wider budget of ..."``."""
    lead = "explained by" if semantic else "within the wider budget of"
    texts = list(dict.fromkeys(c.text for c in causes))
    if len(texts) == 1:
        return f"{lead} {texts[0]}"
    return f"{lead} any one of: {'; '.join(texts)}"


NO_CAUSE = "no convention field or structural hypothesis explains every failing row"


def settle(results: list[CaseResult]) -> None:
    """Name in each failing row the causes that hold for all failing rows of its implementation
    and op (module docstring), and where the failures are across those rows."""
    groups: dict[tuple[str, str], list[CaseResult]] = {}
    for result in results:
        groups.setdefault((result.implementation, result.op), []).append(result)
    for rows in groups.values():
        judged = [r for r in rows if r.status is Status.FAIL and r.causes is not None]
        if not judged:
            continue
        keys = common([r.causes for r in judged])
        where = rows_line(rows)
        finite = next((r.causes for r in judged if r.causes.finite_input), None)
        stated = [c for r in judged for c in r.causes.causes]
        for row in judged:
            candidates: Candidates = row.causes
            named, semantic = chosen(candidates.causes, keys)
            if named:
                lead = cause_text(named, semantic)
            elif keys and finite is not None and not candidates.finite_input:
                others, others_semantic = chosen(finite.causes, keys)
                lead = (
                    "not reproduced on this row, whose input is not finite, by what explains "
                    f"the others: {cause_text(others, others_semantic)}"
                )
            elif set(keys) & set(candidates.untestable):
                others, others_semantic = chosen(stated, keys)
                lead = (
                    "not reproduced on this row, whose every group's squares overflow that "
                    "arithmetic (no evidence either way), by what explains the others: "
                    f"{cause_text(others, others_semantic)}"
                )
            else:
                lead = NO_CAUSE
            row.diagnosis = "; ".join(p for p in (lead, row.diagnosis, where) if p)
            notes = [*([row.evidence] if row.evidence else []), *(c.note for c in named if c.note)]
            row.evidence = "; ".join(dict.fromkeys(notes)) or None
            row.causes = None
