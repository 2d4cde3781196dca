"""Registry entries of the whitening family (see :mod:`normref.registry`).

Samplers draw groups whose covariances are well conditioned with separated
eigenvalues (:func:`_whitening_groups`), so that PCA's gradient exists and
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
from normref.registry.spec import ErrorCase, OpSpec, Sample
from normref.registry.standardization import (
    _CANONICAL_RANK,
    _CHANNEL_ERRORS,
    _SINGLE_SAMPLE,
    _divisors,
    _normal,
    _one_sample_canonical,
    _wrong_param,
    _x_shape,
)

Rng = Any  # numpy.random.Generator, supplied by the caller


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
    k = max(d for d in _divisors(c) if d <= 3 and math.prod(shape) // c >= d + 1)
    part = whitening_partition(shape, k)
    groups = _whitening_groups(rng, (part.G, part.M, part.D))
    x = part.from_canonical(array_api_compat.array_namespace(groups), groups)
    if drawn and len(shape) > 2 and rng.random() < 0.5:
        return x.transpose(0, *range(2, len(shape)), 1), c, k, -1
    return x, c, k, 1


def _sample_batch_whiten(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x, c, k, axis = _whitening_layout(rng, shape)
    args = {"x": x, "gamma": 1.0 + 0.5 * _normal(rng, (c,)), "beta": _normal(rng, (c,))}
    return Sample(args, {"group_size": k, "eps": 1e-5, "axis": axis})


def _sample_batch_whiten_inference(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    x, c, k, axis = _whitening_layout(rng, shape)
    args = {
        "x": x,
        "running_mean": 0.3 * _normal(rng, (c,)),
        "running_whitening": _normal(rng, (c // k, k, k)),
        "gamma": 1.0 + 0.5 * _normal(rng, (c,)),
        "beta": _normal(rng, (c,)),
    }
    return Sample(args, {"group_size": k, "axis": axis})


def _whitening_layer_partition(sample: Sample) -> Partition:
    return whitening_partition(_x_shape(sample), sample.kwargs["group_size"], sample.kwargs["axis"])


def _one_sample_per_group(sample: Sample) -> Sample:
    """x of shape (1, C): every group of channels has one sample."""
    c = sample.args["gamma"].shape[0]
    return sample.replace(x=sample.args["x"].reshape(-1)[:c].reshape((1, c)), axis=1)


_ONE_SAMPLE_CANONICAL = ErrorCase(
    "a group of one sample", _one_sample_canonical, ValueError, _SINGLE_SAMPLE
)
_BAD_CORRECTION = ErrorCase(
    "correction = 2",
    lambda s: s.replace(correction=2),
    ValueError,
    r"correction must be 0 \(biased\) or 1",
)
_WHITENING_PROPERTIES = frozenset({"zero_mean", "shift_invariant", "scale_invariant"})
_WHITENING_LAYER_ERRORS = (
    *_CHANNEL_ERRORS,
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


def _canonical_whitening(
    name: str, sample: Callable[..., Sample], properties: frozenset[str], *extra: ErrorCase
) -> OpSpec:
    return OpSpec(
        name,
        "whitening",
        getattr(ops, name),
        getattr(ops, f"{name}_vjp"),
        ("x",),
        ("x",),
        sample,
        _canonical_joint_partition,
        properties=properties,
        errors=(_CANONICAL_RANK, _ONE_SAMPLE_CANONICAL, _BAD_CORRECTION, *extra),
    )


def _canonical_joint_partition(sample: Sample) -> Partition:
    shape = tuple(sample.args["x"].shape)
    return Partition(shape, shape, (GROUP, SAMPLE, FEATURE))


REGISTRY_ENTRIES: tuple[OpSpec, ...] = (
    _canonical_whitening(
        "decorrelate",
        _sample_whitening,
        frozenset({"zero_mean", "shift_invariant", "gradient_undefined_at_ties"}),
    ),
    _canonical_whitening(
        "pca_whiten",
        _sample_whitening,
        _WHITENING_PROPERTIES | {"gradient_undefined_at_ties"},
    ),
    _canonical_whitening("zca_whiten", _sample_whitening, _WHITENING_PROPERTIES),
    _canonical_whitening("cholesky_whiten", _sample_whitening, _WHITENING_PROPERTIES),
    _canonical_whitening(
        "iter_norm_whiten",
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
            ErrorCase("one sample per group", _one_sample_per_group, ValueError, _SINGLE_SAMPLE),
            _BAD_CORRECTION,
            ErrorCase(
                "an unknown method",
                lambda s: s.replace(method="svd"),
                ValueError,
                r"method must be one of \('zca', 'pca', 'cholesky', 'iter_norm'\)",
            ),
        ),
    ),
    OpSpec(
        "batch_whiten_inference",
        "whitening",
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
            _wrong_param("running_mean"),
            ErrorCase(
                "running_whitening of the wrong shape",
                lambda s: s.replace(running_whitening=s.args["running_whitening"][..., :1]),
                ValueError,
                "running_whitening must have shape",
            ),
        ),
    ),
)
