"""The operations the suite checks: every registry op, plus the conformance-only ones.

Each :class:`CheckedOp` wraps an :class:`normref.registry.OpSpec` with what the
suite needs beyond it: the *kind* of computation (which decides how rounding
errors scale: :attr:`CheckedOp.terms` measures the terms, :mod:`conformance.tolerances`
holds the operation counts), the model fields that change its exact result
and how they reach normref (as keywords, or by :mod:`conformance.semantics`
around the call), its outputs and which of them are state, and the shape of
its edge cases.

Besides the registry, the suite checks ops as frameworks implement them:
``batch_norm_train`` is batch norm in training mode *with* the running
statistics' update, as framework layers do it in one call (its outputs are
``y`` and the new ``running_mean`` and ``running_var``,
:func:`normref.batch_norm_train`; its gradients those of
:func:`normref.batch_norm`; its ``momentum`` is given to an implementation in
the meaning of the model's convention, from the case's weight of the new
batch); and the ops of :mod:`conformance.extra_ops` (a training step of
spectral norm, global-norm clipping, the unit-wise norm, the gamma-scaled
nonlinearities).

Adding an op to :data:`normref.registry.REGISTRY` makes it checked once it has
an entry in :data:`KINDS`; ``tests/conformance`` asserts that every registry op
has one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

import normref
from conformance import semantics, terms, terms_weights, terms_whitening
from conformance.backends import NUMPY, Backend
from conformance.extra_ops import EXTRA_SPECS
from conformance.models import Model
from normref._lib.checks import normalize_axes, normalize_axis
from normref.layers.compose import Layer, normalize, normalize_vjp
from normref.ops.standardization import SCALE, STANDARDIZE, std_params
from normref.partition import Partition
from normref.registry import REGISTRY, OpSpec, Sample

EDGE_SHAPE = (4, 6, 5)
"""The shape of most edge cases' primary input: groups of 5 to 20 samples for every layer."""

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
    "weight_standardize": "standardize",
    "scaled_weight_standardize": "scaled_standardize",
    "weight_norm": "weight_norm",
    "spectral_norm": "spectral",
    "adaptive_grad_clip": "agc",
    "skip_init_residual": "residual",
    "decorrelate": "whiten",
    "pca_whiten": "whiten",
    "zca_whiten": "whiten",
    "cholesky_whiten": "whiten",
    "iter_norm_whiten": "whiten",
    "batch_whiten": "whiten",
    "batch_whiten_inference": "whiten_inference",
}
"""How each registry op computes, for the error model: ``center`` (``x - mean``),
``standardize`` (``(x - mean) / s(var)``, weight standardization on the units of a
weight), ``scale`` (``x / s(var)``), ``rms`` (``x / s(mean(x**2))``), ``inference``
(``(x - running_mean) / s(running_var)``), ``scaled_standardize`` (Scaled WS),
``weight_norm``, ``spectral`` (``w / u^T W v``), ``agc``, ``residual`` (``x + alpha f``),
``whiten`` (``W(Sigma) (x - mean)``) and ``whiten_inference`` (given ``W``)."""

EPS_FIELDS: dict[str, str] = {
    "batch_norm": "batch_norm_eps",
    "batch_norm_train": "batch_norm_eps",
    "batch_norm_inference": "batch_norm_eps",
    "ghost_batch_norm": "batch_norm_eps",
    "layer_norm": "layer_norm_eps",
    "instance_norm": "instance_norm_eps",
    "group_norm": "group_norm_eps",
    "rms_norm": "rms_norm_eps",
    "weight_norm": "weight_norm_eps",
    "clip_by_global_norm": "global_norm_eps",
}
"""The model field holding each op's default ``eps``."""

_GROUP_OPS = {"standardize": STANDARDIZE, "scale": SCALE}
_VARIANCE_KINDS = ("standardize", "scale")
_TRAIN_BATCH_WEIGHT = 0.1

Evaluate = semantics.Evaluate
TermBuilder = Callable[..., Any]


@dataclass(frozen=True)
class CheckedOp:
    """One operation as the suite checks it (see the module docstring).

    Attributes
    ----------
    name
        The op's name (a registry name, or a conformance-only one).
    spec
        The entry its samples, partition, arrays and functions come from.
    kind
        Its kind of computation (:data:`KINDS`).
    eps_field
        The model field holding its default ``eps``, or ``None``.
    running_stats
        Whether it also returns updated running statistics (``batch_norm_train``).
    outputs
        Names of its forward outputs, ``"y"`` first (in the order its function
        returns them).
    state
        The outputs that are state carried to the next call (running
        statistics, power-iteration vectors), and the inputs they update.
    keywords
        ``(keyword, model field)``: model fields normref takes as a keyword.
    fields
        Further model fields that change its exact result, through ``semantics``.
    semantics
        Wrappers of its evaluation (:mod:`conformance.semantics`), innermost first.
    edge_shape
        The shape of its edge cases' primary input.
    promoting_inputs
        Inputs besides the affine parameters, held in the parameters' dtype, with
        which a framework that promotes (``output_dtype="promote"``) promotes ``y``:
        flax's ``SpectralNorm`` promotes with its power-iteration vectors
        (``flax/linen/normalization.py``, line 1180), while its ``BatchNorm``
        promotes with ``scale`` and ``bias`` alone, not the running statistics
        (line 225).
    terms
        ``terms(op, sample, dy, model)``: the magnitudes of the terms behind its
        outputs (:mod:`conformance.terms`; a layer's by default).
    """

    name: str
    spec: OpSpec
    kind: str
    eps_field: str | None = None
    running_stats: bool = False
    outputs: tuple[str, ...] = ("y",)
    state: tuple[str, ...] = ()
    keywords: tuple[tuple[str, str], ...] = ()
    fields: tuple[str, ...] = ()
    semantics: tuple[Callable[[Evaluate], Evaluate], ...] = ()
    edge_shape: tuple[int, ...] = EDGE_SHAPE
    promoting_inputs: tuple[str, ...] = ()
    terms: TermBuilder = field(default=None, repr=False)

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

    def direction(self, name: str) -> str:
        """``"forward"``, ``"state"`` or ``"backward"`` (a gradient) for output ``name``."""
        if name in self.state:
            return "state"
        return "forward" if name in self.outputs else "backward"

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
        """The axes of x that the affine parameters span (from ``axes``, ``axis`` or
        ``out_axis``)."""
        x = sample.args[self.spec.primary]
        if "axes" in sample.kwargs:
            return normalize_axes(sample.kwargs["axes"], x.ndim)
        for keyword in ("axis", "out_axis"):
            if keyword in sample.kwargs:
                return (normalize_axis(sample.kwargs[keyword], x.ndim),)
        return ()

    def accepts(self, keyword: str) -> bool:
        """Whether normref's function for this op takes ``keyword``."""
        return keyword in inspect.signature(self.spec.forward).parameters

    @property
    def has_variance(self) -> bool:
        """Whether the op divides by a standard deviation computed from centred values."""
        return self.kind in _VARIANCE_KINDS

    @property
    def takes_eps(self) -> bool:
        """Whether its cases give the implementation an ``eps`` (not only its default)."""
        return self.accepts("eps") and self.eps_field not in _DEFAULT_ONLY_EPS

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
        fields += self.fields
        return tuple(dict.fromkeys(fields))

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
        values = self._outputs(on, model)
        if dy is not None and self.differentiable:
            grads = self._gradients(backend.to_backend(dy), on, model)
            values.update({f"d{k}": g for k, g in grads.items() if g is not None})
        return {k: backend.to_numpy(v) for k, v in values.items()}

    def _outputs(self, sample: Sample, model: Model) -> dict[str, Any]:
        if self.running_stats:
            y, stats = normref.batch_norm_train(
                *sample.args.values(),
                **self._kwargs(sample, model, with_momentum=True),
                convention=model.convention,
            )
            outputs = {"y": y, "running_mean": stats.mean, "running_var": stats.var}
        else:
            result = self.spec.forward(*sample.args.values(), **self._kwargs(sample, model))
            single = len(self.outputs) == 1
            outputs = {"y": result} if single else dict(zip(self.outputs, result, strict=True))
        layer = self._corrected_layer(sample, model)
        if layer is not None:
            outputs["y"] = normalize(layer, *self._affine_call(sample), "highest")
        return outputs

    def _gradients(self, dy: Any, sample: Sample, model: Model) -> dict[str, Any]:
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
        for keyword, model_field in self.keywords:
            kwargs[keyword] = model.get(model_field)
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


_DEFAULT_ONLY_EPS = ("weight_norm_eps", "global_norm_eps")
"""Model fields of an ``eps`` that cases never pass: torch's weight norm and global-norm
clipping have no ``eps`` argument, so implementations are called with their default."""


def batch_weight_as(model: Model, batch_weight: float | None) -> float | None:
    """The momentum an implementation following ``model`` takes for a batch weight."""
    if batch_weight is None:
        return None
    if model.convention.momentum_meaning == "batch_weight":
        return batch_weight
    return 1.0 - batch_weight


_EPS_MODE = (("eps_mode", "eps_mode"),)
_WHITENING_SHAPE = (3, 20, 3)

OPTIONS: dict[str, dict[str, Any]] = {
    "scaled_weight_standardize": {
        "keywords": (("eps_mode", "scaled_ws_eps_mode"),),
        "fields": ("variance_algorithm",),
        "terms": terms_weights.scaled_ws_terms,
    },
    "weight_norm": {
        "fields": ("zero_norm",),
        "semantics": (semantics.weight_norm_zero_norm,),
        "terms": terms_weights.weight_norm_terms,
    },
    "spectral_norm": {
        "state": ("u", "v"),
        "fields": ("zero_norm",),
        "semantics": (semantics.spectral_zero_norm,),
        "terms": terms_weights.spectral_terms,
    },
    "adaptive_grad_clip": {
        "fields": ("unit_axes",),
        "semantics": (semantics.unit_axes("grad"),),
        "terms": terms_weights.agc_terms,
    },
    "skip_init_residual": {"terms": terms_weights.residual_terms},
    **{
        name: {
            "edge_shape": _WHITENING_SHAPE,
            "fields": ("variance_algorithm", "correction"),
            "terms": terms_whitening.whitening_terms,
        }
        for name in terms_whitening.CANONICAL_METHODS
    },
    "batch_whiten": {
        "fields": ("variance_algorithm",),
        "terms": terms_whitening.whitening_terms,
    },
    "batch_whiten_inference": {"terms": terms_whitening.whitening_inference_terms},
    # conformance-only ops
    "spectral_norm_train": {
        "outputs": ("y", "u", "v", "sigma"),
        "state": ("u", "v", "sigma"),
        "promoting_inputs": ("u", "v"),
        "keywords": (
            ("order", "power_iteration_order"),
            ("eps_mode", "l2_eps_mode"),
        ),
        "fields": ("zero_norm",),
        "semantics": (semantics.spectral_zero_norm,),
        "terms": terms_weights.spectral_train_terms,
    },
    "clip_by_global_norm": {
        "outputs": ("y", "clipped_bias_grad"),
        "terms": terms_weights.global_clip_terms,
    },
    "unitwise_norm": {
        "fields": ("unit_axes",),
        "semantics": (semantics.unit_axes("x"),),
        "terms": terms_weights.unit_norm_terms,
    },
    "gamma_scaled_nonlinearity": {
        "keywords": (("gammas", "nonlinearity_gammas"),),
        "terms": terms_weights.nonlinearity_terms,
    },
}
"""What each op needs beyond its kind (see :class:`CheckedOp`). An op whose function takes
``eps_mode`` and that names no keywords takes the convention's ``eps_mode``."""

EXTRA_KINDS: dict[str, str] = {
    "spectral_norm_train": "spectral_train",
    "clip_by_global_norm": "global_clip",
    "unitwise_norm": "unit_norm",
    "gamma_scaled_nonlinearity": "nonlinearity",
}
"""The kinds of the conformance-only ops of :mod:`conformance.extra_ops`."""


def _checked(name: str, spec: OpSpec, kind: str) -> CheckedOp:
    options = {"terms": terms.op_terms, **OPTIONS.get(name, {})}
    op = CheckedOp(name, spec, kind, EPS_FIELDS.get(name), **options)
    if "keywords" not in OPTIONS.get(name, {}) and op.accepts("eps_mode"):
        return dataclasses.replace(op, keywords=_EPS_MODE)
    return op


def _build() -> dict[str, CheckedOp]:
    ops = {name: _checked(name, spec, KINDS.get(name, "")) for name, spec in REGISTRY.items()}
    # the inference sampler draws exactly the training step's arrays: x, the running
    # statistics, gamma and beta (``CheckedOp.sample`` adds the batch's weight)
    ops["batch_norm_train"] = CheckedOp(
        "batch_norm_train",
        REGISTRY["batch_norm_inference"],
        "standardize",
        EPS_FIELDS["batch_norm_train"],
        running_stats=True,
        keywords=_EPS_MODE,
        outputs=("y", "running_mean", "running_var"),
        state=("running_mean", "running_var"),
        terms=terms.op_terms,
    )
    ops.update(
        {name: _checked(name, spec, EXTRA_KINDS[name]) for name, spec in EXTRA_SPECS.items()}
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
