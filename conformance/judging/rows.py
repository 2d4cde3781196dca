"""Rows: one implementation on one case at one dtype, with its outcomes and checks.

A row calls the implementation once per distinct call (a function with
normref's signature takes its momentum in the model's meaning, so models that
differ there call it again), evaluates the reference under a model once per
semantic model (shared by every implementation of the op), and checks every
output against its bound.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.adapters.arrays import Evaluation
from conformance.adapters.base import Binding, FrameworkLacksError
from conformance.bounds.budgets import Arithmetic, arithmetic_of, element_bounds
from conformance.bounds.compare import OutputCheck, compare_output, element_errors
from conformance.bounds.terms import OpTerms
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
        self._outcomes: dict[Any, Evaluation | Exception] = {}

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
        """The implementation's outputs when it follows ``model``: called once per distinct
        call, its exception kept and raised again (a diagnosis tries many models on a row; an
        implementation that hangs costs one timeout, not one per model)."""
        call = model.convention.momentum_meaning if self.binding.model_dependent else None
        if call not in self._outcomes:
            try:
                self._outcomes[call] = call_implementation(
                    self.binding.run, self.prepared, model, self.backward
                )
            except (
                FrameworkLacksError,
                ImplementationFailedError,
                ImplementationRaisedError,
            ) as error:
                self._outcomes[call] = error
            except Exception as error:  # noqa: BLE001 - the implementation's, kept and raised below
                self._outcomes[call] = ImplementationRaisedError.of(error)
        found = self._outcomes[call]
        if isinstance(found, Exception):
            raise found
        return found

    def modified_inputs(self) -> tuple[str, ...]:
        """The inputs the implementation wrote into in any of its calls, except those its
        binding declares it updates in place."""
        found = {
            name
            for outcome in self._outcomes.values()
            if isinstance(outcome, Evaluation)
            for name in outcome.modified
        }
        return tuple(sorted(found - set(self.binding.in_place)))

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

    def checks(
        self,
        model: Model,
        *,
        exact: dict[str, np.ndarray] | None = None,
        terms: dict[str, OpTerms] | None = None,
        arithmetic: Arithmetic | None = None,
        first: Sequence[str] = (),
        stop: bool = False,
    ) -> list[OutputCheck]:
        """Every output the binding gives against its bound under ``model``.

        A diagnosis tests alternatives with the reference's own terms: ``exact`` replaces some
        of the reference's values (those of outputs the row has), ``terms`` the terms that
        measure some outputs (by name: another computation's, an output of another shape),
        ``arithmetic`` the model's arithmetic. With ``stop`` the checks end at the first output
        out of budget (the outputs named in ``first`` checked first): enough to say whether
        the model fits.
        """
        reference = self.expected(model)
        outcome = self.outcome(model)
        if arithmetic is None:
            arithmetic = arithmetic_of(model, self.prepared.dtype)
        values = dict(reference.values)
        values.update({k: v for k, v in (exact or {}).items() if k in values})
        measured = terms or {}
        op = self.prepared.op
        primary = self.prepared.sample.args[op.spec.primary]
        given = self.binding.outputs
        names = [n for n in values if given is None or n in given or op.direction(n) == "backward"]
        names.sort(key=lambda n: n not in first)
        found = []
        for name in names:
            check = compare_output(
                name,
                outcome.values.get(name),
                outcome.dtypes.get(name),
                values[name],
                measured.get(name, reference.terms),
                self.expected_dtype(name, model),
                arithmetic,
                primary,
                op.direction(name),
            )
            found.append(check)
            if stop and not check.ok:
                break
        return found

    def ratios(
        self, model: Model, name: str, *, arithmetic: Arithmetic | None = None
    ) -> np.ndarray | None:
        """Per element of output ``name``: its error over its bound under ``model`` (and
        ``arithmetic``, default the model's; > 1: out of budget); ``None`` where the output is
        missing or of another shape."""
        reference = self.expected(model)
        actual = self.outcome(model).values.get(name)
        exact = reference.values.get(name)
        if actual is None or exact is None or np.shape(actual) != np.shape(exact):
            return None
        dtype = self.expected_dtype(name, model)
        bounds = element_bounds(
            reference.terms,
            name,
            exact,
            dtype,
            arithmetic or arithmetic_of(model, self.prepared.dtype),
        )
        return element_errors(np.asarray(actual, dtype=np.float64), exact, bounds.bound, dtype)[1]

    def passes(self, model: Model, **options: Any) -> bool:
        """Whether every output is within budget under ``model`` (and the options of
        :meth:`checks`), checking no further than the first output out of budget."""
        return all(c.ok for c in self.checks(model, stop=True, **options))


class ImplementationRaisedError(Exception):
    """An exception the implementation raised (not the suite): its type's name, its message and
    its traceback. The row fails with "raised <type>: <message>"."""

    def __init__(self, type_name: str, message: str, traceback_text: str | None) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.traceback_text = traceback_text

    @classmethod
    def of(cls, error: BaseException) -> ImplementationRaisedError:
        """``error``, raised by the implementation in this process."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return cls(type(error).__name__, str(error), text)


class ImplementationFailedError(Exception):
    """The implementation failed in a way that must not end the run: it timed out, crashed, or
    raised an exception that is not an :class:`Exception` (``SystemExit``). Its row fails with
    this message as its diagnosis (and ``traceback_text``, where there is one)."""

    def __init__(self, message: str, traceback_text: str | None = None) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


def call_implementation(run: Callable[..., Any], *args: Any) -> Any:
    """``run(*args)`` quietly (:func:`quietly`), an exit or another exception that is not an
    :class:`Exception` turned into an :class:`ImplementationFailedError` (Ctrl-C, a
    ``KeyboardInterrupt``, still stops the run)."""
    try:
        return quietly(run, *args)
    except (Exception, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - an exit must not end the run
        text = f"raised {type(error).__name__}: {error}".rstrip(": ")
        raise ImplementationFailedError(text, traceback.format_exc()) from None


def quietly(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, **kwargs)`` with warnings silenced: an implementation's warnings (overflow in a cast,
    say) are not verdicts, and must not become errors where warnings are errors (pytest)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return run(*args, **kwargs)
