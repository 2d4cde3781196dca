"""Known-wrong implementations (and a right one), with normref's signatures, for the tests.

Each is written directly in NumPy, independently of normref, so that a test
can plant it and assert that the suite reports the bug it contains.
"""

from __future__ import annotations

import numpy as np


def _axes(x: np.ndarray, axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a % x.ndim for a in axes)


def _affine(y: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _stats(x: np.ndarray, axes: tuple[int, ...], ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (
        np.prod([x.shape[a] for a in axes]) - ddof
    )
    return mean, var


def layer_norm(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Right: statistics in float64, the result rounded once to x's dtype."""
    mean, var = _stats(x, _axes(x, axes))
    return _affine((x - mean) / np.sqrt(var + eps), gamma, beta).astype(x.dtype)


def layer_norm_ignoring_eps(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: ignores the ``eps`` it is given and uses flax's default, 1e-6."""
    return layer_norm(x, gamma, beta, axes=axes, eps=1e-6)


def layer_norm_hard_coding_the_default_eps(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: ignores the ``eps`` it is given and uses 1e-5, torch's default and the eps every
    case but one passes."""
    return layer_norm(x, gamma, beta, axes=axes, eps=1e-5)


def layer_norm_unbiased(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: normalizes with the unbiased variance."""
    mean, var = _stats(x, _axes(x, axes), ddof=1)
    return _affine((x - mean) / np.sqrt(var + eps), gamma, beta).astype(x.dtype)


def layer_norm_eps_outside(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: ``eps`` added to the standard deviation, outside the square root."""
    mean, var = _stats(x, _axes(x, axes))
    return _affine((x - mean) / (np.sqrt(var) + eps), gamma, beta).astype(x.dtype)


def layer_norm_in_input_dtype(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong for float16: the squares and their sum stay in the input's dtype (overflow)."""
    ax = _axes(x, axes)
    n = np.prod([x.shape[a] for a in ax])
    mean = x.sum(axis=ax, keepdims=True, dtype=x.dtype) / x.dtype.type(n)
    var = ((x - mean) * (x - mean)).sum(axis=ax, keepdims=True, dtype=x.dtype) / x.dtype.type(n)
    return _affine((x - mean) / np.sqrt(var + x.dtype.type(eps)), gamma, beta)


def layer_norm_vjp_without_mean_term(dy, x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: the x-gradient lacks the mean term ``- mean(g) / s``; gamma and beta are right."""
    ax = _axes(x, axes)
    mean, var = _stats(x, ax)
    s = np.sqrt(var + eps)
    x_hat = (x - mean) / s
    g = dy * (1.0 if gamma is None else gamma)
    dx = (g - x_hat * (g * x_hat).mean(axis=ax, keepdims=True)) / s
    other = tuple(a for a in range(x.ndim) if a not in ax)
    d_gamma = None if gamma is None else (dy * x_hat).sum(axis=other).astype(gamma.dtype)
    d_beta = None if beta is None else dy.sum(axis=other).astype(beta.dtype)
    return dx.astype(x.dtype), d_gamma, d_beta


def batch_norm_train_torch(
    x, running_mean, running_var, gamma=None, beta=None, *, momentum, eps=1e-5, axis=1
):
    """Right, as torch: momentum weighs the batch; the running variance is unbiased."""
    return _batch_norm_train(x, running_mean, running_var, gamma, beta, momentum, eps, axis)


def batch_norm_train_old_weight(
    x, running_mean, running_var, gamma=None, beta=None, *, momentum, eps=1e-5, axis=1
):
    """Wrong: torch's layer, but with momentum taken as the weight of the *old* value."""
    return _batch_norm_train(x, running_mean, running_var, gamma, beta, 1 - momentum, eps, axis)


def batch_norm_train_biased_batch_weight(
    x, running_mean, running_var, gamma=None, beta=None, *, momentum, eps=1e-5, axis=1
):
    """Momentum weighs the batch (torch's, normref's meaning) and the running variance is biased
    (flax's, normref's): right as normref; as torch, one field off; as flax, one field off."""
    return _batch_norm_train(x, running_mean, running_var, gamma, beta, momentum, eps, axis, 0)


def batch_norm_train_biased_old_weight(
    x, running_mean, running_var, gamma=None, beta=None, *, momentum, eps=1e-5, axis=1
):
    """Momentum weighs the old value (flax's meaning) and the running variance is biased: as
    normref, one field off."""
    return _batch_norm_train(x, running_mean, running_var, gamma, beta, 1 - momentum, eps, axis, 0)


def _batch_norm_train(
    x, running_mean, running_var, gamma, beta, batch_weight, eps, axis, running_var_correction=1
):
    ax = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    mean, var = _stats(x, ax)
    y = (x - mean) / np.sqrt(var + eps)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    n = x.size // x.shape[axis % x.ndim]
    new_mean = (1 - batch_weight) * running_mean + batch_weight * mean.ravel()
    corrected = var.ravel() * n / (n - running_var_correction)
    new_var = (1 - batch_weight) * running_var + batch_weight * corrected
    dtype = running_mean.dtype
    return y.astype(x.dtype), (new_mean.astype(dtype), new_var.astype(dtype))


def layer_norm_default_eps_1e6(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-6):
    """Right, but with eps defaulting to 1e-6 (flax's and timm's) where normref's is 1e-5."""
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def layer_norm_returns_input(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong in a way no convention explains: no normalization at all."""
    return x.copy()


def layer_norm_crashing_on_size_one(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Right, except that it raises on any input with an axis of size 1."""
    if 1 in x.shape:
        msg = f"cannot normalize x of shape {x.shape}"
        raise RuntimeError(msg)
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def layer_norm_torch(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Right, on torch tensors, written with torch's elementwise operations (for autograd)."""
    import torch

    dims = [a % x.ndim for a in axes]
    wide = x.double()
    mean = wide.mean(dim=dims, keepdim=True)
    var = ((wide - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (wide - mean) * torch.rsqrt(var + eps)
    y = y if gamma is None else y * gamma.double()
    y = y if beta is None else y + beta.double()
    return y.to(x.dtype)


def layer_norm_jax(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Right, on JAX arrays, written with jax.numpy (for jax.vjp)."""
    import jax.numpy as jnp

    dims = tuple(a % x.ndim for a in axes)
    wide = x.astype(jnp.float64)
    mean = wide.mean(axis=dims, keepdims=True)
    var = ((wide - mean) ** 2).mean(axis=dims, keepdims=True)
    y = (wide - mean) / jnp.sqrt(var + eps)
    y = y if gamma is None else y * gamma
    y = y if beta is None else y + beta
    return y.astype(x.dtype)


# ----------------------------------------------------------------------------- structural bugs


def _layer_norm_parts(x, gamma, axes, eps):
    """x_hat, s, the normalized axes and the others, in float64."""
    ax = _axes(x, axes)
    mean, var = _stats(x.astype(np.float64), ax)
    s = np.sqrt(var + eps)
    other = tuple(a for a in range(x.ndim) if a not in ax)
    return (x - mean) / s, s, ax, other


def layer_norm_vjp_without_variance_term(dy, x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: the x-gradient lacks the variance term ``- x_hat mean(g x_hat) / s``."""
    x_hat, s, ax, other = _layer_norm_parts(x, gamma, axes, eps)
    g = dy * (1.0 if gamma is None else gamma)
    dx = (g - g.mean(axis=ax, keepdims=True)) / s
    d_gamma = None if gamma is None else (dy * x_hat).sum(axis=other).astype(gamma.dtype)
    d_beta = None if beta is None else dy.sum(axis=other).astype(beta.dtype)
    return dx.astype(x.dtype), d_gamma, d_beta


def layer_norm_vjp_swapped(dy, x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong: dgamma and dbeta returned in each other's place."""
    x_hat, s, ax, other = _layer_norm_parts(x, gamma, axes, eps)
    g = dy * (1.0 if gamma is None else gamma)
    dx = (g - g.mean(axis=ax, keepdims=True) - x_hat * (g * x_hat).mean(axis=ax, keepdims=True)) / s
    d_gamma = None if gamma is None else (dy * x_hat).sum(axis=other).astype(gamma.dtype)
    d_beta = None if beta is None else dy.sum(axis=other).astype(beta.dtype)
    return dx.astype(x.dtype), d_beta, d_gamma


def layer_norm_vjp_dgamma_over_the_normalized_axes(
    dy, x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5
):
    """Wrong: dgamma summed over the normalized axes, not over the others (another shape)."""
    x_hat, s, ax, other = _layer_norm_parts(x, gamma, axes, eps)
    g = dy * (1.0 if gamma is None else gamma)
    dx = (g - g.mean(axis=ax, keepdims=True) - x_hat * (g * x_hat).mean(axis=ax, keepdims=True)) / s
    d_gamma = None if gamma is None else (dy * x_hat).sum(axis=ax).astype(gamma.dtype)
    d_beta = None if beta is None else dy.sum(axis=other).astype(beta.dtype)
    return dx.astype(x.dtype), d_gamma, d_beta


def batch_norm(x, gamma=None, beta=None, *, eps=1e-5, axis=1):
    """Right: batch statistics over every axis but the channel axis."""
    y, _ = _batch_norm_parts(x, gamma, beta, eps, axis)
    return y


def _batch_norm_parts(x, gamma, beta, eps, axis):
    channel = axis % x.ndim
    ax = tuple(a for a in range(x.ndim) if a != channel)
    mean, var = _stats(x.astype(np.float64), ax)
    s = np.sqrt(var + eps)
    x_hat = (x - mean) / s
    shape = [1] * x.ndim
    shape[channel] = -1
    y = x_hat if gamma is None else x_hat * gamma.reshape(shape)
    y = y if beta is None else y + beta.reshape(shape)
    return y.astype(x.dtype), (x_hat, s, ax, shape)


def batch_norm_vjp_without_variance_term(dy, x, gamma=None, beta=None, *, eps=1e-5, axis=1):
    """Wrong: the x-gradient lacks the variance term."""
    _, (x_hat, s, ax, shape) = _batch_norm_parts(x, gamma, beta, eps, axis)
    g = dy * (1.0 if gamma is None else gamma.reshape(shape))
    dx = (g - g.mean(axis=ax, keepdims=True)) / s
    d_gamma = None if gamma is None else (dy * x_hat).sum(axis=ax).astype(gamma.dtype)
    d_beta = None if beta is None else dy.sum(axis=ax).astype(beta.dtype)
    return dx.astype(x.dtype), d_gamma, d_beta


def _channel_affine(y, gamma, beta, channel, ndim):
    shape = [1] * ndim
    shape[channel] = -1
    y = y if gamma is None else y * gamma.reshape(shape)
    return y if beta is None else y + beta.reshape(shape)


def group_norm_interleaved(x, num_groups, gamma=None, beta=None, *, eps=1e-5, axis=1):
    """Wrong: channel c goes to group c % num_groups, not to the block c // (C / num_groups)."""
    channel = axis % x.ndim
    moved = np.moveaxis(x.astype(np.float64), channel, 1)
    n, c = moved.shape[:2]
    split = moved.reshape(n, c // num_groups, num_groups, *moved.shape[2:])
    ax = (1, *range(3, split.ndim))
    mean, var = _stats(split, ax)
    y = ((split - mean) / np.sqrt(var + eps)).reshape(moved.shape)
    y = np.moveaxis(y, 1, channel)
    return _channel_affine(y, gamma, beta, channel, x.ndim).astype(x.dtype)


def rms_norm_subtracting_the_mean(x, gamma=None, *, axes=(-1,), eps=1e-6):
    """Wrong: subtracts the mean before dividing by the root mean square (a layer norm)."""
    ax = _axes(x, axes)
    mean, var = _stats(x.astype(np.float64), ax)
    y = (x - mean) / np.sqrt(var + eps)
    return (y if gamma is None else y * gamma).astype(x.dtype)


def instance_norm_over_the_batch_too(x, gamma=None, beta=None, *, eps=1e-5, axis=1):
    """Wrong: statistics per channel over the batch axis and the spatial ones (batch norm's)."""
    channel = axis % x.ndim
    ax = tuple(a for a in range(x.ndim) if a != channel)
    mean, var = _stats(x.astype(np.float64), ax)
    y = (x - mean) / np.sqrt(var + eps)
    return _channel_affine(y, gamma, beta, channel, x.ndim).astype(x.dtype)


def layer_norm_float32_in_float16(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong for float32: computes in float16 inside and returns float32."""
    if x.dtype != np.float32:
        return layer_norm(x, gamma, beta, axes=axes, eps=eps)
    half = np.float16
    low = x.astype(half)
    ax = _axes(x, axes)
    mean = low.mean(axis=ax, keepdims=True, dtype=half)
    var = ((low - mean) * (low - mean)).mean(axis=ax, keepdims=True, dtype=half)
    y = (low - mean) / np.sqrt(var + half(eps))
    y = y if gamma is None else y * gamma.astype(half)
    y = y if beta is None else y + beta.astype(half)
    return y.astype(np.float32)


BLOCK = 64
"""The block of :func:`layer_norm_blocked`."""


def layer_norm_blocked(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Wrong past 64 elements: a blocked kernel over the last axis whose loop covers whole blocks
    of 64 and drops the tail, which it leaves as the input."""
    if _axes(x, axes) != (x.ndim - 1,):
        return layer_norm(x, gamma, beta, axes=axes, eps=eps)
    y = np.array(x, dtype=np.float64)
    normalized = layer_norm(x.astype(np.float64), gamma, beta, axes=axes, eps=eps)
    whole = (x.shape[-1] // BLOCK) * BLOCK
    y[..., :whole] = normalized[..., :whole]
    if whole == 0:
        y = normalized
    return y.astype(x.dtype)


def batch_norm_naive_variance(x, gamma=None, beta=None, *, eps=1e-5, axis=1):
    """A one-pass variance E[x^2] - E[x]^2 in the input's dtype (not clamped)."""
    channel = axis % x.ndim
    ax = tuple(a for a in range(x.ndim) if a != channel)
    mean = x.mean(axis=ax, keepdims=True)
    var = (x * x).mean(axis=ax, keepdims=True) - mean * mean
    y = (x - mean) / np.sqrt(var + x.dtype.type(eps))
    return _channel_affine(y, gamma, beta, channel, x.ndim).astype(x.dtype)


def rms_norm_fixed_eps_in_float16(x, gamma=None, *, axes=(-1,), eps=1e-6):
    """Wrong twice at once, as haiku's RMSNorm differs from normref's: it ignores the eps it is
    given for 1e-5, and computes float16 input in float16."""
    ax = _axes(x, axes)
    wide = np.float16 if x.dtype == np.float16 else np.float64
    low = x.astype(wide)
    y = low / np.sqrt((low * low).mean(axis=ax, keepdims=True, dtype=wide) + wide(1e-5))
    return (y if gamma is None else y * gamma.astype(wide)).astype(x.dtype)


def with_wrong_eps(binding, factor=10.0):
    """``binding``'s layer built with ``factor`` times the ``eps`` the case gives: a wrapped
    layer with a wrong ``eps``, which the suite must report as failing."""
    import dataclasses

    from conformance.checked.cases import Prepared

    def run(prepared, model, backward):
        sample = prepared.sample.replace(eps=prepared.sample.kwargs["eps"] * factor)
        return binding.run(
            Prepared(prepared.case, prepared.dtype, sample, prepared.dy), model, backward
        )

    return dataclasses.replace(binding, label=f"{binding.label} (eps x {factor:g})", run=run)


def planted_eps_row(adapter, label, case, dtype="float32"):
    """The row of ``adapter``'s binding ``label``, its eps planted wrong, on ``case``."""
    from conformance.checked.cases import find_case
    from conformance.judging.runner import check_row

    binding = next(b for b in adapter.bindings if b.label == label)
    return check_row(with_wrong_eps(binding), find_case(case), dtype)
