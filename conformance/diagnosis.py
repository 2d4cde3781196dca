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

When none explains, the verdict names the *closest*: the hypothesis that
leaves the fewest rows out of budget, then the one whose rows out of budget
are least far out (the largest share of its budget an output uses, worst row
first), then the one that changes least: on an exact tie the base itself, since
a change that fits the rows no better than the base is no evidence (rows an
implementation fails by raising, or by NaN, tie under every model). Rows that
fail under every
hypothesis no convention can account for: the verdict gives each with its
row diagnosis (:mod:`conformance.judging.verdicts`), as ``run`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.adapters import ADAPTERS, get_adapter
from conformance.adapters.base import Binding
from conformance.adapters.function import function_under_test
from conformance.checked.backends import NUMPY, Backend, get_backend
from conformance.checked.cases import Case
from conformance.checked.models import (
    EPS_FIELDS,
    NORMREF,
    Model,
    arithmetic_only,
    model_of,
    preset_name,
    presets,
    variations,
)
from conformance.checked.ops import CheckedOp, get_op
from conformance.judging.reference import Refusal, reference_or_refusal
from conformance.judging.rows import Row, quietly
from conformance.judging.runner import check_row, select_cases


class NothingToDiagnoseError(ValueError):
    """No row to run: the implementation takes none of the dtypes asked for (on the command line
    a usage error, exit code 2)."""


@dataclass
class Hypothesis:
    """One model tried, and the rows it does not explain.

    ``changed`` holds the fields relevant to the op in which the model differs from the base
    (empty for the base itself); ``preset`` whether it is a framework's preset rather than a
    variation of the base; ``overshoot`` the largest share of its budget an output used on each
    failing row (``inf`` where an output is unusable or the implementation raised).
    """

    name: str
    model: Model
    changed: dict[str, Any]
    preset: bool = False
    failing: list[str] = field(default_factory=list)
    total: int = 0
    overshoot: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def explains(self) -> bool:
        """Every row is within budget under this model."""
        return self.total > 0 and not self.failing

    @property
    def arithmetic_only(self) -> bool:
        """The model differs from the base only in how it computes, not in what."""
        return arithmetic_only(self.changed)

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

    ``unexplained`` maps each row that fails under every hypothesis to its row diagnosis.
    """

    implementation: str
    op: str
    base: str
    hypotheses: list[Hypothesis]
    unexplained: dict[str, str] = field(default_factory=dict)

    @property
    def explaining(self) -> list[Hypothesis]:
        """The hypotheses that explain every row, best first (:meth:`Hypothesis.rank`)."""
        return sorted((h for h in self.hypotheses if h.explains), key=Hypothesis.rank)

    @property
    def closest(self) -> Hypothesis:
        """The hypothesis that leaves the fewest rows out of budget, then the least far out, then
        the one that changes least, the base on an exact tie (module docstring)."""

        def distance(h: Hypothesis) -> tuple[Any, ...]:
            worst_first = tuple(sorted(h.overshoot.values(), reverse=True))
            return (len(h.failing), worst_first, len(h.changed), *h.rank())

        return min(self.hypotheses, key=distance)

    @property
    def verdict(self) -> str:
        """One sentence: which hypothesis explains the implementation, or that none does."""
        found = self.explaining
        if found:
            names = ", ".join(h.name for h in found)
            return f"{self.implementation} is explained by: {names}"
        closest = self.closest
        start = f"no convention explains {self.implementation}: the closest, {closest.name},"
        if not self.unexplained:
            return f"{start} leaves {len(closest.failing)} of {closest.total} rows out of budget"
        rows = ", ".join(f"{row} ({text})" for row, text in self.unexplained.items())
        if len(closest.failing) == len(self.unexplained):
            return (
                f"{start} explains all rows but {len(self.unexplained)}, which fail under every "
                f"hypothesis: {rows}"
            )
        return (
            f"{start} leaves {len(closest.failing)} of {closest.total} rows out of budget; "
            f"out of budget under every hypothesis ({len(self.unexplained)}): {rows}"
        )

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values."""
        return {
            "implementation": self.implementation,
            "op": self.op,
            "base": self.base,
            "verdict": self.verdict,
            "unexplained": self.unexplained,
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


def _overshoot(binding: Binding, case: Case, dtype: str, model: Model, backend: Backend) -> float:
    """The largest share of its budget an output of the row uses under ``model`` (> 1: out of
    budget; ``inf`` where an output is unusable or the implementation raises)."""
    row = Row.of(binding, case, dtype, backend)
    try:
        checks = quietly(row.checks, model)
    except Exception:  # noqa: BLE001 - a model under which the implementation crashes fails it
        return float("inf")
    return max((float("inf") if c.problem else c.used for c in checks), default=0.0)


def _refused(binding: Binding, case: Case, dtype: str, model: Model, backend: Backend) -> bool:
    """Whether normref under ``model`` refuses the row (an unbiased running variance of one
    value per channel): an error path, which ``run`` reports and which no hypothesis explains."""
    row = Row.of(binding, case, dtype, backend)
    found = reference_or_refusal(
        row.prepared,
        model,
        backward=row.backward,
        backend=backend,
        evaluate=lambda: row.expected(model),
    )
    return isinstance(found, Refusal)


def diagnose_binding(
    binding: Binding,
    dtypes: Sequence[str],
    *,
    base: Model = NORMREF,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    backend: Backend = NUMPY,
) -> Diagnosis:
    """Try every hypothesis of :func:`hypotheses` on ``binding`` (the reference on ``backend``).

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
    rows = {
        f"{c.id} {d}": (c, d)
        for c in cases
        for d in taken
        if not _refused(binding, c, d, base, backend)
    }
    tried = hypotheses(binding.op, base)
    if progress is not None:
        progress(len(tried) * len(rows), "")
    for hypothesis in tried:
        for label, (case, dtype) in rows.items():
            hypothesis.total += 1
            overshoot = _overshoot(binding, case, dtype, hypothesis.model, backend)
            if not overshoot <= 1.0:
                hypothesis.failing.append(label)
                hypothesis.overshoot[label] = overshoot
            if progress is not None:
                progress(0, f"{hypothesis.name}: {label}")
    unexplained = [label for label in rows if all(label in h.failing for h in tried)]
    return Diagnosis(
        binding.label,
        binding.op,
        base.name,
        tried,
        {label: _row_diagnosis(binding, *rows[label], backend) for label in unexplained},
    )


def _row_diagnosis(binding: Binding, case: Case, dtype: str, backend: Backend) -> str:
    """What ``run`` says of the row (its diagnosis, or why it is not a failure)."""
    result = check_row(binding, case, dtype, backend)
    return result.diagnosis or result.explanation or result.status.value


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
) -> Diagnosis:
    """Which convention, if any, explains ``fn`` (normref's signature for ``op``); the reference
    runs on ``backend`` (:mod:`conformance.checked.backends`)."""
    reference = get_backend(backend)
    binding, chosen = function_under_test(fn, op, convention, array_type, vjp, dtypes)
    return diagnose_binding(
        binding,
        chosen,
        base=model_of(convention),
        seed=seed,
        progress=progress,
        backend=reference,
    )
