"""Models: what the reference is evaluated under, and the single-field variations of one.

A :class:`Model` is a :class:`normref.conventions.Convention` (a framework's
choices as data) plus choices that no preset of normref records but that an
implementation may make: the variance correction *inside* the normalization
(an unbiased variance there is a bug, but a common one), GroupNorm affine
parameters held per group instead of per channel (ONNX GroupNormalization-18),
scalar parameters (``eps``, ``momentum``) held in float32 (ONNX attributes),
statistics computed in float32 whatever the input's dtype (ONNX's
``stash_type=1`` default), an ``eps`` argument ignored for a fixed value; and
the choices of the operations on weights and gradients: ``eps`` of weight norm
and of global-norm clipping, what a zero norm gives, the order and ``eps`` of
one power-iteration step, where Scaled WS's ``eps`` enters, how the units of a
unit-wise norm are chosen, and which nonlinearity gains are used.
The convention's ``momentum`` value and ``channel_axis`` are not hypotheses:
adapters pass the momentum and the layout explicitly.

:data:`FRAMEWORK_MODELS` holds every framework's model in one place: its
preset with the weights-and-gradients fields it sets.

:data:`NORMREF` is the suite's baseline: normref's own definition (its
functions' default ``eps``, ``eps`` inside the square root, biased variances,
two-pass variance, statistics of float16/bfloat16 input in float32, the
output in the input's dtype). An implementation within budget of the
reference under :data:`NORMREF` *passes*; one that is not, but is within
budget under its declared convention, *differs by convention*, and the
fields of that convention that explain it are named.

A model's fields are of two kinds. *Semantic* fields change the exact
result (``eps`` defaults and placement, running-variance correction,
normalization correction, momentum meaning, affine layout, scalar dtype,
fixed ``eps``, output dtype, and every weights-and-gradients field); the
reference evaluates them exactly, in float64. *Arithmetic* fields (``variance_algorithm``,
``low_precision_compute``, ``stash_dtype``) change only how far a
correct implementation of that arithmetic may land from the exact result:
they enter the error bound (:mod:`conformance.tolerances`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import normref
from normref.conventions import (
    EPS_MODES,
    FLAX,
    KERAS,
    MOMENTUM_MEANINGS,
    ONNX,
    PRESETS,
    TORCH,
    VARIANCE_ALGORITHMS,
    Convention,
    get_convention,
)
from normref.weights import L2_EPS_MODES, POWER_ITERATION_ORDERS, SCALED_WS_EPS_MODES

GROUP_AFFINES: tuple[str, ...] = ("per_channel", "per_group")
ZERO_NORMS: tuple[str, ...] = ("guarded", "ieee")
UNIT_AXES: tuple[str, ...] = ("out_axis", "by_rank")
NONLINEARITY_GAMMAS: tuple[str, ...] = ("exact", "nfnets_published")


def _default(function: Any, name: str = "eps") -> Any:
    return inspect.signature(function).parameters[name].default


NORMREF_CONVENTION = Convention(
    name="normref",
    momentum=0.1,
    momentum_meaning="batch_weight",
    running_var_correction=0,
    batch_norm_eps=_default(normref.batch_norm),
    layer_norm_eps=_default(normref.layer_norm),
    group_norm_eps=_default(normref.group_norm),
    instance_norm_eps=_default(normref.instance_norm),
    rms_norm_eps=_default(normref.rms_norm),
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=1,
)
"""normref's own choices, as a convention (the ``eps`` defaults are its functions' defaults)."""

EXTRA_FIELDS: tuple[str, ...] = (
    "correction",
    "group_affine",
    "scalar_dtype",
    "stash_dtype",
    "fixed_eps",
    "weight_norm_eps",
    "global_norm_eps",
    "zero_norm",
    "power_iteration_order",
    "l2_eps_mode",
    "scaled_ws_eps_mode",
    "unit_axes",
    "nonlinearity_gammas",
)
ARITHMETIC_FIELDS: tuple[str, ...] = ("variance_algorithm", "low_precision_compute", "stash_dtype")
"""Fields that change how a model computes, not what: the exact values stay, the budget moves."""


def arithmetic_only(fields: Iterable[str]) -> bool:
    """Whether ``fields`` are some fields, all arithmetic (:data:`ARITHMETIC_FIELDS`).

    A model that differs from another only in such fields has the same exact values and
    another budget: a row within its wider budget is consistent with that arithmetic, which is
    weaker evidence than a model that changes what is computed and lands within budget.
    """
    names = list(fields)
    return bool(names) and all(f in ARITHMETIC_FIELDS for f in names)


@dataclass(frozen=True)
class Model:
    r"""A convention plus the extra hypotheses of this module (see the module docstring).

    Attributes
    ----------
    convention
        The framework's choices (:mod:`normref.conventions`).
    correction
        Variance correction inside the normalization: 0 (biased, every
        framework) or 1 (unbiased).
    group_affine
        ``"per_channel"`` (one gamma and beta per channel: torch, flax, ONNX
        opset 21) or ``"per_group"`` (one per group: ONNX opset 18; the
        adapter passes each group's first channel's values).
    scalar_dtype
        ``"float64"``: ``eps`` and ``momentum`` are used as given;
        ``"float32"``: they are rounded to float32 first (ONNX attributes).
    stash_dtype
        ``"input"``: statistics in the input's dtype (float32 for float16 and
        bfloat16 per ``low_precision_compute``); ``"float32"``: in float32 for
        every input, float64 included (ONNX ``stash_type=1``).
    fixed_eps
        ``None``: the implementation uses the ``eps`` it is given; a number:
        it ignores it and uses this one (a bug :func:`~conformance.diagnosis.diagnose`
        looks for, with every preset's default).
    weight_norm_eps
        Weight norm's ``eps`` inside the square root, :math:`\sqrt{\|v\|^2 +
        \epsilon}`: 0 (normref, torch, which has none) or 1e-12 (flax ``WeightNorm``).
    global_norm_eps
        Added to the global norm before dividing, in global-norm clipping: 0
        (normref, optax) or 1e-6 (torch ``clip_grad_norm_``).
    zero_norm
        What a zero norm gives: ``"guarded"`` (normref: a zero unit of weight
        norm gives 0, a zero :math:`\sigma` leaves the weight unscaled) or
        ``"ieee"`` (the division by 0 is carried out: NaN, as torch).
    power_iteration_order
        The order of one power-iteration step of spectral norm: ``"v_first"``
        (legacy torch, flax) or ``"u_first"`` (torch's parametrization).
    l2_eps_mode
        How ``eps`` guards a vector's normalization in the power iteration:
        ``"max"`` (:math:`x/\max(\|x\|, \epsilon)`, torch) or ``"add"``
        (:math:`x/\sqrt{\|x\|^2 + \epsilon}`, flax).
    scaled_ws_eps_mode
        Where Scaled WS's ``eps`` enters: ``"max_fan_in"`` (NFNets),
        ``"max"`` or ``"add"`` (timm).
    unit_axes
        The units of a unit-wise norm (AGC): ``"out_axis"`` (normref: one unit
        per index of ``out_axis``, over every other axis) or ``"by_rank"``
        (the NFNets code and optax: with the unit axis last, a squeezed
        vector is one unit, rank 2 and 3 reduce axis 0, rank 4 axes 0-2,
        rank 5 axes 0-3).
    nonlinearity_gammas
        The gains of the gamma-scaled nonlinearities: ``"exact"``
        (:func:`normref.nonlinearity_gamma`) or ``"nfnets_published"``
        (:data:`normref.NFNETS_PUBLISHED_GAMMAS`, sampled estimates).
    """

    convention: Convention
    correction: int = 0
    group_affine: str = "per_channel"
    scalar_dtype: str = "float64"
    stash_dtype: str = "input"
    fixed_eps: float | None = None
    weight_norm_eps: float = _default(normref.weight_norm)
    global_norm_eps: float = _default(normref.clip_by_global_norm)
    zero_norm: str = "guarded"
    power_iteration_order: str = _default(normref.spectral_norm, "order")
    l2_eps_mode: str = _default(normref.spectral_norm, "eps_mode")
    scaled_ws_eps_mode: str = _default(normref.scaled_weight_standardize, "eps_mode")
    unit_axes: str = "out_axis"
    nonlinearity_gammas: str = "exact"

    @property
    def name(self) -> str:
        """The convention's name, with the extra hypotheses that differ from the baseline."""
        extras = [f"{f}={getattr(self, f)!r}" for f in EXTRA_FIELDS if self._differs_from_base(f)]
        return self.convention.name + (f" ({', '.join(extras)})" if extras else "")

    def _differs_from_base(self, field: str) -> bool:
        return getattr(self, field) != getattr(NORMREF, field)

    def get(self, field: str) -> Any:
        """The value of ``field``, of the convention or of the model."""
        return getattr(self, field) if field in EXTRA_FIELDS else getattr(self.convention, field)

    def replace(self, **changes: Any) -> Model:
        """A copy with fields of the convention or of the model changed."""
        extra = {k: v for k, v in changes.items() if k in EXTRA_FIELDS}
        convention = {k: v for k, v in changes.items() if k not in EXTRA_FIELDS}
        return dataclasses.replace(
            self,
            convention=dataclasses.replace(self.convention, **convention)
            if convention
            else self.convention,
            **extra,
        )

    def differences(self, other: Model) -> dict[str, tuple[Any, Any]]:
        """Fields (convention and extra, not name) where ``self`` and ``other`` differ."""
        found = dict(self.convention.differences(other.convention))
        for f in EXTRA_FIELDS:
            if getattr(self, f) != getattr(other, f):
                found[f] = (getattr(self, f), getattr(other, f))
        return found

    def to_json(self) -> dict[str, Any]:
        """The model's fields as JSON-ready values."""
        return {
            **dataclasses.asdict(self.convention),
            **{f: getattr(self, f) for f in EXTRA_FIELDS},
        }


NORMREF = Model(NORMREF_CONVENTION)
"""The baseline: normref's own definition."""

FRAMEWORK_MODELS: dict[str, Model] = {
    # torch: clip_grad_norm_ divides by (total_norm + 1e-6); _weight_norm and spectral norm
    # divide by a zero norm (NaN)
    "torch": Model(TORCH, global_norm_eps=1e-6, zero_norm="ieee"),
    # flax: WeightNorm and SpectralNorm normalize by x * rsqrt(sum(x * x) + 1e-12)
    "flax": Model(FLAX, weight_norm_eps=1e-12, l2_eps_mode="add"),
    "keras": Model(KERAS),
    # onnx: attributes (epsilon, momentum) are float32
    "onnx": Model(ONNX, scalar_dtype="float32"),
    # timm: torch's layers, with LayerNorm and RmsNorm eps=1e-6 and ScaledStdConv2d's eps inside
    # the root (F.batch_norm)
    "timm": Model(
        dataclasses.replace(TORCH, name="timm", layer_norm_eps=1e-6, rms_norm_eps=1e-6),
        scaled_ws_eps_mode="add",
    ),
    # optax: jax layouts; unitwise_norm infers the units from the rank
    "optax": Model(dataclasses.replace(FLAX, name="optax"), unit_axes="by_rank"),
    # the NFNets reference code: optim.py's unitwise_norm as optax's, base.py's sampled gains
    "nfnets": Model(
        dataclasses.replace(FLAX, name="nfnets"),
        unit_axes="by_rank",
        nonlinearity_gammas="nfnets_published",
    ),
}
"""Every framework's model: its preset (optax and the NFNets code, jax libraries without
normalization layers of their own, take flax's) with the weights-and-gradients fields it sets.
Sources are cited in ``docs/conventions.md``."""


def model_of(convention: Model | Convention | str | None) -> Model:
    """A model from a convention, a framework's name, ``"normref"`` or ``None`` (the baseline)."""
    if convention is None or convention == "normref":
        return NORMREF
    if isinstance(convention, Model):
        return convention
    if isinstance(convention, str) and convention in FRAMEWORK_MODELS:
        return FRAMEWORK_MODELS[convention]
    if isinstance(convention, str) and convention not in PRESETS:
        names = sorted({"normref", *FRAMEWORK_MODELS, *PRESETS})
        msg = f"convention must be a Convention, a Model or one of {names}, got {convention!r}"
        raise ValueError(msg)
    return Model(get_convention(convention))


def presets() -> dict[str, Model]:
    """The baseline and every framework's model, by name."""
    return {"normref": NORMREF, **FRAMEWORK_MODELS}


def preset_name(model: Model) -> str | None:
    """The name :func:`model_of` takes for ``model`` when it is a preset (``None`` otherwise)."""
    return next((name for name, preset in presets().items() if preset == model), None)


CHOICES: dict[str, tuple[Any, ...]] = {
    "momentum_meaning": MOMENTUM_MEANINGS,
    "running_var_correction": (0, 1),
    "eps_mode": EPS_MODES,
    "variance_algorithm": VARIANCE_ALGORITHMS,
    "low_precision_compute": ("float32", "input"),
    "output_dtype": ("input", "promote"),
    "correction": (0, 1),
    "group_affine": GROUP_AFFINES,
    "scalar_dtype": ("float64", "float32"),
    "stash_dtype": ("input", "float32"),
    "weight_norm_eps": (0.0, 1e-12),
    "global_norm_eps": (0.0, 1e-6),
    "zero_norm": ZERO_NORMS,
    "power_iteration_order": POWER_ITERATION_ORDERS,
    "l2_eps_mode": L2_EPS_MODES,
    "scaled_ws_eps_mode": SCALED_WS_EPS_MODES,
    "unit_axes": UNIT_AXES,
    "nonlinearity_gammas": NONLINEARITY_GAMMAS,
}
"""The values a single-field variation tries, for the fields that are not an ``eps``."""

EPS_FIELDS: tuple[str, ...] = (
    "batch_norm_eps",
    "layer_norm_eps",
    "group_norm_eps",
    "instance_norm_eps",
    "rms_norm_eps",
)
"""The convention fields holding a layer's default ``eps``."""


def field_values(field: str) -> tuple[Any, ...]:
    """The values a single-field variation of ``field`` tries: its choices, or for a layer's
    default ``eps`` every preset's default, or for ``fixed_eps`` every preset's number."""
    if field in CHOICES:
        return CHOICES[field]
    names = EPS_FIELDS if field == "fixed_eps" else (field,)
    values = [getattr(m.convention, n) for m in presets().values() for n in names]
    if field == "fixed_eps":
        values = [v for v in values if v is not None]
    return tuple(dict.fromkeys(values))


def variations(base: Model, fields: tuple[str, ...]) -> Iterator[tuple[str, Any, Model]]:
    """Every model that differs from ``base`` in exactly one of ``fields``: (field, value, model)."""
    for field in fields:
        for value in field_values(field):
            if value != base.get(field):
                yield field, value, base.replace(**{field: value})
