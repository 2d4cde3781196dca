"""Conventions: every choice a framework makes about normalization, as data.

Frameworks agree on the mathematics of batch norm and disagree on its details:
what "momentum" weighs, whether the running variance is unbiased, where ``eps``
enters, how the variance is computed, in which dtype float16 input is reduced.
normref names each of those choices as a field of :class:`Convention`; the
presets :data:`TORCH`, :data:`FLAX`, :data:`KERAS` and :data:`ONNX` record what
each framework does (sources in ``docs/conventions.md``). Every ``convention=``
argument of normref takes a preset or its lower-case name.

normref itself always computes the exact form (two-pass variance, float64).
A convention's *lossy* choices (``variance_algorithm``, ``low_precision_compute``,
``output_dtype``) are used only when an operation is asked to model that
framework, by passing the convention as ``precision=``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

MomentumMeaning = Literal["batch_weight", "old_weight"]
EpsMode = Literal["add", "max", "add_std"]
VarianceAlgorithm = Literal["two_pass", "fast", "fast_clamped"]

EPS_MODES: tuple[str, ...] = ("add", "max", "add_std")
VARIANCE_ALGORITHMS: tuple[str, ...] = ("two_pass", "fast", "fast_clamped")
MOMENTUM_MEANINGS: tuple[str, ...] = ("batch_weight", "old_weight")


@dataclass(frozen=True)
class Convention:
    """The choices one framework makes for normalization layers.

    Attributes
    ----------
    name
        Lower-case name of the preset (``"torch"``, ``"flax"``, ...).
    momentum
        The framework's default batch-norm momentum, in its own meaning; ``None``
        means a cumulative average (torch's ``momentum=None``).
    momentum_meaning
        ``"batch_weight"``: ``new = (1 - m) * old + m * batch`` (torch).
        ``"old_weight"``: ``new = m * old + (1 - m) * batch`` (flax, keras, onnx).
    running_var_correction
        0: the running variance is updated with the biased batch variance
        ``m2 / n``; 1: with the unbiased ``m2 / (n - 1)`` (torch).
    batch_norm_eps, layer_norm_eps, group_norm_eps, instance_norm_eps
        Default ``eps`` of each layer.
    rms_norm_eps
        Default ``eps`` of RMS norm; ``None`` means the machine epsilon of the
        compute dtype (torch's ``eps=None``).
    eps_mode
        Where ``eps`` enters the scale ``s`` that divides the centred input:
        ``"add"``: ``s = sqrt(var + eps)``; ``"max"``: ``s = sqrt(max(var, eps))``;
        ``"add_std"``: ``s = sqrt(var) + eps``.
    variance_algorithm
        ``"two_pass"``: ``mean((x - mean(x))**2)``; ``"fast"``:
        ``mean(x**2) - mean(x)**2``, which loses all accuracy when ``|mean| >> std``;
        ``"fast_clamped"``: the same clamped at 0 (flax).
    low_precision_compute
        Dtype of the statistics for float16/bfloat16 input: ``"float32"`` or
        ``"input"``.
    output_dtype
        ``"input"``: the output has the input's dtype (torch, keras, onnx);
        ``"promote"``: the promotion of the input's and the parameters' dtypes
        (flax, where float32 parameters make a bfloat16 input's output float32).
    channel_axis
        The framework's feature axis: 1 (NCHW) or -1 (NHWC).
    """

    name: str
    momentum: float | None
    momentum_meaning: MomentumMeaning
    running_var_correction: int
    batch_norm_eps: float
    layer_norm_eps: float
    group_norm_eps: float
    instance_norm_eps: float
    rms_norm_eps: float | None
    eps_mode: EpsMode
    variance_algorithm: VarianceAlgorithm
    low_precision_compute: Literal["float32", "input"]
    output_dtype: Literal["input", "promote"]
    channel_axis: int

    def __post_init__(self) -> None:
        _check_choice("momentum_meaning", self.momentum_meaning, MOMENTUM_MEANINGS)
        _check_choice("running_var_correction", self.running_var_correction, (0, 1))
        _check_choice("eps_mode", self.eps_mode, EPS_MODES)
        _check_choice("variance_algorithm", self.variance_algorithm, VARIANCE_ALGORITHMS)
        _check_choice("low_precision_compute", self.low_precision_compute, ("float32", "input"))
        _check_choice("output_dtype", self.output_dtype, ("input", "promote"))
        if self.momentum is not None and not 0.0 <= self.momentum <= 1.0:
            msg = f"momentum must be in [0, 1] or None, got {self.momentum!r}"
            raise ValueError(msg)

    def batch_weight(self, momentum: float) -> float:
        """The weight of the new batch in a running-average update with ``momentum``."""
        return momentum if self.momentum_meaning == "batch_weight" else 1.0 - momentum

    def differences(self, other: Convention) -> dict[str, tuple[object, object]]:
        """Fields (other than ``name``) where ``self`` and ``other`` differ."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if f.name != "name" and getattr(self, f.name) != getattr(other, f.name)
        }


def _check_choice(field: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        msg = f"{field} must be one of {allowed}, got {value!r}"
        raise ValueError(msg)


TORCH = Convention(
    name="torch",
    momentum=0.1,
    momentum_meaning="batch_weight",
    running_var_correction=1,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-5,
    group_norm_eps=1e-5,
    instance_norm_eps=1e-5,
    rms_norm_eps=None,
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=1,
)
"""PyTorch 2.13 (``torch.nn`` modules and ``torch.nn.functional``)."""

FLAX = Convention(
    name="flax",
    momentum=0.99,
    momentum_meaning="old_weight",
    running_var_correction=0,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-6,
    group_norm_eps=1e-6,
    instance_norm_eps=1e-6,
    rms_norm_eps=1e-6,
    eps_mode="add",
    variance_algorithm="fast_clamped",
    low_precision_compute="float32",
    output_dtype="promote",
    channel_axis=-1,
)
"""Flax linen 0.12 (``use_fast_variance=True``, ``force_float32_reductions=True``)."""

KERAS = Convention(
    name="keras",
    momentum=0.99,
    momentum_meaning="old_weight",
    running_var_correction=0,
    batch_norm_eps=1e-3,
    layer_norm_eps=1e-3,
    group_norm_eps=1e-3,
    instance_norm_eps=1e-3,
    rms_norm_eps=1e-6,
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=-1,
)
"""Keras 3 layers (read from source; Keras is not a dependency)."""

ONNX = Convention(
    name="onnx",
    momentum=0.9,
    momentum_meaning="old_weight",
    running_var_correction=0,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-5,
    group_norm_eps=1e-5,
    instance_norm_eps=1e-5,
    rms_norm_eps=1e-5,
    eps_mode="add",
    variance_algorithm="fast",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=1,
)
"""ONNX opset 21-23 (LayerNormalization/GroupNormalization function bodies, stash_type=1)."""

PRESETS: dict[str, Convention] = {c.name: c for c in (TORCH, FLAX, KERAS, ONNX)}


def get_convention(convention: Convention | str) -> Convention:
    """Return ``convention`` itself, or the preset with that lower-case name."""
    if isinstance(convention, Convention):
        return convention
    if isinstance(convention, str) and convention in PRESETS:
        return PRESETS[convention]
    msg = f"convention must be a Convention or one of {sorted(PRESETS)}, got {convention!r}"
    raise ValueError(msg)
