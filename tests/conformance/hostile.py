"""Implementations that attack the run rather than get a value wrong, for the isolation tests.

Each is normref's layer norm except where it hangs, aborts, exits, writes into its input or
returns something else than ``y``; most do so only for float32 input, so that a run also
has a float64 row that must pass after it (the worker restarted).
"""

from __future__ import annotations

import os
import time

import numpy as np

from normref import layer_norm


def hangs_on_float32(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    if x.dtype == np.float32:
        time.sleep(3600)
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def hangs_on_one_case(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    """Hangs on layer norm's case with a batch of one (its edge shape is (4, 6, 5))."""
    if x.shape == (1, 6, 5):
        time.sleep(3600)
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def aborts_on_float32(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    if x.dtype == np.float32:
        os.abort()
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def exits(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    raise SystemExit(0)


def writes_into_x(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    y = layer_norm(x, gamma, beta, axes=axes, eps=eps)
    x[...] = 0
    return y


def sleeps(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    time.sleep(0.5)
    return layer_norm(x, gamma, beta, axes=axes, eps=eps)


def returns_statistics(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
    return layer_norm(x, gamma, beta, axes=axes, eps=eps), x.mean(), x.var()


def takes_axis(x, gamma=None, beta=None, *, axis=-1, eps=1e-5):
    return layer_norm(x, gamma, beta, axes=(axis,), eps=eps)


def torch_batch_norm_train_in_place(
    x, running_mean, running_var, gamma=None, beta=None, *, momentum, eps=1e-5, axis=1
):
    """On torch tensors: ``torch.nn.functional.batch_norm`` in training mode, which updates the
    running statistics it is given in place, returned as copies."""
    import torch

    moved = torch.movedim(x, axis, 1)
    y = torch.nn.functional.batch_norm(
        moved, running_mean, running_var, gamma, beta, training=True, momentum=momentum, eps=eps
    )
    return torch.movedim(y, 1, axis), (running_mean.clone(), running_var.clone())
