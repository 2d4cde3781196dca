"""SkipInit, normalizer-free residual blocks, expected stds, signal propagation, deep networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from examples.signal_propagation import mean_squares
from tests.support import Backend, assert_close_to_scale

U64 = np.finfo(np.float64).eps


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# SkipInit


def test_skip_init_starts_as_the_identity_and_learns_alpha(standard_backend: Backend):
    """alpha = 0 (SkipInit's initialization): y = x, and d alpha = sum(dy * f(x))."""
    xp = standard_backend
    x, branch, dy = (_rng(s).standard_normal((4, 3, 2)) for s in (0, 1, 2))
    args = [xp.asarray(a, "float64") for a in (x, branch, np.zeros(()))]
    np.testing.assert_array_equal(xp.to_numpy(normref.skip_init_residual(*args)), x)
    grads = normref.skip_init_residual_vjp(xp.asarray(dy, "float64"), *args)
    np.testing.assert_array_equal(xp.to_numpy(grads.x), dy)
    np.testing.assert_array_equal(xp.to_numpy(grads.branch_out), 0.0)
    expected = math.fsum((dy * branch).ravel())
    assert_close_to_scale(
        xp.to_numpy(grads.alpha), expected, np.abs(dy * branch).sum(), rtol=8 * U64, what="d alpha"
    )


def test_skip_init_per_channel_alpha_gradient_sums_over_the_other_axes():
    """A LayerScale-like alpha of shape (C, 1): its gradient sums dy * f over N and the last axis."""
    x, branch, dy = (_rng(s).standard_normal((5, 3, 4)) for s in (3, 4, 5))
    alpha = _rng(6).standard_normal((3, 1))
    grads = normref.skip_init_residual_vjp(dy, x, branch, alpha)
    assert grads.alpha.shape == (3, 1)
    expected = (dy * branch).sum(axis=(0, 2)).reshape(3, 1)
    assert_close_to_scale(
        grads.alpha, expected, np.abs(dy * branch).sum(), rtol=16 * U64, what="d alpha"
    )


def test_skip_init_dtypes_promote_and_gradients_keep_theirs():
    x = np.ones((2, 3), np.float16)
    branch, alpha = np.ones((2, 3), np.float32), np.zeros((), np.float64)
    assert normref.skip_init_residual(x, branch, alpha).dtype == np.float64
    grads = normref.skip_init_residual_vjp(np.ones((2, 3)), x, branch, alpha)
    assert (grads.x.dtype, grads.branch_out.dtype, grads.alpha.dtype) == (
        np.float16,
        np.float32,
        np.float64,
    )


# ---------------------------------------------------------------------------
# Normalizer-free blocks


def test_nf_residual_is_x_plus_alpha_branch_of_x_over_beta():
    x = _rng(7).standard_normal((6, 4))
    w = _rng(8).standard_normal((4, 4))
    seen = []

    def branch(h):
        seen.append(h.dtype)
        return np.tanh(h @ w)

    y = normref.nf_residual(x.astype(np.float32), branch, alpha=0.2, beta=1.5)
    x32 = x.astype(np.float32).astype(np.float64)
    expected = x32 + 0.2 * np.tanh((x32 / 1.5) @ w)
    assert y.dtype == np.float32
    assert seen == [np.float64]  # the branch runs in float64
    assert np.all(
        np.abs(y - expected) <= 0.5 * np.spacing(np.abs(expected).astype(np.float32)) * 1.0001
    )


def test_nf_residual_transition_block_uses_its_shortcut():
    x = _rng(9).standard_normal((3, 4))
    y = normref.nf_residual(x, lambda h: 2 * h, alpha=0.5, beta=2.0, shortcut_fn=lambda h: -h)
    assert_close_to_scale(y, -x / 2 + 0.5 * x, 1.0, rtol=4 * U64, what="transition")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 0.2, "beta": 0.0}, ValueError, "beta must be a finite number > 0"),
        ({"alpha": math.nan, "beta": 1.0}, ValueError, "alpha must be a finite number"),
        ({"alpha": 0.2, "beta": 1.0, "shortcut_fn": 3}, TypeError, "shortcut_fn must be callable"),
    ],
)
def test_nf_residual_bad_constants(kwargs, error, match):
    with pytest.raises(error, match=match):
        normref.nf_residual(np.ones((2, 3)), lambda h: h, **kwargs)


def test_nf_residual_branch_must_keep_the_shape_and_library():
    with pytest.raises(ValueError, match=r"branch_fn\(x / beta\) must have shape \(2, 3\)"):
        normref.nf_residual(np.ones((2, 3)), lambda h: h[:, :2], alpha=0.2, beta=1.0)
    with pytest.raises(TypeError, match=r"branch_fn\(x / beta\) must be an array, got list"):
        normref.nf_residual(np.ones((2, 3)), lambda h: h.tolist(), alpha=0.2, beta=1.0)


def test_nf_expected_stds_closed_form():
    """In closed form: block k >= 1 of any stage has variance 1 + k alpha^2; the first block of
    stage s >= 1 has 1 + n_{s-1} alpha^2 (the previous stage's end); the very first has 1."""
    stages, alpha = (3, 4, 6, 3), 0.2
    expected = []
    for s, n in enumerate(stages):
        for k in range(n):
            if k > 0:
                expected.append(math.sqrt(1 + k * alpha**2))
            else:
                expected.append(1.0 if s == 0 else math.sqrt(1 + stages[s - 1] * alpha**2))
    actual = normref.nf_expected_stds(stages, alpha)
    assert len(actual) == sum(stages)
    assert_close_to_scale(np.array(actual), np.array(expected), 1.0, rtol=4 * U64, what="betas")


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (((2, 0), 0.2), ValueError, r"num_blocks_per_stage\[1\] must be an integer >= 1, got 0"),
        ((3, 0.2), TypeError, "num_blocks_per_stage must be a sequence of integers"),
        (((2,), -0.1), ValueError, "alpha must be a finite number >= 0"),
    ],
)
def test_nf_expected_stds_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        normref.nf_expected_stds(*args)


# ---------------------------------------------------------------------------
# Signal propagation


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_signal_propagation_statistics(channel_axis, standard_backend: Backend):
    """As the NFNets code's signal_metrics: mean over channels of mean^2 and of (biased) var."""
    xp = standard_backend
    rng = _rng(10)
    acts = [rng.standard_normal((4, 3, 5, 2)) + 0.5, 2.0 * rng.standard_normal((4, 6, 2, 2))]
    if channel_axis == -1:
        acts = [np.moveaxis(a, 1, -1) for a in acts]
    branches = [0.1 * rng.standard_normal(a.shape) for a in acts]
    result = normref.signal_propagation(
        [xp.asarray(a, "float64") for a in acts],
        [xp.asarray(b, "float64") for b in branches],
        channel_axis=channel_axis,
    )
    axes = lambda a: tuple(i for i in range(a.ndim) if i != channel_axis % a.ndim)
    for name, got, want in (
        (
            "squared_mean",
            result.squared_mean,
            [np.mean(np.mean(a, axis=axes(a)) ** 2) for a in acts],
        ),
        ("variance", result.variance, [np.mean(np.var(a, axis=axes(a))) for a in acts]),
        (
            "branch_variance",
            result.branch_variance,
            [np.mean(np.var(b, axis=axes(b))) for b in branches],
        ),
    ):
        # means of squares of unit-scale values: a few roundings per term
        assert_close_to_scale(
            xp.to_numpy(got), np.array(want), np.array(want), rtol=64 * U64, what=name
        )
    assert (
        normref.signal_propagation(
            [xp.asarray(acts[0], "float64")], channel_axis=channel_axis
        ).branch_variance
        is None
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([],), {}, "activations must hold at least one array"),
        (
            ([np.ones((2, 3))], [np.ones((2, 3))] * 2),
            {},
            r"branch_outputs must have one array per activation \(1\), got 2",
        ),
        (([np.ones(3)],), {}, r"activations\[0\] must have rank >= 2"),
        (([np.ones((2, 3))],), {"channel_axis": 2}, "channel_axis=2 is out of range"),
    ],
)
def test_signal_propagation_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        normref.signal_propagation(*args, **kwargs)


# ---------------------------------------------------------------------------
# A deep residual network at initialization (numpy, random weights)


WIDTH, BATCH, DEPTH, REPLICATES, ALPHA = 128, 256, 8, 16, 0.5


def test_deep_residual_variance_grows_exponentially_without_normalization_linearly_with_it():
    """The NFNets analysis (Brock et al., 2021, sec. 3), at initialization, on the simulation
    of ``examples/signal_propagation.py``.

    With fresh zero-mean weights W at each block, independent of x_l, the cross term
    E[<x_l, f(x_l)>] vanishes and E[||f||^2 | x_l] is exact:
    * plain, f = x W, W ~ N(0, 1/C): E[x_{l+1}^2] = 2 E[x_l^2], so 2^l;
    * normalized, f = BN(x) W: E[f^2] = mean over channels of v/(v + eps) = 1 - delta with
      delta <= eps / min(v) <= 1e-5 here (v >= 1 at every block), so 1 + l (1 - delta);
    * normalizer-free, f = alpha What (x / beta_l): the rows of What are uniform on the unit
      sphere orthogonal to 1 (Scaled WS of Gaussian rows; eps is negligible against N var ~ C),
      so E[f f^T | h] = alpha^2 (h^T P h / (C - 1)) I with P the centring projection: isotropic,
      and E[x_{l+1}^2] = E[x_l^2] + alpha^2 E[x_l^2] / beta_l^2 = 1 + (l + 1) alpha^2 when
      beta_l^2 = 1 + l alpha^2 (nf_expected_stds): linear growth, as the NF analysis states.
    Each replicate is an independent network; the mean over REPLICATES of E[x_l^2] / law(l)
    must be 1 within 5 standard errors of that mean (estimated from the replicates), at every
    depth. The laws then differ by 2^8 / 9 ~ 28x at the last block.
    """
    laws = {
        "plain": lambda l: 2.0**l,
        "normalized": lambda l: 1.0 + l,
        "normalizer_free": lambda l: 1.0 + l * ALPHA**2,
    }
    for kind, law in laws.items():
        runs = [
            mean_squares(kind, seed, width=WIDTH, batch=BATCH, depth=DEPTH, alpha=ALPHA)
            for seed in range(REPLICATES)
        ]
        ratios = np.array(runs) / np.array([law(l) for l in range(DEPTH + 1)])
        mean = ratios.mean(axis=0)
        standard_error = ratios.std(axis=0, ddof=1) / math.sqrt(REPLICATES)
        bias = 1e-5 * DEPTH if kind == "normalized" else 0.0  # the eps deficit above
        assert np.all(np.abs(mean - 1.0) <= 5 * standard_error + bias), (kind, mean, standard_error)


def test_residual_functions_on_every_backend(backend: Backend):
    """nf_residual and signal_propagation on each library, against numpy in float64."""
    rng = _rng(11)
    x, w = rng.standard_normal((6, 4, 3)), rng.standard_normal((3, 3))
    on_x, on_w = backend.asarray(x, "float64"), backend.asarray(w, "float64")
    y = normref.nf_residual(on_x, lambda h: backend.xp.matmul(h, on_w), alpha=0.2, beta=1.5)
    expected = x + 0.2 * (x / 1.5) @ w
    assert_close_to_scale(
        backend.to_numpy(y), expected, np.abs(expected).max(), rtol=16 * U64, what="nf"
    )
    stats = normref.signal_propagation([on_x], [on_x], channel_axis=-1)
    variance = np.mean(np.var(x, axis=(0, 1)))
    got = backend.to_numpy(stats.branch_variance)
    assert_close_to_scale(got, np.array([variance]), variance, rtol=64 * U64, what="variance")
