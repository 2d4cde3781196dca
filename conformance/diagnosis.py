"""Diagnose a black-box implementation: which convention, if any, explains it.

The implementation is run on every case of its op at every dtype under each
*hypothesis*: normref's definition, every preset of :mod:`normref.conventions`,
and every model that differs from the base (normref's definition, or the
declared convention) in exactly one field relevant to the op: biased or
unbiased running variance, ``eps`` placement, momentum meaning, each preset's
default ``eps``, variance algorithm, compute dtype, output dtype, and the
extra hypotheses of :mod:`conformance.models` (an unbiased variance inside
the normalization, per-group affine, float32 scalars, float32 statistics, an
``eps`` argument ignored for each preset's value).

A hypothesis *explains* the implementation when every output of every row is
within budget of the reference under it. Semantic hypotheses are tried with
the exact reference; arithmetic ones (variance algorithm, compute dtype) only
widen the budget by that arithmetic's error bound, so a hypothesis that
explains a row is consistent with it, not proof that it is how the
implementation computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.adapters.base import Binding
from conformance.api import function_under_test
from conformance.backends import NUMPY, Backend, get_backend
from conformance.cases import Case
from conformance.models import NORMREF, Model, arithmetic_only, model_of, presets, variations
from conformance.ops import get_op
from conformance.rows import Row, quietly
from conformance.runner import select_cases


@dataclass
class Hypothesis:
    """One model tried, and the rows it does not explain."""

    name: str
    model: Model
    changed: dict[str, Any]
    failing: list[str] = field(default_factory=list)
    total: int = 0

    @property
    def explains(self) -> bool:
        """Every row is within budget under this model."""
        return self.total > 0 and not self.failing

    @property
    def arithmetic_only(self) -> bool:
        """The model differs from the base only in how it computes, not in what."""
        return arithmetic_only(self.changed)

    def to_json(self) -> dict[str, Any]:
        """The hypothesis as JSON-ready values."""
        return {
            "name": self.name,
            "changed": self.changed,
            "explains": self.explains,
            "failing": self.failing,
            "total": self.total,
        }


@dataclass
class Diagnosis:
    """The hypotheses tried on one implementation, and the verdict."""

    implementation: str
    op: str
    base: str
    hypotheses: list[Hypothesis]

    @property
    def explaining(self) -> list[Hypothesis]:
        """The hypotheses that explain every row: semantic ones first."""
        found = [h for h in self.hypotheses if h.explains]
        return sorted(found, key=lambda h: (h.arithmetic_only, len(h.changed)))

    @property
    def verdict(self) -> str:
        """One sentence: which hypothesis explains the implementation, or that none does."""
        found = self.explaining
        if not found:
            closest = min(self.hypotheses, key=lambda h: len(h.failing))
            return (
                f"no convention explains {self.implementation}: the closest, {closest.name}, "
                f"leaves {len(closest.failing)} of {closest.total} rows out of budget"
            )
        names = ", ".join(h.name for h in found)
        return f"{self.implementation} is explained by: {names}"

    def to_json(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values."""
        return {
            "implementation": self.implementation,
            "op": self.op,
            "base": self.base,
            "verdict": self.verdict,
            "hypotheses": [h.to_json() for h in self.hypotheses],
        }


def hypotheses(op: str, base: Model = NORMREF) -> list[Hypothesis]:
    """The models tried for ``op``: the presets, then single-field variations of ``base``."""
    relevant = get_op(op).relevant_fields()
    found = [Hypothesis(f"{name} preset", model, {}) for name, model in presets().items()]
    if base not in [h.model for h in found]:
        found.insert(0, Hypothesis(f"{base.name} (declared)", base, {}))
    for field_name, value, model in variations(base, relevant):
        found.append(
            Hypothesis(f"{base.name} with {field_name}={value!r}", model, {field_name: value})
        )
    return found


def _row_passes(binding: Binding, case: Case, dtype: str, model: Model, backend: Backend) -> bool:
    row = Row.of(binding, case, dtype, backend)
    try:
        return quietly(row.passes, model)
    except Exception:  # noqa: BLE001 - a model under which the implementation crashes fails it
        return False


def diagnose_binding(
    binding: Binding,
    dtypes: Sequence[str],
    *,
    base: Model = NORMREF,
    seed: int = 0,
    progress: Callable[[int, str], None] | None = None,
    backend: Backend = NUMPY,
) -> Diagnosis:
    """Try every hypothesis of :func:`hypotheses` on ``binding`` (the reference on ``backend``)."""
    cases = [c for c in select_cases(binding.op, seed=seed) if c.kind != "error"]
    rows = [(c, d) for c in cases for d in dtypes if d in binding.dtypes]
    tried = hypotheses(binding.op, base)
    if progress is not None:
        progress(len(tried) * len(rows), "")
    for hypothesis in tried:
        for case, dtype in rows:
            hypothesis.total += 1
            if not _row_passes(binding, case, dtype, hypothesis.model, backend):
                hypothesis.failing.append(f"{case.id} {dtype}")
            if progress is not None:
                progress(0, f"{hypothesis.name}: {case.id} {dtype}")
    return Diagnosis(binding.label, binding.op, base.name, tried)


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
    runs on ``backend`` (:mod:`conformance.backends`)."""
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
