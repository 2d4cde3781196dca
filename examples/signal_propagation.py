"""Signal propagation in deep residual networks at initialization (Brock, De & Smith,
"Characterizing Signal Propagation to Close the Performance Gap in Unnormalized ResNets",
ICLR 2021, sec. 3 and 4).

A residual stack ``x_{l+1} = x_l + f(x_l)`` of fully connected blocks with fresh random
weights, ``x_0 ~ N(0, 1)`` of shape (batch, width). Without normalization the second moment
of the activations doubles at every block (2^l); with batch norm on the branch it grows
linearly (1 + l); a normalizer-free network (branch ``alpha * f(x / beta_l)`` with Scaled WS
and ``beta_l`` from :func:`normref.nf_expected_stds`) grows as ``1 + l alpha^2``, the same
linear law without any activation statistics.

* Linear branches make each law exact (see ``tests/test_residual.py``, which checks them on
  this simulation).
* ReLU branches (He-initialized without normalization, after batch norm, and NF with Scaled
  WS of ``nonlinearity_gamma("relu")``) follow the same laws approximately.
* NF without weight standardization (``gamma * relu`` into plain ``N(0, 1/C)`` weights)
  shows the mean shift that Scaled WS removes: ReLU outputs have a positive mean, which
  weights whose rows do not sum to zero turn into a per-channel mean that grows with depth
  (the squared channel mean per block).
* An NF-ResNet-50's stage structure (3, 4, 6, 3 blocks, the first of each stage a transition
  block whose shortcut also sees ``x / beta``) against :func:`normref.nf_expected_stds`.

Each statistic is the mean over independent networks (replicates) of
:func:`normref.signal_propagation`'s per-block values.

Run ``python -m examples.signal_propagation [--fast] [--out DIR]``: the tables, and the
figures ``signal_propagation.png``, ``signal_propagation_mean_shift.png`` and
``signal_propagation_nf_resnet50.png``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

import normref
from examples import _output

LINEAR_KINDS = ("plain", "normalized", "normalizer_free")
RELU_KINDS = ("relu_plain", "relu_normalized", "relu_normalizer_free", "relu_normalizer_free_no_ws")
KINDS = LINEAR_KINDS + RELU_KINDS
LABELS = {
    "plain": "no normalization",
    "normalized": "batch norm",
    "normalizer_free": "NF, Scaled WS",
    "relu_plain": "no normalization",
    "relu_normalized": "batch norm",
    "relu_normalizer_free": "NF, Scaled WS",
    "relu_normalizer_free_no_ws": "NF without WS",
}
SHORT_LABELS = {
    "plain": "lin plain",
    "normalized": "lin BN",
    "normalizer_free": "lin NF",
    "relu_plain": "ReLU plain",
    "relu_normalized": "ReLU BN",
    "relu_normalizer_free": "ReLU NF",
    "relu_normalizer_free_no_ws": "ReLU NF no WS",
}
LAW_KINDS = tuple(kind for kind in KINDS if kind != "relu_normalizer_free_no_ws")
LAW_NAMES = {"plain": "2^l", "normalized": "1 + l", "normalizer_free": "1 + l alpha^2"}
LAW_FORMULAS = {"plain": "$2^l$", "normalized": "$1 + l$", "normalizer_free": "$1 + l\\alpha^2$"}
TOLERANCES = {"linear": 0.02, "relu": 0.10}  # relative, at the last block
NF_RESNET50_STAGES = (3, 4, 6, 3)
# nonlinearity_gamma returns a float (a tuple only with return_error=True)
RELU_GAMMA = cast("float", normref.nonlinearity_gamma("relu"))  # 1 / std(relu(z)), z ~ N(0, 1)
IDENTITY_GAMMA = cast("float", normref.nonlinearity_gamma("identity"))


@dataclass(frozen=True)
class Settings:
    """Network size, depth, alpha, and the number of independent networks averaged."""

    replicates: int
    width: int = 256
    batch: int = 256
    depth: int = 8
    alpha: float = 0.5


FULL = Settings(replicates=128)
FAST = Settings(replicates=64, batch=128)


def law(kind: str, depth: int, alpha: float) -> float:
    """E[x_depth^2] by the law of ``kind`` (one of ``LAW_KINDS``), from E[x_0^2] = 1."""
    base = kind.removeprefix("relu_")
    if kind not in LAW_KINDS:
        msg = f"kind {kind!r} has no law; those with one are {LAW_KINDS}"
        raise ValueError(msg)
    if base == "plain":
        return 2.0**depth
    if base == "normalized":
        return 1.0 + depth
    return 1.0 + depth * alpha**2


def linear_map(weights: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``h -> h @ weights.T``: a dense layer with ``(out, in)`` weights."""
    return lambda h: h @ weights.T


def relu_then(weights: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``h -> relu(h) @ weights.T``: a ReLU branch with ``(out, in)`` weights."""
    return lambda h: np.maximum(h, 0.0) @ weights.T


def residual_block(
    kind: str, x: np.ndarray, w: np.ndarray, *, beta: float, alpha: float
) -> np.ndarray:
    """One block of network ``kind`` with the ``N(0, 1)`` matrix ``w`` (width x width).

    ``plain``: ``x W``, ``W = w / sqrt(C)`` (variance preserving, no normalization);
    ``normalized``: ``batch_norm(x) W``; ``normalizer_free``: ``alpha (x / beta) What^T``,
    ``What`` the Scaled WS of ``w``. The ``relu_`` kinds put a ReLU before the weights, with
    He's ``W = w sqrt(2 / C)`` and Scaled WS's gain ``nonlinearity_gamma("relu")``;
    ``relu_normalizer_free_no_ws`` scales the ReLU by that gain instead and keeps ``w / sqrt(C)``.
    """
    width = w.shape[0]
    if kind == "plain":
        return x + x @ (w / math.sqrt(width))
    if kind == "normalized":
        return x + normref.batch_norm(x, eps=1e-5) @ (w / math.sqrt(width))
    if kind == "normalizer_free":
        w_hat = normref.scaled_weight_standardize(w, gamma=IDENTITY_GAMMA)
        return normref.nf_residual(x, linear_map(w_hat), alpha=alpha, beta=beta)
    if kind == "relu_plain":
        return x + np.maximum(x, 0.0) @ (w * math.sqrt(2.0 / width))
    if kind == "relu_normalized":
        return x + np.maximum(normref.batch_norm(x, eps=1e-5), 0.0) @ (w * math.sqrt(2.0 / width))
    if kind == "relu_normalizer_free":
        w_hat = normref.scaled_weight_standardize(w, gamma=RELU_GAMMA)
        return normref.nf_residual(x, relu_then(w_hat), alpha=alpha, beta=beta)
    if kind == "relu_normalizer_free_no_ws":
        w_scaled = RELU_GAMMA * w / math.sqrt(width)
        return normref.nf_residual(x, relu_then(w_scaled), alpha=alpha, beta=beta)
    msg = f"kind must be one of {KINDS}, got {kind!r}"
    raise ValueError(msg)


def block_statistics(
    kind: str, seed: int, *, width: int = 128, batch: int = 256, depth: int = 8, alpha: float = 0.5
) -> normref.SignalPropagation:
    """:func:`normref.signal_propagation` of ``x_0, ..., x_depth`` of one network ``kind``
    (random input and weights from ``seed``)."""
    if kind not in KINDS:
        msg = f"kind must be one of {KINDS}, got {kind!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width))
    activations = [x]
    for beta in normref.nf_expected_stds([depth], alpha):
        x = residual_block(kind, x, rng.standard_normal((width, width)), beta=beta, alpha=alpha)
        activations.append(x)
    return normref.signal_propagation(activations, channel_axis=1)


def mean_squares(
    kind: str, seed: int, *, width: int = 128, batch: int = 256, depth: int = 8, alpha: float = 0.5
) -> list[float]:
    """E[x_l^2] for l = 0..depth (per-channel squared mean + variance, averaged over channels)
    of one network ``kind``; see :func:`residual_block` for the kinds."""
    stats = block_statistics(kind, seed, width=width, batch=batch, depth=depth, alpha=alpha)
    return [float(m + v) for m, v in zip(stats.squared_mean, stats.variance, strict=True)]


@dataclass(frozen=True)
class Averaged:
    """Per block, the mean over the replicate networks of the average squared channel mean
    and the average channel variance."""

    squared_mean: np.ndarray
    variance: np.ndarray

    @property
    def mean_square(self) -> np.ndarray:
        """E[x_l^2] per block."""
        return self.squared_mean + self.variance


def average_statistics(kind: str, settings: Settings) -> Averaged:
    """:func:`block_statistics` of ``settings.replicates`` networks (seeds 0, 1, ...), averaged."""
    runs = [
        block_statistics(
            kind,
            seed,
            width=settings.width,
            batch=settings.batch,
            depth=settings.depth,
            alpha=settings.alpha,
        )
        for seed in range(settings.replicates)
    ]
    return Averaged(
        np.mean([run.squared_mean for run in runs], axis=0),
        np.mean([run.variance for run in runs], axis=0),
    )


def nf_resnet_input_mean_squares(seed: int, settings: Settings) -> np.ndarray:
    """E[x^2] of each block's input in one network of the NF-ResNet-50 stage structure, ReLU
    branches with Scaled WS; each transition block's shortcut is a Scaled-WS linear map of
    ``x / beta`` (``nf_residual(shortcut_fn=...)``). The width stays ``settings.width``
    throughout (``nf_residual`` keeps the shape of ``x``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((settings.batch, settings.width))
    betas = iter(normref.nf_expected_stds(NF_RESNET50_STAGES, settings.alpha))
    inputs = []
    for blocks in NF_RESNET50_STAGES:
        for index in range(blocks):
            inputs.append(x)
            branch = normref.scaled_weight_standardize(
                rng.standard_normal((settings.width, settings.width)), gamma=RELU_GAMMA
            )
            shortcut = None
            if index == 0:
                shortcut = normref.scaled_weight_standardize(
                    rng.standard_normal((settings.width, settings.width)), gamma=IDENTITY_GAMMA
                )
            x = normref.nf_residual(
                x,
                relu_then(branch),
                alpha=settings.alpha,
                beta=next(betas),
                shortcut_fn=None if shortcut is None else linear_map(shortcut),
            )
    stats = normref.signal_propagation(inputs, channel_axis=1)
    return np.asarray(stats.squared_mean) + np.asarray(stats.variance)


def nf_resnet_input_stds(settings: Settings) -> np.ndarray:
    """The input standard deviation (root mean square) of each NF-ResNet-50 block, over
    ``settings.replicates`` networks."""
    runs = [nf_resnet_input_mean_squares(seed, settings) for seed in range(settings.replicates)]
    return np.sqrt(np.mean(runs, axis=0))


def law_values(kind: str, settings: Settings) -> np.ndarray:
    """The law of ``kind`` at every block 0..depth."""
    return np.array([law(kind, level, settings.alpha) for level in range(settings.depth + 1)])


def plot_laws(averages: dict[str, Averaged], settings: Settings, out: Path) -> Path:
    """E[x_l^2] against depth on a log scale, linear and ReLU branches side by side, the laws
    drawn as lines and the simulations as markers."""
    figure = _output.new_figure(2)
    levels = np.arange(settings.depth + 1)
    colors = {"plain": "tab:red", "normalized": "tab:blue", "normalizer_free": "tab:green"}
    for axes, kinds, title in zip(
        figure.axes, (LINEAR_KINDS, RELU_KINDS), ("Linear branches", "ReLU branches"), strict=True
    ):
        for kind in kinds:
            base = kind.removeprefix("relu_")
            color = colors.get(base, "tab:purple")
            if kind in LAW_KINDS:
                axes.plot(levels, law_values(kind, settings), color=color, linewidth=1, alpha=0.6)
                label = f"{LABELS[kind]} (law {LAW_FORMULAS[base]})"
            else:
                label = f"{LABELS[kind]} (no law: mean shift)"
            marker = "o" if kind in LAW_KINDS else "D"
            axes.plot(levels, averages[kind].mean_square, marker, color=color, label=label)
        axes.set_yscale("log")
        axes.set_xlabel("residual block l")
        axes.set_ylabel("$E[x_l^2]$ (log scale)")
        axes.set_title(f"{title}: markers simulated, lines the laws ($\\alpha$ = {settings.alpha})")
        axes.legend()
    return _output.save_figure(figure, out, "signal_propagation")


def plot_mean_shift(averages: dict[str, Averaged], settings: Settings, out: Path) -> Path:
    """The average squared channel mean and channel variance per block of the NF networks with
    and without Scaled WS."""
    figure = _output.new_figure(2)
    levels = np.arange(settings.depth + 1)
    squared_mean_axes, variance_axes = figure.axes
    for kind, color in (
        ("relu_normalizer_free", "tab:green"),
        ("relu_normalizer_free_no_ws", "tab:purple"),
    ):
        squared_mean_axes.plot(
            levels, averages[kind].squared_mean, "-o", color=color, label=LABELS[kind]
        )
        variance_axes.plot(levels, averages[kind].variance, "-o", color=color, label=LABELS[kind])
    variance_axes.plot(
        levels, law_values("relu_normalizer_free", settings), "k:", label="$1 + l\\alpha^2$"
    )
    squared_mean_axes.plot(
        levels,
        averages["relu_normalizer_free"].mean_square / settings.batch,
        "k:",
        label="sampling level of a batch mean, $E[x_l^2]$ / batch",
    )
    squared_mean_axes.set_yscale("log")
    squared_mean_axes.set_ylabel("average squared channel mean (log scale)")
    squared_mean_axes.set_title("Mean shift: what Scaled WS removes")
    variance_axes.set_ylabel("average channel variance")
    variance_axes.set_title("Channel variance")
    for axes in figure.axes:
        axes.set_xlabel("residual block l")
        axes.legend()
    return _output.save_figure(figure, out, "signal_propagation_mean_shift")


def plot_nf_resnet(measured: np.ndarray, expected: Sequence[float], out: Path) -> Path:
    """Measured and expected input std of each block of the NF-ResNet-50 stage structure."""
    figure = _output.new_figure(width=7.0)
    (axes,) = figure.axes
    blocks = np.arange(len(expected))
    axes.step(blocks, expected, where="mid", color="black", label="nf_expected_stds")
    axes.plot(blocks, measured, "o", color="tab:green", label="simulated (ReLU, Scaled WS)")
    first_blocks = np.cumsum((0, *NF_RESNET50_STAGES))
    for stage, (first, end) in enumerate(itertools.pairwise(first_blocks)):
        if first > 0:
            axes.axvline(first - 0.5, color="gray", linestyle=":")
        axes.text(
            (first + end - 1) / 2,
            0.97,
            f"stage {stage + 1}",
            ha="center",
            va="top",
            transform=axes.get_xaxis_transform(),
        )
    axes.set_xticks(blocks)
    axes.margins(y=0.12)
    axes.set_xlabel("block (dotted: stage boundaries; the first block of a stage is a transition)")
    axes.set_ylabel("standard deviation of the block's input")
    axes.set_title(f"NF-ResNet-50 stage structure {NF_RESNET50_STAGES}")
    axes.legend(loc="lower right")
    return _output.save_figure(figure, out, "signal_propagation_nf_resnet50")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Simulate every kind and the NF-ResNet-50 structure, print the tables, save the figures;
    return the per-block ``mean_square``, ``squared_mean`` and ``variance`` of each kind, the
    ``nf_resnet50`` block input stds (``measured``, ``expected``), the ``settings`` and the
    ``figures``' paths."""
    args = _output.parse_args(__doc__.splitlines()[0], argv)
    settings = FAST if args.fast else FULL
    averages = {kind: average_statistics(kind, settings) for kind in KINDS}
    measured_stds = nf_resnet_input_stds(settings)
    expected_stds = normref.nf_expected_stds(NF_RESNET50_STAGES, settings.alpha)
    header = (
        f"width {settings.width}, batch {settings.batch}, alpha {settings.alpha}, "
        f"mean of {settings.replicates} networks"
    )
    _output.print_table(
        f"E[x_l^2] per residual block ({header})",
        ["block", *(SHORT_LABELS[kind] for kind in KINDS)],
        [
            [f"{level}", *(f"{averages[kind].mean_square[level]:.3f}" for kind in KINDS)]
            for level in range(settings.depth + 1)
        ],
    )
    _output.print_table(
        f"The laws at block {settings.depth}",
        ["branch", "normalization", "law", "simulated", "law value", "ratio", "tolerance"],
        [
            [
                "linear" if kind in LINEAR_KINDS else "ReLU",
                LABELS[kind],
                LAW_NAMES[kind.removeprefix("relu_")],
                f"{averages[kind].mean_square[-1]:.3f}",
                f"{law(kind, settings.depth, settings.alpha):.3f}",
                f"{averages[kind].mean_square[-1] / law(kind, settings.depth, settings.alpha):.4f}",
                f"{TOLERANCES['linear' if kind in LINEAR_KINDS else 'relu']:.0%}",
            ]
            for kind in LAW_KINDS
        ],
    )
    _output.print_table(
        "Mean shift of NF ReLU networks: average squared channel mean per block",
        ["block", "with Scaled WS", "without WS"],
        [
            [
                f"{level}",
                f"{averages['relu_normalizer_free'].squared_mean[level]:.4f}",
                f"{averages['relu_normalizer_free_no_ws'].squared_mean[level]:.4f}",
            ]
            for level in range(settings.depth + 1)
        ],
    )
    stage_of_block = [
        stage for stage, blocks in enumerate(NF_RESNET50_STAGES, start=1) for _ in range(blocks)
    ]
    _output.print_table(
        f"NF-ResNet-50 stages {NF_RESNET50_STAGES}: std of each block's input",
        ["block", "stage", "simulated", "nf_expected_stds", "ratio"],
        [
            [
                f"{block}",
                f"{stage_of_block[block]}",
                f"{measured:.4f}",
                f"{expected:.4f}",
                f"{measured / expected:.4f}",
            ]
            for block, (measured, expected) in enumerate(
                zip(measured_stds, expected_stds, strict=True)
            )
        ],
    )
    figures = [
        plot_laws(averages, settings, args.out),
        plot_mean_shift(averages, settings, args.out),
        plot_nf_resnet(measured_stds, expected_stds, args.out),
    ]
    return {
        "mean_square": {kind: averages[kind].mean_square for kind in KINDS},
        "squared_mean": {kind: averages[kind].squared_mean for kind in KINDS},
        "variance": {kind: averages[kind].variance for kind in KINDS},
        "nf_resnet50": {"measured": measured_stds, "expected": np.array(expected_stds)},
        "settings": settings,
        "figures": figures,
    }


if __name__ == "__main__":
    main()
