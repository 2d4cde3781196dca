"""Registry entries of the standardization family's other layers of the literature (see
:mod:`normref.registry`): conditional batch and instance norm (per-sample parameters),
mean-only batch norm, batch renorm, switchable norm, AdaIN and local response normalization.

Samplers draw ``(N, C, *S)`` inputs, half of them channels-last when the shape is
drawn, as the standardization family's. Batch renorm's running statistics differ
from the batch's, so that :math:`r` and :math:`d` are clipped on some channels;
AdaIN's style has its own spatial size, mean and scale; LRN's ``alpha`` is large
enough (0.5) that the normalization changes its input.
"""

from __future__ import annotations

import math

import array_api_compat

from normref import layers
from normref.partition import Partition, batch_partition, instance_partition
from normref.registry.sampling import (
    CHANNEL_ERRORS,
    EPS_MODE,
    SINGLE_SAMPLE,
    normal,
    normalizing_law,
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
    SpecialInput,
)
from normref.registry.standardization import (
    _GIVEN_STATISTICS_LAW,
    ACTIVATIONS_DEEP,
    ACTIVATIONS_LARGE,
    TRAIN_BATCH_WEIGHT,
    _sample_batch_norm,
    _sample_batch_norm_inference,
    _sample_instance_norm,
)

_STANDARDIZING = frozenset(
    {"zero_mean", "unit_variance", "shift_invariant", "scale_invariant", "idempotent"}
)

ALEXNET_LRN = (8, 96, 27, 27)
"""AlexNet's second local response normalization (after conv1's pooling), batch 8."""

STYLE_TRANSFER = (8, 512, 32, 32)
"""AdaIN's input in style transfer: VGG relu4_1 features of 256x256 images, batch 8."""


def _activation_benchmark(shape: tuple[int, ...], description: str) -> BenchmarkInput:
    """A quick benchmark of a layer the compiled path runs (a standardization inside, or
    switchable norm's passes)."""
    return BenchmarkInput(shape, description, quick=True, compiled=True)


# ---------------------------------------------------------------------------
# Samplers


def _channels(sample: Sample) -> tuple[int, int]:
    """``(N, C)`` of a channel layer's sample."""
    x = sample.args["x"]
    return x.shape[0], x.shape[sample.kwargs["axis"]]


def _per_sample(sample: Sample, rng: Rng) -> Sample:
    """A channel layer's sample with ``gamma`` and ``beta`` of one value per sample and channel."""
    shape = _channels(sample)
    return sample.replace(gamma=1.0 + 0.5 * normal(rng, shape), beta=normal(rng, shape))


def _sample_conditional_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _per_sample(_sample_batch_norm(rng, shape), rng)


def _sample_conditional_instance_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return _per_sample(_sample_instance_norm(rng, shape), rng)


def _sample_mean_only_batch_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_batch_norm(rng, shape)
    return Sample(
        {"x": sample.args["x"], "beta": sample.args["beta"]}, {"axis": sample.kwargs["axis"]}
    )


R_MAX, D_MAX = 1.5, 0.5
"""Batch renorm's clipping limits in the samples: some channels are clipped, some not."""


def _sample_batch_renorm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    """Batch norm's inference sample (running statistics of unit-normal data's order) with
    the limits :data:`R_MAX` and :data:`D_MAX`."""
    sample = _sample_batch_norm_inference(rng, shape)
    return Sample(sample.args, {**sample.kwargs, "r_max": R_MAX, "d_max": D_MAX})


def _sample_batch_renorm_train(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _sample_batch_renorm(rng, shape)
    kwargs = {**sample.kwargs, "momentum": TRAIN_BATCH_WEIGHT, "convention": "normref"}
    return Sample(sample.args, kwargs)


def _spatial_sample(rng: Rng, shape: tuple[int, ...] | None) -> Sample:
    """Instance norm's sample: ``(N, C, *S)``, at least 2 spatial values (when drawn)."""
    return _sample_instance_norm(rng, shape)


def _logits(rng: Rng) -> tuple[object, object]:
    return normal(rng, (3,)), normal(rng, (3,))


def _sample_switchable_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = _spatial_sample(rng, shape)
    mean_logits, var_logits = _logits(rng)
    args = {
        "x": sample.args["x"],
        "gamma": sample.args["gamma"],
        "beta": sample.args["beta"],
        "mean_logits": mean_logits,
        "var_logits": var_logits,
    }
    return Sample(args, sample.kwargs)


def _sample_adaptive_instance_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    """Content of ``shape``; style of the same N and C, its own spatial sizes (at least 2
    values), mean 1 and scale 2."""
    sample = _spatial_sample(rng, shape)
    x, axis = sample.args["x"], sample.kwargs["axis"]
    spatial = [int(s) for s in rng.integers(1, 4, size=x.ndim - 2)]
    if math.prod(spatial) < 2:
        spatial[0] = 2
    n, c = x.shape[0], x.shape[axis]
    style_shape = (n, *spatial, c) if axis == -1 else (n, c, *spatial)
    style = 1.0 + 2.0 * normal(rng, style_shape)
    return Sample({"x": x, "style": style}, {"eps": 1e-5, "correction": 0, "axis": axis})


def _sample_local_response_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    """Rank 3 or 4 (the frameworks' LRN takes ``(N, C, *S)``); a window of 1 to 5 channels
    when the shape is drawn, of 3 for a given shape (onnxruntime takes odd sizes only; the
    special input ``even-window`` has 4)."""
    if shape is None:
        spatial = tuple(int(s) for s in rng.integers(1, 4, size=int(rng.integers(1, 3))))
        shape = (int(rng.integers(1, 4)), int(rng.integers(2, 8)), *spatial)
        drawn = True
    else:
        drawn = False
    x = normal(rng, shape)
    axis = 1
    if drawn and rng.random() < 0.5:
        x, axis = x.transpose(0, *range(2, len(shape)), 1), -1
    kwargs = {"alpha": 0.5, "beta": 0.75, "k": 1.0, "axis": axis}
    size = int(rng.integers(1, 6)) if drawn else 3
    return Sample({"x": x, "size": size}, kwargs)


# ---------------------------------------------------------------------------
# Partitions


def _batch_partition(sample: Sample) -> Partition:
    return batch_partition(x_shape(sample), sample.kwargs["axis"])


def _instance_partition(sample: Sample) -> Partition:
    return instance_partition(x_shape(sample), sample.kwargs["axis"])


# ---------------------------------------------------------------------------
# Invalid and special inputs


def _one_value_per_channel(sample: Sample) -> Sample:
    x = sample.args["x"]
    c = sample.args["running_mean"].shape[0]
    return sample.replace(x=x.reshape(-1)[:c].reshape((1, c)), axis=1)


def _one_style_value(sample: Sample) -> Sample:
    """AdaIN's style cut to one spatial value per instance (the rank kept)."""
    style, axis = sample.args["style"], sample.kwargs["axis"] % sample.args["style"].ndim
    index = tuple(slice(None) if a in (0, axis) else slice(0, 1) for a in range(style.ndim))
    return sample.replace(style=style[index])


_RENORM_ERRORS = (
    *CHANNEL_ERRORS,
    wrong_param("running_mean"),
    wrong_param("running_var"),
    ErrorCase(
        "r_max below 1",
        lambda s: s.replace(r_max=0.5),
        ValueError,
        "r_max must be a finite number >= 1",
    ),
    ErrorCase(
        "negative d_max",
        lambda s: s.replace(d_max=-1.0),
        ValueError,
        "d_max must be a finite number >= 0",
    ),
)


def _unclipped(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """Limits no channel reaches: the running statistics' normalization."""
    return sample.replace(r_max=1e3, d_max=1e3)


def _batch_norm_limits(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """``r_max = 1``, ``d_max = 0``: batch norm."""
    return sample.replace(r_max=1.0, d_max=0.0)


_RENORM_INPUTS = (
    SpecialInput("unclipped", "limits no channel reaches: (x - mu) / sigma", _unclipped),
    SpecialInput("batch-norm-limits", "r_max = 1, d_max = 0: batch norm", _batch_norm_limits),
)


def _one_hot_logits(index: int) -> SpecialInput:
    name = ("instance", "layer", "batch")[index]

    def make(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
        given = sample.args["mean_logits"]
        xp = array_api_compat.array_namespace(given)
        positions = xp.arange(3, device=array_api_compat.device(given))
        logits = xp.where(positions == index, 0.0, -1e3)
        return sample.replace(
            mean_logits=xp.astype(logits, given.dtype), var_logits=xp.astype(logits, given.dtype)
        )

    return SpecialInput(f"{name}-statistics", f"logits selecting the {name} statistics", make)


def _style_is_content(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """AdaIN of ``x`` with itself as the style: ``x`` again."""
    return sample.replace(style=sample.args["x"])


def _even_window(_spec: OpSpec, sample: Sample, _rng: Rng) -> Sample:
    """A window of 4 channels: torch's and ONNX's windows differ."""
    return sample.replace(size=4)


REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    OpSpec(
        "conditional_batch_norm",
        "standardization",
        "batch norm with per-sample gamma, beta of shape (N, C) (de Vries et al., 2017)",
        Kind.STANDARDIZING,
        layers.batch_norm,
        layers.batch_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_conditional_batch_norm,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
            ErrorCase(
                "gamma per channel, beta per sample",
                lambda s: s.replace(gamma=s.args["gamma"][0]),
                ValueError,
                "gamma must have shape",
            ),
            ErrorCase(
                "per-sample parameters with the channel axis 0",
                lambda s: s.replace(axis=0),
                ValueError,
                "gamma and beta of rank 2 are per sample",
            ),
        ),
        eps_field="batch_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=(_activation_benchmark(ACTIVATIONS_DEEP, "ResNet stage 2, batch 8"),),
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "conditional_instance_norm",
        "standardization",
        "instance norm with per-sample gamma, beta of shape (N, C): style transfer, FiLM "
        "(Dumoulin et al., 2017)",
        Kind.STANDARDIZING,
        layers.instance_norm,
        layers.instance_norm_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_conditional_instance_norm,
        _instance_partition,
        affine_args=("gamma", "beta"),
        properties=_STANDARDIZING,
        errors=(
            *CHANNEL_ERRORS,
            ErrorCase("channel axis 0", lambda s: s.replace(axis=0), ValueError, "batch axis 0"),
        ),
        eps_field="instance_norm_eps",
        convention_keywords=EPS_MODE,
        benchmarks=(_activation_benchmark(ACTIVATIONS_DEEP, "ResNet stage 2, batch 8"),),
        scaling=normalizing_law("x", "gamma", "beta"),
    ),
    OpSpec(
        "mean_only_batch_norm",
        "standardization",
        "mean-only batch norm: each channel centred by its batch mean (Salimans & Kingma, 2016)",
        Kind.CENTERING,
        layers.mean_only_batch_norm,
        layers.mean_only_batch_norm_vjp,
        ("x", "beta"),
        ("x", "beta"),
        _sample_mean_only_batch_norm,
        _batch_partition,
        affine_args=("beta",),
        properties=frozenset({"zero_mean", "shift_invariant", "idempotent"}),
        errors=(
            wrong_param("beta"),
            ErrorCase(
                "axis out of range",
                lambda s: s.replace(axis=9),
                ValueError,
                r"axis=9 is out of range",
            ),
        ),
        benchmarks=(
            BenchmarkInput(
                ACTIVATIONS_LARGE, "ResNet-50 stage 1, batch 32", quick=True, compiled=True
            ),
        ),
        scaling=ScalingLaw(
            inputs={"x": 1, "beta": 1}, outputs={"y": 1}, gradients={"x": 0, "beta": 0}
        ),
    ),
    OpSpec(
        "batch_renorm",
        "standardization",
        "batch renormalization: batch norm corrected towards the running statistics (Ioffe, 2017)",
        Kind.RENORMALIZING,
        layers.batch_renorm,
        layers.batch_renorm_vjp,
        ("x", "running_mean", "running_var", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_renorm,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=frozenset({"corrections_held_constant"}),
        errors=_RENORM_ERRORS,
        eps_field="batch_norm_eps",
        special_inputs=_RENORM_INPUTS,
        benchmarks=(_activation_benchmark(ACTIVATIONS_DEEP, "ResNet stage 2, batch 8"),),
        scaling=ScalingLaw(
            inputs=_GIVEN_STATISTICS_LAW.inputs,
            outputs={"y": 0},
            gradients=_GIVEN_STATISTICS_LAW.gradients,
            eps={"": 2},
        ),
    ),
    OpSpec(
        "batch_renorm_train",
        "standardization",
        "one training step of batch renorm: the output and the updated running statistics",
        Kind.RENORMALIZING,
        layers.batch_renorm_train,
        layers.batch_renorm_train_vjp,
        ("x", "running_mean", "running_var", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_renorm_train,
        _batch_partition,
        affine_args=("gamma", "beta"),
        properties=frozenset({"corrections_held_constant"}),
        errors=(
            *_RENORM_ERRORS,
            ErrorCase(
                "one value per channel, an unbiased running variance",
                lambda s: _one_value_per_channel(s).replace(convention="torch"),
                ValueError,
                "keeps an unbiased running variance, which needs count >= 2",
            ),
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
        special_inputs=_RENORM_INPUTS,
        scaling=ScalingLaw(
            inputs=_GIVEN_STATISTICS_LAW.inputs,
            outputs={"y": 0, "running_mean": 1, "running_var": 2},
            gradients=_GIVEN_STATISTICS_LAW.gradients,
            eps={"": 2},
        ),
    ),
    OpSpec(
        "switchable_norm",
        "standardization",
        "switchable norm: softmax mixtures of instance, layer and batch statistics "
        "(Luo et al., 2019)",
        Kind.SWITCHABLE,
        layers.switchable_norm,
        layers.switchable_norm_vjp,
        ("x", "gamma", "beta", "mean_logits", "var_logits"),
        ("x", "gamma", "beta", "mean_logits", "var_logits"),
        _sample_switchable_norm,
        affine_args=("gamma", "beta"),
        properties=frozenset({"scale_invariant"}),
        errors=(
            *CHANNEL_ERRORS,
            ErrorCase(
                "two logits",
                lambda s: s.replace(mean_logits=s.args["mean_logits"][:2]),
                ValueError,
                r"mean_logits must have shape \(3,\)",
            ),
        ),
        special_inputs=tuple(_one_hot_logits(k) for k in range(3)),
        benchmarks=(_activation_benchmark(ACTIVATIONS_DEEP, "ResNet stage 2, batch 8"),),
        scaling=ScalingLaw(
            inputs={"x": 1},
            outputs={"y": 0},
            gradients={"x": -1, "gamma": 0, "beta": 0, "mean_logits": 0, "var_logits": 0},
            eps={"": 2},
        ),
    ),
    OpSpec(
        "adaptive_instance_norm",
        "standardization",
        "AdaIN: instance norm scaled and shifted by a style's statistics (Huang & Belongie, 2017)",
        Kind.ADAPTIVE_INSTANCE,
        layers.adaptive_instance_norm,
        layers.adaptive_instance_norm_vjp,
        ("x", "style"),
        ("x", "style"),
        _sample_adaptive_instance_norm,
        _instance_partition,
        properties=frozenset({"shift_invariant"}),
        errors=(
            ErrorCase(
                "style of another batch size",
                lambda s: s.replace(style=s.args["style"][:1]),
                ValueError,
                "style must have x's rank",
            ),
            ErrorCase(
                "a style of one spatial value, unbiased variance",
                lambda s: _one_style_value(s).replace(correction=1),
                ValueError,
                SINGLE_SAMPLE,
            ),
            ErrorCase(
                "correction = 2",
                lambda s: s.replace(correction=2),
                ValueError,
                r"correction must be 0 \(biased\) or 1",
            ),
        ),
        eps_field="instance_norm_eps",
        special_inputs=(
            SpecialInput("style-is-content", "the content as its own style", _style_is_content),
        ),
        benchmarks=(_activation_benchmark(STYLE_TRANSFER, "style transfer (VGG relu4_1)"),),
        scaling=ScalingLaw(
            inputs={"x": 1, "style": 1},
            outputs={"y": 1},
            gradients={"x": 0, "style": 0},
            eps={"": 2},
        ),
    ),
    OpSpec(
        "local_response_norm",
        "standardization",
        "local response normalization across a window of channels (Krizhevsky et al., 2012)",
        Kind.LOCAL_RESPONSE,
        layers.local_response_norm,
        layers.local_response_norm_vjp,
        ("x",),
        ("x",),
        _sample_local_response_norm,
        errors=(
            ErrorCase(
                "size 0", lambda s: s.replace(size=0), ValueError, "size must be an integer >= 1"
            ),
            ErrorCase(
                "k = 0", lambda s: s.replace(k=0.0), ValueError, "k must be a finite number > 0"
            ),
            ErrorCase(
                "negative beta",
                lambda s: s.replace(beta=-0.75),
                ValueError,
                "alpha and beta must be finite numbers >= 0",
            ),
            ErrorCase(
                "an unknown window",
                lambda s: s.replace(window="tf"),
                ValueError,
                "window must be one of",
            ),
        ),
        convention_keywords=(("window", "lrn_window"),),
        typical_shape=(4, 6, 3, 2),
        special_inputs=(SpecialInput("even-window", "size 4: the windows differ", _even_window),),
        benchmarks=(
            BenchmarkInput(ALEXNET_LRN, "AlexNet LRN 2, batch 8", {"size": 5}, quick=True),
        ),
        scaling=ScalingLaw(inputs={"x": 1, "alpha": -2}, outputs={"y": 1}, gradients={"x": 0}),
    ),
)
"""The operations of this module's family, in the order they are listed."""
