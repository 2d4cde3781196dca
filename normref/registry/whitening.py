"""Registry entries of the whitening family (see :mod:`normref.registry`).

Samplers draw groups whose covariances are well conditioned with separated
eigenvalues (``_whitening_groups``), so that PCA's gradient exists and
every reference's tolerance holds; the layers' samples arrange such groups in
an ``(N, C, *S)`` input through :func:`normref.partition.whitening_partition`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat

from normref import layers, ops
from normref.partition import FEATURE, GROUP, SAMPLE, Partition, whitening_partition
from normref.registry.sampling import (
    CANONICAL_RANK,
    CHANNEL_ERRORS,
    SINGLE_SAMPLE,
    divisors,
    normal,
    normalizing_law,
    one_sample_canonical,
    wrong_param,
    x_shape,
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


def _whitening_groups(rng: Rng, shape: tuple[int, ...] | None) -> Any:
    """Canonical ``(G, M, D)`` data whose group covariances are well conditioned.

    Feature ``k`` has scale ``2**k`` before a random reflection per group, so
    the eigenvalues are near ``4**k``: separated (PCA's gradient exists and is
    well conditioned) and of condition number near ``4**(D - 1)``; ``M >= 4D + 4``
    keeps the sampling noise of the covariance well below those gaps.
    """
    if shape is None:
        d = int(rng.integers(1, 4))
        shape = (int(rng.integers(1, 4)), int(rng.integers(4 * d + 4, 4 * d + 9)), d)
    d = shape[-1]
    z = rng.standard_normal(shape) * [2.0**k for k in range(d)]
    v = rng.standard_normal((shape[0], 1, d))
    return z - 2.0 * (z * v).sum(axis=-1, keepdims=True) * v / (v * v).sum(axis=-1, keepdims=True)


def _sample_whitening(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return Sample({"x": _whitening_groups(rng, shape)}, {"eps": 1e-5})


def _sample_iter_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    return Sample({"x": _whitening_groups(rng, shape)}, {"eps": 1e-5, "iterations": 5})


def _whitening_layout(rng: Rng, shape: tuple[int, ...] | None) -> tuple[Any, int, int, int]:
    """``(x, C, group_size, axis)``: groups as :func:`_whitening_groups` in an ``(N, C, *S)`` x.

    When the caller drew the shape (``shape is None``), half the samples are
    channels-last (``axis=-1``), as a strided view.
    """
    drawn = shape is None
    if shape is None:
        k = int(rng.integers(1, 4))
        spatial = tuple(int(s) for s in rng.integers(1, 3, size=int(rng.integers(0, 3))))
        n = -(-(4 * k + 4) // math.prod(spatial)) + int(rng.integers(0, 3))
        shape = (n, k * int(rng.integers(1, 3)), *spatial)
    c = shape[1]
    k = max(d for d in divisors(c) if d <= 3 and math.prod(shape) // c >= d + 1)
    part = whitening_partition(shape, k)
    groups = _whitening_groups(rng, (part.G, part.M, part.D))
    x = part.from_canonical(array_api_compat.array_namespace(groups), groups)
    if drawn and len(shape) > 2 and rng.random() < 0.5:
        return x.transpose(0, *range(2, len(shape)), 1), c, k, -1
    return x, c, k, 1


def _sample_batch_whiten(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x, c, k, axis = _whitening_layout(rng, shape)
    args = {"x": x, "gamma": 1.0 + 0.5 * normal(rng, (c,)), "beta": normal(rng, (c,))}
    return Sample(args, {"group_size": k, "eps": 1e-5, "axis": axis})


def _sample_batch_whiten_inference(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x, c, k, axis = _whitening_layout(rng, shape)
    args = {
        "x": x,
        "running_mean": 0.3 * normal(rng, (c,)),
        "running_whitening": normal(rng, (c // k, k, k)),
        "gamma": 1.0 + 0.5 * normal(rng, (c,)),
        "beta": normal(rng, (c,)),
    }
    return Sample(args, {"group_size": k, "axis": axis})


def _whitening_layer_partition(sample: Sample) -> Partition:
    return whitening_partition(x_shape(sample), sample.kwargs["group_size"], sample.kwargs["axis"])


def _one_sample_per_group(sample: Sample) -> Sample:
    """x of shape (1, C): every group of channels has one sample; the unbiased covariance."""
    c = sample.args["gamma"].shape[0]
    x = sample.args["x"].reshape(-1)[:c].reshape((1, c))
    return sample.replace(x=x, axis=1, correction=1)


_ONE_SAMPLE_CANONICAL = ErrorCase(
    "a group of one sample, unbiased covariance", one_sample_canonical, ValueError, SINGLE_SAMPLE
)
_BAD_CORRECTION = ErrorCase(
    "correction = 2",
    lambda s: s.replace(correction=2),
    ValueError,
    r"correction must be 0 \(biased\) or 1",
)
_WHITENING_PROPERTIES = frozenset({"zero_mean", "shift_invariant", "scale_invariant"})
_WHITENING_LAYER_ERRORS = (
    *CHANNEL_ERRORS,
    ErrorCase(
        "group_size not dividing C",
        lambda s: s.replace(group_size=s.args["gamma"].shape[0] + 1),
        ValueError,
        "must divide the number of channels",
    ),
    ErrorCase(
        "group_size = 0",
        lambda s: s.replace(group_size=0),
        ValueError,
        "group_size must be an integer >= 1",
    ),
    ErrorCase(
        "x of rank 1",
        lambda s: s.replace(x=s.args["x"].reshape((-1,))),
        ValueError,
        r"x must have rank >= 2",
    ),
)


def _canonical_groups(spec: OpSpec, sample: Sample) -> tuple[Partition, Any, Any]:
    """The partition of the sample's ``x``, its namespace and ``x`` in the canonical layout."""
    assert spec.partition is not None
    partition = spec.partition(sample)
    x = sample.args["x"]
    xp = array_api_compat.array_namespace(x)
    return partition, xp, partition.to_canonical(xp, x, copy=True)


def _repeated_eigenvalues(spec: OpSpec, sample: Sample, rng: Rng) -> Sample:
    """Each group's samples ``+-a e_k`` (and zeros): its covariance is ``2 a^2 / M`` times the
    identity, exactly, in every dtype; every eigenvalue is repeated."""
    partition, xp, x = _canonical_groups(spec, sample)
    g, m, d = x.shape
    groups = xp.zeros_like(x)
    for k in range(min(d, m // 2)):
        groups[:, 2 * k, k], groups[:, 2 * k + 1, k] = 1.0, -1.0
    scale = xp.round(xp.asarray(rng.uniform(1.0, 4.0, size=(g, 1, 1))) * 8) / 8
    return sample.replace(x=partition.from_canonical(xp, groups * scale))


def _near_singular(spec: OpSpec, sample: Sample, rng: Rng) -> Sample:
    """Feature 1 a copy of feature 0 up to 1e-3 of its scale: the covariance's smallest
    eigenvalue is about ``1e-6`` of the largest, plus ``eps``."""
    partition, xp, x = _canonical_groups(spec, sample)
    if x.shape[2] < 2:
        return sample
    noise = xp.asarray(rng.standard_normal(x[..., 0].shape))
    x[..., 1] = x[..., 0] + 1e-3 * xp.std(x[..., 0]) * noise
    return sample.replace(x=partition.from_canonical(xp, x))


_COVARIANCE_INPUTS = (
    SpecialInput(
        "repeated-eigenvalues",
        "isotropic groups: every eigenvalue of the covariance repeated",
        _repeated_eigenvalues,
    ),
    SpecialInput(
        "near-singular",
        "one feature a copy of another up to 1e-3: a nearly singular covariance",
        _near_singular,
    ),
)
_CANONICAL_SHAPE = (3, 20, 3)
"""Three groups of 20 samples of 3 features: covariances of separated eigenvalues."""
_COVARIANCE_FIELDS = ("variance_algorithm",)
_COVARIANCE_EPS = {"": 2}
"""``eps`` is added to a covariance."""
_DECORRELATION_LAW = ScalingLaw(
    inputs={"x": 1}, outputs={"y": 1}, gradients={"x": 0}, eps=_COVARIANCE_EPS
)
"""A rotation: its output scales with its input."""


def _group_samples(n: int) -> SizedInput:
    return SizedInput((1, n, 3), f"a group of {n} samples of 3 features")


def _layer_samples(n: int) -> SizedInput:
    return SizedInput((n, 3), f"{n} samples of a group of 3 channels")


def _canonical_whitening(
    name: str,
    method: str,
    summary: str,
    sample: Callable[..., Sample],
    properties: frozenset[str],
    *extra: ErrorCase,
) -> OpSpec:
    return OpSpec(
        name,
        "whitening",
        summary,
        Kind.WHITENING,
        getattr(ops, name),
        getattr(ops, f"{name}_vjp"),
        ("x",),
        ("x",),
        sample,
        _canonical_joint_partition,
        properties=properties,
        errors=(CANONICAL_RANK, _ONE_SAMPLE_CANONICAL, _BAD_CORRECTION, *extra),
        convention_fields=_COVARIANCE_FIELDS,
        method=method,
        typical_shape=_CANONICAL_SHAPE,
        special_inputs=_COVARIANCE_INPUTS,
        reduction_input=_group_samples,
        large_inputs=(SizedInput((2, 8192, 4), "2 groups of 8,192 samples of 4 features"),),
        scaling=_DECORRELATION_LAW
        if method == "decorrelate"
        else normalizing_law(eps=_COVARIANCE_EPS),
        capabilities=Capabilities(
            dask=method == "iter_norm",
            traceable_vjp="gradient_undefined_at_ties" not in properties,
        ),
    )


def _canonical_joint_partition(sample: Sample) -> Partition:
    shape = tuple(sample.args["x"].shape)
    return Partition(shape, shape, (GROUP, SAMPLE, FEATURE))


WHITENING_ACTIVATIONS = (128, 64, 8, 8)
"""Activations (N, C, H, W) of a small convolutional network, as in the DBN experiments."""

WHITENING_GROUP_SIZES = (16, 64)
"""Channels whitened jointly: DBN's usual group size, and all 64 channels in one group."""

REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    _canonical_whitening(
        "decorrelate",
        "decorrelate",
        "rotate each group's features onto its covariance's eigenvectors (PCA, unscaled)",
        _sample_whitening,
        frozenset({"zero_mean", "shift_invariant", "gradient_undefined_at_ties"}),
    ),
    _canonical_whitening(
        "pca_whiten",
        "pca",
        "PCA whitening: eigenvectors, scaled to unit variance",
        _sample_whitening,
        _WHITENING_PROPERTIES | {"gradient_undefined_at_ties"},
    ),
    _canonical_whitening(
        "zca_whiten",
        "zca",
        "ZCA whitening: the symmetric inverse square root of the covariance",
        _sample_whitening,
        _WHITENING_PROPERTIES,
    ),
    _canonical_whitening(
        "cholesky_whiten",
        "cholesky",
        "Cholesky whitening: the inverse of the covariance's Cholesky factor",
        _sample_whitening,
        _WHITENING_PROPERTIES,
    ),
    _canonical_whitening(
        "iter_norm_whiten",
        "iter_norm",
        "IterNorm: Newton-Schulz iterations towards ZCA (Huang et al., 2019)",
        _sample_iter_norm,
        _WHITENING_PROPERTIES,
        ErrorCase(
            "no iterations",
            lambda s: s.replace(iterations=0),
            ValueError,
            "iterations must be an integer >= 1",
        ),
    ),
    OpSpec(
        "batch_whiten",
        "whitening",
        "decorrelated batch norm: groups of channels whitened jointly (Huang et al., 2018)",
        Kind.WHITENING,
        layers.batch_whiten,
        layers.batch_whiten_vjp,
        ("x", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_whiten,
        _whitening_layer_partition,
        affine_args=("gamma", "beta"),
        properties=_WHITENING_PROPERTIES,
        errors=(
            *_WHITENING_LAYER_ERRORS,
            ErrorCase(
                "one sample per group, unbiased covariance",
                _one_sample_per_group,
                ValueError,
                SINGLE_SAMPLE,
            ),
            _BAD_CORRECTION,
            ErrorCase(
                "an unknown method",
                lambda s: s.replace(method="svd"),
                ValueError,
                r"method must be one of \('zca', 'pca', 'cholesky', 'iter_norm'\)",
            ),
        ),
        convention_fields=_COVARIANCE_FIELDS,
        special_inputs=_COVARIANCE_INPUTS,
        capabilities=Capabilities(dask=False),
        benchmarks=tuple(
            BenchmarkInput(
                WHITENING_ACTIVATIONS,
                "DBN layer (ZCA), 64 channels",
                {"group_size": k},
                quick=k == WHITENING_GROUP_SIZES[0],
                variant=f"group_size={k}",
            )
            for k in WHITENING_GROUP_SIZES
        ),
        reduction_input=_layer_samples,
        large_inputs=(
            SizedInput((128, 16, 8, 8), "a DBN layer's activations: 8,192 samples per group"),
        ),
        scaling=normalizing_law("x", "gamma", "beta", eps=_COVARIANCE_EPS),
    ),
    OpSpec(
        "batch_whiten_inference",
        "whitening",
        "batch whitening with a given running mean and whitening matrix",
        Kind.GIVEN_WHITENING,
        layers.batch_whiten_inference,
        layers.batch_whiten_inference_vjp,
        ("x", "running_mean", "running_whitening", "gamma", "beta"),
        ("x", "gamma", "beta"),
        _sample_batch_whiten_inference,
        _whitening_layer_partition,
        affine_args=("gamma", "beta"),
        properties=frozenset({"fixed_statistics"}),
        errors=(
            *_WHITENING_LAYER_ERRORS,
            wrong_param("running_mean"),
            ErrorCase(
                "running_whitening of the wrong shape",
                lambda s: s.replace(running_whitening=s.args["running_whitening"][..., :1]),
                ValueError,
                "running_whitening must have shape",
            ),
        ),
        scaling=ScalingLaw(
            inputs={"x": 1, "running_mean": 1, "running_whitening": -1},
            outputs={"y": 0},
            gradients={"x": -1, "gamma": 0, "beta": 0},
        ),
    ),
)
"""The operations of this module's family, in the order they are listed."""
