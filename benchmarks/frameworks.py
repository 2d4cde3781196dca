"""The frameworks' counterparts of registry operations, as functions of the differentiable arrays.

Each entry maps a registry name to a builder: given the normref sample (for
its non-array arguments: ``eps``, ``num_groups``, ``axes``, ...) it returns a
function of the differentiable arrays, in the order of the operation's
``OpSpec.differentiable``, in that framework's arrays.

torch
    The library's own functional layer (``torch.nn.functional``); the
    backward is torch's autograd.
jax
    The textbook formula in ``jax.numpy`` (two-pass variance, biased), which
    XLA compiles and fuses under ``jax.jit``; the backward is ``jax.vjp``.
    JAX itself has no normalization layers, and flax's use the fast
    ``E[x^2] - E[x]^2`` variance by default, a different algorithm.

An operation without an entry here is timed for normref alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from normref.registry import Sample

Builder = Callable[[Sample], Callable[..., Any]]


def _normalized_shape(sample: Sample) -> tuple[int, ...]:
    """The trailing normalized shape of a layer/RMS norm sample (torch's ``normalized_shape``)."""
    x = sample.args["x"]
    axes = sorted(a % x.ndim for a in sample.kwargs["axes"])
    if axes != list(range(x.ndim - len(axes), x.ndim)):
        msg = f"torch normalizes trailing axes only, got axes={sample.kwargs['axes']}"
        raise ValueError(msg)
    return tuple(x.shape[a] for a in axes)


def _channels_first(sample: Sample) -> float:
    """``eps`` of a channel layer sample, whose channel axis must be 1 as torch's is."""
    if sample.kwargs["axis"] % sample.args["x"].ndim != 1:
        msg = f"torch's channel axis is 1, got axis={sample.kwargs['axis']}"
        raise ValueError(msg)
    return sample.kwargs["eps"]


# ---------------------------------------------------------------------------- torch


def _torch_batch_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    eps = _channels_first(sample)
    return lambda x, gamma, beta: functional.batch_norm(
        x, None, None, gamma, beta, training=True, eps=eps
    )


def _torch_group_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    eps, groups = _channels_first(sample), sample.args["num_groups"]
    return lambda x, gamma, beta: functional.group_norm(x, groups, gamma, beta, eps=eps)


def _torch_instance_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    eps = _channels_first(sample)
    return lambda x, gamma, beta: functional.instance_norm(
        x, weight=gamma, bias=beta, use_input_stats=True, eps=eps
    )


def _torch_layer_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    shape, eps = _normalized_shape(sample), sample.kwargs["eps"]
    return lambda x, gamma, beta: functional.layer_norm(x, shape, gamma, beta, eps=eps)


def _torch_rms_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    shape, eps = _normalized_shape(sample), sample.kwargs["eps"]
    return lambda x, gamma: functional.rms_norm(x, shape, gamma, eps=eps)


TORCH: dict[str, Builder] = {
    "batch_norm": _torch_batch_norm,
    "group_norm": _torch_group_norm,
    "instance_norm": _torch_instance_norm,
    "layer_norm": _torch_layer_norm,
    "rms_norm": _torch_rms_norm,
}

# ---------------------------------------------------------------------------- jax


def _jax_standardized(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    import jax
    import jax.numpy as jnp

    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    variance = jnp.mean(centred * centred, axis=axes, keepdims=True)
    return centred * jax.lax.rsqrt(variance + eps)


def _per_channel(param: Any, ndim: int) -> Any:
    return param.reshape((-1,) + (1,) * (ndim - 2))


def _jax_batch_norm(sample: Sample) -> Callable[..., Any]:
    eps = _channels_first(sample)

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        axes = (0, *range(2, x.ndim))
        y = _jax_standardized(x, axes, eps)
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _jax_group_norm(sample: Sample) -> Callable[..., Any]:
    eps, groups = _channels_first(sample), sample.args["num_groups"]

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        n, c, *spatial = x.shape
        split = x.reshape((n, groups, c // groups, *spatial))
        y = _jax_standardized(split, tuple(range(2, split.ndim)), eps).reshape(x.shape)
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _jax_instance_norm(sample: Sample) -> Callable[..., Any]:
    eps = _channels_first(sample)

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        y = _jax_standardized(x, tuple(range(2, x.ndim)), eps)
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _jax_layer_norm(sample: Sample) -> Callable[..., Any]:
    axes, eps = tuple(range(-len(_normalized_shape(sample)), 0)), sample.kwargs["eps"]
    return lambda x, gamma, beta: _jax_standardized(x, axes, eps) * gamma + beta


def _jax_rms_norm(sample: Sample) -> Callable[..., Any]:
    axes, eps = tuple(range(-len(_normalized_shape(sample)), 0)), sample.kwargs["eps"]

    def f(x: Any, gamma: Any) -> Any:
        import jax
        import jax.numpy as jnp

        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=axes, keepdims=True) + eps) * gamma

    return f


JAX: dict[str, Builder] = {
    "batch_norm": _jax_batch_norm,
    "group_norm": _jax_group_norm,
    "instance_norm": _jax_instance_norm,
    "layer_norm": _jax_layer_norm,
    "rms_norm": _jax_rms_norm,
}
