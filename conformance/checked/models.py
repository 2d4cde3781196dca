"""Models: what the reference is evaluated under, and the single-field variations of one.

A :class:`Model` is a :class:`normref.conventions.Convention` (a framework's
choices as data, for activation layers and for the operations on weights and
gradients) plus *implementation hypotheses*: choices that no framework's
convention records but that an implementation may make, each a bug or an
encoding detail the suite looks for: the variance correction *inside* the
normalization (an unbiased variance there is a bug, but a common one),
GroupNorm affine parameters held per group instead of per channel (ONNX
GroupNormalization-18), scalar parameters (``eps``, ``momentum``) held in
float32 (ONNX attributes), statistics computed in float32 whatever the input's
dtype (ONNX's ``stash_type=1`` default), an ``eps`` argument ignored for a
fixed value. The convention's ``momentum`` value and ``channel_axis`` are not
hypotheses: adapters pass the momentum and the layout explicitly.

:data:`FRAMEWORK_MODELS` holds every framework's model in one place: its
preset of :mod:`normref.conventions` with the hypotheses it is known to need.

:data:`NORMREF` is the suite's baseline: normref's own definition
(:data:`normref.conventions.NORMREF`). An implementation within budget of the
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
they enter the error bound (:mod:`conformance.bounds.budgets`).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from normref import conventions
from normref.conventions import (
    CENTRALIZE_AXES,
    EPS_MODES,
    L2_EPS_MODES,
    LRN_WINDOWS,
    MOMENTUM_MEANINGS,
    NONLINEARITY_GAMMAS,
    POWER_ITERATION_ORDERS,
    PRESETS,
    SCALED_WS_EPS_MODES,
    UNIT_AXES,
    VARIANCE_ALGORITHMS,
    ZERO_NORMS,
    Convention,
    get_convention,
)

GROUP_AFFINES: tuple[str, ...] = ("per_channel", "per_group")

HYPOTHESIS_FIELDS: tuple[str, ...] = (
    "correction",
    "group_affine",
    "scalar_dtype",
    "stash_dtype",
    "fixed_eps",
)
"""The implementation hypotheses a model adds to its convention (see :class:`Model`)."""

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
    r"""A convention plus the implementation hypotheses of this module.

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
    """

    convention: Convention
    correction: int = 0
    group_affine: str = "per_channel"
    scalar_dtype: str = "float64"
    stash_dtype: str = "input"
    fixed_eps: float | None = None

    @property
    def name(self) -> str:
        """The convention's name, with the fields that differ from its preset of that name and
        the hypotheses that differ from the baseline's."""
        preset = PRESETS.get(self.convention.name)
        changed = {} if preset is None else self.convention.differences(preset)
        extras = [f"{f}={value!r}" for f, (value, _) in changed.items()]
        extras += [f"{f}={getattr(self, f)!r}" for f in HYPOTHESIS_FIELDS if self._hypothesis(f)]
        return self.convention.name + (f" ({', '.join(extras)})" if extras else "")

    def _hypothesis(self, field: str) -> bool:
        return bool(getattr(self, field) != getattr(NORMREF, field))

    def get(self, field: str) -> Any:
        """The value of ``field``, of the convention or of the model."""
        if field in HYPOTHESIS_FIELDS:
            return getattr(self, field)
        return getattr(self.convention, field)

    def replace(self, **changes: Any) -> Model:
        """A copy with fields of the convention or of the model changed."""
        hypotheses = {k: v for k, v in changes.items() if k in HYPOTHESIS_FIELDS}
        convention = {k: v for k, v in changes.items() if k not in HYPOTHESIS_FIELDS}
        return dataclasses.replace(
            self,
            convention=dataclasses.replace(self.convention, **convention)
            if convention
            else self.convention,
            **hypotheses,
        )

    def differences(self, other: Model) -> dict[str, tuple[Any, Any]]:
        """Fields (convention and hypotheses, not name) where ``self`` and ``other`` differ."""
        found = dict(self.convention.differences(other.convention))
        for f in HYPOTHESIS_FIELDS:
            if getattr(self, f) != getattr(other, f):
                found[f] = (getattr(self, f), getattr(other, f))
        return found

    def to_json(self) -> dict[str, Any]:
        """The model's fields as JSON-ready values."""
        return {
            **dataclasses.asdict(self.convention),
            **{f: getattr(self, f) for f in HYPOTHESIS_FIELDS},
        }


NORMREF = Model(conventions.NORMREF)
"""The baseline: normref's own definition."""

FRAMEWORK_MODELS: dict[str, Model] = {
    "torch": Model(conventions.TORCH),
    "flax": Model(conventions.FLAX),
    # keras 3 on the jax and torch backends: float64 computed in float32 (its type promotion)
    "keras": Model(conventions.KERAS, stash_dtype="float32"),
    # onnx: attributes (epsilon, momentum) are float32
    "onnx": Model(conventions.ONNX, scalar_dtype="float32"),
    "timm": Model(conventions.TIMM),
    "optax": Model(conventions.OPTAX),
    "nfnets": Model(conventions.NFNETS),
    # tf-keras (Keras 2) on TensorFlow: Keras 3's choices, float64 kept
    "tf-keras": Model(conventions.KERAS),
    "haiku": Model(conventions.HAIKU),
    "equinox": Model(conventions.EQUINOX),
}
"""Every framework's model: its preset (optax and the NFNets code, jax libraries without
normalization layers of their own, take flax's choices) with the hypotheses it needs. Sources
are cited in ``docs/conventions.md``."""


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
    "lrn_window": LRN_WINDOWS,
    "centralize_axes": CENTRALIZE_AXES,
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


def _field_names() -> tuple[str, ...]:
    return (
        *(f.name for f in dataclasses.fields(Convention) if f.name != "name"),
        *HYPOTHESIS_FIELDS,
    )


def with_changes(model: Model, changes: Sequence[str]) -> Model:
    """``model`` with each ``"field=value"`` of ``changes`` applied (:meth:`Model.replace`): a
    convention field or a hypothesis of :class:`Model`, the value a Python literal (a number,
    a string, ``None``) or else the text as a string. :class:`ValueError` naming the known
    fields, or the values a field takes, for another."""
    found: dict[str, Any] = {}
    for change in changes:
        name, sep, text = change.partition("=")
        name = name.strip()
        if not sep or name not in _field_names():
            msg = (
                f"a change must be field=value with a field of the convention, got {change!r}; "
                f"the fields: {', '.join(_field_names())}"
            )
            raise ValueError(msg)
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        if isinstance(value, int) and not isinstance(value, bool) and name not in CHOICES:
            value = float(value) if "eps" in name else value
        allowed = CHOICES.get(name)
        if allowed is not None and value not in allowed:
            msg = f"{name} takes one of {list(allowed)}, got {value!r} (from {change!r})"
            raise ValueError(msg)
        found[name] = value
    return model.replace(**found) if found else model
