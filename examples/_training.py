"""The pieces the training examples share: the digits data, a batch-norm MLP written by hand,
and a momentum-SGD loop.

The network is ``dense -> batch norm -> ReLU`` repeated, then a dense output layer and
softmax cross-entropy. Batch norm's forward, backward and running statistics are normref's
(:func:`normref.batch_norm_train`, :func:`normref.batch_norm_vjp`,
:func:`normref.batch_norm_inference`); the dense layers, the ReLU and the loss are written
out here with their backward, in NumPy, with no autograd framework. Parameters are a flat
dict from names (``dense0.w``, ``bn0.gamma``, ``bn0.beta``, ..., ``output.w``,
``output.b``) to float64 arrays; gradients are a dict with the same keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

import normref

Params = dict[str, np.ndarray]
GradientTransform = Callable[[Params, Params], Params]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # torch's meaning: running = 0.9 running + 0.1 batch
PIXELS, CLASSES = 64, 10
HIDDEN_LAYERS, HIDDEN_WIDTH = 4, 128  # the examples' network: 4 hidden layers of 128


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 8x8 digits, split once: pixels scaled to [0, 1] and centred by the
    training mean, labels 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Digits:
    """The digits data set (1797 images, 64 pixels, 10 classes), split stratified by class."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    images, labels = sklearn_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images / 16.0, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    mean = x_train.mean(axis=0)
    return Digits(x_train - mean, y_train, x_test - mean, y_test)


# ---------------------------------------------------------------------------
# Layers and their backward


def dense_vjp(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``y = x @ w`` (``x`` of shape (N, I), ``w`` of shape (I, O)): (dx, dw)."""
    return dy @ w.T, x.T @ dy


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of the softmax of ``logits`` (N, K) against integer ``labels`` (N,),
    and its gradient with respect to ``logits``: ``(softmax - one_hot) / N``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -float(log_probs[rows, labels].mean())
    dlogits = np.exp(log_probs)
    dlogits[rows, labels] -= 1.0
    return loss, dlogits / len(labels)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose largest logit is the label's."""
    return float((logits.argmax(axis=1) == labels).mean())


# ---------------------------------------------------------------------------
# The batch-norm MLP


def hidden_layer_count(params: Mapping[str, np.ndarray]) -> int:
    """The number of ``dense -> batch norm -> ReLU`` layers in ``params``."""
    return sum(1 for name in params if name.startswith("bn") and name.endswith(".gamma"))


def mlp_sizes(width: int = HIDDEN_WIDTH) -> tuple[int, ...]:
    """Layer widths of the examples' MLP on the digits: input, ``HIDDEN_LAYERS`` hidden
    layers of ``width``, classes."""
    return (PIXELS, *[width] * HIDDEN_LAYERS, CLASSES)


def init_mlp(rng: np.random.Generator, sizes: Sequence[int]) -> Params:
    """Random parameters of an MLP with layer widths ``sizes`` (input, hidden..., classes).

    Hidden dense layers have no bias (batch norm's beta takes its place) and He-normal
    weights, ``N(0, 2 / fan_in)``; batch norm starts at gamma = 1, beta = 0; the output
    layer has ``N(0, 1 / fan_in)`` weights and a zero bias.
    """
    params: Params = {}
    *hidden, classes = sizes[1:]
    fan_in = sizes[0]
    for i, width in enumerate(hidden):
        params[f"dense{i}.w"] = rng.standard_normal((fan_in, width)) * np.sqrt(2.0 / fan_in)
        params[f"bn{i}.gamma"] = np.ones(width)
        params[f"bn{i}.beta"] = np.zeros(width)
        fan_in = width
    params["output.w"] = rng.standard_normal((fan_in, classes)) / np.sqrt(fan_in)
    params["output.b"] = np.zeros(classes)
    return params


def init_running_stats(params: Mapping[str, np.ndarray]) -> list[normref.RunningStats]:
    """Running statistics of each batch-norm layer: mean 0, variance 1."""
    return [
        normref.RunningStats(
            np.zeros_like(params[f"bn{i}.gamma"]), np.ones_like(params[f"bn{i}.gamma"])
        )
        for i in range(hidden_layer_count(params))
    ]


@dataclass(frozen=True)
class Tape:
    """What the backward needs from a forward: each hidden layer's input and batch-norm
    input and output (before the ReLU), and the output layer's input."""

    layer_inputs: list[np.ndarray]
    pre_norm: list[np.ndarray]
    pre_relu: list[np.ndarray]
    features: np.ndarray


def mlp_forward(
    params: Mapping[str, np.ndarray],
    running: list[normref.RunningStats],
    x: np.ndarray,
    *,
    training: bool,
) -> tuple[np.ndarray, Tape, list[normref.RunningStats]]:
    """Logits of ``x``; the tape for :func:`mlp_backward`; the updated running statistics.

    In training, batch norm uses the batch's statistics and updates the running ones
    (:func:`normref.batch_norm_train`, torch's convention); in evaluation it uses the running
    ones (:func:`normref.batch_norm_inference`) and returns them unchanged.
    """
    layer_inputs, pre_norm, pre_relu, updated = [], [], [], []
    h = x
    for i, stats in enumerate(running):
        gamma, beta = params[f"bn{i}.gamma"], params[f"bn{i}.beta"]
        z = h @ params[f"dense{i}.w"]
        if training:
            normalized, stats = normref.batch_norm_train(
                z,
                stats.mean,
                stats.var,
                gamma,
                beta,
                momentum=BN_MOMENTUM,
                convention="torch",
                eps=BN_EPS,
            )
        else:
            normalized = normref.batch_norm_inference(
                z, stats.mean, stats.var, gamma, beta, eps=BN_EPS
            )
        layer_inputs.append(h)
        pre_norm.append(z)
        pre_relu.append(normalized)
        updated.append(stats)
        h = np.maximum(normalized, 0.0)
    logits = h @ params["output.w"] + params["output.b"]
    return logits, Tape(layer_inputs, pre_norm, pre_relu, h), updated


def mlp_backward(params: Mapping[str, np.ndarray], tape: Tape, dlogits: np.ndarray) -> Params:
    """Gradients of every parameter from the gradient of the logits of a training forward."""
    grads: Params = {"output.b": dlogits.sum(axis=0)}
    dh, grads["output.w"] = dense_vjp(dlogits, tape.features, params["output.w"])
    for i in reversed(range(len(tape.pre_norm))):
        dnormalized = dh * (tape.pre_relu[i] > 0)
        bn = normref.batch_norm_vjp(
            dnormalized, tape.pre_norm[i], params[f"bn{i}.gamma"], params[f"bn{i}.beta"], eps=BN_EPS
        )
        # gamma and beta are passed, so their gradients are arrays (None only when absent)
        grads[f"bn{i}.gamma"] = cast("np.ndarray", bn.gamma)
        grads[f"bn{i}.beta"] = cast("np.ndarray", bn.beta)
        dh, grads[f"dense{i}.w"] = dense_vjp(bn.x, tape.layer_inputs[i], params[f"dense{i}.w"])
    return grads


# ---------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainingRun:
    """The trained parameters and running statistics, the training loss at every step, and
    the test accuracy."""

    params: Params
    running: list[normref.RunningStats]
    losses: list[float]
    test_accuracy: float


def train(
    params: Params,
    data: Digits,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    momentum: float = 0.9,
    cosine_decay: bool = True,
    trainable: Mapping[str, np.ndarray] | None = None,
    transform_grads: GradientTransform | None = None,
) -> TrainingRun:
    """Momentum SGD on the softmax cross-entropy over shuffled mini-batches (``momentum=0``:
    plain SGD), the rate decayed to 0 along a cosine unless ``cosine_decay`` is False.

    ``trainable`` maps each parameter's name to a 0/1 mask of its shape (default: all
    ones); masked entries keep their initial values. ``transform_grads(grads, params)``
    (e.g. gradient clipping) is applied to the raw gradients before the mask. A step whose
    loss is not finite ends the run, with a test accuracy of NaN.
    """
    params = {name: value.copy() for name, value in params.items()}
    masks = trainable or {name: np.ones_like(value) for name, value in params.items()}
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    running = init_running_stats(params)
    rng = np.random.default_rng(seed)
    steps_per_epoch = max(1, len(data.y_train) // batch_size)
    total_steps = epochs * steps_per_epoch
    losses: list[float] = []
    for epoch in range(epochs):
        order = rng.permutation(len(data.y_train))
        for batch_index in range(steps_per_epoch):
            batch = order[batch_index * batch_size : (batch_index + 1) * batch_size]
            logits, tape, running = mlp_forward(params, running, data.x_train[batch], training=True)
            loss, dlogits = softmax_cross_entropy(logits, data.y_train[batch])
            losses.append(loss)
            if not np.isfinite(loss):
                return TrainingRun(params, running, losses, float("nan"))
            grads = mlp_backward(params, tape, dlogits)
            if transform_grads is not None:
                grads = transform_grads(grads, params)
            step = epoch * steps_per_epoch + batch_index
            rate = learning_rate
            if cosine_decay:
                rate *= 0.5 * (1.0 + np.cos(np.pi * step / total_steps))
            for name, mask in masks.items():
                velocity[name] = momentum * velocity[name] + mask * grads[name]
                params[name] = params[name] - rate * velocity[name]
    logits, _, _ = mlp_forward(params, running, data.x_test, training=False)
    return TrainingRun(params, running, losses, accuracy(logits, data.y_test))
