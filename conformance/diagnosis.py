"""Diagnose a black-box implementation: which convention, if any, explains it.

The implementation is run on every case of its op at every dtype under each
*hypothesis*: normref's definition, the framework presets of
:func:`conformance.checked.models.presets` that have the op, and every model that
differs from the base (normref's definition, or the declared convention) in
exactly one field relevant to the op: biased or unbiased running variance,
``eps`` placement, momentum meaning, each preset's default ``eps``, variance
algorithm, compute dtype, output dtype, and the extra hypotheses of
:mod:`conformance.checked.models` (an unbiased variance inside the normalization,
per-group affine, float32 scalars, float32 statistics, an ``eps`` argument
ignored for each preset's value).

A preset *has* the op when an adapter declaring that preset binds it
(:mod:`conformance.adapters`), or when the preset records a choice of the op
that no adapter runs: a weights-and-gradients field of the op it sets
otherwise than normref (the NFNets code's unit-wise norm, ``unit_axes``), or,
for a preset that no adapter runs at all (keras), the normalization layers
whose default ``eps`` its convention records
(:data:`conformance.checked.models.EPS_FIELDS`), the layers :mod:`normref.conventions`
describes it for. normref's definition has every op. optax and the NFNets
code hold flax's convention only as a placeholder (they have no layers), so
no layer is theirs. A preset's *changes* are
the fields relevant to the op in which it differs from the base, so it ranks
by how far it is from the base, as a single-field variation does.

A hypothesis *explains* the implementation when every output of every row is
within budget of the reference under it. Semantic hypotheses are tried with
the exact reference; arithmetic ones (variance algorithm, compute dtype) only
widen the budget by that arithmetic's error bound, so a hypothesis that
explains a row is consistent with it, not proof that it is how the
implementation computes. The explaining hypotheses are listed semantic ones
first, then by their number of changes, a single-field variation of the base
before a preset with as many.

An arithmetic hypothesis also explains a row whose only outputs out of
budget are non-finite values that normref itself, computing in that
arithmetic, gives at the same elements (squares that overflow float16).

When no single hypothesis explains, *pairs* of single-field changes are tried,
each of which explains some row the base does not (haiku's RMSNorm differs
in ``eps`` and in float16 arithmetic at once), and the verdict says when a
pair is needed.

When none explains, the diagnosis localizes the failure: which outputs are
out of budget and which never are, at which dtypes or conditioning
(:mod:`conformance.judging.localize`), and the structural hypotheses
(:mod:`conformance.judging.alternatives`) or lower precision that reproduce
*every* failing row (:mod:`conformance.judging.causes`). It names the
*closest* hypothesis only where it explains at least :data:`CLOSEST_SHARE` of
the rows the base leaves out of budget, and more than any other; ranked by the
fewest rows out of budget, then the least far out (the largest share of its
budget an output uses, worst row first), then the fewest changes: on an exact
tie the base itself, since a change that fits the rows no better than the base
is no evidence. The verdict is one line; the evidence (rows that fail under
every hypothesis with their diagnosis, where within their outputs they fail)
is listed below it (:attr:`Diagnosis.evidence`).

Rows on which normref refuses the input are not diagnosed (``run`` reports
them). An implementation is called once per row and momentum meaning, in a
worker process with ``isolate`` (:mod:`conformance.judging.isolation`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.adapters import ADAPTERS, get_adapter
from conformance.adapters.base import Binding, FrameworkLacksError
from conformance.adapters.function import function_under_test, importable_name
from conformance.bounds.budgets import arithmetic_of
from conformance.bounds.compare import OutputCheck
from conformance.checked.backends import NUMPY, Backend, get_backend
from conformance.checked.models import (
    ARITHMETIC_FIELDS,
    EPS_FIELDS,
    NORMREF,
    Model,
    arithmetic_only,
    model_of,
    preset_name,
    presets,
    variations,
    with_changes,
)
from conformance.checked.ops import CheckedOp, get_op
from conformance.judging.causes import (
    Candidates,
    Cause,
    arithmetic_accounts,
    candidate_causes,
    cause_text,
    chosen,
    common,
    overflows_everywhere,
)
from conformance.judging.isolation import DEFAULT_TIMEOUT, Recipe, isolated, worker_for
from conformance.judging.localize import RowFacts, facts_line, outputs_line
from conformance.judging.reference import Refusal, reference_or_refusal
from conformance.judging.rows import ImplementationFailedError, ImplementationRaisedError, Row
from conformance.judging.runner import select_cases
from conformance.judging.verdicts import failure_symptoms

CLOSEST_SHARE = 0.8
"""The share of the base's failing rows a hypothesis must explain to be named the closest."""

PAIRED = 12
"""At most this many single-field changes (those explaining the most failing rows) are paired."""


class NothingToDiagnoseError(ValueError):
    """No row to run: the implementation takes none of the dtypes asked for (on the command line
    a usage error, exit code 2)."""


@dataclass
class Hypothesis:
    """One model tried, and the rows it does not explain.

    ``changed`` holds the fields relevant to the op in which the model differs from the base
    (empty for the base itself); ``preset`` whether it is a framework's preset rather than a
    variation of the base; ``overshoot`` the largest share of its budget an output used on each
    failing row (``inf`` where an output is unusable or the implementation raised); ``notes``
    what explains a row for it beyond its budget (non-finite values normref's own arithmetic
    gives alike).
    """

    name: str
    model: Model
    changed: dict[str, Any]
    preset: bool = False
    failing: list[str] = field(default_factory=list)
    total: int = 0
    overshoot: dict[str, float] = field(default_factory=dict, repr=False)
    notes: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def explains(self) -> bool:
        """Every row is within budget under this model."""
        return self.total > 0 and not self.failing

    @property
    def arithmetic_only(self) -> bool:
        """The model differs from the base only in how it computes, not in what."""
        return arithmetic_only(self.changed)

    @property
    def pair(self) -> bool:
        """A pair of single-field changes of the base (not a preset)."""
        return not self.preset and len(self.changed) == 2

    def rank(self) -> tuple[bool, int, bool]:
        """Among hypotheses that fit equally well: semantic ones first, then the fewest changes,
        then a variation of the base before a preset."""
        return (self.arithmetic_only, len(self.changed), self.preset)

    def to_json(self) -> dict[str, Any]:
        """The hypothesis as JSON-ready values."""
        return {
            "name": self.name,
            "changed": self.changed,
            "preset": self.preset,
            "explains": self.explains,
            "failing": self.failing,
            "total": self.total,
        }


@dataclass
class Diagnosis:
    """The hypotheses tried on one implementation, and the verdict.

    ``unexplained`` maps each row that fails under every hypothesis to its row diagnosis;
    ``failing`` lists the rows out of budget under the base; ``causes`` the structural
    hypotheses (or lower precision) that reproduce every one of them; ``outputs`` and
    ``where`` say which outputs fail and where across the rows.
    """

    implementation: str
    op: str
    base: str
    hypotheses: list[Hypothesis]
    unexplained: dict[str, str] = field(default_factory=dict)
    causes: list[Cause] = field(default_factory=list)
    outputs: str | None = None
    where: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def explaining(self) -> list[Hypothesis]:
        """The hypotheses that explain every row, best first (:meth:`Hypothesis.rank`)."""
        return sorted((h for h in self.hypotheses if h.explains), key=Hypothesis.rank)

    @property
    def explained(self) -> bool:
        """A hypothesis explains every row."""
        return bool(self.explaining)

    @property
    def base_hypothesis(self) -> Hypothesis | None:
        """The base model's hypothesis (the declared convention, or its preset)."""
        return next((h for h in self.hypotheses if not h.changed), None)

    @property
    def failing(self) -> list[str]:
        """The rows out of budget under the base."""
        base = self.base_hypothesis
        return list(base.failing) if base is not None else []

    def _distance(self, h: Hypothesis) -> tuple[Any, ...]:
        worst_first = tuple(sorted(h.overshoot.values(), reverse=True))
        return (len(h.failing), worst_first, len(h.changed), *h.rank())

    @property
    def closest(self) -> Hypothesis | None:
        """The hypothesis that leaves the fewest rows out of budget, then the least far out,
        then the one that changes least (the base on an exact tie), where it explains at least
        :data:`CLOSEST_SHARE` of the base's failing rows and more than any other (but those
        that make its changes and more: a field that changes nothing more there); else
        ``None``."""
        best = min(self.hypotheses, key=self._distance, default=None)
        failing = self.failing
        if best is None or not failing or not best.changed:
            return None
        explained = len([r for r in failing if r not in best.failing])
        rivals = [h for h in self.hypotheses if h is not best]
        if explained < CLOSEST_SHARE * len(failing):
            return None
        if any(
            len(h.failing) <= len(best.failing)
            for h in rivals
            if h.changed and h.model != best.model and not _extends(h, best)
        ):
            return None
        return best

    @property
    def verdict(self) -> str:
        """One line: which hypothesis explains the implementation, or that none does and what
        does explain its failures (the evidence is :attr:`evidence`)."""
        found = self.explaining
        if found:
            names = ", ".join(h.name for h in found)
            if found[0].pair:
                return (
                    f"{self.implementation} is explained by a pair of changes, no single one: "
                    f"{names}"
                )
            return f"{self.implementation} is explained by: {names}"
        parts = [f"no convention explains {self.implementation}"]
        failing = self.failing
        if self.causes:
            named, semantic = chosen(self.causes, [c.key for c in self.causes])
            parts.append(f"{cause_text(named, semantic)} on all {len(failing)} failing rows")
        closest = self.closest
        if closest is not None:
            explained = len([r for r in failing if r not in closest.failing])
            parts.append(
                f"the closest, {closest.name}, explains {explained} of the {len(failing)} "
                "failing rows"
            )
        if self.outputs:
            parts.append(self.outputs)
        if self.where:
            parts.append(self.where)
        if self.unexplained and not self.causes:
            parts.append(f"{len(self.unexplained)} rows fail under every hypothesis (below)")
        return "; ".join(parts)

    @property
    def evidence(self) -> list[str]:
        """The lines below the verdict: what the explaining hypothesis shows on its rows, or
        what the causes named show, or each row that fails under every hypothesis with its
        diagnosis."""
        if self.explaining:
            return [f"{row}: {note}" for row, note in self.explaining[0].notes.items()]
        if self.causes:
            return self.details
        return [f"{row}: {text}" for row, text in self.unexplained.items()]

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values."""
        return {
            "implementation": self.implementation,
            "op": self.op,
            "base": self.base,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "unexplained": self.unexplained,
            "causes": [c.text for c in self.causes],
            "hypotheses": [h.to_json() for h in self.hypotheses],
        }


def presets_with(op: CheckedOp) -> dict[str, Model]:
    """The presets that have ``op`` (module docstring): normref's; those an adapter declaring
    them binds ``op`` for; those that set a weights-and-gradients field of ``op`` otherwise than
    normref; those no adapter runs, for the layers whose ``eps`` they record."""
    adapters = [get_adapter(name) for name in ADAPTERS]
    run = {preset_name(a.model) for a in adapters}
    binding = {preset_name(a.model) for a in adapters if op.name in a.ops()}
    own = op.own_convention_fields()
    layer_eps_field = op.eps_field if op.eps_field in EPS_FIELDS else None

    def has_op(name: str, model: Model) -> bool:
        if model == NORMREF or name in binding:
            return True
        if any(model.get(f) != NORMREF.get(f) for f in own):
            return True
        return (
            name not in run
            and layer_eps_field is not None
            and model.get(layer_eps_field) is not None
        )

    return {name: model for name, model in presets().items() if has_op(name, model)}


def hypotheses(op: str, base: Model = NORMREF) -> list[Hypothesis]:
    """The models tried for ``op``: the presets that have it, then single-field variations of
    ``base``; each with its changes over ``base`` in the fields relevant to ``op``."""
    checked = get_op(op)
    relevant = checked.relevant_fields()

    def changes(model: Model) -> dict[str, Any]:
        return {f: model.get(f) for f in relevant if model.get(f) != base.get(f)}

    found = [
        Hypothesis(f"{name} preset", model, changes(model), preset=True)
        for name, model in presets_with(checked).items()
    ]
    if base not in [h.model for h in found]:
        found.insert(0, Hypothesis(f"{base.name} (declared)", base, {}))
    for field_name, value, model in variations(base, relevant):
        found.append(
            Hypothesis(f"{base.name} with {field_name}={value!r}", model, {field_name: value})
        )
    return found


def pairs(singles: Sequence[Hypothesis], base: Model) -> list[Hypothesis]:
    """The pairs of single-field changes in ``singles`` (each of another field)."""
    found = []
    for first, second in itertools.combinations(singles, 2):
        (f1, v1), (f2, v2) = (*first.changed.items(), *second.changed.items())
        if f1 == f2:
            continue
        found.append(
            Hypothesis(
                f"{base.name} with {f1}={v1!r} and {f2}={v2!r}",
                base.replace(**{f1: v1, f2: v2}),
                {f1: v1, f2: v2},
            )
        )
    return found


def _judged(row: Row, hypothesis: Hypothesis) -> tuple[float, str | None]:
    """The largest share of its budget an output of the row uses under the hypothesis' model
    (> 1: out of budget; ``inf`` where an output is unusable or the implementation raises), and
    for an arithmetic hypothesis what shows it accounts for a row beyond its budget (normref
    computing so gives the same; squares that overflow: :func:`arithmetic_accounts`; then 0; 0
    too where every group's squares overflow that arithmetic: no evidence against it)."""
    model = hypothesis.model
    try:
        checks = row.checks(model)
    except Exception:  # noqa: BLE001 - a model under which the implementation crashes fails it
        return float("inf"), None
    used = max((float("inf") if c.problem else c.used for c in checks), default=0.0)
    if used > 1.0 and set(hypothesis.changed) & set(ARITHMETIC_FIELDS):
        dtype = row.prepared.dtype
        arithmetic = arithmetic_of(model, dtype)
        held, note = arithmetic_accounts(row, model, arithmetic, model.convention, dtype)
        if held:
            return 0.0, note
        if overflows_everywhere(row, arithmetic.dtype):
            return 0.0, (
                f"every group's squares exceed {arithmetic.dtype}'s largest value: that "
                "arithmetic is undefined there, no evidence either way"
            )
    return used, None


def _try(
    tried: Sequence[Hypothesis],
    rows: dict[str, Row],
    progress: Callable[[int, str], None] | None,
) -> None:
    for hypothesis in tried:
        for label, row in rows.items():
            hypothesis.total += 1
            overshoot, note = _judged(row, hypothesis)
            if not overshoot <= 1.0:
                hypothesis.failing.append(label)
                hypothesis.overshoot[label] = overshoot
            elif note is not None:
                hypothesis.notes[label] = note
            if progress is not None:
                progress(0, f"{hypothesis.name}: {label}")


def _extends(h: Hypothesis, other: Hypothesis) -> bool:
    """Whether ``h`` makes every change ``other`` makes, and more."""
    return other.changed.items() < h.changed.items()


def _diagnosable(
    binding: Binding, cases: Sequence[Any], dtypes: Sequence[str], base: Model, backend: Backend
) -> dict[str, Row]:
    """The rows to diagnose: every case but error paths at every dtype, without the rows whose
    input normref under ``base`` refuses once rounded to the dtype (an unbiased running variance
    of one value per channel, say): error paths, which ``run`` reports and no hypothesis
    explains."""
    rows = {}
    for case in cases:
        for dtype in dtypes:
            row = Row.of(binding, case, dtype, backend)
            if not isinstance(_reference(row, base, backend), Refusal):
                rows[f"{case.id} {dtype}"] = row
    return rows


def _reference(row: Row, model: Model, backend: Backend) -> Any:
    return reference_or_refusal(
        row.prepared,
        model,
        backward=row.backward,
        backend=backend,
        evaluate=lambda: row.expected(model),
    )


def _failure(row: Row, base: Model) -> tuple[str, list[OutputCheck] | None, str | None]:
    """A failing row's diagnosis under ``base``, its checks (``None`` where the implementation
    raised) and where within its outputs it fails."""
    try:
        checks = row.checks(base)
    except ImplementationFailedError as error:
        return str(error), None, None
    except FrameworkLacksError as error:
        return f"not implemented: {error}", None, None
    except ImplementationRaisedError as error:
        return f"raised {error.type_name}: {error}", None, None
    text, where = failure_symptoms(row, base, checks, row.modified_inputs())
    return text, checks, where


def diagnose_binding(
    binding: Binding,
    dtypes: Sequence[str],
    *,
    base: Model = NORMREF,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    backend: Backend = NUMPY,
) -> Diagnosis:
    """Try every hypothesis of :func:`hypotheses` on ``binding`` (the reference on ``backend``),
    then pairs, structural hypotheses and where it fails (module docstring).

    Raises :class:`NothingToDiagnoseError` when ``binding`` takes none of ``dtypes``.
    """
    taken = [d for d in dtypes if d in binding.dtypes]
    if not taken:
        msg = (
            f"nothing to diagnose: {binding.label}, {binding.framework}, does not take "
            f"{', '.join(dtypes)} (it takes {', '.join(binding.dtypes)})"
        )
        raise NothingToDiagnoseError(msg)
    cases = [c for c in select_cases(binding.op, seed=seed) if c.kind != "error"]
    rows = _diagnosable(binding, cases, taken, base, backend)
    tried = hypotheses(binding.op, base)
    if progress is not None:
        progress(len(tried) * len(rows), "")
    _try(tried, rows, progress)
    found = Diagnosis(binding.label, binding.op, base.name, tried)
    failing = found.failing
    if not found.explained and failing:
        singles = [h for h in tried if not h.preset and len(h.changed) == 1]
        helpful = [h for h in singles if len(set(failing) - set(h.failing)) > 0]
        helpful.sort(key=lambda h: len(h.failing))
        paired = pairs(helpful[:PAIRED], base)
        _try(paired, rows, progress)
        tried += paired
    if found.explained:
        return found
    reasons: dict[str, str] = {}
    candidates: dict[str, Candidates] = {}
    outputs: list[OutputCheck] = []
    relevant = get_op(binding.op).relevant_fields()
    for label in failing:
        row = rows[label]
        text, checks, where = _failure(row, base)
        reasons[label] = text + (f"; {where}" if where else "")
        if checks is not None:
            outputs += checks
            candidates[label] = candidate_causes(row, base, relevant, fields=False)
    keys = common(list(candidates.values()))
    first = next((c for c in candidates.values() if c.finite_input), None)
    found.causes = [] if first is None else [c for c in first.causes if c.key in keys]
    found.details = [
        f"{label}: {cause.note}"
        for label, held in candidates.items()
        for cause in held.causes
        if cause.key in keys and cause.note
    ]
    found.outputs = _outputs_across(outputs)
    found.where = facts_line([_facts(row, label in failing) for label, row in rows.items()])
    found.unexplained = {
        label: reasons[label] for label in failing if all(label in h.failing for h in tried)
    }
    return found


def _facts(row: Row, failing: bool) -> RowFacts:
    """A row's dtype, whether it fails under the base, its input's conditioning."""
    stated = row.expected(NORMREF).terms.stated_conditioning()
    return RowFacts(
        row.prepared.dtype,
        failing,
        None if stated is None else stated.value,
        None if stated is None else stated.what,
    )


def _outputs_across(checks: Sequence[OutputCheck]) -> str | None:
    """Which outputs are out of budget in the failing rows, and which within in all of them."""
    if not checks:
        return None
    names = list(dict.fromkeys(c.name for c in checks))
    bad = [n for n in names if any(c.name == n and not c.ok for c in checks)]
    line = outputs_line(
        [next(c for c in checks if c.name == n and (not c.ok or n not in bad)) for n in names]
    )
    return line.replace("within budget:", "within budget in every failing row:")


def diagnose(
    fn: Callable[..., Any],
    op: str,
    *,
    convention: Any = None,
    array_type: str = "numpy",
    vjp: Callable[..., Any] | None = None,
    dtypes: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    backend: str | Backend | None = None,
    isolate: bool = False,
    timeout: float | None = None,
    changes: Sequence[str] = (),
) -> Diagnosis:
    """Which convention, if any, explains ``fn`` (normref's signature for ``op``); the reference
    runs on ``backend`` (:mod:`conformance.checked.backends`). ``isolate`` calls ``fn`` in a
    worker process, each call stopped after ``timeout`` seconds (default 60;
    :mod:`conformance.api`); ``changes`` are ``field=value`` changes to ``convention``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import conformance
    >>> def layer_norm_eps3(x, gamma=None, beta=None, **options):
    ...     return normref.layer_norm(x, gamma, beta, **(options | {'eps': 1e-3}))
    >>> diagnosis = conformance.diagnose(layer_norm_eps3, 'layer_norm', dtypes=['float64'])
    >>> print(diagnosis.verdict.split(': ', 1)[1])
    normref with fixed_eps=0.001
    """
    reference = get_backend(backend)
    model = with_changes(model_of(convention), changes)
    binding, chosen_dtypes = function_under_test(fn, op, model, array_type, vjp, dtypes)
    if not isolate:
        if timeout is not None:
            msg = "timeout needs isolate=True (a call in this process cannot be stopped)"
            raise ValueError(msg)
        return diagnose_binding(
            binding, chosen_dtypes, base=model, seed=seed, progress=progress, backend=reference
        )
    names = (importable_name(fn), None if vjp is None else importable_name(vjp))
    if names[0] is None or (vjp is not None and names[1] is None):
        msg = "isolate=True needs a function importable as module:function (and its VJP)"
        raise ValueError(msg)
    recipe = Recipe(
        impl=names[0],
        op=op,
        array_type=array_type,
        vjp=names[1],
        convention=model,
        label=binding.label,
    )
    with worker_for(DEFAULT_TIMEOUT if timeout is None else timeout, [recipe]) as worker:
        assert worker is not None
        return diagnose_binding(
            isolated(binding, recipe, worker),
            chosen_dtypes,
            base=model,
            seed=seed,
            progress=progress,
            backend=reference,
        )
