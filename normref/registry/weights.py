"""Registry entries of the weights, gradients and residual families (see :mod:`normref.registry`).

Samplers draw small weights in both layouts (``out_axis`` 0 or -1, rank 2 to 4)
with at least 2 values per output unit. Each keeps its op away from its kinks
so that finite differences see a smooth function: adaptive gradient clipping
gets units whose gradient norm is 0.4-0.625 or 1.6-2.5 times the clipping
threshold, and spectral norm gets a weight with a dominant singular value and
``u``, ``v`` near its singular vectors, so that :math:`\\sigma = u^\\top W v`
is far from 0.

``spectral_norm`` is registered by its normalized weight alone
(:func:`normref.weights.spectral_norm_weight`), with ``n_power_iterations=0``:
``u`` and ``v`` are then constants of the forward, so its exact derivative is
the stop-gradient VJP of :func:`normref.weights.spectral_norm_vjp`.
"""

from __future__ import annotations

import math
from typing import Any

from normref import gradients, residual, weights
from normref.partition import Partition, batch_partition
from normref.registry.spec import ErrorCase, OpSpec, Sample

Rng = Any  # numpy.random.Generator, supplied by the caller


def _weight_shape(rng: Rng, shape: tuple[int, ...] | None) -> tuple[tuple[int, ...], int]:
    """A weight shape and its out_axis (0 or -1), every unit with a fan-in >= 2."""
    if shape is None:
        rank = int(rng.integers(2, 5))
        units, fan_in_sizes = int(rng.integers(2, 5)), [int(rng.integers(2, 4))]
        fan_in_sizes += [int(s) for s in rng.integers(1, 3, size=rank - 2)]
        out_axis = int(rng.choice([0, -1]))
        shape = (units, *fan_in_sizes) if out_axis == 0 else (*fan_in_sizes, units)
        return shape, out_axis
    out_axis = int(rng.choice([0, -1]))
    if math.prod(shape) // shape[out_axis] < 2:
        out_axis = -1 - out_axis  # the other layout has the larger fan-in
    return tuple(shape), out_axis


def _fan_in_axes(shape: tuple[int, ...], out_axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(len(shape)) if a != out_axis % len(shape))


def _unit_param(rng: Rng, shape: tuple[int, ...], out_axis: int) -> Any:
    return 1.0 + 0.5 * rng.standard_normal((shape[out_axis],))


def _sample_weight_standardize(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = _weight_shape(rng, shape)
    return Sample({"w": rng.standard_normal(shape)}, {"out_axis": out_axis, "eps": 1e-5})


def _sample_scaled_weight_standardize(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = _weight_shape(rng, shape)
    args = {"w": rng.standard_normal(shape), "gain": _unit_param(rng, shape, out_axis)}
    return Sample(args, {"gamma": 1.7, "out_axis": out_axis, "eps": 1e-4})


def _sample_weight_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = _weight_shape(rng, shape)
    args = {"v": rng.standard_normal(shape), "g": _unit_param(rng, shape, out_axis)}
    return Sample(args, {"out_axis": out_axis})


def _unit_vector(rng: Rng, size: int) -> Any:
    x = rng.standard_normal(size)
    return x / math.sqrt(float((x * x).sum()))


def _sample_spectral_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = _weight_shape(rng, shape)
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


_AGC_CLIPPING = 0.5


def _sample_adaptive_grad_clip(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape, out_axis = _weight_shape(rng, shape)
    axes = _fan_in_axes(shape, out_axis)
    param = rng.standard_normal(shape)
    direction = rng.standard_normal(shape)
    param_norm = ((param * param).sum(axis=axes, keepdims=True)) ** 0.5  # >> eps = 1e-3
    direction_norm = ((direction * direction).sum(axis=axes, keepdims=True)) ** 0.5
    ratio = rng.choice([0.5, 2.0], size=param_norm.shape)
    ratio = ratio * rng.uniform(0.8, 1.25, size=param_norm.shape)
    grad = direction / direction_norm * ratio * _AGC_CLIPPING * param_norm
    kwargs = {"clipping": _AGC_CLIPPING, "eps": 1e-3, "out_axis": out_axis}
    return Sample({"grad": grad, "param": param}, kwargs)


def _sample_skip_init_residual(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        spatial = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(0, 3))))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), *spatial)
    per_channel = (shape[1], *(1,) * (len(shape) - 2))
    alpha_shape = () if rng.random() < 0.5 else per_channel
    args = {
        "x": rng.standard_normal(shape),
        "branch_out": rng.standard_normal(shape),
        "alpha": rng.normal(0.0, 0.3, size=alpha_shape),  # an ndarray even for shape ()
    }
    return Sample(args, {})


def _unit_partition(primary: str) -> Any:
    def partition(sample: Sample) -> Partition:
        shape = tuple(sample.args[primary].shape)
        return batch_partition(shape, sample.kwargs["out_axis"] % len(shape))

    return partition


# ---------------------------------------------------------------------------
# Invalid inputs.


def _replace_arg(name: str, make: Any) -> Any:
    """A modification of a sample that replaces argument ``name`` by ``make(value)``."""
    return lambda s: s.replace(**{name: make(s.args[name])})


def _wrong_unit_param(name: str) -> ErrorCase:
    return ErrorCase(
        f"{name} not of one value per output unit",
        _replace_arg(name, lambda p: p[:-1]),
        ValueError,
        f"{name} must have shape",
    )


def _one_fan_in(primary: str) -> ErrorCase:
    def keep_one(s: Sample) -> Sample:
        w = s.args[primary]
        axis = s.kwargs["out_axis"] % w.ndim
        index = tuple(slice(None) if a == axis else slice(0, 1) for a in range(w.ndim))
        return s.replace(**{primary: w[index]})

    return ErrorCase("a fan-in of one value", keep_one, ValueError, "at least 2 samples")


def _out_axis_out_of_range(primary: str) -> ErrorCase:
    return ErrorCase(
        "out_axis out of range",
        lambda s: s.replace(out_axis=7),
        ValueError,
        rf"out_axis=7 is out of range for {primary} of shape",
    )


def _flattened(primary: str, rank: int) -> ErrorCase:
    return ErrorCase(
        f"{primary} of rank {rank - 1}",
        _replace_arg(
            primary, lambda w: w.reshape(-1) if rank == 2 else w.reshape(-1)[:1].reshape(())
        ),
        ValueError,
        rf"{primary} must have rank >= {rank}",
    )


_WS_ERRORS = (
    _out_axis_out_of_range("w"),
    _flattened("w", 2),
    _one_fan_in("w"),
)

REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    OpSpec(
        "weight_standardize",
        "weights",
        weights.weight_standardize,
        weights.weight_standardize_vjp,
        ("w",),
        ("w",),
        _sample_weight_standardize,
        _unit_partition("w"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_WS_ERRORS,
            ErrorCase(
                "an unknown eps_mode",
                lambda s: s.replace(eps_mode="max_fan_in"),
                ValueError,
                "eps_mode must be one of",
            ),
        ),
    ),
    OpSpec(
        "scaled_weight_standardize",
        "weights",
        weights.scaled_weight_standardize,
        weights.scaled_weight_standardize_vjp,
        ("w", "gain"),
        ("w", "gain"),
        _sample_scaled_weight_standardize,
        _unit_partition("w"),
        affine_args=("gain",),
        properties=frozenset({"zero_mean", "shift_invariant", "scale_invariant"}),
        errors=(
            *_WS_ERRORS,
            _wrong_unit_param("gain"),
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
    ),
    OpSpec(
        "weight_norm",
        "weights",
        weights.weight_norm,
        weights.weight_norm_vjp,
        ("v", "g"),
        ("v", "g"),
        _sample_weight_norm,
        _unit_partition("v"),
        affine_args=("g",),
        properties=frozenset({"scale_invariant"}),
        errors=(
            _out_axis_out_of_range("v"),
            _flattened("v", 1),
            _wrong_unit_param("g"),
            ErrorCase(
                "negative eps",
                lambda s: s.replace(eps=-1e-12),
                ValueError,
                "eps must be a finite number >= 0",
            ),
        ),
    ),
    OpSpec(
        "spectral_norm",
        "weights",
        weights.spectral_norm_weight,
        weights.spectral_norm_vjp,
        ("w", "u", "v"),
        ("w",),
        _sample_spectral_norm,
        properties=frozenset({"scale_invariant"}),
        errors=(
            _out_axis_out_of_range("w"),
            _flattened("w", 1),
            _wrong_unit_param("u"),
            ErrorCase(
                "v not of the fan-in's size",
                _replace_arg("v", lambda v: v[:-1]),
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
            ErrorCase(
                "no v without a v-first iteration",
                lambda s: s.replace(v=None),
                ValueError,
                "v is needed",
            ),
        ),
    ),
    OpSpec(
        "adaptive_grad_clip",
        "gradients",
        gradients.adaptive_grad_clip,
        gradients.adaptive_grad_clip_vjp,
        ("grad", "param"),
        ("grad", "param"),
        _sample_adaptive_grad_clip,
        _unit_partition("grad"),
        errors=(
            _out_axis_out_of_range("grad"),
            ErrorCase(
                "param of another shape",
                _replace_arg("param", lambda p: p[..., :-1] if p.shape[-1] > 1 else p[:-1]),
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
    ),
    OpSpec(
        "skip_init_residual",
        "residual",
        residual.skip_init_residual,
        residual.skip_init_residual_vjp,
        ("x", "branch_out", "alpha"),
        ("x", "branch_out", "alpha"),
        _sample_skip_init_residual,
        errors=(
            ErrorCase(
                "branch_out of another shape",
                _replace_arg("branch_out", lambda b: b.reshape(-1)),
                ValueError,
                r"branch_out must have shape",
            ),
            ErrorCase(
                "alpha that broadcasts x to a larger shape",
                lambda s: s.replace(alpha=s.args["x"][None]),
                ValueError,
                "alpha must be a scalar",
            ),
        ),
    ),
)
"""The operations of this module's families, in the order they are listed."""
