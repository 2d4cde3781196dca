"""The frameworks' counterparts of registry operations, as functions of the differentiable arrays.

Each entry maps a registry name to a builder: given the normref sample (for
its non-array arguments: ``eps``, ``num_groups``, ``axes``, ...) it returns a
function of the differentiable arrays, in the order of the operation's
``OpSpec.differentiable``, in that framework's arrays.

torch
    The library's own functional layer (``torch.nn.functional``) where it has
    one; the backward is torch's autograd. torch has no whitening, Scaled WS
    or gradient clipping layer: those are written with torch operations as
    their reference implementations write them (ZCA through
    ``torch.linalg.eigh``; weight standardization through ``batch_norm``, as
    timm's ``StdConv2d``; Scaled WS as the NFNets ``WSConv2D``; AGC as
    timm's ``adaptive_clip_grad``).
jax
    The textbook formula in ``jax.numpy`` (two-pass variance, biased), which
    XLA compiles and fuses under ``jax.jit``; the backward is ``jax.vjp``.
    JAX itself has no normalization layers, and flax's use the fast
    ``E[x^2] - E[x]^2`` variance by default, a different algorithm. AGC is
    optax's own ``adaptive_grad_clip``.

The other layers, weights and gradients of the literature (conditional norms, mean-only
batch norm, batch renorm, switchable norm, AdaIN, LRN, centred weight norm, OWN, ONI,
gradient centralization) are written once in Array API operations for both, as their
papers and reference code compute them (batch renorm's ``r`` and ``d`` behind the
framework's stop-gradient); for torch, conditional batch and instance norm are its
functional layers without an affine and the per-sample affine after them, and LRN is
``torch.nn.functional.local_response_norm``.

An operation without an entry here is timed for normref alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
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


def _defaults(sample: Sample, **defaults: Any) -> None:
    """The counterparts compute these defaults of normref's: the sample must not change them."""
    changed = {k: sample.kwargs[k] for k, v in defaults.items() if sample.kwargs.get(k, v) != v}
    if changed:
        msg = f"the framework counterparts compute {defaults}, got {changed}"
        raise ValueError(msg)


def _units_first(sample: Sample) -> tuple[int, ...]:
    """The fan-in axes of a weight whose output units are on axis 0 (OIHW, as torch's)."""
    if sample.kwargs["out_axis"] != 0:
        msg = f"the counterparts take units on axis 0, got out_axis={sample.kwargs['out_axis']}"
        raise ValueError(msg)
    return tuple(range(1, sample.args[next(iter(sample.args))].ndim))


def _channel_axis_1(sample: Sample) -> None:
    """A channel layer sample's channel axis must be 1, as torch's is."""
    if sample.kwargs["axis"] % sample.args["x"].ndim != 1:
        msg = f"torch's channel axis is 1, got axis={sample.kwargs['axis']}"
        raise ValueError(msg)


def _channels_first(sample: Sample) -> float:
    """``eps`` of a channel layer sample, whose channel axis must be 1 as torch's is."""
    _channel_axis_1(sample)
    return sample.kwargs["eps"]


def _per_channel(param: Any, ndim: int) -> Any:
    """A per-channel parameter shaped to broadcast against (N, C, *S)."""
    return param.reshape((-1,) + (1,) * (ndim - 2))


def _per_unit(param: Any, ndim: int) -> Any:
    """A per-unit parameter shaped to broadcast against an (O, ...) weight."""
    return param.reshape((-1,) + (1,) * (ndim - 1))


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


def _zca_layer(xp: Any, sample: Sample) -> Callable[..., Any]:
    """ZCA batch whitening with ``gamma`` and ``beta`` in Array API operations (torch or jax).

    The biased covariance of each group of ``group_size`` channels plus
    ``eps I``, decomposed by ``linalg.eigh``; ``y = U diag(1/sqrt(lambda)) U^T (x - mean)``.
    """
    eps, k = _channels_first(sample), sample.kwargs["group_size"]
    _defaults(sample, method="zca", correction=0)

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        n, c, *spatial = x.shape
        order = (1, 0, *range(2, x.ndim))
        rows = xp.reshape(xp.permute_dims(x, order), (c // k, k, -1))  # (G, D, M)
        centred = rows - xp.mean(rows, axis=-1, keepdims=True)
        cov = centred @ xp.matrix_transpose(centred) / centred.shape[-1]
        lam, u = xp.linalg.eigh(cov + eps * xp.eye(k, dtype=x.dtype))
        w = (u * (1 / xp.sqrt(lam))[..., None, :]) @ xp.matrix_transpose(u)
        y = xp.permute_dims(xp.reshape(w @ centred, (c, n, *spatial)), order)
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _torch_batch_whiten(sample: Sample) -> Callable[..., Any]:
    import array_api_compat.torch as xp

    return _zca_layer(xp, sample)


def _torch_weight_standardize(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    _units_first(sample)
    _defaults(sample, eps_mode="add", correction=0)
    eps = sample.kwargs["eps"]
    return lambda w: functional.batch_norm(
        w.reshape(1, w.shape[0], -1), None, None, training=True, momentum=0.0, eps=eps
    ).reshape_as(w)


def _nfnets_scaled_ws(xp: Any, sample: Sample) -> Callable[..., Any]:
    """Scaled WS as the NFNets ``WSConv2D`` computes it, in ``xp``'s operations (torch or jax.numpy).

    ``scale = gain * gamma / sqrt(max(N var, eps))``, ``w * scale - mean * scale``.
    """
    axes = _units_first(sample)
    _defaults(sample, eps_mode="max_fan_in")
    eps, gamma = sample.kwargs["eps"], sample.kwargs["gamma"]

    def f(w: Any, gain: Any) -> Any:
        fan_in = math.prod(w.shape[a] for a in axes)
        mean = xp.mean(w, axis=axes, keepdims=True)
        var = xp.mean((w - mean) ** 2, axis=axes, keepdims=True)
        scale = xp.clip(var * fan_in, min=eps) ** -0.5 * _per_unit(gain * gamma, w.ndim)
        return w * scale - mean * scale

    return f


def _torch_scaled_weight_standardize(sample: Sample) -> Callable[..., Any]:
    import array_api_compat.torch as xp

    return _nfnets_scaled_ws(xp, sample)


def _torch_adaptive_grad_clip(sample: Sample) -> Callable[..., Any]:
    import torch

    axes = _units_first(sample)
    clipping, eps = sample.kwargs["clipping"], sample.kwargs["eps"]

    def f(grad: Any, param: Any) -> Any:
        norm = partial(torch.linalg.vector_norm, dim=axes, keepdim=True)
        max_norm = norm(param).clamp(min=eps) * clipping
        grad_norm = norm(grad)
        clipped = grad * (max_norm / grad_norm.clamp(min=1e-6))
        return torch.where(grad_norm < max_norm, grad, clipped)

    return f


# ---------------------------------------------------------------------------- the literature's
# Written once in Array API operations (torch's through array_api_compat, jax.numpy's own), as
# the papers and their reference code compute them; ``stop`` is the framework's stop-gradient.


def _standardized(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> Any:
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    return centred / xp.sqrt(xp.mean(centred * centred, axis=axes, keepdims=True) + eps)


def _per_sample(param: Any, ndim: int) -> Any:
    """A per-sample, per-channel parameter ``(N, C)`` shaped to broadcast against (N, C, *S)."""
    return param.reshape(tuple(param.shape) + (1,) * (ndim - 2))


def _conditional(xp: Any, sample: Sample, *, batch: bool) -> Callable[..., Any]:
    """Batch or instance norm with per-sample gamma and beta (conditional normalization)."""
    eps = _channels_first(sample)

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        axes = (0, *range(2, x.ndim)) if batch else tuple(range(2, x.ndim))
        y = _standardized(xp, x, axes, eps)
        return y * _per_sample(gamma, x.ndim) + _per_sample(beta, x.ndim)

    return f


def _mean_only(xp: Any, sample: Sample) -> Callable[..., Any]:
    _channel_axis_1(sample)

    def f(x: Any, beta: Any) -> Any:
        axes = (0, *range(2, x.ndim))
        return x - xp.mean(x, axis=axes, keepdims=True) + _per_channel(beta, x.ndim)

    return f


def _batch_renorm(xp: Any, sample: Sample, stop: Callable[[Any], Any]) -> Callable[..., Any]:
    """Ioffe (2017), Algorithm 1, r and d held constant by ``stop``."""
    eps = _channels_first(sample)
    r_max, d_max = sample.kwargs["r_max"], sample.kwargs["d_max"]
    running = (sample.args["running_mean"], sample.args["running_var"])

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        axes = (0, *range(2, x.ndim))
        mean, var = (xp.asarray(_per_channel(a, x.ndim), dtype=x.dtype) for a in running)
        batch_mean = xp.mean(x, axis=axes, keepdims=True)
        centred = x - batch_mean
        sigma_b = xp.sqrt(xp.mean(centred * centred, axis=axes, keepdims=True) + eps)
        sigma = xp.sqrt(var + eps)
        r = stop(xp.clip(sigma_b / sigma, min=1 / r_max, max=r_max))
        d = stop(xp.clip((batch_mean - mean) / sigma, min=-d_max, max=d_max))
        y = centred / sigma_b * r + d
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _softmax(xp: Any, logits: Any) -> Any:
    e = xp.exp(logits - xp.max(logits))
    return e / xp.sum(e)


def _switchable(xp: Any, sample: Sample) -> Callable[..., Any]:
    """``SwitchNorm2d``'s training mode with biased two-pass variances (normref's definition)."""
    eps = _channels_first(sample)

    def f(x: Any, gamma: Any, beta: Any, mean_logits: Any, var_logits: Any) -> Any:
        groups = (tuple(range(2, x.ndim)), tuple(range(1, x.ndim)), (0, *range(2, x.ndim)))
        means = [xp.mean(x, axis=axes, keepdims=True) for axes in groups]
        variances = [
            xp.mean((x - m) * (x - m), axis=axes, keepdims=True)
            for m, axes in zip(means, groups, strict=True)
        ]
        a, b = _softmax(xp, mean_logits), _softmax(xp, var_logits)
        mean = a[0] * means[0] + a[1] * means[1] + a[2] * means[2]
        var = b[0] * variances[0] + b[1] * variances[1] + b[2] * variances[2]
        y = (x - mean) / xp.sqrt(var + eps)
        return y * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)

    return f


def _adain(xp: Any, sample: Sample) -> Callable[..., Any]:
    """The PyTorch port's ``adaptive_instance_normalization`` (statistics of the ``(N, C, -1)``
    view), with normref's correction."""
    eps, correction = _channels_first(sample), sample.kwargs["correction"]

    def stats(t: Any) -> tuple[Any, Any]:
        flat = xp.reshape(t, (t.shape[0], t.shape[1], -1))
        mean = xp.mean(flat, axis=-1, keepdims=True)
        var = xp.sum((flat - mean) ** 2, axis=-1, keepdims=True) / (flat.shape[-1] - correction)
        shape = (*t.shape[:2], *(1,) * (t.ndim - 2))
        return xp.reshape(mean, shape), xp.reshape(xp.sqrt(var + eps), shape)

    def f(x: Any, style: Any) -> Any:
        (mean_x, std_x), (mean_s, std_s) = stats(x), stats(style)
        return (x - mean_x) / std_x * std_s + mean_s

    return f


def _lrn(xp: Any, sample: Sample) -> Callable[..., Any]:
    """The squares' window sums by a zero-padded copy and ``size`` slices (torch's window)."""
    _channel_axis_1(sample)
    size = sample.args["size"]
    alpha, beta, k = (sample.kwargs[name] for name in ("alpha", "beta", "k"))

    def f(x: Any) -> Any:
        square = x * x
        pad = xp.zeros((x.shape[0], size - 1, *x.shape[2:]), dtype=x.dtype)
        padded = xp.concat([pad[:, : size // 2], square, pad[:, : (size - 1) // 2]], axis=1)
        window = padded[:, 0 : x.shape[1]]
        for offset in range(1, size):
            window = window + padded[:, offset : offset + x.shape[1]]
        return x / (k + alpha / size * window) ** beta

    return f


def _centred_weight_norm(xp: Any, sample: Sample) -> Callable[..., Any]:
    axes = _units_first(sample)
    eps = sample.kwargs.get("eps", 0.0)

    def f(v: Any, g: Any) -> Any:
        centred = v - xp.mean(v, axis=axes, keepdims=True)
        norm = xp.sqrt(xp.sum(centred * centred, axis=axes, keepdims=True) + eps)
        return _per_unit(g, v.ndim) * centred / norm

    return f


def _orthogonalized(xp: Any, sample: Sample, *, iterations: int | None) -> Callable[..., Any]:
    """OWN (``eigh``) or ONI (the code's Newton-Schulz steps), per group of units."""
    _units_first(sample)
    eps, size = sample.kwargs["eps"], sample.kwargs["group_size"]

    def f(v: Any) -> Any:
        z = xp.reshape(v, (v.shape[0] // size, size, -1))
        centred = z - xp.mean(z, axis=-1, keepdims=True)
        s = centred @ xp.matrix_transpose(centred) + eps * xp.eye(size, dtype=v.dtype)
        if iterations is None:
            lam, u = xp.linalg.eigh(s)
            w = (u / xp.sqrt(lam)[..., None, :]) @ xp.matrix_transpose(u) @ centred
        else:
            norm = xp.sqrt(xp.sum(s * s, axis=(-2, -1), keepdims=True))
            s = s / norm
            b = xp.broadcast_to(xp.eye(size, dtype=v.dtype), s.shape)
            for _ in range(iterations):
                b = 1.5 * b - 0.5 * (b @ b @ b) @ s
            w = b @ centred / xp.sqrt(norm)
        return xp.reshape(w, v.shape)

    return f


def _gradient_centralize(xp: Any, sample: Sample) -> Callable[..., Any]:
    axes = _units_first(sample)
    return lambda grad: grad - xp.mean(grad, axis=axes, keepdims=True)


def _literature(xp: Any, stop: Callable[[Any], Any]) -> dict[str, Builder]:
    """The literature's operations in ``xp``'s arrays, ``stop`` its stop-gradient."""
    return {
        "conditional_batch_norm": partial(_conditional, xp, batch=True),
        "conditional_instance_norm": partial(_conditional, xp, batch=False),
        "mean_only_batch_norm": partial(_mean_only, xp),
        "batch_renorm": lambda sample: _batch_renorm(xp, sample, stop),
        "switchable_norm": partial(_switchable, xp),
        "adaptive_instance_norm": partial(_adain, xp),
        "local_response_norm": partial(_lrn, xp),
        "centered_weight_norm": partial(_centred_weight_norm, xp),
        "orthogonal_weight_norm": partial(_orthogonalized, xp, iterations=None),
        "oni_weight_norm": lambda sample: _orthogonalized(
            xp, sample, iterations=sample.kwargs["iterations"]
        ),
        "gradient_centralize": partial(_gradient_centralize, xp),
    }


def _torch_conditional(sample: Sample, *, batch: bool) -> Callable[..., Any]:
    """``functional.batch_norm`` or ``instance_norm`` without an affine, then the per-sample one
    (as conditional batch norm, conditional instance norm and FiLM are written in torch)."""
    from torch.nn import functional

    eps = _channels_first(sample)

    def f(x: Any, gamma: Any, beta: Any) -> Any:
        if batch:
            y = functional.batch_norm(x, None, None, training=True, eps=eps)
        else:
            y = functional.instance_norm(x, use_input_stats=True, eps=eps)
        return y * _per_sample(gamma, x.ndim) + _per_sample(beta, x.ndim)

    return f


def _torch_local_response_norm(sample: Sample) -> Callable[..., Any]:
    from torch.nn import functional

    _channel_axis_1(sample)
    size = sample.args["size"]
    alpha, beta, k = (sample.kwargs[name] for name in ("alpha", "beta", "k"))
    return lambda x: functional.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)


def _torch_literature() -> dict[str, Builder]:
    def builder(name: str) -> Builder:
        def build(sample: Sample) -> Callable[..., Any]:
            import array_api_compat.torch as xp

            return _literature(xp, lambda t: t.detach())[name](sample)

        return build

    return {
        **{name: builder(name) for name in _literature(None, lambda t: t)},
        "conditional_batch_norm": partial(_torch_conditional, batch=True),
        "conditional_instance_norm": partial(_torch_conditional, batch=False),
        "local_response_norm": _torch_local_response_norm,
    }


def _jax_literature() -> dict[str, Builder]:
    def builder(name: str) -> Builder:
        def build(sample: Sample) -> Callable[..., Any]:
            import jax
            import jax.numpy as jnp

            return _literature(jnp, jax.lax.stop_gradient)[name](sample)

        return build

    return {name: builder(name) for name in _literature(None, lambda t: t)}


TORCH: dict[str, Builder] = {
    "batch_norm": _torch_batch_norm,
    "group_norm": _torch_group_norm,
    "instance_norm": _torch_instance_norm,
    "layer_norm": _torch_layer_norm,
    "rms_norm": _torch_rms_norm,
    "batch_whiten": _torch_batch_whiten,
    "weight_standardize": _torch_weight_standardize,
    "scaled_weight_standardize": _torch_scaled_weight_standardize,
    "adaptive_grad_clip": _torch_adaptive_grad_clip,
    **_torch_literature(),
}

# ---------------------------------------------------------------------------- jax


def _jax_standardized(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    import jax
    import jax.numpy as jnp

    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    variance = jnp.mean(centred * centred, axis=axes, keepdims=True)
    return centred * jax.lax.rsqrt(variance + eps)


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


def _jax_batch_whiten(sample: Sample) -> Callable[..., Any]:
    import jax.numpy as jnp

    return _zca_layer(jnp, sample)


def _jax_weight_standardize(sample: Sample) -> Callable[..., Any]:
    axes = _units_first(sample)
    _defaults(sample, eps_mode="add", correction=0)
    return partial(_jax_standardized, axes=axes, eps=sample.kwargs["eps"])


def _jax_scaled_weight_standardize(sample: Sample) -> Callable[..., Any]:
    import jax.numpy as jnp

    return _nfnets_scaled_ws(jnp, sample)


def _jax_adaptive_grad_clip(sample: Sample) -> Callable[..., Any]:
    import optax

    clip = optax.adaptive_grad_clip(
        sample.kwargs["clipping"], eps=sample.kwargs["eps"], axis=_units_first(sample)
    )
    return lambda grad, param: clip.update(grad, clip.init(param), param)[0]


JAX: dict[str, Builder] = {
    "batch_norm": _jax_batch_norm,
    "group_norm": _jax_group_norm,
    "instance_norm": _jax_instance_norm,
    "layer_norm": _jax_layer_norm,
    "rms_norm": _jax_rms_norm,
    "batch_whiten": _jax_batch_whiten,
    "weight_standardize": _jax_weight_standardize,
    "scaled_weight_standardize": _jax_scaled_weight_standardize,
    "adaptive_grad_clip": _jax_adaptive_grad_clip,
    **_jax_literature(),
}
