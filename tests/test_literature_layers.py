"""The other layers of the literature: what the registry-driven tests do not check.

Conditional (per-sample) parameters on every channel layer and both paths; batch renorm's
limits and its VJP with r and d held constant; switchable norm's limits; AdaIN's identities
and the PyTorch port's convention; LRN's windows and TensorFlow's form. Expected values come
from normref's other layers (identities that hold in real arithmetic, to float64 rounding),
from formulas written here in NumPy, or from finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from normref import compiled
from tests.support import assert_close_to_scale, fd_vjp

U64 = np.finfo(np.float64).eps


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- conditional


def _per_channel_reference(x, gamma, beta, groups_of, eps=1e-5):
    """Standardized per group (``groups_of(n, c)``), then ``gamma[n, c] y + beta[n, c]``."""
    n, c = x.shape[:2]
    y = np.empty_like(x)
    keys = {}
    for i in range(n):
        for j in range(c):
            keys.setdefault(groups_of(i, j), []).append((i, j))
    for members in keys.values():
        values = np.stack([x[i, j] for i, j in members])
        standardized = (values - values.mean()) / math.sqrt(values.var() + eps)
        for (i, j), v in zip(members, standardized, strict=True):
            y[i, j] = gamma[i, j] * v + beta[i, j]
    return y


def test_group_norm_takes_per_sample_parameters():
    """Group norm with gamma, beta of shape (N, C): values, and gradients of that shape by
    finite differences."""
    rng = _rng(1)
    x = rng.standard_normal((3, 4, 5))
    gamma, beta = 1 + 0.5 * rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y = normref.group_norm(x, 2, gamma, beta)
    expected = _per_channel_reference(x, gamma, beta, lambda i, j: (i, j // 2))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13)
    dy = rng.standard_normal(x.shape)
    grads = normref.group_norm_vjp(dy, x, 2, gamma, beta)
    assert grads.gamma.shape == grads.beta.shape == (3, 4)

    def f(**arrays):
        return normref.group_norm(arrays["x"], 2, arrays["gamma"], arrays["beta"])

    for name in ("x", "gamma", "beta"):
        fd, bound = fd_vjp(f, {"x": x, "gamma": gamma, "beta": beta}, dy, name)
        assert np.all(np.abs(getattr(grads, name) - fd) <= bound), name


@pytest.mark.parametrize("layer", ["batch_norm", "instance_norm", "group_norm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [1, -1])
def test_per_sample_parameters_agree_on_the_compiled_and_generic_paths(layer, dtype, axis):
    """The compiled kernels index a parameter by its flat strides, per-sample ones included:
    where they run, their results are the generic path's to the rounding of their sums."""
    pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[fast]')")
    from normref import _fused

    rng = _rng(2)
    shape = (3, 4, 6, 5) if axis == 1 else (3, 6, 5, 4)
    x = np.ascontiguousarray(rng.standard_normal(shape).astype(dtype))
    gamma = (1 + 0.5 * rng.standard_normal((3, 4))).astype(dtype)
    beta = rng.standard_normal((3, 4)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    extra = (2,) if layer == "group_norm" else ()
    forward, backward = getattr(normref, layer), getattr(normref, f"{layer}_vjp")
    taken = []
    original = _fused.forward

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        taken.append(result is not None)
        return result

    _fused.forward = spy
    try:
        fused = forward(x, *extra, gamma, beta, axis=axis)
    finally:
        _fused.forward = original
    fused_grads = backward(dy, x, *extra, gamma, beta, axis=axis)
    with compiled.enabled(False):
        generic = forward(x, *extra, gamma, beta, axis=axis)
        generic_grads = backward(dy, x, *extra, gamma, beta, axis=axis)
    # channels first, the kernels' five slots hold every layout (channels last, batch norm's
    # per-sample parameters vary along two sample slots: no layout, the generic path runs)
    assert taken == [axis == 1 or layer != "batch_norm"]
    # both round one float64 result to the output (float32: at most an ulp apart), or sum in
    # float64 in different orders (float64: 64 u of the largest term)
    tolerance = 2 * np.finfo(np.float32).eps if dtype == "float32" else 64 * U64
    np.testing.assert_allclose(fused, generic, rtol=0, atol=tolerance * np.abs(generic).max())
    for a, b in zip(fused_grads, generic_grads, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance * 64 * np.abs(b).max())


def test_per_sample_and_per_channel_parameters_do_not_mix():
    x = np.ones((3, 4, 2))
    with pytest.raises(ValueError, match=r"beta must have shape \(3, 4\)"):
        normref.instance_norm(x + np.arange(2), np.ones((3, 4)), np.zeros(4))


# ---------------------------------------------------------------------------- batch renorm


def _renorm_sample(seed: int = 3):
    rng = _rng(seed)
    x = rng.standard_normal((6, 4, 3)) * 1.5 + 0.4
    return {
        "x": x,
        "running_mean": 0.5 * rng.standard_normal(4),
        "running_var": 0.5 + rng.random(4),
        "gamma": 1 + 0.3 * rng.standard_normal(4),
        "beta": rng.standard_normal(4),
    }


def test_batch_renorm_with_r_max_1_and_d_max_0_is_batch_norm():
    args = _renorm_sample()
    dy = _rng(4).standard_normal(args["x"].shape)
    y = normref.batch_renorm(**args, r_max=1.0, d_max=0.0)
    expected = normref.batch_norm(args["x"], args["gamma"], args["beta"])
    np.testing.assert_allclose(y, expected, rtol=0, atol=16 * U64 * np.abs(expected).max())
    grads = normref.batch_renorm_vjp(dy, **args, r_max=1.0, d_max=0.0)
    reference = normref.batch_norm_vjp(dy, args["x"], args["gamma"], args["beta"])
    for a, b in zip(grads, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=64 * U64 * np.abs(b).max())


def test_batch_renorm_unclipped_is_the_running_statistics_normalization():
    """x_hat r + d = (x - mu) / sigma where neither is clipped: batch_norm_inference."""
    args = _renorm_sample()
    y = normref.batch_renorm(**args, r_max=1e6, d_max=1e6)
    expected = normref.batch_norm_inference(**args)
    np.testing.assert_allclose(y, expected, rtol=0, atol=64 * U64 * np.abs(expected).max())


def test_batch_renorm_vjp_holds_r_and_d_constant():
    """dx is the derivative of y with r and d frozen at their values (batch norm's backward of
    gamma r dy, r and d computed here in NumPy); dgamma and dbeta are the whole derivative
    (r and d do not depend on them), by finite differences."""
    args = _renorm_sample(5)
    x, rm, rv = args["x"], args["running_mean"], args["running_var"]
    r_max, d_max, eps = 1.2, 0.3, 1e-5
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    sigma = np.sqrt(rv + eps)
    r = np.clip(np.sqrt(var + eps) / sigma, 1 / r_max, r_max)
    d = np.clip((mean - rm) / sigma, -d_max, d_max)
    assert np.any(np.abs(r - np.sqrt(var + eps) / sigma) > 0), "the sample clips no channel"
    dy = _rng(6).standard_normal(x.shape)
    grads = normref.batch_renorm_vjp(dy, **args, r_max=r_max, d_max=d_max, eps=eps)
    frozen = normref.batch_norm_vjp(dy, x, args["gamma"] * r, args["gamma"] * d + args["beta"])
    np.testing.assert_allclose(grads.x, frozen.x, rtol=0, atol=64 * U64 * np.abs(frozen.x).max())

    def f(**arrays):
        return normref.batch_renorm(
            x, rm, rv, arrays["gamma"], arrays["beta"], r_max=r_max, d_max=d_max, eps=eps
        )

    for name in ("gamma", "beta"):
        fd, bound = fd_vjp(f, {"gamma": args["gamma"], "beta": args["beta"]}, dy, name)
        assert np.all(np.abs(getattr(grads, name) - fd) <= bound), name


def test_batch_renorm_train_updates_as_batch_norm_train():
    args = _renorm_sample(7)
    options = {"momentum": 0.1, "convention": "torch"}
    y, stats = normref.batch_renorm_train(**args, r_max=1.5, d_max=0.5, **options)
    _, expected = normref.batch_norm_train(**args, **options)
    np.testing.assert_array_equal(stats.mean, expected.mean)
    np.testing.assert_array_equal(stats.var, expected.var)
    np.testing.assert_array_equal(y, normref.batch_renorm(**args, r_max=1.5, d_max=0.5))


# ---------------------------------------------------------------------------- switchable norm


@pytest.mark.parametrize(
    ("index", "layer"),
    [
        (0, lambda x, g, b: normref.instance_norm(x, g, b)),
        (
            1,
            lambda x, g, b: (
                normref.layer_norm(x, axes=(1, 2, 3)) * g[:, None, None] + b[:, None, None]
            ),
        ),
        (2, lambda x, g, b: normref.batch_norm(x, g, b)),
    ],
    ids=["instance", "layer", "batch"],
)
def test_switchable_norm_with_one_logit_left_is_that_norm(index, layer):
    """Logits (0, -1e3, -1e3) and their permutations: the other weights are exp(-1000), 0 in
    float64, so the mixture is one statistic, to rounding."""
    rng = _rng(8)
    x = rng.standard_normal((3, 4, 2, 3)) + 0.5
    gamma, beta = 1 + 0.3 * rng.standard_normal(4), rng.standard_normal(4)
    logits = np.full(3, -1e3)
    logits[index] = 0.0
    y = normref.switchable_norm(x, gamma, beta, logits, logits.copy())
    expected = layer(x, gamma, beta)
    np.testing.assert_allclose(y, expected, rtol=0, atol=64 * U64 * np.abs(expected).max())


def _torch_switchable_norm(torch, x, gamma, beta, mean_logits, var_logits, eps):
    """The paper's eq. (3)-(4) in torch, channels second: each statistic from its own group
    of indices (torch's mean and biased var), mixed by the softmax of the logits."""
    kinds = ((2, 3), (1, 2, 3), (0, 2, 3))
    means = [x.mean(dim=axes, keepdim=True) for axes in kinds]
    variances = [x.var(dim=axes, keepdim=True, unbiased=False) for axes in kinds]
    a, b = torch.softmax(mean_logits, 0), torch.softmax(var_logits, 0)
    mu = sum(w * m for w, m in zip(a, means, strict=True))
    v = sum(w * m for w, m in zip(b, variances, strict=True))
    return (x - mu) / torch.sqrt(v + eps) * gamma[:, None, None] + beta[:, None, None]


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((2, 200, 30, 30), 1), ((3, 20, 50, 170), -1)],
    ids=["blocks-of-channels", "channels-last"],
)
def test_switchable_norm_in_blocks_of_instances_is_torchs(shape, axis):
    """Inputs of several blocks of instances (``normref._lib.in_place.blocks_of``: 2**17
    elements, split along the channels and the samples, the last ones shorter) against the
    paper's formulas in torch, float64, with its autograd for every gradient: the statistics
    come from each instance's sums combined, the passes a block at a time. Bounds: a few
    hundred roundings of the largest result, far below what a block computed wrongly (or
    missed) would give."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    rng = _rng(16)
    x = rng.standard_normal(shape) * 2 + 0.5
    channels = shape[axis]
    gamma, beta = 1 + 0.3 * rng.standard_normal(channels), rng.standard_normal(channels)
    logits = (np.array([0.3, -0.2, 0.1]), np.array([-0.4, 0.2, 0.5]))
    dy = rng.standard_normal(shape)
    eps = 1e-3
    y = normref.switchable_norm(x, gamma, beta, *logits, eps=eps, axis=axis)
    grads = normref.switchable_norm_vjp(dy, x, gamma, beta, *logits, eps=eps, axis=axis)

    def first(a):  # channels second, as torch's formulas take them
        return np.moveaxis(a, axis, 1)

    leaves = [torch.tensor(a, requires_grad=True) for a in (first(x), gamma, beta, *logits)]
    ty = _torch_switchable_norm(torch, *leaves, eps)
    ty.backward(torch.from_numpy(first(dy)))
    expected = [np.moveaxis(ty.detach().numpy(), 1, axis)]
    expected.append(np.moveaxis(leaves[0].grad.numpy(), 1, axis))
    expected += [leaf.grad.numpy() for leaf in leaves[1:]]
    mine = [y, grads.x, grads.gamma, grads.beta, grads.mean_logits, grads.var_logits]
    # a logit's gradient sums, over every element, dy gamma (1 + |x_hat|) times a statistic
    # (|mean| or variance, at most max(|x|)**2 here) over s**2 (s >= its smallest instance's
    # standard deviation): it cancels, and is bounded relative to those terms
    x_hat = (first(y) - beta[:, None, None]) / gamma[:, None, None]
    s_min = math.sqrt(first(x).var(axis=(2, 3)).min() + eps)
    terms = np.sum(np.abs(first(dy) * gamma[:, None, None]) * (1 + np.abs(x_hat)))
    logit_scale = terms * max(np.abs(x).max() ** 2, 1.0) / s_min**2
    for what, actual, reference in zip(
        ("y", "x", "gamma", "beta", "mean_logits", "var_logits"), mine, expected, strict=True
    ):
        scale = logit_scale if what.endswith("logits") else np.abs(reference).max()
        np.testing.assert_allclose(actual, reference, rtol=0, atol=256 * U64 * scale, err_msg=what)


# ---------------------------------------------------------------------------- AdaIN


def test_adain_of_its_own_content_is_the_content():
    """sigma(x) (x - mu(x)) / sigma(x) + mu(x) = x: the style's statistics undo the
    normalization (it is not instance norm)."""
    x = _rng(9).standard_normal((2, 3, 4, 5)) * 3 + 1
    np.testing.assert_allclose(
        normref.adaptive_instance_norm(x, x), x, rtol=0, atol=16 * U64 * np.abs(x).max()
    )


def test_adain_with_a_unit_style_is_instance_norm():
    """A style of mean 0 and variance 1 - eps per instance has sigma = 1, mu = 0."""
    rng = _rng(10)
    x = rng.standard_normal((2, 3, 4))
    z = rng.standard_normal((2, 3, 7))
    z = (z - z.mean(axis=-1, keepdims=True)) / z.std(axis=-1, keepdims=True)
    style = z * math.sqrt(1 - 1e-5)
    expected = normref.instance_norm(x)
    np.testing.assert_allclose(
        normref.adaptive_instance_norm(x, style), expected, rtol=0, atol=64 * U64
    )


def test_adain_correction_1_is_the_pytorch_ports_calc_mean_std():
    """``calc_mean_std``: ``var(dim=2)`` (unbiased) + eps, for the content and the style."""
    rng = _rng(11)
    x, style = rng.standard_normal((2, 3, 4, 4)), 2 + 3 * rng.standard_normal((2, 3, 5, 5))

    def stats(t):
        flat = t.reshape(*t.shape[:2], -1)
        std = np.sqrt(flat.var(axis=2, ddof=1) + 1e-5)
        return flat.mean(axis=2)[..., None, None], std[..., None, None]

    (mx, sx), (ms, ss) = stats(x), stats(style)
    expected = (x - mx) / sx * ss + ms
    y = normref.adaptive_instance_norm(x, style, correction=1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=64 * U64 * np.abs(expected).max())


# ---------------------------------------------------------------------------- LRN


def test_lrn_windows_differ_for_an_even_size_only():
    x = _rng(12).standard_normal((2, 6, 3))
    for size in (1, 3, 5):
        np.testing.assert_array_equal(
            normref.local_response_norm(x, size, window="torch"),
            normref.local_response_norm(x, size, window="onnx"),
        )
    torch_window = normref.local_response_norm(x, 4, alpha=0.5, window="torch")
    onnx_window = normref.local_response_norm(x, 4, alpha=0.5, window="onnx")
    assert not np.allclose(torch_window, onnx_window)
    # torch's window of channel 0 is [-2, 1], ONNX's [-1, 2]: channel 0 sees 2 vs 3 channels
    squares = x**2
    np.testing.assert_allclose(
        onnx_window[:, 0], x[:, 0] / (1 + 0.5 / 4 * squares[:, :3].sum(axis=1)) ** 0.75
    )
    np.testing.assert_allclose(
        torch_window[:, 0], x[:, 0] / (1 + 0.5 / 4 * squares[:, :2].sum(axis=1)) ** 0.75
    )


def test_lrn_is_tensorflows_with_alpha_times_the_window():
    """``tf.nn.local_response_normalization(depth_radius=r, bias, alpha, beta)`` on channels
    last: ``x / (bias + alpha * sum(x[c - r : c + r + 1] ** 2)) ** beta``, written here."""
    x = _rng(13).standard_normal((2, 3, 7))
    r, bias, alpha, beta = 2, 1.5, 0.3, 0.6
    expected = np.empty_like(x)
    for c in range(x.shape[-1]):
        window = x[..., max(0, c - r) : c + r + 1]
        expected[..., c] = x[..., c] / (bias + alpha * (window**2).sum(axis=-1)) ** beta
    y = normref.local_response_norm(
        x, 2 * r + 1, alpha=alpha * (2 * r + 1), beta=beta, k=bias, axis=-1
    )
    np.testing.assert_allclose(y, expected, rtol=1e-14)


def test_lrn_vjp_of_an_even_onnx_window():
    """The transposed window (its extents swapped) by finite differences."""
    rng = _rng(14)
    x, dy = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3))
    options = {"alpha": 0.7, "beta": 0.9, "k": 1.2, "window": "onnx"}
    grads = normref.local_response_norm_vjp(dy, x, 4, **options)
    fd, bound = fd_vjp(
        lambda **a: normref.local_response_norm(a["x"], 4, **options), {"x": x}, dy, "x"
    )
    assert np.all(np.abs(grads.x - fd) <= bound)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((2, 64, 23, 29), 1), ((3, 700, 16), -1), ((40, 900), 0)],
    ids=["blocks-of-samples-and-positions", "channels-last", "channels-first-axis"],
)
def test_lrn_in_blocks_of_positions_is_torchs(shape, axis):
    """Inputs of several blocks of positions (each block every channel at about 2**15 / C
    positions, the last ones shorter; ``normref._lib.in_place``) across the leading and the
    trailing axes: the values and the gradient are torch's float64 ``local_response_norm``
    and its autograd, to a few roundings of the terms."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    rng = _rng(15)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    options = {"alpha": 0.8, "beta": 0.75, "k": 1.5}
    y = normref.local_response_norm(x, 5, axis=axis, **options)
    dx = normref.local_response_norm_vjp(dy, x, 5, axis=axis, **options).x

    def as_torch(a):  # (N, C, *) with the channels second
        return torch.from_numpy(
            np.moveaxis(a, axis, 0)[None] if axis == 0 else np.moveaxis(a, axis, 1)
        )

    def back(t):
        a = t.detach().numpy()
        return a[0] if axis == 0 else np.moveaxis(a, 1, axis)

    tx = as_torch(x).clone().requires_grad_(True)
    ty = torch.nn.functional.local_response_norm(tx, 5, **options)
    ty.backward(as_torch(dy))
    assert_close_to_scale(y, back(ty), np.abs(x), rtol=16 * U64, what="y")
    # dx = dy D^-beta - (2 alpha beta / n) x sum(dy x D^(-beta-1)), D >= k > 1: its terms
    # are at most |dy| and 2 alpha beta |x| max|dy x|
    terms = np.abs(dy) + 2 * options["alpha"] * options["beta"] * np.abs(x) * np.abs(dy * x).max()
    assert_close_to_scale(dx, back(tx.grad), terms, rtol=64 * U64, what="dx")
