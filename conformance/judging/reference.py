"""The reference: normref on a case's rounded inputs, under a model, with its error terms.

A case is checked at one dtype at a time: its float64 inputs (and the output's
cotangent) are first rounded to that dtype (:class:`Prepared`), so the
implementation under test and the reference see exactly the same values.
The reference then evaluates normref in float64 (``precision="highest"``) on
those values, with the model's semantic choices (:mod:`conformance.checked.models`),
on the chosen array library (:mod:`conformance.checked.backends`), and measures the
terms behind every output (:mod:`conformance.bounds.terms`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.bounds.budgets import compute_dtype
from conformance.bounds.measure import terms_of
from conformance.bounds.terms import OpTerms
from conformance.checked.backends import NUMPY, Backend
from conformance.checked.cases import Prepared
from conformance.checked.formats import round_to, unit_roundoff
from conformance.checked.models import NORMREF, Model
from conformance.checked.ops import batch_weight_as
from normref.registry import Sample


def resolved_eps(prepared: Prepared, model: Model) -> float | None:
    """The ``eps`` the reference uses: the case's, or the model's default for the op (or the
    one a model says the implementation uses whatever it is given).

    An op whose cases never pass ``eps`` (weight norm, global-norm clipping) always
    takes the model's default. A default of ``None`` (torch's ``RMSNorm``) is the
    machine epsilon of the compute dtype: float32's for float16, bfloat16 and
    float32 input.
    """
    op = prepared.op
    given = "eps" in prepared.sample.kwargs
    if not given and op.eps_field is None:
        return None
    if given and model.fixed_eps is not None:
        return model.fixed_eps
    if given and not prepared.case.default_eps:
        return prepared.sample.kwargs["eps"]
    if op.eps_field is None:
        msg = f"{op.name} has no eps field: its case cannot take the model's default eps"
        raise ValueError(msg)
    value = model.get(op.eps_field)
    if value is None:
        return 2.0 * unit_roundoff(compute_dtype(model, prepared.dtype))
    return float(value)


def model_sample(prepared: Prepared, model: Model) -> Sample:
    """The inputs the reference evaluates under ``model``: ``eps`` resolved, scalars in the
    model's scalar dtype, affine as the model holds it (``group_affine="per_group"``: each
    group takes its first channel's values)."""
    sample = prepared.sample
    changes: dict[str, Any] = {}
    eps = resolved_eps(prepared, model)
    if eps is not None:
        changes["eps"] = _scalar(eps, model)
    momentum = sample.kwargs.get("momentum")
    if momentum is not None and model.scalar_dtype != "float64":
        # the implementation holds its momentum (in its own meaning) in the scalar dtype
        held = _scalar(batch_weight_as(model, momentum), model)
        changes["momentum"] = batch_weight_as(model, held)
    if model.group_affine == "per_group" and "num_groups" in sample.args:
        size = (
            sample.args["x"].shape[prepared.op.param_axes(sample)[0]] // sample.args["num_groups"]
        )
        for name in prepared.op.affine_args:
            value = sample.args.get(name)
            if value is not None:
                changes[name] = np.repeat(value[::size], size)
    return sample.replace(**changes)


def _scalar(value: float, model: Model) -> float:
    return float(round_to(value, model.scalar_dtype))


@dataclass(frozen=True)
class Expected:
    """The exact outputs and gradients under a model, with their terms.

    ``values`` maps ``"y"``, the running statistics and the gradients
    (``"dx"``, ``"dgamma"``, ...) to float64 arrays.
    """

    values: dict[str, np.ndarray]
    terms: OpTerms
    eps: float | None


def expected(
    prepared: Prepared, model: Model, *, backward: bool = True, backend: Backend = NUMPY
) -> Expected:
    """normref's exact result on ``prepared`` under ``model`` (gradients when ``backward`` and
    the op has any), evaluated on ``backend``."""
    op = prepared.op
    sample = model_sample(prepared, model)
    dy = prepared.dy if backward and op.differentiable else None
    with np.errstate(all="ignore"):
        values = op.evaluate(sample, dy, model, backend)
        terms = terms_of(op, sample, dy, model)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    return Expected(arrays, terms, sample.kwargs.get("eps"))


@dataclass(frozen=True)
class Refusal:
    """An input normref refuses: where (``"forward"``, or ``"backward"`` where only its
    gradient does not exist) and normref's message."""

    where: str
    error: str


def reference_or_refusal(
    prepared: Prepared,
    model: Model,
    *,
    backward: bool = True,
    backend: Backend = NUMPY,
    evaluate: Callable[[], Expected] | None = None,
) -> Expected | Refusal:
    """normref's exact result on ``prepared`` under ``model``, or where and why it refuses it.

    A refusal is the case's own (an error-path case), or one that appears at the prepared
    dtype only: a mean of 1e4 in float16 (spacing 8) leaves every whitening group constant,
    where the gradient of PCA whitening and of decorrelation does not exist. ``evaluate``
    computes the full result (default :func:`expected` with these arguments; a caller with a
    cache passes its own).
    """
    case = prepared.case
    if case.kind == "error":
        return Refusal(case.error_in or "forward", case.error or "")
    try:
        if evaluate is not None:
            return evaluate()
        return expected(prepared, model, backward=backward, backend=backend)
    except ValueError as error:
        where = "forward"
        if backward and prepared.op.differentiable:
            try:
                expected(prepared, model, backward=False, backend=backend)
                where = "backward"
            except ValueError:
                pass
        return Refusal(where, f"at {prepared.dtype}: {error}")


def normref_computing(
    prepared: Prepared,
    precision: Any,
    dtype: str,
    *,
    backward: bool = False,
    model: Model = NORMREF,
) -> dict[str, np.ndarray]:
    """normref itself computing like an implementation would: its forward (and, with
    ``backward``, its VJP) on the row's inputs under ``model``'s keywords (its ``eps`` and its
    convention's), as NumPy arrays of ``dtype``, with ``precision`` (``"native"``, or a
    convention whose arithmetic it models); float64 arrays by output name. ``ValueError`` where
    normref refuses that (a dtype NumPy lacks, bfloat16)."""
    op = prepared.op
    sample = model_sample(prepared, model)

    def held(value: Any) -> Any:
        return np.asarray(value, dtype=dtype) if isinstance(value, np.ndarray) else value

    with np.errstate(all="ignore"):  # a value beyond float16's range becomes infinite, as it is
        args = {k: held(v) for k, v in sample.args.items()}
    kwargs = {**op.keywords_under(sample, model), "precision": precision}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = op.spec.output_values(op.spec.forward(*args.values(), **kwargs))
        if backward and op.differentiable and op.spec.vjp is not None:
            with np.errstate(all="ignore"):
                dy = held(prepared.dy)
            grads = op.spec.call_vjp(dy, Sample(args, kwargs))
            found = dict(zip(op.differentiable, grads, strict=True))
            values.update({f"d{k}": g for k, g in found.items() if g is not None})
    return {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
