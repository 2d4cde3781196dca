"""Operations the suite checks that are not registry ops: normref functions in the form
frameworks implement them.

* ``spectral_norm_train``: one training step of spectral norm, one power
  iteration from the given ``u`` and ``v`` (:func:`normref.spectral_norm`): its
  outputs are the normalized weight ``y`` and the new state ``u``, ``v`` and
  ``sigma``; its gradient is :func:`normref.spectral_norm_vjp` (``u``, ``v``
  constants, as torch and flax take them). The registry's ``spectral_norm`` is
  the evaluation mode (no iteration).
* ``clip_by_global_norm``: :func:`normref.clip_by_global_norm` of two
  gradients, ``grad`` and ``bias_grad``, as ``(grad, bias_grad, *, max_norm,
  eps)`` returning both clipped (``y`` and ``clipped_bias_grad``). Forward only:
  normref has no VJP of clipping.
* ``unitwise_norm``: :func:`normref.unitwise_norm` broadcast to ``x``'s shape,
  as optax returns it. Forward only.
* ``gamma_scaled_nonlinearity``: :math:`\\gamma_g\\, g(x)` for a named
  nonlinearity :math:`g` of :data:`normref.nonlinearities.NONLINEARITIES`, the
  variance-preserving activations of normalizer-free networks, with the exact
  gain :func:`normref.nonlinearity_gamma` (``gammas="exact"``) or the NFNets
  published one (``gammas="nfnets_published"``). It is evaluated element by
  element on the host in float64 with the scalar definitions normref integrates.
  Forward only.

Each is an :class:`~normref.registry.OpSpec` with its sampler, so that cases
are drawn for it as for a registry op.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

import normref
from normref.registry.weights import _unit_partition
from normref.nonlinearities import NFNETS_PUBLISHED_GAMMAS, NONLINEARITIES
from normref.registry import REGISTRY, OpSpec, Sample

Rng = np.random.Generator

GAMMA_TABLES = ("exact", "nfnets_published")
"""The gains :func:`gamma_scaled_nonlinearity` can use (the model field ``nonlinearity_gammas``)."""


def _sample_spectral_norm_train(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = REGISTRY["spectral_norm"].sample(rng, shape)
    return sample.replace(n_power_iterations=1)


def clip_by_global_norm(
    grad: Any, bias_grad: Any, *, max_norm: float, eps: float = 0.0, precision: Any = "highest"
) -> tuple[Any, Any]:
    """:func:`normref.clip_by_global_norm` of the two gradients ``(grad, bias_grad)``."""
    return tuple(
        normref.clip_by_global_norm((grad, bias_grad), max_norm, eps=eps, precision=precision)
    )


def _sample_clip_by_global_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = tuple(int(s) for s in rng.integers(2, 5, size=int(rng.integers(2, 4))))
    grad, bias_grad = rng.standard_normal(shape), rng.standard_normal(shape[-1:])
    norm = math.sqrt(float((grad * grad).sum() + (bias_grad * bias_grad).sum()))
    # clipped (the norm twice max_norm) or not (half of it), away from the boundary
    ratio = float(rng.choice([0.5, 2.0]) * rng.uniform(0.8, 1.25))
    return Sample({"grad": grad, "bias_grad": bias_grad}, {"max_norm": norm / ratio})


def unitwise_norm(x: Any, *, out_axis: int = 0, precision: Any = "highest") -> Any:
    """:func:`normref.unitwise_norm`, broadcast to ``x``'s shape."""
    xp = array_api_compat.array_namespace(x)
    return xp.broadcast_to(
        normref.unitwise_norm(x, out_axis=out_axis, precision=precision), x.shape
    )


def _sample_unitwise_norm(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    sample = REGISTRY["weight_standardize"].sample(rng, shape)
    return Sample({"x": sample.args["w"]}, {"out_axis": sample.kwargs["out_axis"]})


def nonlinearity_gain(name: str, gammas: str) -> float:
    """The gain of nonlinearity ``name``: exact, or the NFNets published value."""
    if gammas == "exact":
        return float(normref.nonlinearity_gamma(name))
    if gammas != "nfnets_published":
        msg = f"gammas must be one of {GAMMA_TABLES}, got {gammas!r}"
        raise ValueError(msg)
    if name not in NFNETS_PUBLISHED_GAMMAS:
        msg = f"the NFNets code publishes no gain for {name!r}"
        raise ValueError(msg)
    return NFNETS_PUBLISHED_GAMMAS[name]


def gamma_scaled_nonlinearity(
    x: Any,
    *,
    nonlinearity: str = "relu",
    gammas: str = "exact",
    precision: Any = "highest",  # noqa: ARG001 - normref's keyword; always float64 here
) -> Any:
    """:math:`\\gamma\\, g(x)`, element by element in float64 on the host (any ``precision``)."""
    if nonlinearity not in NONLINEARITIES:
        msg = f"nonlinearity must be one of {tuple(NONLINEARITIES)}, got {nonlinearity!r}"
        raise ValueError(msg)
    gain = nonlinearity_gain(nonlinearity, gammas)
    xp = array_api_compat.array_namespace(x)
    host = np.asarray(array_api_compat.to_device(x, "cpu"), dtype=np.float64)
    function = NONLINEARITIES[nonlinearity].fn
    values = np.array([gain * function(float(v)) for v in host.ravel()]).reshape(host.shape)
    return xp.asarray(values, device=array_api_compat.device(x))


def _sample_gamma_scaled_nonlinearity(rng: Rng, shape: tuple[int, ...] | None = None) -> Sample:
    if shape is None:
        shape = tuple(int(s) for s in rng.integers(2, 6, size=int(rng.integers(1, 4))))
    return Sample({"x": rng.standard_normal(shape)}, {"nonlinearity": "relu"})


EXTRA_SPECS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "spectral_norm_train",
            "weights",
            normref.spectral_norm,
            normref.spectral_norm_vjp,
            ("w", "u", "v"),
            ("w",),
            _sample_spectral_norm_train,
        ),
        # clipping, the unit-wise norm and the nonlinearities have no VJP in normref
        OpSpec(
            "clip_by_global_norm",
            "gradients",
            clip_by_global_norm,
            None,
            ("grad", "bias_grad"),
            (),
            _sample_clip_by_global_norm,
        ),
        OpSpec(
            "unitwise_norm",
            "gradients",
            unitwise_norm,
            None,
            ("x",),
            (),
            _sample_unitwise_norm,
            _unit_partition("x"),
        ),
        OpSpec(
            "gamma_scaled_nonlinearity",
            "residual",
            gamma_scaled_nonlinearity,
            None,
            ("x",),
            (),
            _sample_gamma_scaled_nonlinearity,
        ),
    )
}
"""The conformance-only operations, by name."""
