"""Conventions: every choice a framework makes about normalization, as data.

Frameworks agree on the mathematics of batch norm and disagree on its details:
what "momentum" weighs, whether the running variance is unbiased, where ``eps``
enters, how the variance is computed, in which dtype float16 input is reduced.
normref names each of those choices as a field of :class:`Convention`; the
presets :data:`TORCH`, :data:`FLAX`, :data:`KERAS`, :data:`ONNX`, :data:`TIMM`,
:data:`OPTAX`, :data:`NFNETS`, :data:`HAIKU` and :data:`EQUINOX` record what each framework does (sources in
``docs/conventions.md``), and :data:`NORMREF` records normref's own defaults.
Every ``convention=`` argument of normref takes a preset or its lower-case name.

The fields cover the activation layers (momentum, running variance, ``eps``
defaults and placement, variance algorithm, dtypes) and the operations on
weights and gradients (weight norm's and global-norm clipping's ``eps``, what
a zero norm gives, one power-iteration step of spectral norm, Scaled WS's
``eps``, the units of a unit-wise norm, the nonlinearity gains).

normref itself always computes the exact form (two-pass variance, float64).
A convention's *lossy* choices (``variance_algorithm``, ``low_precision_compute``,
``output_dtype``) are used only when an operation is asked to model that
framework, by passing the convention as ``precision=``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

MomentumMeaning = Literal["batch_weight", "old_weight"]
EpsMode = Literal["add", "max", "add_std"]
VarianceAlgorithm = Literal["two_pass", "fast", "fast_clamped"]
ZeroNorm = Literal["guarded", "ieee"]
PowerIterationOrder = Literal["v_first", "u_first"]
L2EpsMode = Literal["max", "add"]
ScaledWSEpsMode = Literal["max_fan_in", "max", "add"]
UnitAxes = Literal["out_axis", "by_rank"]
CentralizeAxes = Literal["out_axis", "leading"]
LRNWindow = Literal["torch", "onnx"]
NonlinearityGammas = Literal["exact", "nfnets_published"]

EPS_MODES: tuple[str, ...] = ("add", "max", "add_std")
VARIANCE_ALGORITHMS: tuple[str, ...] = ("two_pass", "fast", "fast_clamped")
MOMENTUM_MEANINGS: tuple[str, ...] = ("batch_weight", "old_weight")
ZERO_NORMS: tuple[str, ...] = ("guarded", "ieee")
POWER_ITERATION_ORDERS: tuple[str, ...] = ("v_first", "u_first")
"""The order of one power-iteration step (see :func:`normref.spectral_norm`)."""
L2_EPS_MODES: tuple[str, ...] = ("max", "add")
"""How ``eps`` guards a vector's normalization in :func:`normref.spectral_norm`."""
SCALED_WS_EPS_MODES: tuple[str, ...] = ("max_fan_in", "max", "add")
"""Where Scaled WS's ``eps`` enters (see :func:`normref.scaled_weight_standardize`)."""
UNIT_AXES: tuple[str, ...] = ("out_axis", "by_rank")
CENTRALIZE_AXES: tuple[str, ...] = ("out_axis", "leading")
"""The units gradient centralization centres (see :func:`normref.gradient_centralize`)."""
LRN_WINDOWS: tuple[str, ...] = ("torch", "onnx")
"""Where an even window of local response normalization has its extra channel."""
NONLINEARITY_GAMMAS: tuple[str, ...] = ("exact", "nfnets_published")

WEIGHT_AND_GRADIENT_FIELDS: tuple[str, ...] = (
    "weight_norm_eps",
    "global_norm_eps",
    "zero_norm",
    "power_iteration_order",
    "l2_eps_mode",
    "scaled_ws_eps_mode",
    "unit_axes",
    "nonlinearity_gammas",
    "centralize_axes",
)
"""The fields of the operations on weights and gradients (the others are the layers')."""


@dataclass(frozen=True)
class Convention:
    r"""The choices one framework makes for normalization layers.

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
        The units of a unit-wise norm (AGC): ``"out_axis"`` (one unit per
        index of ``out_axis``, over every other axis) or ``"by_rank"`` (the
        NFNets code and optax: with the unit axis last, a squeezed vector is
        one unit, rank 2 and 3 reduce axis 0, rank 4 axes 0-2, rank 5 axes 0-3).
    nonlinearity_gammas
        The gains of the gamma-scaled nonlinearities: ``"exact"``
        (:func:`normref.nonlinearity_gamma`) or ``"nfnets_published"``
        (:data:`normref.NFNETS_PUBLISHED_GAMMAS`, sampled estimates).
    lrn_window
        The window of local response normalization for an even ``size``:
        ``"torch"`` (one more channel before the centre) or ``"onnx"`` (one more
        after); see :func:`normref.local_response_norm`.
    centralize_axes
        The units gradient centralization centres: ``"out_axis"`` (one per
        index of ``out_axis``) or ``"leading"`` (``optax.centralize``: axis 0 for
        rank > 1, whatever the layout, which is the output units of torch's
        layouts but a kernel row of flax's ``HWIO`` and an input unit of its
        ``(in, out)``).
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
    weight_norm_eps: float = 0.0
    global_norm_eps: float = 0.0
    zero_norm: ZeroNorm = "guarded"
    power_iteration_order: PowerIterationOrder = "v_first"
    l2_eps_mode: L2EpsMode = "max"
    scaled_ws_eps_mode: ScaledWSEpsMode = "max_fan_in"
    unit_axes: UnitAxes = "out_axis"
    nonlinearity_gammas: NonlinearityGammas = "exact"
    lrn_window: LRNWindow = "torch"
    centralize_axes: CentralizeAxes = "out_axis"

    def __post_init__(self) -> None:
        _check_choice("momentum_meaning", self.momentum_meaning, MOMENTUM_MEANINGS)
        _check_choice("running_var_correction", self.running_var_correction, (0, 1))
        _check_choice("eps_mode", self.eps_mode, EPS_MODES)
        _check_choice("variance_algorithm", self.variance_algorithm, VARIANCE_ALGORITHMS)
        _check_choice("low_precision_compute", self.low_precision_compute, ("float32", "input"))
        _check_choice("output_dtype", self.output_dtype, ("input", "promote"))
        _check_choice("zero_norm", self.zero_norm, ZERO_NORMS)
        _check_choice("power_iteration_order", self.power_iteration_order, POWER_ITERATION_ORDERS)
        _check_choice("l2_eps_mode", self.l2_eps_mode, L2_EPS_MODES)
        _check_choice("scaled_ws_eps_mode", self.scaled_ws_eps_mode, SCALED_WS_EPS_MODES)
        _check_choice("unit_axes", self.unit_axes, UNIT_AXES)
        _check_choice("nonlinearity_gammas", self.nonlinearity_gammas, NONLINEARITY_GAMMAS)
        _check_choice("lrn_window", self.lrn_window, LRN_WINDOWS)
        _check_choice("centralize_axes", self.centralize_axes, CENTRALIZE_AXES)
        for name in ("weight_norm_eps", "global_norm_eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < float("inf")):
                msg = f"{name} must be a finite number >= 0, got {value!r}"
                raise ValueError(msg)
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


NORMREF = Convention(
    name="normref",
    momentum=0.1,
    momentum_meaning="batch_weight",
    running_var_correction=0,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-5,
    group_norm_eps=1e-5,
    instance_norm_eps=1e-5,
    rms_norm_eps=1e-6,
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=1,
)
"""normref's own choices: its functions' default ``eps``, ``eps`` inside the square root,
biased variances, two-pass variance, statistics of float16/bfloat16 input in float32 (under
``precision="highest"``, float64), the output in the input's dtype."""

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
    global_norm_eps=1e-6,
    zero_norm="ieee",
)
"""PyTorch 2.13 (``torch.nn`` modules, ``torch.nn.functional`` and ``torch.nn.utils``):
``clip_grad_norm_`` divides by ``total_norm + 1e-6``; ``_weight_norm`` and spectral norm
divide by a zero norm (NaN)."""

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
    weight_norm_eps=1e-12,
    l2_eps_mode="add",
)
"""Flax linen 0.12 (``use_fast_variance=True``, ``force_float32_reductions=True``);
``WeightNorm`` and ``SpectralNorm`` normalize by ``x * rsqrt(sum(x * x) + 1e-12)``."""

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
    lrn_window="onnx",
)
"""ONNX opset 21-23 (LayerNormalization/GroupNormalization function bodies, stash_type=1);
``LRN``'s window of an even size has its extra channel after the centre."""

TIMM = replace(TORCH, name="timm", layer_norm_eps=1e-6, rms_norm_eps=1e-6, scaled_ws_eps_mode="add")
"""timm: torch's layers, with ``LayerNorm`` and ``RmsNorm`` ``eps=1e-6`` and
``ScaledStdConv2d``'s ``eps`` inside the square root (``F.batch_norm``)."""

HAIKU = Convention(
    name="haiku",
    momentum=0.999,
    momentum_meaning="old_weight",
    running_var_correction=0,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-5,
    group_norm_eps=1e-5,
    instance_norm_eps=1e-5,
    rms_norm_eps=1e-5,
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="input",
    output_dtype="input",
    channel_axis=-1,
    zero_norm="ieee",
    l2_eps_mode="add",
)
"""dm-haiku 0.0.17: ``eps=1e-5`` everywhere; ``BatchNorm``'s ``decay_rate`` weighs the old
value (it has no default: 0.999 is its ResNet blocks'); statistics in the input's dtype;
``SpectralNorm`` normalizes by ``x * rsqrt(sum(x * x) + eps)`` and divides by ``sigma``
unguarded. ``BatchNorm``'s variance is ``E[x^2] - E[x]^2``, unclamped (``variance_algorithm=
"fast"`` for that layer); ``LayerNorm``'s and ``GroupNorm``'s is two-pass."""

EQUINOX = Convention(
    name="equinox",
    momentum=0.99,
    momentum_meaning="old_weight",
    running_var_correction=0,
    batch_norm_eps=1e-5,
    layer_norm_eps=1e-5,
    group_norm_eps=1e-5,
    instance_norm_eps=1e-5,
    rms_norm_eps=1e-5,
    eps_mode="add",
    variance_algorithm="two_pass",
    low_precision_compute="float32",
    output_dtype="input",
    channel_axis=1,
    zero_norm="ieee",
    power_iteration_order="u_first",
)
"""Equinox 0.13: ``eps=1e-5`` everywhere, ``momentum=0.99`` weighing the old value, two-pass
variances clamped at 0, statistics of float16 and bfloat16 in float32 (``BatchNorm``'s in
the input's dtype), channels first; ``WeightNorm`` has no ``eps``; ``SpectralNorm``
iterates ``u`` first, normalizing by ``max(norm, eps)``, and divides by ``sigma``
unguarded."""

_WEIGHT_AND_GRADIENT_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(Convention) if f.name in WEIGHT_AND_GRADIENT_FIELDS
}
"""normref's defaults for the operations on weights and gradients (every field has one)."""

_FLAX_LAYERS = replace(FLAX, **_WEIGHT_AND_GRADIENT_DEFAULTS)
"""Flax's choices for layers, with normref's for the operations on weights and gradients."""

OPTAX = replace(_FLAX_LAYERS, name="optax", unit_axes="by_rank", centralize_axes="leading")
"""optax: jax layouts (flax's layer choices; no weight or spectral norm of its own);
``unitwise_norm`` infers the units from the rank, ``centralize`` centres along every axis but
the leading one."""

NFNETS = replace(
    _FLAX_LAYERS, name="nfnets", unit_axes="by_rank", nonlinearity_gammas="nfnets_published"
)
"""The NFNets reference code: ``optim.py``'s ``unitwise_norm`` as optax's, ``base.py``'s
sampled nonlinearity gains."""

PRESETS: dict[str, Convention] = {
    c.name: c for c in (NORMREF, TORCH, FLAX, KERAS, ONNX, TIMM, OPTAX, NFNETS, HAIKU, EQUINOX)
}
"""Every preset by its name."""


def get_convention(convention: Convention | str) -> Convention:
    """Return ``convention`` itself, or the preset with that lower-case name.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> c = normref.conventions.get_convention('torch')
    >>> print(c.name, c.running_var_correction)
    torch 1
    """
    if isinstance(convention, Convention):
        return convention
    if isinstance(convention, str) and convention in PRESETS:
        return PRESETS[convention]
    msg = f"convention must be a Convention or one of {sorted(PRESETS)}, got {convention!r}"
    raise ValueError(msg)
