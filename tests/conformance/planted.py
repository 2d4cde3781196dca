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
