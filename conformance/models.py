"""Models: what the reference is evaluated under, and the single-field variations of one.

A :class:`Model` is a :class:`normref.conventions.Convention` (a framework's
choices as data) plus choices that no preset of normref records but that an
implementation may make: the variance correction *inside* the normalization
(an unbiased variance there is a bug, but a common one), GroupNorm affine
parameters held per group instead of per channel (ONNX GroupNormalization-18),
scalar parameters (``eps``, ``momentum``) held in float32 (ONNX attributes),
statistics computed in float32 whatever the input's dtype (ONNX's
``stash_type=1`` default), and an ``eps`` argument ignored for a fixed value.
The convention's ``momentum`` value and ``channel_axis`` are not hypotheses:
adapters pass the momentum and the layout explicitly.

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
fixed ``eps``, output dtype); the reference evaluates them exactly, in
float64. *Arithmetic* fields (``variance_algorithm``,
``low_precision_compute``, ``stash_dtype``) change only how far a
correct implementation of that arithmetic may land from the exact result:
they enter the error bound (:mod:`conformance.tolerances`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import normref
from normref.conventions import (
    EPS_MODES,
    MOMENTUM_MEANINGS,
    PRESETS,
    VARIANCE_ALGORITHMS,
    Convention,
    get_convention,
)

GROUP_AFFINES: tuple[str, ...] = ("per_channel", "per_group")


def _default_eps(function: Any) -> float:
    return inspect.signature(function).parameters["eps"].default


NORMREF_CONVENTION = Convention(
    name="normref",
    momentum=0.1,
    momentum_meaning="batch_weight",
    running_var_correction=0,
    batch_norm_eps=_default_eps(normref.batch_norm),
    layer_norm_eps=_default_eps(normref.layer_norm),
    group_norm_eps=_default_eps(normref.group_norm),
    instance_norm_eps=_default_eps(normref.instance_norm),
    rms_norm_eps=_default_eps(normref.rms_norm),
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
)
ARITHMETIC_FIELDS: tuple[str, ...] = ("variance_algorithm", "low_precision_compute", "stash_dtype")


@dataclass(frozen=True)
class Model:
    """A convention plus the two extra hypotheses of this module (see the module docstring).

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


def model_of(convention: Model | Convention | str | None) -> Model:
    """A model from a convention, a preset's name, ``"normref"`` or ``None`` (the baseline)."""
    if convention is None or convention == "normref":
        return NORMREF
    if isinstance(convention, Model):
        return convention
    return Model(get_convention(convention))


def presets() -> dict[str, Model]:
    """The baseline and every preset of :mod:`normref.conventions`, by name."""
    return {"normref": NORMREF, **{name: Model(c) for name, c in PRESETS.items()}}


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
