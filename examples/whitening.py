"""Batch norm against batch whitening, and the stochastic axis swapping of PCA whitening
(Huang, Yang, Lang & Deng, "Decorrelated Batch Normalization", CVPR 2018; the argument as the
survey states it: Huang et al., "Normalization Techniques in Training DNNs: Methodology,
Analysis and Application", TPAMI 2023, sec. 4.1).

The task: the 16 pixels of the digits average-pooled to 4 x 4, whose covariance spans more
than two orders of magnitude, standardized or whitened in mini-batches of 128 by batch norm
(:func:`normref.batch_norm`) and by :func:`normref.batch_whiten` with ZCA, PCA, Cholesky and
IterNorm (5 Newton-Schulz steps, the authors' default).

1. The spectrum of the batch covariance before and after. Batch norm only rescales each
   feature (its output covariance is the correlation matrix, as spread as before); the three
   exact whitenings make it the identity up to eps: its eigenvalues are exactly
   ``lambda / (lambda + eps)`` for the input's eigenvalues ``lambda``; IterNorm's five steps
   whiten the large eigenvalues and leave the small ones short.
2. Stochastic axis swapping. Each batch defines its own whitening ``W_t``; applied to the same
   (test) data, consecutive batches' outputs differ by a rotation ``W_{t+1} W_t^{-1}``. PCA
   orders its output axes by the batch's eigenvalues, and where those are close, sampling noise
   reorders and mixes them: the same input lands on other axes from one batch to the next.
   ZCA, the whitening closest to its input, keeps every axis where it was: the correlation of
   each output feature with itself across consecutive batches stays near 1.

Run ``python -m examples.whitening [--fast] [--out DIR]``: the table, and the figures
``whitening_spectrum.png`` and ``whitening_axis_swapping.png``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import normref
from examples import _output, _training

METHODS = ("batch_norm", "zca", "pca", "cholesky", "iter_norm")
EXACT_WHITENINGS = ("zca", "pca", "cholesky")
LABELS = {
    "batch_norm": "batch norm",
    "zca": "ZCA",
    "pca": "PCA",
    "cholesky": "Cholesky",
    "iter_norm": "IterNorm (T = 5)",
}
EPS = 1e-5
BATCH_SIZE = 128
FEATURES = 16  # 4 x 4 pooled pixels, whitened as one group


def pooled_pixels(images: np.ndarray) -> np.ndarray:
    """8 x 8 digit images (rows of 64 pixels) average-pooled over 2 x 2 blocks: 16 features."""
    return images.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, FEATURES)


def covariance(x: np.ndarray) -> np.ndarray:
    """The biased sample covariance of the rows of ``x`` (NumPy, independently of normref)."""
    centred = x - x.mean(axis=0)
    return centred.T @ centred / len(x)


def normalize_batch(batch: np.ndarray, method: str) -> np.ndarray:
    """The batch standardized (``batch_norm``) or whitened with its own statistics."""
    if method == "batch_norm":
        return normref.batch_norm(batch, eps=EPS)
    return normref.batch_whiten(batch, group_size=FEATURES, method=method, eps=EPS)


def apply_batch_statistics(batch: np.ndarray, x: np.ndarray, method: str) -> np.ndarray:
    """``x`` standardized or whitened with the statistics of ``batch`` (the inference forms,
    :func:`normref.batch_norm_inference` and :func:`normref.batch_whiten_inference`, given
    the batch's mean and its variance or whitening matrix)."""
    moments = normref.stats.comoments(batch[None])
    mean, batch_covariance = moments.mean[0], normref.stats.covariance(moments)
    if method == "batch_norm":
        return normref.batch_norm_inference(x, mean, np.diagonal(batch_covariance[0]), eps=EPS)
    whitening = normref.ops.whitening_matrix(batch_covariance, method=method, eps=EPS)
    return normref.batch_whiten_inference(x, mean, whitening, group_size=FEATURES)


def axis_correlations(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The correlations (over the rows) of each column of ``before`` with each of ``after``."""
    return np.corrcoef(before.T, after.T)[:FEATURES, FEATURES:]


@dataclass(frozen=True)
class Whitened:
    """One method on the first batch (output spectrum, distance from the identity) and over
    consecutive batches (each pair's output correlation matrix on the test data)."""

    spectrum: np.ndarray
    max_from_identity: float
    max_from_eps_spectrum: float
    pair_correlations: list[np.ndarray]

    @property
    def axis_stability(self) -> np.ndarray:
        """Per consecutive pair: the mean correlation of each output feature with itself."""
        return np.array([np.mean(np.diagonal(c)) for c in self.pair_correlations])


def compare(batches: Sequence[np.ndarray], probe: np.ndarray, method: str) -> Whitened:
    """Normalize the first batch with ``method`` and compare its output covariance with the
    identity; apply each batch's statistics to ``probe`` and correlate consecutive outputs."""
    input_eigenvalues = np.linalg.eigvalsh(covariance(batches[0]))
    output_covariance = covariance(normalize_batch(batches[0], method))
    spectrum = np.linalg.eigvalsh(output_covariance)
    outputs = [apply_batch_statistics(batch, probe, method) for batch in batches]
    return Whitened(
        spectrum=spectrum[::-1],
        max_from_identity=float(np.max(np.abs(output_covariance - np.eye(FEATURES)))),
        max_from_eps_spectrum=float(
            np.max(np.abs(spectrum - input_eigenvalues / (input_eigenvalues + EPS)))
        ),
        pair_correlations=[
            axis_correlations(first, second) for first, second in itertools.pairwise(outputs)
        ],
    )


def plot_spectra(input_spectrum: np.ndarray, results: Mapping[str, Whitened], out: Path) -> Path:
    """The eigenvalues of the first batch's covariance before and after each method."""
    figure = _output.new_figure(width=7.0)
    (axes,) = figure.axes
    index = np.arange(1, FEATURES + 1)
    axes.plot(index, input_spectrum, "k-o", label="input (pooled pixels)")
    styles = {"batch_norm": "-s", "zca": "-o", "pca": "--x", "cholesky": ":+", "iter_norm": "-^"}
    for method, result in results.items():
        axes.plot(index, result.spectrum, styles[method], label=LABELS[method])
    axes.annotate(
        "ZCA, PCA and Cholesky coincide:\n"
        "$\\lambda / (\\lambda + \\epsilon)$ of the input's $\\lambda$",
        (FEATURES, 1.0),
        xytext=(FEATURES * 0.5, 0.03),
        arrowprops={"arrowstyle": "->"},
    )
    axes.set_yscale("log")
    axes.set_xlabel("eigenvalue index (descending)")
    axes.set_ylabel("eigenvalue of the batch covariance (log scale)")
    axes.set_title(f"Covariance spectrum of a batch of {BATCH_SIZE}, before and after")
    axes.legend()
    return _output.save_figure(figure, out, "whitening_spectrum")


def plot_axis_swapping(results: Mapping[str, Whitened], out: Path) -> Path:
    """Heatmaps of the rotation between two consecutive batches' ZCA and PCA outputs, and the
    mean self-correlation of the output features for every pair and method."""
    figure = _output.new_figure(3, width=5.0)
    for axes, method in zip(figure.axes[:2], ("zca", "pca"), strict=True):
        image = axes.imshow(results[method].pair_correlations[0], cmap="RdBu_r", vmin=-1, vmax=1)
        axes.set_title(f"{LABELS[method]}: batch 1 against batch 2")
        axes.set_xlabel("output feature, whitened by batch 2")
        axes.set_ylabel("output feature, whitened by batch 1")
    figure.colorbar(image, ax=figure.axes[:2], shrink=0.8, label="correlation on the test data")
    lines = figure.axes[2]
    for method, result in results.items():
        pairs = np.arange(1, len(result.pair_correlations) + 1)
        lines.plot(pairs, result.axis_stability, "-o", markersize=3, label=LABELS[method])
    lines.set_ylim(-0.1, 1.3)
    lines.set_xlabel("consecutive batch pair")
    lines.set_ylabel("mean correlation of each output feature with itself")
    lines.set_title("Axis stability from batch to batch")
    lines.legend(loc="upper center", ncols=3, fontsize="small")
    return _output.save_figure(figure, out, "whitening_axis_swapping")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare the methods, print the table, save the figures; return the per-method
    ``max_from_identity``, ``max_from_eps_spectrum`` and mean ``axis_stability``, and the
    ``figures``' paths."""
    args = _output.parse_args(__doc__.splitlines()[0], argv)
    data = _training.load_digits()
    train, probe = pooled_pixels(data.x_train), pooled_pixels(data.x_test)
    epochs = 1 if args.fast else 5
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(train)) for _ in range(epochs)])
    batches = [
        train[order[start : start + BATCH_SIZE]]
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE)
    ]
    results = {method: compare(batches, probe, method) for method in METHODS}
    input_spectrum = np.linalg.eigvalsh(covariance(batches[0]))[::-1]
    _output.print_table(
        f"Pooled digits ({FEATURES} features), batches of {BATCH_SIZE}, eps = {EPS:g}; input "
        f"covariance eigenvalues {input_spectrum[-1]:.2e} to {input_spectrum[0]:.2e}; "
        f"{len(batches) - 1} consecutive batch pairs",
        ["method", "max |cov - I|", "max |eig - lambda/(lambda+eps)|", "axis stability"],
        [
            [
                LABELS[method],
                f"{result.max_from_identity:.2e}",
                f"{result.max_from_eps_spectrum:.2e}",
                f"{np.mean(result.axis_stability):.3f}",
            ]
            for method, result in results.items()
        ],
    )
    figures = [
        plot_spectra(input_spectrum, results, args.out),
        plot_axis_swapping(results, args.out),
    ]
    return {
        "max_from_identity": {m: r.max_from_identity for m, r in results.items()},
        "max_from_eps_spectrum": {m: r.max_from_eps_spectrum for m, r in results.items()},
        "axis_stability": {m: float(np.mean(r.axis_stability)) for m, r in results.items()},
        "input_spectrum": input_spectrum,
        "figures": figures,
    }


if __name__ == "__main__":
    main()
