"""Registry entries of the gradients family (see :mod:`normref.registry`).

Adaptive gradient clipping gets units whose gradient norm is 0.4-0.625 or
1.6-2.5 times the clipping threshold, away from the kink, so that finite
differences see a smooth function; global-norm clipping a global norm half or
twice its ``max_norm``.

Two entries call their function in a fixed form, so that a sample names its
arrays: ``clip_by_global_norm`` clips two gradients, ``grad`` and
``bias_grad``, as one tree (:func:`clip_two_gradients`), and ``unitwise_norm``
is broadcast to its input's shape (:func:`unitwise_norm_broadcast`), as optax
returns it.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from normref import gradients
from normref._lib.namespace import namespace_of
from normref.registry.sampling import (
    replace_arg,
    sample_fan_in_axes,
    unit_index,
    weight_shape,
    zero_unit,
    zeros,
)
from normref.registry.spec import ErrorCase, Kind, OpSpec, Rng, Sample, ScalingLaw, SpecialInput
from normref.registry.weights import (
    KERNEL_BENCHMARKS,
    KERNEL_LARGE,
    out_axis_out_of_range,
    unit_fan_in,
    weight_units,
)
from normref.types import Precision

_AGC_CLIPPING = 0.5


def _sample_adaptive_grad_clip(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    axes = tuple(a for a in range(len(shape)) if a != out_axis % len(shape))
    param = rng.standard_normal(shape)
    direction = rng.standard_normal(shape)
    param_norm = ((param * param).sum(axis=axes, keepdims=True)) ** 0.5  # >> eps = 1e-3
    direction_norm = ((direction * direction).sum(axis=axes, keepdims=True)) ** 0.5
    ratio = rng.choice([0.5, 2.0], size=param_norm.shape)
    ratio = ratio * rng.uniform(0.8, 1.25, size=param_norm.shape)
    grad = direction / direction_norm * ratio * _AGC_CLIPPING * param_norm
    kwargs = {"clipping": _AGC_CLIPPING, "eps": 1e-3, "out_axis": out_axis}
    return Sample({"grad": grad, "param": param}, kwargs)


def clip_two_gradients(
    grad: Any,
    bias_grad: Any,
    *,
    max_norm: float,
    eps: float = 0.0,
    precision: Precision = "highest",
) -> tuple[Any, Any]:
    """:func:`normref.clip_by_global_norm` of the two gradients ``(grad, bias_grad)``."""
    namespace_of(grad=grad, bias_grad=bias_grad)
    clipped = gradients.clip_by_global_norm(
        (grad, bias_grad), max_norm, eps=eps, precision=precision
    )
    return clipped[0], clipped[1]


def _sample_clip_by_global_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = tuple(int(s) for s in rng.integers(2, 5, size=int(rng.integers(2, 4))))
    grad, bias_grad = rng.standard_normal(shape), rng.standard_normal(shape[-1:])
    norm = math.sqrt(float((grad * grad).sum() + (bias_grad * bias_grad).sum()))
    # clipped (the norm twice max_norm) or not (half of it), away from the boundary
    ratio = float(rng.choice([0.5, 2.0]) * rng.uniform(0.8, 1.25))
    return Sample({"grad": grad, "bias_grad": bias_grad}, {"max_norm": norm / ratio})


def unitwise_norm_broadcast(x: Any, *, out_axis: int = 0, precision: Precision = "highest") -> Any:
    """:func:`normref.unitwise_norm`, broadcast to ``x``'s shape."""
    xp = namespace_of(x=x)
    return xp.broadcast_to(
        gradients.unitwise_norm(x, out_axis=out_axis, precision=precision), x.shape
    )


def _sample_gradient_centralize(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    return Sample({"grad": rng.standard_normal(shape)}, {"out_axis": out_axis})


def _sample_unitwise_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    return Sample({"x": rng.standard_normal(shape)}, {"out_axis": out_axis})


# ---------------------------------------------------------------------------
# Special inputs.


def _global_norm(sample: Sample) -> float:
    grad, bias = sample.args["grad"], sample.args["bias_grad"]
    xp = array_api_compat.array_namespace(grad)
    return math.sqrt(float(xp.sum(grad * grad) + xp.sum(bias * bias)))


def _at_threshold(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Every unit's gradient norm exactly its threshold ``clipping * max(||W||, eps)``."""
    grad, param = sample.args["grad"], sample.args["param"]
    xp = array_api_compat.array_namespace(grad)
    axes = sample_fan_in_axes(sample, "grad")
    norm = xp.sqrt(xp.sum(grad * grad, axis=axes, keepdims=True))
    param_norm = xp.sqrt(xp.sum(param * param, axis=axes, keepdims=True))
    threshold = sample.kwargs["clipping"] * xp.maximum(
        param_norm, xp.asarray(sample.kwargs["eps"], dtype=param_norm.dtype)
    )
    return sample.replace(grad=grad * threshold / norm)


def _zero_param_unit(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    param = sample.args["param"]
    xp = array_api_compat.array_namespace(param)
    param = xp.asarray(param, copy=True)
    param[unit_index(sample, "param")] = 0.0
    return sample.replace(param=param)


def _small_norm(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Gradients of global norm 4e-6, clipped to 2e-6: torch's 1e-6 changes the factor by 20%."""
    scale = 4e-6 / _global_norm(sample)
    return sample.replace(
        grad=sample.args["grad"] * scale, bias_grad=sample.args["bias_grad"] * scale, max_norm=2e-6
    )


def _jax_layout(shape: tuple[int, ...], what: str) -> SpecialInput:
    """A gradient of ``shape`` with its units last (``out_axis=-1``): a flax kernel, whose
    leading axis is not its units."""

    def make(_spec: OpSpec, sample: Sample, rng: Rng) -> Sample:
        xp = array_api_compat.array_namespace(sample.args["grad"])
        grad = xp.asarray(rng.standard_normal(shape), dtype=sample.args["grad"].dtype)
        return sample.replace(grad=grad, out_axis=-1)

    return SpecialInput(f"{what}-kernel", f"a flax {what} kernel {shape}, units last", make)


def _below_max_norm(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    return sample.replace(max_norm=2.0 * _global_norm(sample))


REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    OpSpec(
        "adaptive_grad_clip",
        "gradients",
        "adaptive gradient clipping: unit-wise, relative to the parameter's norm (NFNets)",
        Kind.ADAPTIVE_CLIPPING,
        gradients.adaptive_grad_clip,
        gradients.adaptive_grad_clip_vjp,
        ("grad", "param"),
        ("grad", "param"),
        _sample_adaptive_grad_clip,
        weight_units("grad"),
        errors=(
            out_axis_out_of_range("grad"),
            ErrorCase(
                "param of another shape",
                replace_arg("param", lambda p: p[..., :-1] if p.shape[-1] > 1 else p[:-1]),
                ValueError,
                r"param must have shape .* \(the shape of grad\)",
            ),
            ErrorCase(
                "negative clipping",
                lambda s: s.replace(clipping=-0.01),
                ValueError,
                "clipping must be a finite number > 0",
            ),
        ),
        convention_fields=("unit_axes",),
        special_inputs=(
            SpecialInput(
                "clip-boundary",
                "every unit's gradient norm at its clipping threshold",
                _at_threshold,
            ),
            SpecialInput(
                "zero-weight-unit",
                "unit 0 of the parameter zero: its threshold is clipping * eps",
                _zero_param_unit,
            ),
            zero_unit("grad", "zero-gradient-unit", "unit 0 of the gradient zero"),
        ),
        benchmarks=(KERNEL_BENCHMARKS[0],),
        reduction_input=unit_fan_in,
        large_inputs=KERNEL_LARGE,
        scaling=ScalingLaw(
            inputs={"grad": 1, "param": 1},
            outputs={"y": 1},
            gradients={"grad": 0, "param": 0},
            eps={"": 1},
        ),
    ),
    OpSpec(
        "gradient_centralize",
        "gradients",
        "gradient centralization: each output unit's mean over its fan-in removed "
        "(Yong et al., 2020)",
        Kind.CENTERING,
        gradients.gradient_centralize,
        gradients.gradient_centralize_vjp,
        ("grad",),
        ("grad",),
        _sample_gradient_centralize,
        weight_units("grad"),
        properties=frozenset({"zero_mean", "shift_invariant", "idempotent"}),
        errors=(out_axis_out_of_range("grad"),),
        convention_fields=("centralize_axes",),
        special_inputs=(_jax_layout((5, 3), "dense"), _jax_layout((3, 3, 4, 5), "HWIO")),
        benchmarks=(KERNEL_BENCHMARKS[0],),
        scaling=ScalingLaw(inputs={"grad": 1}, outputs={"y": 1}, gradients={"grad": 0}),
    ),
    OpSpec(
        "clip_by_global_norm",
        "gradients",
        "global-norm clipping: every gradient scaled by one factor (Pascanu et al., 2013)",
        Kind.GLOBAL_CLIPPING,
        clip_two_gradients,
        None,
        ("grad", "bias_grad"),
        (),
        _sample_clip_by_global_norm,
        errors=(
            ErrorCase(
                "negative max_norm",
                lambda s: s.replace(max_norm=-1.0),
                ValueError,
                "max_norm must be a finite number > 0",
            ),
        ),
        outputs=("y", "clipped_bias_grad"),
        eps_field="global_norm_eps",
        eps_argument=False,
        special_inputs=(
            SpecialInput(
                "below-max-norm", "global norm half of max_norm: no clipping", _below_max_norm
            ),
            SpecialInput(
                "small-norm",
                "global norm 4e-6 clipped to 2e-6: an eps of 1e-6 changes the factor by 20%",
                _small_norm,
            ),
            zeros("zero-gradients", "every gradient zero", "grad", "bias_grad"),
        ),
        scaling=ScalingLaw(
            inputs={"grad": 1, "bias_grad": 1, "max_norm": 1},
            outputs={"y": 1, "clipped_bias_grad": 1},
            eps={"": 1},
        ),
    ),
    OpSpec(
        "unitwise_norm",
        "gradients",
        "the Euclidean norm of each output unit (NFNets), broadcast to the input's shape",
        Kind.UNIT_NORM,
        unitwise_norm_broadcast,
        None,
        ("x",),
        (),
        _sample_unitwise_norm,
        weight_units("x"),
        errors=(out_axis_out_of_range("x"),),
        convention_fields=("unit_axes",),
        special_inputs=(zero_unit("x", "zero-unit", "unit 0 all zeros"),),
        reduction_input=unit_fan_in,
        large_inputs=KERNEL_LARGE,
        scaling=ScalingLaw(inputs={"x": 1}, outputs={"y": 1}),
    ),
)
"""The operations of this module's family, in the order they are listed."""
