"""The operations the suite checks: every registry op, as the suite evaluates it.

A :class:`CheckedOp` wraps a :class:`normref.registry.OpSpec`, which records
every fact about the op (its kind of computation, ``eps``, outputs and state,
the convention fields that change it, its special inputs, ...), with what the
suite does with those facts: which model fields can change its result or its
error bound (:meth:`CheckedOp.relevant_fields`), and how normref is evaluated
under a :class:`~conformance.checked.models.Model` (convention keywords passed
as keywords, the fields normref has no keyword for followed by
:mod:`conformance.checked.semantics` around the call, ``momentum`` given in
the meaning of the model's convention from the case's weight of the new batch).

Adding an op to :data:`normref.registry.REGISTRY` makes it checked; its
kind's error model lives in :mod:`conformance.bounds`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, overload

import numpy as np

from conformance.checked import semantics
from conformance.checked.backends import NUMPY, Backend
from conformance.checked.models import Model
from normref.conventions import WEIGHT_AND_GRADIENT_FIELDS
from normref.partition import Partition
from normref.registry import REGISTRY, Kind, OpSpec, Sample

_VARIANCE_KINDS = (Kind.STANDARDIZING, Kind.SCALING)

Evaluate = semantics.Evaluate

SEMANTICS: dict[tuple[str, Kind], Callable[[OpSpec], Callable[[Evaluate], Evaluate]]] = {
    ("zero_norm", Kind.WEIGHT_NORMALIZING): lambda _spec: semantics.weight_norm_zero_norm,
    ("zero_norm", Kind.SPECTRAL_NORMALIZING): lambda _spec: semantics.spectral_zero_norm,
    ("zero_norm", Kind.SPECTRAL_STEP): lambda _spec: semantics.spectral_zero_norm,
    ("unit_axes", Kind.ADAPTIVE_CLIPPING): lambda spec: semantics.unit_axes(spec.primary),
    ("unit_axes", Kind.UNIT_NORM): lambda spec: semantics.unit_axes(spec.primary),
    ("centralize_axes", Kind.CENTERING): lambda _spec: semantics.centralize_axes,
}
"""How a convention field that normref has no keyword for is followed, by the kind of the op
that declares it (:attr:`normref.registry.OpSpec.convention_fields`); a field absent here
changes only the arithmetic (the error bound), not the exact result."""


@dataclass(frozen=True)
class CheckedOp:
    """One operation as the suite checks it (see the module docstring)."""

    spec: OpSpec

    @property
    def name(self) -> str:
        """The op's registry name."""
        return self.spec.name

    @property
    def kind(self) -> Kind:
        """Its kind of computation."""
        return self.spec.kind

    @property
    def arrays(self) -> tuple[str, ...]:
        """Names of its array arguments, in call order."""
        return self.spec.arrays

    @property
    def differentiable(self) -> tuple[str, ...]:
        """Names of the arguments it has gradients for, in normref's order."""
        return self.spec.differentiable

    @property
    def affine_args(self) -> tuple[str, ...]:
        """Names of its affine parameters."""
        return self.spec.affine_args

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of its forward outputs, ``"y"`` first."""
        return self.spec.outputs

    @property
    def state(self) -> tuple[str, ...]:
        """The outputs that are state carried to the next call."""
        return self.spec.state

    @property
    def eps_field(self) -> str | None:
        """The convention field holding its default ``eps``."""
        return self.spec.eps_field

    @property
    def keywords(self) -> tuple[tuple[str, str], ...]:
        """``(keyword, convention field)``: the convention's choices normref takes as keywords."""
        return self.spec.convention_keywords

    @property
    def edge_shape(self) -> tuple[int, ...]:
        """The shape of its edge cases' primary input."""
        return self.spec.typical_shape

    @property
    def promoting_inputs(self) -> tuple[str, ...]:
        """Inputs with which a promoting framework promotes ``y`` (besides the parameters)."""
        return self.spec.promoting_inputs

    @property
    def running_stats(self) -> bool:
        """Whether it also returns updated running statistics (a training step of batch norm)."""
        return "running_mean" in self.spec.state

    @property
    def semantics(self) -> tuple[Callable[[Evaluate], Evaluate], ...]:
        """Wrappers of its evaluation that follow convention fields normref has no keyword for."""
        return tuple(
            SEMANTICS[(f, self.kind)](self.spec)
            for f in self.spec.convention_fields
            if (f, self.kind) in SEMANTICS
        )

    def direction(self, name: str) -> str:
        """``"forward"``, ``"state"`` or ``"backward"`` (a gradient) for output ``name``."""
        if name in self.state:
            return "state"
        return "forward" if name in self.outputs else "backward"

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...] | None = None) -> Sample:
        """A valid float64 sample (a training step's ``momentum`` is the batch's weight)."""
        return self.spec.sample(rng, shape)

    def partition(self, sample: Sample) -> Partition | None:
        """How the op groups the primary input of ``sample`` (``None`` if it does not)."""
        if self.spec.partition is None:
            return None
        return self.spec.partition(sample)

    def param_axes(self, sample: Sample) -> tuple[int, ...]:
        """The axes of x that the affine parameters span."""
        return self.spec.param_axes(sample)

    def accepts(self, keyword: str) -> bool:
        """Whether normref's function for this op takes ``keyword``."""
        return self.spec.accepts(keyword)

    @property
    def has_variance(self) -> bool:
        """Whether the op divides by a standard deviation computed from centred values."""
        return self.kind in _VARIANCE_KINDS

    @property
    def takes_eps(self) -> bool:
        """Whether its cases give the implementation an ``eps`` (not only its default)."""
        return self.accepts("eps") and self.spec.eps_argument

    def relevant_fields(self) -> tuple[str, ...]:
        """The model fields that can change this op's result or its error bound."""
        fields = ["low_precision_compute", "stash_dtype", "output_dtype"]
        if self.eps_field is not None:
            fields.append(self.eps_field)
        if self.takes_eps or self.running_stats:
            fields += ["scalar_dtype", "fixed_eps"]
        fields += [f for _, f in self.keywords]
        if self.has_variance:
            fields += ["variance_algorithm", "correction"]
        if self.running_stats:
            fields += ["momentum_meaning", "running_var_correction"]
        if self.accepts("num_groups"):
            fields.append("group_affine")
        fields += self.spec.convention_fields
        if self.accepts("correction"):
            fields.append("correction")
        return tuple(dict.fromkeys(fields))

    def own_convention_fields(self) -> tuple[str, ...]:
        """The weights-and-gradients convention fields that change this op."""
        own = (self.eps_field, *self.spec.convention_fields, *(f for _, f in self.keywords))
        return tuple(f for f in own if f in WEIGHT_AND_GRADIENT_FIELDS)

    # ------------------------------------------------------------------ reference

    def evaluate(
        self, sample: Sample, dy: np.ndarray | None, model: Model, backend: Backend = NUMPY
    ) -> dict[str, np.ndarray]:
        """normref's outputs (and, given ``dy``, gradients ``d<arg>``) on a float64 ``sample``
        under ``model``'s semantic choices, evaluated on ``backend``."""
        run: Evaluate = partial(self._evaluate, backend=backend)
        for wrap in self.semantics:
            run = wrap(run)
        return run(sample, dy, model)

    def reference(self, sample: Sample, model: Model) -> dict[str, np.ndarray]:
        """normref's outputs on a float64 ``sample`` under ``model`` (NumPy)."""
        return self.evaluate(sample, None, model)

    def _evaluate(
        self, sample: Sample, dy: np.ndarray | None, model: Model, *, backend: Backend
    ) -> dict[str, np.ndarray]:
        on = Sample(
            {k: backend.to_backend(v) for k, v in sample.args.items()},
            {k: backend.to_backend(v) for k, v in sample.kwargs.items()},
        )
        kwargs = self.keywords_under(on, model)
        values = self.spec.output_values(self.spec.forward(*on.args.values(), **kwargs))
        if dy is not None and self.differentiable:
            grads = self.spec.call_vjp(backend.to_backend(dy), Sample(on.args, kwargs))
            found = dict(zip(self.differentiable, grads, strict=True))
            values.update({f"d{k}": g for k, g in found.items() if g is not None})
        return {k: backend.to_numpy(v) for k, v in values.items()}

    def keywords_under(self, sample: Sample, model: Model) -> dict[str, Any]:
        """The sample's keywords as normref takes them under ``model``: the convention's
        keywords, its correction, and a training step's convention with ``momentum`` in that
        convention's meaning (the sample's is the batch's weight)."""
        kwargs = dict(sample.kwargs)
        if self.accepts("convention"):
            kwargs["convention"] = model.convention
            kwargs["momentum"] = batch_weight_as(model, kwargs.get("momentum"))
        for keyword, model_field in self.keywords:
            kwargs[keyword] = model.get(model_field)
        if model.correction and self.accepts("correction"):
            kwargs["correction"] = model.correction
        return kwargs


def implementation_keywords(kwargs: dict[str, Any], model: Model) -> dict[str, Any]:
    """A case's keywords as an implementation following ``model`` takes them: ``momentum`` in
    the meaning of the model's convention (the case's is the batch's weight), and no
    ``convention`` (the implementation follows one; it is not an argument)."""
    found = {k: v for k, v in kwargs.items() if k != "convention"}
    if found.get("momentum") is not None:
        found["momentum"] = batch_weight_as(model, found["momentum"])
    return found


@overload
def batch_weight_as(model: Model, batch_weight: float) -> float: ...
@overload
def batch_weight_as(model: Model, batch_weight: None) -> None: ...
def batch_weight_as(model: Model, batch_weight: float | None) -> float | None:
    """The momentum an implementation following ``model`` takes for a batch weight."""
    if batch_weight is None:
        return None
    if model.convention.momentum_meaning == "batch_weight":
        return batch_weight
    return 1.0 - batch_weight


CHECKED_OPS: dict[str, CheckedOp] = {name: CheckedOp(spec) for name, spec in REGISTRY.items()}
"""Every op the suite checks, by name."""


def get_op(name: str) -> CheckedOp:
    """The checked op ``name``; :class:`ValueError` listing the known ops otherwise."""
    try:
        return CHECKED_OPS[name]
    except KeyError:
        msg = f"op must be one of {sorted(CHECKED_OPS)}, got {name!r}"
        raise ValueError(msg) from None
