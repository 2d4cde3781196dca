"""Adaptive gradient clipping at a large batch and learning rate (Brock, De, Smith & Simonyan,
"High-Performance Large-Scale Image Recognition Without Normalization", ICML 2021, sec. 4).

AGC clips each unit's gradient to ``lambda`` times its weight's norm,
``G <- G min(1, lambda max(|W|_u, eps) / |G|_u)`` (:func:`normref.adaptive_grad_clip`),
so that no step changes a unit's weights by more than a fixed fraction of their size. NFNets
use it to train at batch sizes and learning rates where the loss otherwise blows up, with
``lambda = 0.01`` at batch 4096 and the final linear layer left unclipped.

Here: the batch-norm MLP of ``examples/bn_only.py`` (4 hidden layers of 128) on the digits,
plain SGD with a constant learning rate of 30 at batch 1024, trained twice from the same
initialization: without clipping, the loss blows up by many orders of magnitude and never
recovers; with AGC (``lambda = 0.01`` on every parameter but the output layer's) it falls to
a small fraction of its start.

Run ``python -m examples.agc [--fast] [--out DIR]``: the table and ``agc_loss.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import normref
from examples import _output, _training

CLIPPING = 0.01  # lambda
UNCLIPPED = ("output.w", "output.b")  # the final linear layer, as in NFNets
BATCH_SIZE = 1024
LEARNING_RATE = 30.0
DIVERGED = 1e3  # a loss above this multiple of its start (or not finite) has diverged
RUNS = {"no_agc": "without clipping", "agc": f"AGC, lambda = {CLIPPING}"}


@dataclass(frozen=True)
class Settings:
    """The number of SGD steps (one per epoch at this batch size) and the seeds run."""

    steps: int
    seeds: tuple[int, ...]


FULL = Settings(steps=300, seeds=(0, 1, 2))
FAST = Settings(steps=150, seeds=(0,))


def clip_gradients(grads: _training.Params, params: _training.Params) -> _training.Params:
    """AGC of every gradient but the final layer's, unit-wise over each dense layer's output
    units (``out_axis=-1``: weights are ``(in, out)``), gammas and betas as one unit each."""
    # Once adaptive_grad_clip_tree accepts exclude=, this loop is one call:
    # normref.adaptive_grad_clip_tree(grads, params, clipping=CLIPPING, out_axis=-1,
    #                                 exclude=UNCLIPPED)
    return {
        name: grad
        if name in UNCLIPPED
        else normref.adaptive_grad_clip(grad, params[name], clipping=CLIPPING, out_axis=-1)
        for name, grad in grads.items()
    }


@dataclass(frozen=True)
class Curve:
    """One training run: its loss at every step and its final test accuracy."""

    losses: list[float]
    test_accuracy: float

    @property
    def start(self) -> float:
        """The loss of the first step (the initialization's)."""
        return self.losses[0]

    @property
    def peak(self) -> float:
        """The largest loss of the run (infinite if any loss was not finite)."""
        return float(np.max(np.where(np.isfinite(self.losses), self.losses, np.inf)))

    @property
    def final(self) -> float:
        """The loss of the last step."""
        return self.losses[-1]

    @property
    def diverged(self) -> bool:
        """Whether the loss rose above ``DIVERGED`` times its start or was not finite."""
        return self.peak > DIVERGED * self.start


def train_run(seed: int, steps: int, data: _training.Digits, *, agc: bool) -> Curve:
    """Plain SGD from the initialization of ``seed``, with or without AGC."""
    run = _training.train(
        _training.init_mlp(np.random.default_rng(seed), _training.mlp_sizes()),
        data,
        epochs=steps,  # one step per epoch: the training split has fewer than 2 batches
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        seed=seed,
        momentum=0.0,
        cosine_decay=False,
        transform_grads=clip_gradients if agc else None,
    )
    return Curve(run.losses, run.test_accuracy)


def plot_losses(curves: Mapping[str, Sequence[Curve]], out: Path) -> Path:
    """Training loss against step, log scale, one line per run and seed."""
    figure = _output.new_figure(width=7.0)
    (axes,) = figure.axes
    for (run, runs), color in zip(curves.items(), ("tab:red", "tab:blue"), strict=True):
        for index, curve in enumerate(runs):
            label = RUNS[run] + (", output layer unclipped" if run == "agc" else "")
            axes.plot(curve.losses, color=color, alpha=0.8, label=label if index == 0 else None)
    start = float(np.mean([curve.start for curve in curves["agc"]]))
    axes.axhline(start, color="black", linestyle=":", label="initial loss")
    axes.axhline(start / 2, color="gray", linestyle="--", label="half the initial loss")
    axes.set_yscale("log")
    axes.set_xlabel("SGD step")
    axes.set_ylabel("training loss (log scale)")
    seeds = len(curves["agc"])
    axes.set_title(
        f"Digits MLP with batch norm: SGD at batch {BATCH_SIZE}, learning rate "
        f"{LEARNING_RATE:g} ({_output.counted(seeds, 'seed')})"
    )
    axes.legend(loc="upper right")
    return _output.save_figure(figure, out, "agc_loss")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train with and without AGC for each seed, print the table, save the figure; return,
    per run (``no_agc``, ``agc``), the list of :class:`Curve` (one per seed), and the
    ``figures``' paths."""
    args = _output.parse_args(__doc__.splitlines()[0], argv)
    settings = FAST if args.fast else FULL
    data = _training.load_digits()
    curves = {
        run: [train_run(seed, settings.steps, data, agc=run == "agc") for seed in settings.seeds]
        for run in RUNS
    }
    _output.print_table(
        f"SGD, batch {BATCH_SIZE}, learning rate {LEARNING_RATE:g}, {settings.steps} steps "
        f"(diverged: loss above {DIVERGED:g} x its start)",
        [
            "run",
            "seed",
            "initial loss",
            "peak loss",
            "final loss",
            "final / initial",
            "diverged",
            "test accuracy",
        ],
        [
            [
                RUNS[run],
                f"{seed}",
                f"{curve.start:.3f}",
                f"{curve.peak:.3g}",
                f"{curve.final:.3g}",
                f"{curve.final / curve.start:.3g}",
                "yes" if curve.diverged else "no",
                f"{curve.test_accuracy:.1%}",
            ]
            for run in RUNS
            for seed, curve in zip(settings.seeds, curves[run], strict=True)
        ],
    )
    return {**curves, "figures": [plot_losses(curves, args.out)]}


if __name__ == "__main__":
    main()
