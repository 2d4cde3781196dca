"""The operations the suite checks: every registry op, plus batch norm's training step.

Each :class:`CheckedOp` wraps a :class:`normref.registry.OpSpec` with what the
suite needs beyond it: the *kind* of computation (which decides how rounding
errors scale, :mod:`conformance.terms`), the convention field holding its
default ``eps``, and how to evaluate normref under a :class:`~conformance.models.Model`.

``batch_norm_train`` is batch norm in training mode *with* the running
statistics' update, as framework layers do it in one call: its outputs are
``y`` and the new ``running_mean`` and ``running_var``
(:func:`normref.batch_norm_train`); its gradients are those of
:func:`normref.batch_norm`. Its ``momentum`` argument is given to an
implementation in the meaning of the model's convention (``momentum_meaning``),
from the case's weight of the new batch.

Adding an op to :data:`normref.registry.REGISTRY` makes it checked once it has
an entry in :data:`KINDS` (and :data:`EPS_FIELDS` if a convention gives its
default ``eps``); ``tests/conformance`` asserts that every registry op has one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

import normref
from conformance.models import Model
from normref._checks import normalize_axes, normalize_axis
from normref._layer import Layer, normalize, normalize_vjp
from normref.ops.standardization import SCALE, STANDARDIZE, std_params
from normref.partition import Partition
from normref.registry import REGISTRY, OpSpec, Sample

KINDS: dict[str, str] = {
    "center": "center",
    "scale": "scale",
    "rms_scale": "rms",
    "standardize": "standardize",
    "batch_norm": "standardize",
    "batch_norm_inference": "inference",
    "layer_norm": "standardize",
    "instance_norm": "standardize",
    "group_norm": "standardize",
    "ghost_batch_norm": "standardize",
    "rms_norm": "rms",
}
"""How each op computes, for the error model: ``center`` (``x - mean``), ``standardize``
(``(x - mean) / s(var)``), ``scale`` (``x / s(var)``), ``rms`` (``x / s(mean(x**2))``),
``inference`` (``(x - running_mean) / s(running_var)``)."""

EPS_FIELDS: dict[str, str] = {
    "batch_norm": "batch_norm_eps",
    "batch_norm_train": "batch_norm_eps",
    "batch_norm_inference": "batch_norm_eps",
    "ghost_batch_norm": "batch_norm_eps",
    "layer_norm": "layer_norm_eps",
    "instance_norm": "instance_norm_eps",
    "group_norm": "group_norm_eps",
    "rms_norm": "rms_norm_eps",
}
"""The :class:`~normref.conventions.Convention` field holding each layer's default ``eps``."""

_GROUP_OPS = {"standardize": STANDARDIZE, "scale": SCALE}
_VARIANCE_KINDS = ("standardize", "scale")
_TRAIN_BATCH_WEIGHT = 0.1


@dataclass(frozen=True)
class CheckedOp:
    """One operation as the suite checks it (see the module docstring).

    Attributes
    ----------
    name
        The op's name (a registry name, or ``"batch_norm_train"``).
    spec
        The registry entry its samples, partition and arrays come from.
    kind
        Its kind of computation (:data:`KINDS`).
    eps_field
        The convention field holding its default ``eps``, or ``None``.
    running_stats
        Whether it also returns updated running statistics.
    """

    name: str
    spec: OpSpec
    kind: str
    eps_field: str | None = None
    running_stats: bool = False

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
        """Names of its forward outputs."""
        return ("y", "running_mean", "running_var") if self.running_stats else ("y",)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...] | None = None) -> Sample:
        """A valid float64 sample (with the batch's weight for the running statistics)."""
        sample = self.spec.sample(rng, shape)
        if self.running_stats:
            return Sample(sample.args, {**sample.kwargs, "momentum": _TRAIN_BATCH_WEIGHT})
        return sample

    def partition(self, sample: Sample) -> Partition | None:
        """How the op groups the primary input of ``sample`` (``None`` if it does not)."""
        if self.spec.partition is None:
            return None
        return self.spec.partition(sample)

    def param_axes(self, sample: Sample) -> tuple[int, ...]:
        """The axes of x that the affine parameters span (from ``axes`` or ``axis``)."""
        x = sample.args[self.spec.primary]
        if "axes" in sample.kwargs:
            return normalize_axes(sample.kwargs["axes"], x.ndim)
        if "axis" in sample.kwargs:
            return (normalize_axis(sample.kwargs["axis"], x.ndim),)
        return ()

    def accepts(self, keyword: str) -> bool:
        """Whether normref's function for this op takes ``keyword``."""
        return keyword in inspect.signature(self.spec.forward).parameters

    @property
    def has_variance(self) -> bool:
        """Whether the op divides by a standard deviation computed from centred values."""
        return self.kind in _VARIANCE_KINDS

    def relevant_fields(self) -> tuple[str, ...]:
        """The model fields that can change this op's result or its error bound."""
        fields = ["low_precision_compute", "stash_dtype", "output_dtype"]
        if self.eps_field is not None:
            fields.append(self.eps_field)
        if self.accepts("eps") or self.running_stats:
            fields += ["scalar_dtype", "fixed_eps"]
        if self.accepts("eps_mode"):
            fields.append("eps_mode")
        if self.has_variance:
            fields += ["variance_algorithm", "correction"]
        if self.running_stats:
            fields += ["momentum_meaning", "running_var_correction"]
        if self.accepts("num_groups"):
            fields.append("group_affine")
        return tuple(fields)

    # ------------------------------------------------------------------ reference

    def reference(self, sample: Sample, model: Model) -> dict[str, np.ndarray]:
        """normref's outputs on a float64 ``sample`` under ``model``'s semantic choices."""
        if self.running_stats:
            y, stats = normref.batch_norm_train(
                *sample.args.values(),
                **self._kwargs(sample, model, with_momentum=True),
                convention=model.convention,
            )
            outputs = {"y": y, "running_mean": stats.mean, "running_var": stats.var}
        else:
            outputs = {"y": self.spec.forward(*sample.args.values(), **self._kwargs(sample, model))}
        layer = self._corrected_layer(sample, model)
        if layer is not None:
            outputs["y"] = normalize(layer, *self._affine_call(sample), "highest")
        return outputs

    def reference_vjp(self, dy: np.ndarray, sample: Sample, model: Model) -> dict[str, Any]:
        """normref's gradients (one per differentiable argument) on ``sample`` under ``model``."""
        layer = self._corrected_layer(sample, model)
        if layer is not None:
            grads = normalize_vjp(layer, dy, *self._affine_call(sample), "highest")
        elif self.running_stats:
            x, _, _, gamma, beta = sample.args.values()
            grads = normref.batch_norm_vjp(dy, x, gamma, beta, **self._kwargs(sample, model))
        else:
            grads = self.spec.vjp(dy, *sample.args.values(), **self._kwargs(sample, model))
        return dict(zip(self.differentiable, grads, strict=True))

    def _kwargs(self, sample: Sample, model: Model, *, with_momentum: bool = False) -> dict:
        kwargs = dict(sample.kwargs)
        momentum = kwargs.pop("momentum", None)
        if with_momentum:
            kwargs["momentum"] = batch_weight_as(model, momentum)
        if self.accepts("eps_mode"):
            kwargs["eps_mode"] = model.convention.eps_mode
        if model.correction and self.accepts("correction"):
            kwargs["correction"] = model.correction
        return kwargs

    def _corrected_layer(self, sample: Sample, model: Model) -> Layer | None:
        """The layer normalizing with ``model.correction`` when normref's function has no such
        argument: the same partition and operation, with the variance correction changed."""
        if not model.correction or self.accepts("correction") or not self.has_variance:
            return None
        partition = self.partition(sample)
        eps = sample.kwargs["eps"]
        params = std_params(eps, model.convention.eps_mode, model.correction)
        where = f"{self.name} with correction={model.correction}"
        return Layer(
            self.name, partition, _GROUP_OPS[self.kind], params, self.param_axes(sample), where
        )

    def _affine_call(self, sample: Sample) -> tuple[Any, Any, Any]:
        args = sample.args
        return args[self.spec.primary], args.get("gamma"), args.get("beta")


def batch_weight_as(model: Model, batch_weight: float | None) -> float | None:
    """The momentum an implementation following ``model`` takes for a batch weight."""
    if batch_weight is None:
        return None
    if model.convention.momentum_meaning == "batch_weight":
        return batch_weight
    return 1.0 - batch_weight


def _build() -> dict[str, CheckedOp]:
    ops = {
        name: CheckedOp(name, spec, KINDS.get(name, ""), EPS_FIELDS.get(name))
        for name, spec in REGISTRY.items()
    }
    # the inference sampler draws exactly the training step's arrays: x, the running
    # statistics, gamma and beta (``CheckedOp.sample`` adds the batch's weight)
    ops["batch_norm_train"] = CheckedOp(
        "batch_norm_train",
        REGISTRY["batch_norm_inference"],
        "standardize",
        EPS_FIELDS["batch_norm_train"],
        running_stats=True,
    )
    return ops


CHECKED_OPS: dict[str, CheckedOp] = _build()
"""Every op the suite checks, by name."""


def get_op(name: str) -> CheckedOp:
    """The checked op ``name``; :class:`ValueError` listing the known ops otherwise."""
    try:
        return CHECKED_OPS[name]
    except KeyError:
        msg = f"op must be one of {sorted(CHECKED_OPS)}, got {name!r}"
        raise ValueError(msg) from None
