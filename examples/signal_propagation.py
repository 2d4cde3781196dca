"""Signal propagation in deep residual networks at initialization (Brock et al., 2021, sec. 3).

A residual stack ``x_{l+1} = x_l + f(x_l)`` with random weights: without
normalization the second moment of the activations doubles at every block
(2^l); with batch norm on the branch it grows linearly (1 + l); a
normalizer-free network (branch ``alpha * f(x / beta_l)`` with Scaled WS and
``beta_l`` from :func:`normref.nf_expected_stds`) grows as ``1 + l alpha^2``,
the same linear law without any activation statistics. The branches are
linear so that each block's expected effect is exact (see
``tests/test_residual.py``, which checks these laws on this simulation).

Run ``python -m examples.signal_propagation`` for the table of E[x_l^2].
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import normref

KINDS = ("plain", "normalized", "normalizer_free")


def mean_square(x: np.ndarray) -> float:
    """E[x^2] over the batch and channels: per-channel squared mean + variance, averaged."""
    stats = normref.signal_propagation([x], channel_axis=1)
    return float(stats.squared_mean[0] + stats.variance[0])


def mean_squares(
    kind: str, seed: int, *, width: int = 128, batch: int = 256, depth: int = 8, alpha: float = 0.5
) -> list[float]:
    """E[x_l^2] for l = 0..depth of x_{l+1} = x_l + branch, x_0 ~ N(0, 1) of shape (batch, width).

    ``plain``: ``x W``, ``W ~ N(0, 1/C)`` (variance preserving, no normalization);
    ``normalized``: ``batch_norm(x) W``;
    ``normalizer_free``: ``alpha * (x / beta_l) What^T``, ``What`` the Scaled WS of a
    ``N(0, 1)`` matrix.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width))
    betas = normref.nf_expected_stds([depth], alpha)
    squares = [mean_square(x)]
    for beta in betas:
        w = rng.standard_normal((width, width))
        if kind == "plain":
            x = x + x @ (w / math.sqrt(width))
        elif kind == "normalized":
            x = x + normref.batch_norm(x, eps=1e-5) @ (w / math.sqrt(width))
        elif kind == "normalizer_free":
            w_hat = normref.scaled_weight_standardize(
                w, gamma=normref.nonlinearity_gamma("identity")
            )
            x = normref.nf_residual(x, lambda h, w_hat=w_hat: h @ w_hat.T, alpha=alpha, beta=beta)
        else:
            msg = f"kind must be one of {KINDS}, got {kind!r}"
            raise ValueError(msg)
        squares.append(mean_square(x))
    return squares


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runs = {k: mean_squares(k, args.seed, depth=args.depth, alpha=args.alpha) for k in KINDS}
    print(f"{'block':>5} " + " ".join(f"{k:>16}" for k in KINDS) + f" {'1 + l alpha^2':>14}")
    for level in range(args.depth + 1):
        row = " ".join(f"{runs[k][level]:16.3f}" for k in KINDS)
        print(f"{level:5d} {row} {1 + level * args.alpha**2:14.3f}")


if __name__ == "__main__":
    main()
