"""Rows: one implementation on one case at one dtype, with its outcomes and checks.

A row calls the implementation once per distinct call (a function with
normref's signature takes its momentum in the model's meaning, so models that
differ there call it again), evaluates the reference under a model once per
semantic model (shared by every implementation of the op), and checks every
output against its bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.adapters.arrays import Evaluation
from conformance.adapters.base import Binding
from conformance.bounds.budgets import arithmetic_of
from conformance.bounds.compare import OutputCheck, compare_output
from conformance.checked.backends import NUMPY, Backend
from conformance.checked.cases import Case, Prepared, prepare
from conformance.checked.formats import promote
from conformance.checked.models import ARITHMETIC_FIELDS, NORMREF, Model
from conformance.judging.reference import Expected, expected


def semantic(model: Model) -> Model:
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
    """One binding on one prepared case: the implementation's outcomes and their checks.

    ``backend`` evaluates the reference (:mod:`conformance.checked.backends`).
    """

    binding: Binding
    key: CaseKey
    prepared: Prepared
    backend: Backend = NUMPY

    def __post_init__(self) -> None:
        self._outcomes: dict[Any, Evaluation] = {}

    @classmethod
    def of(cls, binding: Binding, case: Case, dtype: str, backend: Backend = NUMPY) -> Row:
        """The row of ``binding`` on ``case`` at ``dtype``."""
        key, prepared = _prepared(case, dtype)
        return cls(binding, key, prepared, backend)

    @property
    def backward(self) -> bool:
        """Whether gradients are checked: the binding has a backward and the op gradients."""
        return self.binding.backward and bool(self.prepared.op.differentiable)

    def outcome(self, model: Model) -> Evaluation:
        """The implementation's outputs when it follows ``model`` (called once per call)."""
        call = model.convention.momentum_meaning if self.binding.model_dependent else None
        if call not in self._outcomes:
            self._outcomes[call] = quietly(self.binding.run, self.prepared, model, self.backward)
        return self._outcomes[call]

    def expected_dtype(self, name: str, model: Model) -> str:
        """The dtype output ``name`` has under ``model``: a gradient or a running statistic
        the dtype of its input; ``y`` the input's, or promoted with the parameters' (the
        affine ones, and :attr:`~conformance.checked.ops.CheckedOp.promoting_inputs`)."""
        dtype, params = self.prepared.dtype, self.binding.param_dtype(self.prepared.dtype)
        op = self.prepared.op
        if name == "y":
            held = (*op.affine_args, *op.promoting_inputs)
            has_params = any(self.prepared.sample.args.get(a) is not None for a in held)
            promoting = model.convention.output_dtype == "promote" and has_params
            return promote(dtype, params) if promoting else dtype
        if name in op.state or name[1:] in op.affine_args:
            return params
        return dtype

    def expected(self, model: Model) -> Expected:
        """The reference under ``model``'s semantic fields (shared across bindings)."""
        exact, backward, backend = semantic(model), self.backward, self.backend
        return _EXPECTED.get(
            (self.key, exact, backward, backend.name),
            lambda: expected(self.prepared, exact, backward=backward, backend=backend),
        )

    def checks(self, model: Model) -> list[OutputCheck]:
        """Every output the binding gives against its bound under ``model``."""
        reference = self.expected(model)
        outcome = self.outcome(model)
        arithmetic = arithmetic_of(model, self.prepared.dtype)
        op = self.prepared.op
        primary = self.prepared.sample.args[op.spec.primary]
        given = self.binding.outputs
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
                op.direction(name),
            )
            for name, exact in reference.values.items()
            if given is None or name in given or op.direction(name) == "backward"
        ]

    def passes(self, model: Model) -> bool:
        """Whether every output is within budget under ``model``."""
        return all(c.ok for c in self.checks(model))


def quietly(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, **kwargs)`` with warnings silenced: an implementation's warnings (overflow in a cast,
    say) are not verdicts, and must not become errors where warnings are errors (pytest)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return run(*args, **kwargs)
