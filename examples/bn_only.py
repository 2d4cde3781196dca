"""Training batch norm and only batch norm (Frankle, Schwab & Morcos, "Training BatchNorm and
Only BatchNorm: On the Expressive Power of Random Features in CNNs", ICLR 2021).

A batch-norm MLP (4 hidden layers, ``dense -> batch norm -> ReLU``) on scikit-learn's digits,
trained in NumPy with normref's batch norm forward and VJP and the dense layers and softmax
cross-entropy differentiated by hand (``examples/_training.py``). Three runs from the same
random initialization, as in the paper:

(a) every parameter trained;
(b) only batch norm's gamma and beta trained, every other weight (output layer included)
    frozen at its random initialization;
(c) the paper's control: as many parameters as (b), but two randomly chosen weights of each
    channel's fan-in instead of its gamma and beta (batch norm frozen at gamma = 1, beta = 0).

The paper's findings, reproduced at this scale: (b) is far above chance and above (c) with the
same number of trainable parameters, though below (a); and (b) learns to switch features off,
with more gammas near zero and more ReLUs that are never active on the test set than (a).
The run is repeated over hidden widths for the accuracy against trainable parameters.

Run ``python -m examples.bn_only [--fast] [--out DIR]``: the table, and the figures
``bn_only_gamma_histogram.png`` and ``bn_only_accuracy.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from examples import _output, _training

RUNS = ("all", "bn_only", "random_control")
LABELS = {
    "all": "(a) all parameters",
    "bn_only": "(b) only gamma and beta",
    "random_control": "(c) 2 random weights per channel",
}
CHANCE = 0.1  # ten balanced classes
GAMMA_NEAR_ZERO = 0.05  # |gamma| below this counts as a switched-off feature
WIDTH = _training.HIDDEN_WIDTH  # the width of the table's runs and the gamma histogram


@dataclass(frozen=True)
class Settings:
    """The widths swept (``WIDTH`` among them), the seeds of the networks averaged at each
    width (initialization, control's choice of weights, batch order), and the schedule."""

    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int = 64
    learning_rate: float = 1.0


FULL = Settings(widths=(32, 64, 128, 256), seeds=(0, 1, 2), epochs=20)
FAST = Settings(widths=(32, 64, 128), seeds=(0, 1), epochs=8)


@dataclass(frozen=True)
class Outcome:
    """Trained networks of one run: the trainable parameter count, the test accuracy, the
    batch-norm gammas and the fraction of ReLUs never active on the test set (accuracy and
    fraction averaged over the seeds, gammas of all seeds together)."""

    trainable: int
    accuracy: float
    gammas: np.ndarray
    never_active: float


def trainable_masks(
    run: str, params: Mapping[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The 0/1 mask of trained entries of each parameter for run ``all``, ``bn_only`` or
    ``random_control`` (two entries of each hidden unit's fan-in, drawn with ``rng``)."""
    masks = {}
    for name, value in params.items():
        if run == "all":
            mask = np.ones_like(value)
        elif run == "bn_only":
            mask = np.full_like(value, float(name.startswith("bn")))
        elif run == "random_control":
            mask = np.zeros_like(value)
            if name.startswith("dense"):
                fan_in, units = value.shape
                for unit in range(units):
                    mask[rng.choice(fan_in, size=2, replace=False), unit] = 1.0
        else:
            msg = f"run must be one of {RUNS}, got {run!r}"
            raise ValueError(msg)
        masks[name] = mask
    return masks


def never_active_fraction(run: _training.TrainingRun, x: np.ndarray) -> float:
    """The fraction of hidden units whose ReLU input is <= 0 for every row of ``x``
    (batch norm in evaluation mode)."""
    _, tape, _ = _training.mlp_forward(run.params, run.running, x, training=False)
    never = np.concatenate([(pre_relu <= 0).all(axis=0) for pre_relu in tape.pre_relu])
    return float(never.mean())


def train_runs(
    width: int, seed: int, settings: Settings, data: _training.Digits
) -> dict[str, Outcome]:
    """Runs (a), (b) and (c) of an MLP of hidden ``width``, all from one random initialization."""
    rng = np.random.default_rng(seed)
    initial = _training.init_mlp(rng, _training.mlp_sizes(width))
    outcomes = {}
    for run in RUNS:
        masks = trainable_masks(run, initial, rng)
        trained = _training.train(
            initial,
            data,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            seed=seed,
            trainable=masks,
        )
        gammas = np.concatenate(
            [trained.params[f"bn{i}.gamma"] for i in range(len(trained.running))]
        )
        outcomes[run] = Outcome(
            trainable=int(sum(mask.sum() for mask in masks.values())),
            accuracy=trained.test_accuracy,
            gammas=gammas,
            never_active=never_active_fraction(trained, data.x_test),
        )
    return outcomes


def average_over_seeds(
    width: int, settings: Settings, data: _training.Digits
) -> dict[str, Outcome]:
    """:func:`train_runs` for each seed, each run's outcomes combined over the seeds."""
    per_seed = [train_runs(width, seed, settings, data) for seed in settings.seeds]
    return {
        run: Outcome(
            trainable=per_seed[0][run].trainable,
            accuracy=float(np.mean([outcomes[run].accuracy for outcomes in per_seed])),
            gammas=np.concatenate([outcomes[run].gammas for outcomes in per_seed]),
            never_active=float(np.mean([outcomes[run].never_active for outcomes in per_seed])),
        )
        for run in RUNS
    }


def plot_gamma_histogram(outcomes: Mapping[str, Outcome], seeds: int, out: Path) -> Path:
    """Histogram of the gammas of run (b) (of ``seeds`` networks together), with run (a)'s
    outlined for comparison."""
    figure = _output.new_figure()
    (axes,) = figure.axes
    values = np.concatenate([outcomes[run].gammas for run in ("all", "bn_only")])
    span = (float(values.min()), float(values.max()))
    axes.hist(
        outcomes["bn_only"].gammas,
        bins=60,
        range=span,
        color="tab:orange",
        label=LABELS["bn_only"],
    )
    axes.hist(
        outcomes["all"].gammas,
        bins=60,
        range=span,
        histtype="step",
        color="tab:blue",
        label=LABELS["all"],
    )
    for edge in (-GAMMA_NEAR_ZERO, GAMMA_NEAR_ZERO):
        axes.axvline(edge, color="black", linestyle=":", linewidth=1)
    axes.set_xlabel("batch norm $\\gamma$ after training (all hidden layers)")
    axes.set_ylabel("number of channels")
    axes.set_title(
        "$\\gamma$ after training only batch norm\n"
        f"(digits, {_training.HIDDEN_LAYERS} x {WIDTH} MLP, {_output.counted(seeds, 'seed')})"
    )
    axes.legend(title=f"dotted: $|\\gamma| = {GAMMA_NEAR_ZERO}$")
    return _output.save_figure(figure, out, "bn_only_gamma_histogram")


def plot_accuracy(sweep: Mapping[int, Mapping[str, Outcome]], out: Path) -> Path:
    """Test accuracy against the number of trainable parameters, one line per run, one
    point per width."""
    figure = _output.new_figure()
    (axes,) = figure.axes
    widths = sorted(sweep)
    for run, marker in zip(RUNS, ("o", "s", "^"), strict=True):
        counts = [sweep[width][run].trainable for width in widths]
        accuracies = [100 * sweep[width][run].accuracy for width in widths]
        axes.plot(counts, accuracies, marker=marker, label=LABELS[run])
        for width, count, accuracy in zip(widths, counts, accuracies, strict=True):
            axes.annotate(
                f"{width}",
                (count, accuracy),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    axes.axhline(100 * CHANCE, color="gray", linestyle="--", label="chance")
    axes.set_xscale("log")
    axes.set_ylim(0, 100)
    axes.set_xlabel("trainable parameters (log scale; points labelled by hidden width)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(
        f"Accuracy against trainable parameters (digits, {_training.HIDDEN_LAYERS} hidden layers)"
    )
    axes.legend(loc="lower right")
    return _output.save_figure(figure, out, "bn_only_accuracy")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the three runs at each width, print the tables, save the figures; return the
    numbers of the ``WIDTH`` runs (per run: ``accuracy``, ``trainable``, ``gamma_near_zero``,
    ``never_active``), the ``sweep`` of accuracies by width and the ``figures``' paths."""
    args = _output.parse_args(__doc__.splitlines()[0], argv)
    settings = FAST if args.fast else FULL
    data = _training.load_digits()
    sweep = {width: average_over_seeds(width, settings, data) for width in settings.widths}
    outcomes = sweep[WIDTH]
    near_zero = {
        run: float(np.mean(np.abs(outcomes[run].gammas) < GAMMA_NEAR_ZERO)) for run in RUNS
    }
    _output.print_table(
        f"Digits, MLP with {_training.HIDDEN_LAYERS} hidden layers of {WIDTH}, "
        f"{settings.epochs} epochs, mean of {_output.counted(len(settings.seeds), 'seed')} "
        f"(chance {CHANCE:.0%})",
        ["run", "trainable", "test accuracy", f"|gamma| < {GAMMA_NEAR_ZERO}", "ReLUs never active"],
        [
            [
                LABELS[run],
                f"{outcomes[run].trainable}",
                f"{outcomes[run].accuracy:.1%}",
                f"{near_zero[run]:.1%}",
                f"{outcomes[run].never_active:.1%}",
            ]
            for run in RUNS
        ],
    )
    _output.print_table(
        "Test accuracy by hidden width (mean over the seeds)",
        ["width", *(f"{LABELS[run][:3]} trainable" for run in RUNS), *map(str, RUNS)],
        [
            [
                f"{width}",
                *(f"{sweep[width][run].trainable}" for run in RUNS),
                *(f"{sweep[width][run].accuracy:.1%}" for run in RUNS),
            ]
            for width in settings.widths
        ],
    )
    figures = [
        plot_gamma_histogram(outcomes, len(settings.seeds), args.out),
        plot_accuracy(sweep, args.out),
    ]
    return {
        "accuracy": {run: outcomes[run].accuracy for run in RUNS},
        "trainable": {run: outcomes[run].trainable for run in RUNS},
        "gamma_near_zero": near_zero,
        "never_active": {run: outcomes[run].never_active for run in RUNS},
        "sweep": {width: {run: sweep[width][run].accuracy for run in RUNS} for width in sweep},
        "figures": figures,
    }


if __name__ == "__main__":
    main()
