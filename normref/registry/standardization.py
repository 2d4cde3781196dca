"""Registry entries of the standardization family (see :mod:`normref.registry`)."""

from __future__ import annotations

import math
from collections.abc import Callable

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
from normref.registry.sampling import (
    CANONICAL_RANK,
    CHANNEL_ERRORS,
    EPS_MODE,
    SINGLE_SAMPLE,
    VARIANCE_EPS,
    divisors,
    normal,
    normalizing_law,
    one_sample_canonical,
    positive,
    wrong_param,
    x_shape,
)
from normref.registry.spec import (
    BenchmarkInput,
    ErrorCase,
    Kind,
    OpSpec,
    Rng,
    Sample,
    ScalingLaw,
    SizedInput,
)

ACTIVATIONS_LARGE = (32, 64, 56, 56)
"""ResNet-50 stage 1 activations (N, C, H, W) at batch 32."""

ACTIVATIONS_DEEP = (8, 256, 28, 28)
"""ResNet stage 2 activations (N, C, H, W) at batch 8."""

TOKENS = (16, 128, 1024)
"""Transformer tokens (batch, sequence, width)."""

GROUP_NORM_GROUPS = 32
"""The number of groups of Wu & He (2018)."""


def _activation_benchmarks(**fixed: int) -> tuple[BenchmarkInput, ...]:
    return (
        BenchmarkInput(ACTIVATIONS_LARGE, "ResNet-50 stage 1, batch 32", fixed, compiled=True),
        BenchmarkInput(
            ACTIVATIONS_DEEP, "ResNet stage 2, batch 8", fixed, quick=True, compiled=True
        ),
    )


_TOKEN_BENCHMARKS = (BenchmarkInput(TOKENS, "transformer tokens", quick=True, compiled=True),)

# ---------------------------------------------------------------------------
# Inputs of given reduction lengths and of realistic sizes (the suite's large cases).


def _canonical_groups(n: int) -> SizedInput:
    return SizedInput((2, n, 1), f"2 groups of {n} samples")


def _batch_samples(n: int) -> SizedInput:
    return SizedInput((n, 2), f"{n} samples of 2 channels")


def _ghost_samples(n: int) -> SizedInput:
    return SizedInput(
        (n, 2), f"{n} samples of 2 channels, one virtual batch", {"virtual_batch_size": n}
    )


def _row_features(n: int) -> SizedInput:
    return SizedInput((2, n), f"2 rows of {n} features")


def _instance_values(n: int) -> SizedInput:
    return SizedInput((2, 2, n), f"2 samples of 2 channels of {n} values")


def _group_values(n: int) -> SizedInput:
    return SizedInput((2, 2, n), f"2 samples of 2 groups of {n} values", {"num_groups": 2})


_CANONICAL_LARGE = (SizedInput((2, 16384, 1), "2 groups of 16,384 samples"),)
_CONV_ACTIVATIONS = (
    SizedInput((32, 4, 56, 56), "a convolution's activations: N*H*W = 100,352 per channel"),
)
_TRANSFORMER_ROWS = (
    SizedInput((2, 16384), "transformer rows of 16,384 features"),
    SizedInput((8, 4096), "transformer rows of 4,096 features"),
)

# ---------------------------------------------------------------------------
# Samplers: small random shapes by default, or a given shape of x.


def _shape_nchw(rng: Rng, min_spatial: int = 0) -> tuple[int, ...]:
    spatial = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(min_spatial, 3))))
    return (int(rng.integers(2, 5)), int(rng.integers(1, 6)), *spatial)


def _channel_sample(rng: Rng, shape: tuple[int, ...] | None, shape_x: tuple[int, ...]) -> Sample:
    """x of ``shape_x`` (N, C, *S) with per-channel gamma and beta.

    When the caller drew the shape (``shape is None``), half the samples are
    channels-last (``axis=-1``, as flax and keras), as a strided view.
    """
    c = (shape_x[1],)
    x = normal(rng, shape_x)
    axis = 1
    if shape is None and len(shape_x) > 2 and rng.random() < 0.5:
        x, axis = x.transpose(0, *range(2, len(shape_x)), 1), -1
    args = {"x": x, "gamma": 1.0 + 0.5 * normal(rng, c), "beta": normal(rng, c)}
    return Sample(args, {"eps": 1e-5, "axis": axis})


def _sample_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _channel_sample(rng, shape, shape if shape is not None else _shape_nchw(rng))


def _sample_instance_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape_x = shape if shape is not None else _shape_nchw(rng, min_spatial=1)
    if shape is None and shape_x[2] == 1:
        shape_x = (*shape_x[:2], 2, *shape_x[3:])
    return _channel_sample(rng, shape, shape_x)


def _sample_group_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape_x = shape if shape is not None else _shape_nchw(rng)
    spatial = shape_x[2:]
    # keep at least 2 values per group: a group of one channel needs some spatial extent
    options = [g for g in divisors(shape_x[1]) if (shape_x[1] // g) * math.prod(spatial) >= 2]
    if not options:
        shape_x = (shape_x[0], 2, *spatial)
        options = [1]
    num_groups = int(rng.choice(options))
    sample = _channel_sample(rng, shape, shape_x)
    args = {
        "x": sample.args["x"],
        "num_groups": num_groups,
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
    }
    return Sample(args, sample.kwargs)


def _sample_ghost_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    shape_x = shape
    if shape_x is None:
        base = _shape_nchw(rng)
        shape_x = (2 * base[0], *base[1:])
    options = [b for b in divisors(shape_x[0]) if b * math.prod(shape_x[2:]) >= 2]
    size = int(rng.choice(options))
    sample = _channel_sample(rng, shape, shape_x)
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
        "running_mean": 0.3 * normal(rng, c),
        "running_var": positive(rng, c),
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
    }
    return Sample(args, sample.kwargs)


TRAIN_BATCH_WEIGHT = 0.1
"""The weight of the batch in the running statistics of a typical training step."""


def _sample_batch_norm_train(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    """The inference sample's arrays (x, the running statistics, gamma and beta), with
    normref's own convention and the batch's weight :data:`TRAIN_BATCH_WEIGHT`."""
    sample = _sample_batch_norm_inference(rng, shape)
    kwargs = {**sample.kwargs, "momentum": TRAIN_BATCH_WEIGHT, "convention": "normref"}
    return Sample(sample.args, kwargs)


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
    args = {"x": normal(rng, shape), "gamma": 1.0 + 0.5 * normal(rng, normalized)}
    if with_beta:
        args["beta"] = normal(rng, normalized)
    return Sample(args, {"axes": axes, "eps": 1e-5})


def _sample_layer_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _trailing_sample(rng, shape, with_beta=True)


def _sample_rms_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _trailing_sample(rng, shape, with_beta=False)


def _sample_canonical(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = (int(rng.integers(1, 4)), int(rng.integers(2, 7)), int(rng.integers(1, 3)))
    return Sample({"x": normal(rng, shape)}, {})


def _sample_canonical_eps(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_canonical(rng, shape)
    return Sample(sample.args, {"eps": 1e-5})


# ---------------------------------------------------------------------------
# Partitions of a sample's x (for the identity tests).


def _canonical_partition(sample: Sample) -> Partition:
    shape = tuple(sample.args["x"].shape)
    return Partition(shape, shape, (GROUP, SAMPLE, GROUP))


def _batch_partition(sample: Sample) -> Partition:
    return batch_partition(x_shape(sample), sample.kwargs["axis"])


def _layer_partition(sample: Sample) -> Partition:
    return layer_partition(x_shape(sample), sample.kwargs["axes"])


# ---------------------------------------------------------------------------
# Invalid inputs.


def _collapse_samples(
    to_shape: Callable[[int, int], tuple[int, ...]],
) -> Callable[[Sample], Sample]:
    """Replace x by one of shape ``to_shape(N, C)`` with channels at axis 1."""

    def modify(sample: Sample) -> Sample:
        x = sample.args["x"]
        shape = to_shape(x.shape[0], sample.args["gamma"].shape[0])
        return sample.replace(x=x.flatten()[: math.prod(shape)].reshape(shape), axis=1)

    return modify


def _unbiased(modify: Callable[[Sample], Sample]) -> Callable[[Sample], Sample]:
    """``modify``, then the unbiased variance (``correction=1``)."""
    return lambda s: modify(s).replace(correction=1)


_ONE_SAMPLE_CANONICAL = ErrorCase(
    "a group of one sample, unbiased variance", one_sample_canonical, ValueError, SINGLE_SAMPLE
)
_ONE_VALUE_PER_CHANNEL = ErrorCase(
    "one value per channel, unbiased variance",
    _unbiased(_collapse_samples(lambda _n, c: (1, c))),
    ValueError,
    SINGLE_SAMPLE,
)
_GIVEN_STATISTICS_LAW = ScalingLaw(
    inputs={"x": 1, "running_mean": 1, "running_var": 2},
    outputs={"y": 0},
    gradients={"x": -1, "gamma": 0, "beta": 0},
    eps=VARIANCE_EPS,
)
"""Batch norm with given statistics: the statistics scaled with ``x``, as the batch's would."""

_STANDARDIZING = frozenset(
    {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
)

REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    # ----------------------------------------------------------- canonical ops
    OpSpec(
        "center",
        "standardization",
        "subtract each group's mean, on the canonical (G, M, D) layout",
        Kind.CENTERING,
        ops.center,
        ops.center_vjp,
        ("x",),
        ("x",),
        _sample_canonical,
        _canonical_partition,
        properties=frozenset({"zero_mean", "shift_invariant", "idempotent"}),
        errors=(CANONICAL_RANK,),
        reduction_input=_canonical_groups,
        large_inputs=_CANONICAL_LARGE,
        scaling=ScalingLaw(inputs={"x": 1}, outputs={"y": 1}, gradients={"x": 0}),
    ),
    OpSpec(
        "scale",
        "standardization",
        "divide each group by its standard deviation, without centring",
        Kind.SCALING,
        ops.scale,
        ops.scale_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=frozenset({"scale_invariant"}),
        errors=(CANONICAL_RANK, _ONE_SAMPLE_CANONICAL),
        convention_keywords=EPS_MODE,
        reduction_input=_canonical_groups,
        large_inputs=_CANONICAL_LARGE,
        scaling=normalizing_law(),
    ),
    OpSpec(
        "rms_scale",
        "standardization",
        "divide each group by its root mean square",
        Kind.RMS_SCALING,
        ops.rms_scale,
        ops.rms_scale_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=frozenset({"unit_rms", "scale_invariant", "idempotent"}),
        errors=(CANONICAL_RANK,),
        convention_keywords=EPS_MODE,
        reduction_input=_canonical_groups,
        large_inputs=_CANONICAL_LARGE,
        scaling=normalizing_law(),
    ),
    OpSpec(
        "standardize",
        "standardization",
        "subtract each group's mean and divide by its standard deviation",
        Kind.STANDARDIZING,
        ops.standardize,
        ops.standardize_vjp,
        ("x",),
        ("x",),
        _sample_canonical_eps,
        _canonical_partition,
        properties=_STANDARDIZING,
        errors=(CANONICAL_RANK, _ONE_SAMPLE_CANONICAL),
        convention_keywords=EPS_MODE,
        reduction_input=_canonical_groups,
        large_inputs=_CANONICAL_LARGE,
        scaling=normalizing_law(),
    ),
    # ----------------------------------------------------------- layers
    OpSpec(
        "batch_norm",
        "standardization",
        "batch norm in training mode: per-channel batch statistics (Ioffe & Szegedy, 2015)",
        Kind.STANDARDIZING,
        layers.batch_norm,
        layers.batch_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_norm,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(*CHANNEL_ERRORS, _ONE_VALUE_PER_CHANNEL),
        eps_field="batch_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=_activation_benchmarks(),
        reduction_input=_batch_samples,
        large_inputs=_CONV_ACTIVATIONS,
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "batch_norm_inference",
        "standardization",
        "batch norm with given running statistics (evaluation mode)",
        Kind.GIVEN_STATISTICS,
        layers.batch_norm_inference,
        layers.batch_norm_inference_vjp,
        ("x", "running_mean", "running_var", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_norm_inference,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=frozenset({"fixed_statistics"}),
        errors=(*CHANNEL_ERRORS, wrong_param("running_mean"), wrong_param("running_var")),
        eps_field="batch_norm_eps",
        convention_keywords=EPS_MODE,
        reduction_input=_batch_samples,
        large_inputs=_CONV_ACTIVATIONS,
        scaling=_GIVEN_STATISTICS_LAW,
    ),
    OpSpec(
        "batch_norm_train",
        "standardization",
        "one training step of batch norm: the output and the updated running statistics",
        Kind.STANDARDIZING,
        layers.batch_norm_train,
        layers.batch_norm_train_vjp,
        ("x", "running_mean", "running_var", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_norm_train,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
            _ONE_VALUE_PER_CHANNEL,
            ErrorCase(
                "one value per channel, an unbiased running variance",
                lambda s: _collapse_samples(lambda _n, c: (1, c))(s).replace(convention="torch"),
                ValueError,
                "keeps an unbiased running variance, which needs count >= 2",
            ),
            wrong_param("running_mean"),
            wrong_param("running_var"),
            ErrorCase(
                "momentum above 1",
                lambda s: s.replace(momentum=1.5),
                ValueError,
                r"momentum must be in \[0, 1\]",
            ),
        ),
        outputs=("y", "running_mean", "running_var"),
        state=("running_mean", "running_var"),
        eps_field="batch_norm_eps",
        convention_keywords=EPS_MODE,
        reduction_input=_batch_samples,
        large_inputs=_CONV_ACTIVATIONS,
        scaling=ScalingLaw(
            inputs=_GIVEN_STATISTICS_LAW.inputs,
            outputs={"y": 0, "running_mean": 1, "running_var": 2},
            gradients=_GIVEN_STATISTICS_LAW.gradients,
            eps=VARIANCE_EPS,
        ),
    ),
    OpSpec(
        "layer_norm",
        "standardization",
        "layer norm: statistics over the normalized axes (Ba et al., 2016)",
        Kind.STANDARDIZING,
        layers.layer_norm,
        layers.layer_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_layer_norm,
        _layer_partition,
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            wrong_param("gamma"),
            wrong_param("beta"),
            ErrorCase(
                "axes naming an axis twice",
                lambda s: s.replace(axes=(-1, -1), gamma=None, beta=None),
                ValueError,
                "names an axis twice",
            ),
            ErrorCase(
                "one value per group, unbiased variance",
                lambda s: s.replace(
                    x=s.args["x"][..., :1], axes=(-1,), gamma=None, beta=None, correction=1
                ),
                ValueError,
                SINGLE_SAMPLE,
            ),
        ),
        eps_field="layer_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=_TOKEN_BENCHMARKS,
        reduction_input=_row_features,
        large_inputs=_TRANSFORMER_ROWS,
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "instance_norm",
        "standardization",
        "instance norm: statistics per sample and channel (Ulyanov et al., 2016)",
        Kind.STANDARDIZING,
        layers.instance_norm,
        layers.instance_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_instance_norm,
        lambda s: instance_partition(x_shape(s), s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
            ErrorCase(
                "x of rank 2 (no spatial axis)",
                _collapse_samples(lambda n, c: (n, c)),
                ValueError,
                r"rank >= 3",
            ),
            ErrorCase(
                "one spatial value, unbiased variance",
                _unbiased(_collapse_samples(lambda n, c: (n, c, 1))),
                ValueError,
                SINGLE_SAMPLE,
            ),
            ErrorCase("channel axis 0", lambda s: s.replace(axis=0), ValueError, "batch axis 0"),
        ),
        eps_field="instance_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=_activation_benchmarks(),
        reduction_input=_instance_values,
        large_inputs=(
            SizedInput((1, 4, 256, 256), "style-transfer feature maps: 65,536 per instance"),
        ),
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "group_norm",
        "standardization",
        "group norm: statistics per sample and group of channels (Wu & He, 2018)",
        Kind.STANDARDIZING,
        layers.group_norm,
        layers.group_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_group_norm,
        lambda s: group_partition(x_shape(s), s.args["num_groups"], s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
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
        eps_field="group_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=_activation_benchmarks(num_groups=GROUP_NORM_GROUPS),
        reduction_input=_group_values,
        large_inputs=(
            SizedInput(
                (2, 64, 56, 56),
                "32 groups over 56x56 maps: 6,272 values per group",
                {"num_groups": GROUP_NORM_GROUPS},
            ),
        ),
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "ghost_batch_norm",
        "standardization",
        "ghost batch norm: batch norm within virtual batches (Hoffer et al., 2017)",
        Kind.STANDARDIZING,
        layers.ghost_batch_norm,
        layers.ghost_batch_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_ghost_batch_norm,
        lambda s: ghost_batch_partition(x_shape(s), s.args["virtual_batch_size"], s.kwargs["axis"]),
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
            ErrorCase(
                "virtual_batch_size not dividing N",
                lambda s: s.replace(virtual_batch_size=s.args["x"].shape[0] + 1),
                ValueError,
                "must divide the batch size",
            ),
        ),
        eps_field="batch_norm_eps",
        convention_keywords=EPS_MODE,
        reduction_input=_ghost_samples,
        large_inputs=(
            SizedInput(
                (128, 8, 16, 16),
                "virtual batches of 32: 8,192 values per channel",
                {"virtual_batch_size": 32},
            ),
        ),
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "rms_norm",
        "standardization",
        "RMS norm: scaled by the root mean square, no centring (Zhang & Sennrich, 2019)",
        Kind.RMS_SCALING,
        layers.rms_norm,
        layers.rms_norm_vjp,
        ("x", "gamma"),
        ("x", "gamma"),
        _sample_rms_norm,
        _layer_partition,
        affine_args=("gamma",),
        properties=frozenset({"unit_rms", "scale_invariant", "idempotent"}),
        errors=(wrong_param("gamma"),),
        eps_field="rms_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=_TOKEN_BENCHMARKS,
        reduction_input=_row_features,
        large_inputs=_TRANSFORMER_ROWS,
        scaling=normalizing_law("x", "gamma"),
    ),
)
"""The operations of this module's family, in the order they are listed."""
