"""Registry entries of the weights family (see :mod:`normref.registry`).

Samplers draw small weights in both layouts (``out_axis`` 0 or -1, rank 2 to 4)
with at least 2 values per output unit. Spectral norm gets a weight with a
dominant singular value and ``u``, ``v`` near its singular vectors, so that
:math:`\\sigma = u^\\top W v` is far from 0 and finite differences see a
smooth function.

``spectral_norm`` is registered by its normalized weight alone
(:func:`normref.weights.spectral_norm_weight`), with ``n_power_iterations=0``:
``u`` and ``v`` are then constants of the forward, so its exact derivative is
the stop-gradient VJP of :func:`normref.weights.spectral_norm_vjp`.
``spectral_norm_train`` is one training step, one power iteration from the
given ``u`` and ``v`` (:func:`normref.spectral_norm`): its outputs are the
normalized weight and the new state ``u``, ``v`` and ``sigma``; its gradient
treats ``u`` and ``v`` as constants, as torch and flax do.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from normref import weights, weights_orthogonal
from normref.partition import Partition, fan_in, unit_partition, whitening_partition
from normref.registry.sampling import (
    EPS_MODE,
    divisors,
    normalizing_law,
    replace_arg,
    unit_index,
    unit_param,
    weight_shape,
    zero_unit,
    zeros,
)
from normref.registry.spec import (
    BenchmarkInput,
    Capabilities,
    ErrorCase,
    Kind,
    OpSpec,
    Rng,
    Sample,
    ScalingLaw,
    SizedInput,
    SpecialInput,
)

CONV_KERNEL = (256, 256, 3, 3)
"""A 3x3 convolution kernel (out, in, H, W) with 256 channels in and out (ResNet stage 3)."""

KERNEL_BENCHMARKS = (
    BenchmarkInput(
        CONV_KERNEL, "3x3 conv kernel, OIHW", drawn={"out_axis": 0}, quick=True, compiled=True
    ),
)
"""The benchmarks of the operations on a weight's units."""

KERNEL_LARGE = (
    SizedInput(
        CONV_KERNEL, "a 3x3 convolution kernel, 256 in and out: fan-in 2,304", drawn={"out_axis": 0}
    ),
)
"""The realistic input of the operations on a weight's units."""


def unit_fan_in(n: int) -> SizedInput:
    """Two output units of ``n`` values each."""
    return SizedInput((2, n), f"2 units of fan-in {n}", drawn={"out_axis": 0})


def _sample_weight_standardize(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    return Sample({"w": rng.standard_normal(shape)}, {"out_axis": out_axis, "eps": 1e-5})


def _sample_scaled_weight_standardize(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    args = {"w": rng.standard_normal(shape), "gain": unit_param(rng, shape, out_axis)}
    return Sample(args, {"gamma": 1.7, "out_axis": out_axis, "eps": 1e-4})


def _sample_weight_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    args = {"v": rng.standard_normal(shape), "g": unit_param(rng, shape, out_axis)}
    return Sample(args, {"out_axis": out_axis})


def _orthogonal_layout(rng: Rng, shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], int, int]:
    """A weight shape, its out_axis and a group size that divides its units with a nonsingular
    Gram matrix (``group_size <= fan_in - 1``); drawn shapes have a fan-in of at least twice
    their units plus 2, so that the groups are well conditioned."""
    if shape is None:
        units = int(rng.integers(2, 5))
        fan_in_sizes = [2 * units + 2 + int(rng.integers(0, 3))]
        fan_in_sizes += [int(s) for s in rng.integers(1, 3, size=int(rng.integers(0, 2)))]
        out_axis = int(rng.choice([0, -1]))
        shape = (units, *fan_in_sizes) if out_axis == 0 else (*fan_in_sizes, units)
        candidates = [out_axis]
    else:
        candidates = [int(rng.choice([0, -1]))]
        candidates.append(-1 - candidates[0])
    for out_axis in candidates:
        units, n = shape[out_axis], fan_in(tuple(shape), out_axis % len(shape))
        sizes = [d for d in divisors(units) if d <= n - 1]
        if sizes:
            return tuple(shape), out_axis, int(rng.choice(sizes))
    msg = f"no group of units of a weight of shape {shape} has a nonsingular Gram matrix"
    raise ValueError(msg)


def _sample_orthogonal_weight_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis, group_size = _orthogonal_layout(rng, shape)
    kwargs = {"group_size": group_size, "eps": 1e-5, "out_axis": out_axis}
    return Sample({"v": rng.standard_normal(shape)}, kwargs)


def _sample_oni_weight_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_orthogonal_weight_norm(rng, shape)
    return Sample(sample.args, {"iterations": 5, **sample.kwargs})


def _orthogonal_partition(sample: Sample) -> Partition:
    v = sample.args["v"]
    axis = sample.kwargs["out_axis"] % v.ndim
    size = sample.kwargs["group_size"] or v.shape[axis]
    return whitening_partition(tuple(v.shape), size, axis)


def _unit_vector(rng: Rng, size: int) -> Any:
    x = rng.standard_normal(size)
    return x / math.sqrt(float((x * x).sum()))


def _sample_spectral_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = weight_shape(rng, shape)
    units, fan_in = shape[out_axis], math.prod(shape) // shape[out_axis]
    u, v = _unit_vector(rng, units), _unit_vector(rng, fan_in)
    matrix = 3.0 * u.reshape(-1, 1) * v.reshape(1, -1) + 0.3 * rng.standard_normal((units, fan_in))
    # with out_axis=-1 the fan-in axes lead: the (fan-in, units) matrix in row-major order
    w = matrix.reshape(shape) if out_axis == 0 else matrix.T.reshape(shape)
    args = {
        "w": w,
        "u": u + 0.1 * _unit_vector(rng, units),
        "v": v + 0.1 * _unit_vector(rng, fan_in),
    }
    return Sample(args, {"n_power_iterations": 0, "out_axis": out_axis, "eps": 1e-12})


def _sample_spectral_norm_train(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _sample_spectral_norm(rng, shape).replace(n_power_iterations=1)


def weight_units(primary: str) -> Any:
    """The partition of a sample's weight ``primary`` into its output units."""

    def partition(sample: Sample) -> Partition:
        return unit_partition(tuple(sample.args[primary].shape), sample.kwargs["out_axis"])

    return partition


# ---------------------------------------------------------------------------
# Special inputs.


def _variance_at_eps(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Unit 0 scaled so that ``N var = eps``: the kink of ``max(N var, eps)``."""
    w = sample.args["w"]
    xp = array_api_compat.array_namespace(w)
    w = xp.asarray(w, copy=True)
    index = unit_index(sample, "w")
    unit = w[index]
    size = math.prod(unit.shape)
    w[index] = unit * math.sqrt(sample.kwargs["eps"] / (size * float(xp.var(unit))))
    return sample.replace(w=w)


_ZERO_WEIGHT = zeros("zero-weight", "a zero weight: sigma is 0", "w")


def _constant_unit(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Unit 0 of ``v`` all 0.7: its centred norm is 0 (no direction, with ``eps = 0``)."""
    v = sample.args["v"]
    xp = array_api_compat.array_namespace(v)
    v = xp.asarray(v, copy=True)
    v[unit_index(sample, "v")] = 0.7
    return sample.replace(v=v)


def _all_units(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Every unit in one group (``group_size=None``), where that group's Gram matrix is
    nonsingular; the sample as it is otherwise."""
    v = sample.args["v"]
    axis = sample.kwargs["out_axis"] % v.ndim
    if v.shape[axis] > fan_in(tuple(v.shape), axis) - 1:
        return sample
    return sample.replace(group_size=None)


# ---------------------------------------------------------------------------
# Invalid inputs.


def wrong_unit_param(name: str) -> ErrorCase:
    """``name`` (one value per output unit) cut by one value."""
    return ErrorCase(
        f"{name} not of one value per output unit",
        replace_arg(name, lambda p: p[:-1]),
        ValueError,
        f"{name} must have shape",
    )


def out_axis_out_of_range(primary: str) -> ErrorCase:
    """An ``out_axis`` beyond the rank of ``primary``."""
    return ErrorCase(
        "out_axis out of range",
        lambda s: s.replace(out_axis=7),
        ValueError,
        rf"out_axis=7 is out of range for {primary} of shape",
    )


def _one_fan_in(primary: str) -> ErrorCase:
    def keep_one(s: Sample) -> Sample:
        w = s.args[primary]
        axis = s.kwargs["out_axis"] % w.ndim
        index = tuple(slice(None) if a == axis else slice(0, 1) for a in range(w.ndim))
        return s.replace(**{primary: w[index]})

    return ErrorCase(
        "a fan-in of one value, unbiased variance",
        lambda s: keep_one(s).replace(correction=1),
        ValueError,
        "at least 2 samples",
    )


def _flattened(primary: str, rank: int) -> ErrorCase:
    return ErrorCase(
        f"{primary} of rank {rank - 1}",
        replace_arg(
            primary, lambda w: w.reshape(-1) if rank == 2 else w.reshape(-1)[:1].reshape(())
        ),
        ValueError,
        rf"{primary} must have rank >= {rank}",
    )


_ORTHOGONAL_ERRORS = (
    out_axis_out_of_range("v"),
    ErrorCase(
        "group_size not dividing the units",
        lambda s: s.replace(group_size=s.args["v"].shape[s.kwargs["out_axis"]] + 1),
        ValueError,
        "must divide the number of output units",
    ),
    ErrorCase(
        "v of rank 1",
        replace_arg("v", lambda v: v.reshape(-1)),
        ValueError,
        "v must have rank >= 2",
    ),
)
_L2_EPS = {"": 1, "max": 1, "add": 2}
"""The power of ``eps`` of spectral norm's vector normalization: compared with a norm
(``"max"``, the default) or added to its square (``"add"``)."""

_WS_ERRORS = (
    out_axis_out_of_range("w"),
    _flattened("w", 2),
)
_SPECTRAL_ERRORS = (
    out_axis_out_of_range("w"),
    _flattened("w", 1),
    wrong_unit_param("u"),
    ErrorCase(
        "v not of the fan-in's size",
        replace_arg("v", lambda v: v[:-1]),
        ValueError,
        "v must have shape",
    ),
    ErrorCase(
        "an unknown order",
        lambda s: s.replace(order="w_first"),
        ValueError,
        "order must be one of",
    ),
    ErrorCase(
        "negative n_power_iterations",
        lambda s: s.replace(n_power_iterations=-1),
        ValueError,
        "n_power_iterations must be an integer >= 0",
    ),
)

REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    OpSpec(
        "weight_standardize",
        "weights",
        "weight standardization: each output unit standardized over its fan-in (Qiao et al.)",
        Kind.STANDARDIZING,
        weights.weight_standardize,
        weights.weight_standardize_vjp,
        ("w",),
        ("w",),
        _sample_weight_standardize,
        weight_units("w"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_WS_ERRORS,
            _one_fan_in("w"),
            ErrorCase(
                "an unknown eps_mode",
                lambda s: s.replace(eps_mode="max_fan_in"),
                ValueError,
                "eps_mode must be one of",
            ),
        ),
        convention_keywords=EPS_MODE,
        benchmarks=KERNEL_BENCHMARKS,
        reduction_input=unit_fan_in,
        large_inputs=KERNEL_LARGE,
        scaling=normalizing_law("w"),
    ),
    OpSpec(
        "scaled_weight_standardize",
        "weights",
        "Scaled WS: standardized units times gain * gamma / sqrt(fan-in) (Brock et al., 2021)",
        Kind.SCALED_STANDARDIZING,
        weights.scaled_weight_standardize,
        weights.scaled_weight_standardize_vjp,
        ("w", "gain"),
        ("w", "gain"),
        _sample_scaled_weight_standardize,
        weight_units("w"),
        affine_args=("gain",),
        properties=frozenset({"zero_mean", "shift_invariant", "scale_invariant"}),
        errors=(
            *_WS_ERRORS,
            wrong_unit_param("gain"),
            ErrorCase(
                "eps_mode of standardization",
                lambda s: s.replace(eps_mode="add_std"),
                ValueError,
                r"eps_mode must be one of \('max_fan_in', 'max', 'add'\)",
            ),
            ErrorCase(
                "gamma not finite",
                lambda s: s.replace(gamma=float("inf")),
                ValueError,
                "gamma must be a finite number",
            ),
        ),
        convention_keywords=(("eps_mode", "scaled_ws_eps_mode"),),
        convention_fields=("variance_algorithm",),
        special_inputs=(
            SpecialInput(
                "variance-at-eps",
                "unit 0 with N var = eps: the kink of max_fan_in",
                _variance_at_eps,
            ),
        ),
        benchmarks=KERNEL_BENCHMARKS,
        reduction_input=unit_fan_in,
        large_inputs=KERNEL_LARGE,
        scaling=normalizing_law("w", "gain", eps={"max_fan_in": 2, "max": 2, "add": 2}),
    ),
    OpSpec(
        "weight_norm",
        "weights",
        "weight norm: g v / ||v|| per output unit (Salimans & Kingma, 2016)",
        Kind.WEIGHT_NORMALIZING,
        weights.weight_norm,
        weights.weight_norm_vjp,
        ("v", "g"),
        ("v", "g"),
        _sample_weight_norm,
        weight_units("v"),
        affine_args=("g",),
        properties=frozenset({"scale_invariant"}),
        errors=(
            out_axis_out_of_range("v"),
            _flattened("v", 1),
            wrong_unit_param("g"),
            ErrorCase(
                "negative eps",
                lambda s: s.replace(eps=-1e-12),
                ValueError,
                "eps must be a finite number >= 0",
            ),
        ),
        eps_field="weight_norm_eps",
        eps_argument=False,
        convention_fields=("zero_norm",),
        special_inputs=(zero_unit("v", "zero-unit", "unit 0 all zeros: no direction"),),
        reduction_input=unit_fan_in,
        large_inputs=KERNEL_LARGE,
        scaling=normalizing_law("v", "g", eps={"": 2}),
    ),
    OpSpec(
        "centered_weight_norm",
        "weights",
        "centred weight norm: g (v - mean) / ||v - mean|| per output unit (Huang et al., 2017)",
        Kind.CENTRED_WEIGHT_NORMALIZING,
        weights.centered_weight_norm,
        weights.centered_weight_norm_vjp,
        ("v", "g"),
        ("v", "g"),
        _sample_weight_norm,
        weight_units("v"),
        affine_args=("g",),
        properties=frozenset({"zero_mean", "shift_invariant", "scale_invariant", "idempotent"}),
        errors=(
            out_axis_out_of_range("v"),
            _flattened("v", 2),
            wrong_unit_param("g"),
            ErrorCase(
                "negative eps",
                lambda s: s.replace(eps=-1e-12),
                ValueError,
                "eps must be a finite number >= 0",
            ),
        ),
        eps_argument=False,
        special_inputs=(
            SpecialInput("constant-unit", "unit 0 constant: no direction", _constant_unit),
        ),
        benchmarks=KERNEL_BENCHMARKS,
        scaling=normalizing_law("v", "g", eps={"": 2}),
    ),
    OpSpec(
        "orthogonal_weight_norm",
        "weights",
        "OWN: groups of units centred and orthonormalized, (Vc Vc^T + eps I)^-1/2 Vc "
        "(Huang et al., 2018)",
        Kind.ORTHOGONALIZING,
        weights_orthogonal.orthogonal_weight_norm,
        weights_orthogonal.orthogonal_weight_norm_vjp,
        ("v",),
        ("v",),
        _sample_orthogonal_weight_norm,
        _orthogonal_partition,
        properties=frozenset({"zero_mean", "shift_invariant", "scale_invariant"}),
        errors=_ORTHOGONAL_ERRORS,
        method="zca",
        special_inputs=(SpecialInput("all-units", "every unit in one group", _all_units),),
        capabilities=Capabilities(dask=False),
        benchmarks=(
            BenchmarkInput(
                CONV_KERNEL,
                "3x3 conv kernel, OIHW, groups of 64 units",
                drawn={"out_axis": 0},
                fixed={"group_size": 64},
                quick=True,
            ),
        ),
        scaling=normalizing_law("v", eps={"": 2}),
    ),
    OpSpec(
        "oni_weight_norm",
        "weights",
        "ONI: OWN by Newton-Schulz steps on the Frobenius-normalized Gram matrix "
        "(Huang et al., 2020)",
        Kind.ORTHOGONALIZING,
        weights_orthogonal.oni_weight_norm,
        weights_orthogonal.oni_weight_norm_vjp,
        ("v",),
        ("v",),
        _sample_oni_weight_norm,
        _orthogonal_partition,
        properties=frozenset({"zero_mean", "shift_invariant", "scale_invariant"}),
        errors=(
            *_ORTHOGONAL_ERRORS,
            ErrorCase(
                "no iterations",
                lambda s: s.replace(iterations=0),
                ValueError,
                "iterations must be an integer >= 1",
            ),
        ),
        method="frobenius_newton",
        special_inputs=(SpecialInput("all-units", "every unit in one group", _all_units),),
        benchmarks=(
            BenchmarkInput(
                CONV_KERNEL,
                "3x3 conv kernel, OIHW, groups of 64 units",
                drawn={"out_axis": 0},
                fixed={"group_size": 64},
                quick=True,
            ),
        ),
        scaling=normalizing_law("v", eps={"": 2}),
    ),
    OpSpec(
        "spectral_norm",
        "weights",
        "spectral norm with given power-iteration vectors: W / (u^T W v) (Miyato et al., 2018)",
        Kind.SPECTRAL_NORMALIZING,
        weights.spectral_norm_weight,
        weights.spectral_norm_vjp,
        ("w", "u", "v"),
        ("w",),
        _sample_spectral_norm,
        properties=frozenset({"scale_invariant"}),
        errors=(
            *_SPECTRAL_ERRORS,
            ErrorCase(
                "no v without a v-first iteration",
                lambda s: s.replace(v=None),
                ValueError,
                "v is needed",
            ),
        ),
        state=("u", "v"),
        convention_fields=("zero_norm",),
        special_inputs=(_ZERO_WEIGHT,),
        scaling=normalizing_law("w", eps=_L2_EPS),
    ),
    OpSpec(
        "spectral_norm_train",
        "weights",
        "one training step of spectral norm: a power iteration, then W / sigma",
        Kind.SPECTRAL_STEP,
        weights.spectral_norm,
        weights.spectral_norm_vjp,
        ("w", "u", "v"),
        ("w",),
        _sample_spectral_norm_train,
        properties=frozenset({"state_held_constant"}),
        errors=_SPECTRAL_ERRORS,
        outputs=("y", "u", "v", "sigma"),
        state=("u", "v", "sigma"),
        convention_keywords=(
            ("order", "power_iteration_order"),
            ("eps_mode", "l2_eps_mode"),
        ),
        convention_fields=("zero_norm",),
        special_inputs=(_ZERO_WEIGHT,),
        promoting_inputs=("u", "v"),
        scaling=ScalingLaw(
            inputs={"w": 1},
            outputs={"y": 0, "u": 0, "v": 0, "sigma": 1},
            gradients={"w": -1},
            eps=_L2_EPS,
        ),
    ),
)
"""The operations of this module's family, in the order they are listed."""
