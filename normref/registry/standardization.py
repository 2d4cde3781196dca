"""Registry entries of the standardization family (see :mod:`normref.registry`).

Also the samplers and invalid-input builders that other families share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from normref import layers, ops
from normref.partition import (
    GROUP,
    SAMPLE,
    Partition,
    batch_partition,
    ghost_batch_partition,
    group_partition,
    instance_partition,
    layer_partition,
)
from normref.registry.spec import ErrorCase, OpSpec, Rng, Sample

# ---------------------------------------------------------------------------
# Samplers: small random shapes by default, or a given shape of x.


def _shape_nchw(rng: Rng, min_spatial: int = 0) -> tuple[int, ...]:
    spatial = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(min_spatial, 3))))
    return (int(rng.integers(2, 5)), int(rng.integers(1, 6)), *spatial)


def _normal(rng: Rng, shape: tuple[int, ...]) -> Any:
    return rng.standard_normal(shape)


def _positive(rng: Rng, shape: tuple[int, ...]) -> Any:
    return 0.5 + rng.random(shape)


def _channel_sample(rng: Rng, shape: tuple[int, ...] | None, x_shape: tuple[int, ...]) -> Sample:
    """x of ``x_shape`` (N, C, *S) with per-channel gamma and beta.

    When the caller drew the shape (``shape is None``), half the samples are
    channels-last (``axis=-1``, as flax and keras), as a strided view.
    """
    c = (x_shape[1],)
    x = _normal(rng, x_shape)
    axis = 1
    if shape is None and len(x_shape) > 2 and rng.random() < 0.5:
        x, axis = x.transpose(0, *range(2, len(x_shape)), 1), -1
    args = {"x": x, "gamma": 1.0 + 0.5 * _normal(rng, c), "beta": _normal(rng, c)}
    return Sample(args, {"eps": 1e-5, "axis": axis})


def _sample_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _channel_sample(rng, shape, shape if shape is not None else _shape_nchw(rng))


def _sample_instance_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x_shape = shape if shape is not None else _shape_nchw(rng, min_spatial=1)
    if shape is None and x_shape[2] == 1:
        x_shape = (*x_shape[:2], 2, *x_shape[3:])
    return _channel_sample(rng, shape, x_shape)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _sample_group_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x_shape = shape if shape is not None else _shape_nchw(rng)
    spatial = x_shape[2:]
    # keep at least 2 values per group: a group of one channel needs some spatial extent
    options = [g for g in _divisors(x_shape[1]) if (x_shape[1] // g) * math.prod(spatial) >= 2]
    if not options:
        x_shape = (x_shape[0], 2, *spatial)
        options = [1]
    num_groups = int(rng.choice(options))
    sample = _channel_sample(rng, shape, x_shape)
    args = {
        "x": sample.args["x"],
        "num_groups": num_groups,
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
    }
    return Sample(args, sample.kwargs)


def _sample_ghost_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x_shape = shape
    if x_shape is None:
        base = _shape_nchw(rng)
        x_shape = (2 * base[0], *base[1:])
    options = [b for b in _divisors(x_shape[0]) if b * math.prod(x_shape[2:]) >= 2]
    size = int(rng.choice(options))
    sample = _channel_sample(rng, shape, x_shape)
    args = {
        "x": sample.args["x"],
        "virtual_batch_size": size,
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
    }
    return Sample(args, sample.kwargs)


def _sample_batch_norm_inference(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_batch_norm(rng, shape)
    c = sample.args["gamma"].shape
    args = {
        "x": sample.args["x"],
        "running_mean": 0.3 * _normal(rng, c),
        "running_var": _positive(rng, c),
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
    }
    return Sample(args, sample.kwargs)


def _trailing_sample(rng: Rng, shape: tuple[int, ...] | None, *, with_beta: bool) -> Sample:
    if shape is None:
        lead = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(0, 3))))
        tail = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
        if math.prod(tail) < 2:
            tail = (*tail[:-1], 3)
        shape, axes = (*lead, *tail), tuple(range(-len(tail), 0))
    else:
        axes = (-1,)
    normalized = shape[len(shape) - len(axes) :]
    args = {"x": _normal(rng, shape), "gamma": 1.0 + 0.5 * _normal(rng, normalized)}
    if with_beta:
        args["beta"] = _normal(rng, normalized)
    return Sample(args, {"axes": axes, "eps": 1e-5})


def _sample_layer_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _trailing_sample(rng, shape, with_beta=True)


def _sample_rms_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _trailing_sample(rng, shape, with_beta=False)


def _sample_canonical(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = (int(rng.integers(1, 4)), int(rng.integers(2, 7)), int(rng.integers(1, 3)))
    return Sample({"x": _normal(rng, shape)}, {})


def _sample_canonical_eps(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_canonical(rng, shape)
    return Sample(sample.args, {"eps": 1e-5})


# ---------------------------------------------------------------------------
# Partitions of a sample's x (for the identity tests).


def _canonical_partition(sample: Sample) -> Partition:
    shape = tuple(sample.args["x"].shape)
    return Partition(shape, shape, (GROUP, SAMPLE, GROUP))


def _x_shape(sample: Sample) -> tuple[int, ...]:
    return tuple(sample.args["x"].shape)


# ---------------------------------------------------------------------------
# Invalid inputs.


def _wrong_param(name: str) -> ErrorCase:
    def modify(sample: Sample) -> Sample:
        bad = sample.args[name]
        return sample.replace(**{name: bad[:-1] if bad.shape[-1] > 1 else bad.reshape((1, 1))})

    return ErrorCase(f"{name} of the wrong shape", modify, ValueError, f"{name} must have shape")


def _collapse_samples(
    to_shape: Callable[[int, int], tuple[int, ...]],
) -> Callable[[Sample], Sample]:
    """Replace x by one of shape ``to_shape(N, C)`` with channels at axis 1."""

    def modify(sample: Sample) -> Sample:
        x = sample.args["x"]
        shape = to_shape(x.shape[0], sample.args["gamma"].shape[0])
        return sample.replace(x=x.flatten()[: math.prod(shape)].reshape(shape), axis=1)

    return modify


_SINGLE_SAMPLE = "which needs at least 2 samples per group"


_CHANNEL_ERRORS = (
    _wrong_param("gamma"),
    _wrong_param("beta"),
    ErrorCase(
        "axis out of range", lambda s: s.replace(axis=9), ValueError, r"axis=9 is out of range"
    ),
)

_CANONICAL_RANK = ErrorCase(
    "x not of rank 3",
    lambda s: s.replace(x=s.args["x"].reshape((-1,))),
    ValueError,
    r"canonical shape \(G, M, D\)",
)


def _one_sample_canonical(sample: Sample) -> Sample:
    x = sample.args["x"]
    return sample.replace(x=x[:, :1, :])


REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    # ----------------------------------------------------------- canonical ops
    OpSpec(
        "center",
        "standardization",
        ops.center,
        ops.center_vjp,
        ("x",),
        ("x",),
        _sample_canonical,
        _canonical_partition,
        properties=frozenset({"zero_mean", "shift_invariant", "idempotent"}),
        errors=(_CANONICAL_RANK,),
    ),
    OpSpec(
        "scale",
        "standardization",
        ops.scale,
        ops.scale_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=frozenset({"scale_invariant"}),
        errors=(
            _CANONICAL_RANK,
            ErrorCase("a group of one sample", _one_sample_canonical, ValueError, _SINGLE_SAMPLE),
        ),
    ),
    OpSpec(
        "rms_scale",
        "standardization",
        ops.rms_scale,
        ops.rms_scale_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=frozenset({"unit_rms", "scale_invariant", "idempotent"}),
        errors=(_CANONICAL_RANK,),
    ),
    OpSpec(
        "standardize",
        "standardization",
        ops.standardize,
        ops.standardize_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            _CANONICAL_RANK,
            ErrorCase("a group of one sample", _one_sample_canonical, ValueError, _SINGLE_SAMPLE),
        ),
    ),
    # ----------------------------------------------------------- layers
    OpSpec(
        "batch_norm",
        "standardization",
        layers.batch_norm,
        layers.batch_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_norm,
        lambda s: batch_partition(_x_shape(s), s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_CHANNEL_ERRORS,
            ErrorCase(
                "one value per channel",
                _collapse_samples(lambda _n, c: (1, c)),
                ValueError,
                _SINGLE_SAMPLE,
            ),
        ),
    ),
    OpSpec(
        "batch_norm_inference",
        "standardization",
        layers.batch_norm_inference,
        layers.batch_norm_inference_vjp,
        ("x", "running_mean", "running_var", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_norm_inference,
        lambda s: batch_partition(_x_shape(s), s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=frozenset({"fixed_statistics"}),
        errors=(*_CHANNEL_ERRORS, _wrong_param("running_mean"), _wrong_param("running_var")),
    ),
    OpSpec(
        "layer_norm",
        "standardization",
        layers.layer_norm,
        layers.layer_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_layer_norm,
        lambda s: layer_partition(_x_shape(s), s.kwargs["axes"]),
        affine_args=("gamma", "beta"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            _wrong_param("gamma"),
            _wrong_param("beta"),
            ErrorCase(
                "axes naming an axis twice",
                lambda s: s.replace(axes=(-1, -1), gamma=None, beta=None),
                ValueError,
                "names an axis twice",
            ),
            ErrorCase(
                "one value per group",
                lambda s: s.replace(x=s.args["x"][..., :1], axes=(-1,), gamma=None, beta=None),
                ValueError,
                _SINGLE_SAMPLE,
            ),
        ),
    ),
    OpSpec(
        "instance_norm",
        "standardization",
        layers.instance_norm,
        layers.instance_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_instance_norm,
        lambda s: instance_partition(_x_shape(s), s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_CHANNEL_ERRORS,
            ErrorCase(
                "x of rank 2 (no spatial axis)",
                _collapse_samples(lambda n, c: (n, c)),
                ValueError,
                r"rank >= 3",
            ),
            ErrorCase(
                "one spatial value",
                _collapse_samples(lambda n, c: (n, c, 1)),
                ValueError,
                _SINGLE_SAMPLE,
            ),
            ErrorCase("channel axis 0", lambda s: s.replace(axis=0), ValueError, "batch axis 0"),
        ),
    ),
    OpSpec(
        "group_norm",
        "standardization",
        layers.group_norm,
        layers.group_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_group_norm,
        lambda s: group_partition(_x_shape(s), s.args["num_groups"], s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_CHANNEL_ERRORS,
            ErrorCase(
                "num_groups not dividing C",
                lambda s: s.replace(num_groups=s.args["x"].shape[1] + 1),
                ValueError,
                "must divide the number of channels",
            ),
            ErrorCase(
                "num_groups = 0",
                lambda s: s.replace(num_groups=0),
                ValueError,
                "num_groups must be an integer >= 1",
            ),
        ),
    ),
    OpSpec(
        "ghost_batch_norm",
        "standardization",
        layers.ghost_batch_norm,
        layers.ghost_batch_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_ghost_batch_norm,
        lambda s: ghost_batch_partition(
            _x_shape(s), s.args["virtual_batch_size"], s.kwargs["axis"]
        ),
        affine_args=("gamma", "beta"),
        properties=frozenset(
            {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
        ),
        errors=(
            *_CHANNEL_ERRORS,
            ErrorCase(
                "virtual_batch_size not dividing N",
                lambda s: s.replace(virtual_batch_size=s.args["x"].shape[0] + 1),
                ValueError,
                "must divide the batch size",
            ),
        ),
    ),
    OpSpec(
        "rms_norm",
        "standardization",
        layers.rms_norm,
        layers.rms_norm_vjp,
        ("x", "gamma"),
        ("x", "gamma"),
        _sample_rms_norm,
        lambda s: layer_partition(_x_shape(s), s.kwargs["axes"]),
        affine_args=("gamma",),
        properties=frozenset({"unit_rms", "scale_invariant", "idempotent"}),
        errors=(_wrong_param("gamma"),),
    ),
)
