"""Weight standardization, Scaled WS, weight norm and spectral norm beyond the registry's tests.

The registry (tests/test_values.py, test_gradients.py, test_errors.py,
test_properties.py) checks each op's default variant on every backend; here:
every eps placement against the independent references, their VJPs against
finite differences, the frameworks that implement the same thing (torch, and
jax/flax reimplementations of the published code, differentiated by their
autograd), and the properties the methods are for.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from tests import reference_weights as ref
from tests.support import Backend, assert_close_to_scale
from tests.vjp_check import assert_vjp_matches_finite_differences

U64 = np.finfo(np.float64).eps
# float64 against float64 (frameworks' own float64 kernels), relative to the scale of the terms
# each compared value sums: the weights here have at most 48 elements per unit (and spectral
# norm's power iteration sums 48 terms per product), so each side's sums err by at most 48 u of
# their terms (in any order) and the few roundings around them add under 16 u: 64 u a side.
FRAMEWORK_RTOL = 128 * U64


def _weight(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _unit_var(y: np.ndarray, out_axis: int, ddof: int = 0) -> np.ndarray:
    return np.moveaxis(y, out_axis, 0).reshape(y.shape[out_axis], -1).var(axis=1, ddof=ddof)


def _unit_gradient_scale(
    dy: np.ndarray, w: np.ndarray, factor: np.ndarray, out_axis: int, *, centred: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scales of the terms in the gradients of ``y = factor * (w - mean) / ||w - mean||`` per unit
    (without the mean for weight norm), for ``w``'s elements and for the per-unit ``factor``.

    With x = (w - mean)/||w - mean|| (|x| <= 1) and s = ||w - mean||, an element's gradient
    (factor/s) (dy - mean(dy) - x sum(dy x)) sums terms of its unit's cotangents up to
    2 |factor|/s sum|dy| (the mean's share is in the first); the factor's, sum(dy x), up to
    sum|dy|. Units are along ``out_axis``.
    """
    rows = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    if centred:
        rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1)
    sums = np.abs(np.moveaxis(dy, out_axis, 0).reshape(rows.shape)).sum(axis=1)
    per_unit = 2 * np.abs(factor.reshape(-1)) / norms * sums
    shape = [1] * w.ndim
    shape[out_axis] = -1
    return np.broadcast_to(per_unit.reshape(shape), w.shape), sums


# ---------------------------------------------------------------------------
# Weight standardization


@pytest.mark.parametrize("eps_mode", ["add", "max", "add_std"])
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize(
    ("shape", "out_axis"), [((4, 3, 2, 2), 0), ((2, 2, 3, 4), -1), ((5, 6), 0)]
)
def test_weight_standardize_every_variant_matches_reference(
    eps_mode, correction, shape, out_axis, standard_backend: Backend
):
    w = _weight(0, shape)
    kwargs = {"out_axis": out_axis, "eps": 1e-3, "eps_mode": eps_mode, "correction": correction}
    expected = ref.weight_standardize(w, **kwargs)
    actual = normref.weight_standardize(standard_backend.asarray(w, "float64"), **kwargs)
    # unit-scale standardization in float64 (see tests/reference_weights.py)
    assert_close_to_scale(
        standard_backend.to_numpy(actual), expected, 1.0, rtol=1e-13, what=str(kwargs)
    )


@pytest.mark.parametrize("eps_mode", ["add", "max", "add_std"])
@pytest.mark.parametrize("correction", [0, 1])
def test_weight_standardize_vjp_every_variant(eps_mode, correction):
    w, dy = _weight(1, (3, 2, 2)), _weight(2, (3, 2, 2))
    kwargs = {"out_axis": -1, "eps": 1e-2, "eps_mode": eps_mode, "correction": correction}
    grads = normref.weight_standardize_vjp(dy, w, **kwargs)
    assert_vjp_matches_finite_differences(
        lambda w: normref.weight_standardize(w, **kwargs), grads, {"w": w}, dy, what=str(kwargs)
    )


def test_weight_standardize_original_variant_has_unbiased_std_below_one():
    """The WS paper's code: (w - mean) / (std + eps), unbiased std: each unit's std is s/(s+eps)."""
    w, eps = _weight(3, (6, 4, 3, 3)), 1e-5
    y = normref.weight_standardize(w, eps=eps, eps_mode="add_std", correction=1)
    s = np.sqrt(_unit_var(w, 0, ddof=1))
    # the output is the input's centred values times 1/(s + eps): its std scales exactly
    assert_close_to_scale(
        np.sqrt(_unit_var(y, 0, ddof=1)), s / (s + eps), 1.0, rtol=64 * U64, what="std"
    )


def test_weight_standardize_layouts_agree():
    """An HWIO kernel with out_axis=-1 standardizes as its OIHW transpose with out_axis=0."""
    w_hwio = _weight(4, (3, 3, 5, 4))
    w_oihw = np.transpose(w_hwio, (3, 2, 0, 1))
    y_hwio = normref.weight_standardize(w_hwio, out_axis=-1)
    y_oihw = normref.weight_standardize(w_oihw, out_axis=0)
    # the same arithmetic on the same values in another memory order: equal to rounding
    assert_close_to_scale(
        np.transpose(y_hwio, (3, 2, 0, 1)), y_oihw, 1.0, rtol=16 * U64, what="layouts"
    )


def test_weight_standardize_matches_timm_std_conv_in_torch():
    """timm's StdConv2d: F.batch_norm on w.reshape(1, O, -1) in training mode, eps inside sqrt."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    w, dy = _weight(5, (4, 3, 2, 2)), _weight(6, (4, 3, 2, 2))
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.batch_norm(
        tw.reshape(1, 4, -1), None, None, training=True, momentum=0.0, eps=1e-6
    ).reshape_as(tw)
    ty.backward(torch.tensor(dy))
    y = normref.weight_standardize(w, eps=1e-6)
    grads = normref.weight_standardize_vjp(dy, w, eps=1e-6)
    assert_close_to_scale(y, ty.detach().numpy(), 1.0, rtol=FRAMEWORK_RTOL, what="forward")
    assert_close_to_scale(
        grads.w, tw.grad.numpy(), np.abs(dy).max(), rtol=FRAMEWORK_RTOL, what="gradient"
    )


# ---------------------------------------------------------------------------
# Scaled weight standardization


def _with_flat_units(w: np.ndarray, units: tuple[int, ...], out_axis: int) -> np.ndarray:
    """``w`` with the listed units made nearly constant (variance ~ 1e-12: below any eps used)."""
    w = np.moveaxis(w.copy(), out_axis, 0)
    for u in units:
        w[u] = 0.3 + 1e-6 * w[u]
    return np.moveaxis(w, 0, out_axis)


@pytest.mark.parametrize("eps_mode", ["max_fan_in", "max", "add"])
@pytest.mark.parametrize(("shape", "out_axis"), [((2, 2, 3, 5), -1), ((5, 3, 2, 2), 0)])
def test_scaled_ws_every_eps_mode_matches_reference(
    eps_mode, shape, out_axis, standard_backend: Backend
):
    """Including units so flat that eps decides their scale (the max's other branch)."""
    w = _with_flat_units(_weight(7, shape), (1, 3), out_axis)
    gain = 1.0 + 0.3 * _weight(8, (shape[out_axis],))
    kwargs = {"gamma": 1.7, "out_axis": out_axis, "eps": 1e-4, "eps_mode": eps_mode}
    expected = ref.scaled_weight_standardize(w, gain, **kwargs)
    xp = standard_backend
    actual = xp.to_numpy(
        normref.scaled_weight_standardize(
            xp.asarray(w, "float64"), xp.asarray(gain, "float64"), **kwargs
        )
    )
    # unit-scale values and a few float64 operations each (tests/reference_weights.py); the
    # flat units' centred values are 1e-6 but computed from values of size 0.3: their rounding
    # is that of 0.3, about 1e-16 absolute, far inside 1e-13 of the output's scale
    assert_close_to_scale(actual, expected, 1.0, rtol=1e-13, what=str(kwargs))


@pytest.mark.parametrize("eps_mode", ["max_fan_in", "max", "add"])
@pytest.mark.parametrize("with_gain", [True, False])
def test_scaled_ws_vjp_every_eps_mode(eps_mode, with_gain):
    w, dy = _weight(9, (3, 4, 2)), _weight(10, (3, 4, 2))
    gain = 1.0 + 0.3 * _weight(11, (3,)) if with_gain else None
    kwargs = {"gamma": 1.3, "out_axis": 0, "eps": 1e-4, "eps_mode": eps_mode}
    grads = normref.scaled_weight_standardize_vjp(dy, w, gain, **kwargs)
    args = {"w": w} if gain is None else {"w": w, "gain": gain}
    assert_vjp_matches_finite_differences(
        lambda w, gain=None: normref.scaled_weight_standardize(w, gain, **kwargs),
        grads,
        args,
        dy,
        what=str(kwargs),
    )
    if gain is None:
        assert grads.gain is None


def test_scaled_ws_matches_nfnets_formula_differentiated_by_jax():
    """NFNets' WSConv2D.standardize_weight (HWIO), rewritten in jax and differentiated by jax."""
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def nfnets(weight, gain, eps=1e-4):
        mean = jnp.mean(weight, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(weight, axis=(0, 1, 2), keepdims=True)
        fan_in = np.prod(weight.shape[:-1])
        scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain
        return weight * scale - mean * scale

    w = _with_flat_units(_weight(12, (3, 3, 4, 5)), (2,), -1)
    gain, dy = 1.0 + 0.3 * _weight(13, (5,)), _weight(14, (3, 3, 4, 5))
    y, pullback = jax.vjp(nfnets, jnp.asarray(w), jnp.asarray(gain))
    d_w, d_gain = pullback(jnp.asarray(dy))
    ours = normref.scaled_weight_standardize(w, gain, out_axis=-1)
    grads = normref.scaled_weight_standardize_vjp(dy, w, gain, out_axis=-1)
    assert_close_to_scale(ours, np.asarray(y), 1.0, rtol=FRAMEWORK_RTOL, what="forward")
    scale_w, scale_gain = _unit_gradient_scale(dy, w, gain, -1, centred=True)
    assert_close_to_scale(grads.w, np.asarray(d_w), scale_w, rtol=FRAMEWORK_RTOL, what="d_w")
    assert_close_to_scale(
        grads.gain, np.asarray(d_gain), scale_gain, rtol=FRAMEWORK_RTOL, what="d_gain"
    )


def test_scaled_ws_matches_timm_scaled_std_conv_in_torch():
    """timm's ScaledStdConv2d: F.batch_norm with weight = gain * gamma / sqrt(fan_in), eps inside."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    w, dy = _weight(15, (5, 3, 2, 2)), _weight(16, (5, 3, 2, 2))
    gain, gamma, eps = 1.0 + 0.3 * _weight(17, (5,)), 1.7, 1e-6
    tw, tg = torch.tensor(w, requires_grad=True), torch.tensor(gain, requires_grad=True)
    scale = gamma * 12**-0.5
    ty = torch.nn.functional.batch_norm(
        tw.reshape(1, 5, -1), None, None, weight=tg * scale, training=True, momentum=0.0, eps=eps
    ).reshape_as(tw)
    ty.backward(torch.tensor(dy))
    kwargs = {"gamma": gamma, "eps": eps, "eps_mode": "add"}
    ours = normref.scaled_weight_standardize(w, gain, **kwargs)
    grads = normref.scaled_weight_standardize_vjp(dy, w, gain, **kwargs)
    assert_close_to_scale(ours, ty.detach().numpy(), 1.0, rtol=FRAMEWORK_RTOL, what="forward")
    scale_w, scale_gain = _unit_gradient_scale(dy, w, gain * gamma, 0, centred=True)
    assert_close_to_scale(grads.w, tw.grad.numpy(), scale_w, rtol=FRAMEWORK_RTOL, what="d_w")
    assert_close_to_scale(
        grads.gain, tg.grad.numpy(), gamma * scale_gain, rtol=FRAMEWORK_RTOL, what="d_gain"
    )


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "tanh", "sigmoid"])
def test_scaled_ws_preserves_variance_through_the_nonlinearity(name):
    """y = g(x) W^T with W = Scaled WS(gamma_g): each output unit has variance 1 on x ~ N(0, 1).

    Per unit, W's row has zero mean (so g's mean cancels) and squared norm
    gamma^2 (N var / max(N var, eps) = 1 here), so Var(y_i) = gamma^2 Var(g(z)) = 1
    exactly. The sample variance of n draws has standard error
    sqrt((m4 - var^2) / n), m4 its fourth central moment (estimated from the
    sample); each unit must be within 5 of them.
    """
    import scipy.special as sp

    functions = {
        "relu": lambda z: np.maximum(z, 0.0),
        "gelu": lambda z: 0.5 * z * sp.erfc(-z / np.sqrt(2.0)),
        "silu": lambda z: z * sp.expit(z),
        "tanh": np.tanh,
        "sigmoid": sp.expit,
    }
    rng = np.random.default_rng(18)
    n, fan_in, units = 40_000, 32, 8
    x = rng.standard_normal((n, fan_in))
    w = normref.scaled_weight_standardize(
        rng.standard_normal((units, fan_in)), gamma=normref.nonlinearity_gamma(name)
    )
    y = functions[name](x) @ w.T
    var = y.var(axis=0)
    m4 = ((y - y.mean(axis=0)) ** 4).mean(axis=0)
    standard_error = np.sqrt((m4 - var**2) / n)
    assert np.all(np.abs(var - 1.0) <= 5 * standard_error), (name, var, standard_error)


# ---------------------------------------------------------------------------
# Weight normalization


@pytest.mark.parametrize(("shape", "out_axis"), [((4, 3, 2, 2), 0), ((3, 5), -1), ((6,), 0)])
def test_weight_norm_matches_torch(shape, out_axis):
    """torch._weight_norm (the kernel of both torch weight_norm APIs), differentiated by torch."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    axis = out_axis % len(shape)
    v, dy = _weight(19, shape), _weight(20, shape)
    g = 1.0 + 0.3 * _weight(21, (shape[axis],))
    g_shape = tuple(s if a == axis else 1 for a, s in enumerate(shape))
    tv = torch.tensor(v, requires_grad=True)
    tg = torch.tensor(g.reshape(g_shape), requires_grad=True)
    ty = torch._weight_norm(tv, tg, axis)
    ty.backward(torch.tensor(dy))
    ours = normref.weight_norm(v, g, out_axis=out_axis)
    grads = normref.weight_norm_vjp(dy, v, g, out_axis=out_axis)
    assert_close_to_scale(ours, ty.detach().numpy(), 1.0, rtol=FRAMEWORK_RTOL, what="forward")
    scale_v, scale_g = _unit_gradient_scale(dy, v, g, out_axis, centred=False)
    assert_close_to_scale(grads.v, tv.grad.numpy(), scale_v, rtol=FRAMEWORK_RTOL, what="d_v")
    assert_close_to_scale(
        grads.g, tg.grad.numpy().reshape(-1), scale_g, rtol=FRAMEWORK_RTOL, what="d_g"
    )


def test_weight_norm_matches_flax():
    """flax WeightNorm on a Dense kernel (in, out): eps=1e-12 inside the root, a scale per output."""
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    import flax.linen as nn
    import jax.numpy as jnp

    v, g, dy = _weight(22, (4, 3)), 1.0 + 0.3 * _weight(23, (3,)), _weight(24, (4, 3))
    module = nn.WeightNorm(nn.Dense(3, use_bias=False, param_dtype=jnp.float64))

    def flax_weight(kernel, scale):
        params = {"layer_instance": {"kernel": kernel}, "layer_instance/kernel/scale": scale}
        return module.apply({"params": params}, jnp.eye(4))  # x = I: the output is the weight

    y, pullback = jax.vjp(flax_weight, jnp.asarray(v), jnp.asarray(g))
    d_v, d_g = pullback(jnp.asarray(dy))
    kwargs = {"out_axis": -1, "eps": 1e-12}
    ours = normref.weight_norm(v, g, **kwargs)
    grads = normref.weight_norm_vjp(dy, v, g, **kwargs)
    assert_close_to_scale(ours, np.asarray(y), 1.0, rtol=FRAMEWORK_RTOL, what="forward")
    scale_v, scale_g = _unit_gradient_scale(dy, v, g, -1, centred=False)
    assert_close_to_scale(grads.v, np.asarray(d_v), scale_v, rtol=FRAMEWORK_RTOL, what="d_v")
    assert_close_to_scale(grads.g, np.asarray(d_g), scale_g, rtol=FRAMEWORK_RTOL, what="d_g")


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-3])
@pytest.mark.parametrize("with_g", [True, False])
def test_weight_norm_vjp_variants(eps, with_g):
    v, dy = _weight(25, (2, 3, 2)), _weight(26, (2, 3, 2))
    g = 1.0 + 0.3 * _weight(27, (2,)) if with_g else None
    kwargs = {"out_axis": -1, "eps": eps}
    grads = normref.weight_norm_vjp(dy, v, g, **kwargs)
    args = {"v": v} if g is None else {"v": v, "g": g}
    assert_vjp_matches_finite_differences(
        lambda v, g=None: normref.weight_norm(v, g, **kwargs), grads, args, dy, what=str(kwargs)
    )
    assert_close_to_scale(
        normref.weight_norm(v, g, **kwargs),
        ref.weight_norm(v, g, **kwargs),
        1.0,
        rtol=1e-13,
        what="values",
    )


@pytest.mark.parametrize("eps", [0.0, 1e-12])
def test_weight_norm_of_a_zero_unit_is_zero_with_zero_gradients(eps, standard_backend: Backend):
    """A unit with no direction: 0 out; with eps = 0 its gradients are defined as 0 (torch: NaN)."""
    xp = standard_backend
    v = _weight(28, (3, 4))
    v[1] = 0.0
    g = np.array([1.5, 2.0, 0.5])
    y = xp.to_numpy(
        normref.weight_norm(xp.asarray(v, "float64"), xp.asarray(g, "float64"), eps=eps)
    )
    grads = normref.weight_norm_vjp(
        xp.asarray(np.ones((3, 4)), "float64"),
        xp.asarray(v, "float64"),
        xp.asarray(g, "float64"),
        eps=eps,
    )
    assert np.all(y[1] == 0.0)
    norms = np.linalg.norm(v[[0, 2]], axis=1)
    expected_norms = g[[0, 2]] * norms / np.sqrt(norms**2 + eps)  # the other units: g, up to eps
    assert_close_to_scale(
        np.linalg.norm(y[[0, 2]], axis=1), expected_norms, g[[0, 2]], rtol=16 * U64, what="norms"
    )
    d_v, d_g = xp.to_numpy(grads.v), xp.to_numpy(grads.g)
    assert np.all(np.isfinite(d_v))
    assert np.all(np.isfinite(d_g))
    # the output of a zero unit does not depend on g; with eps > 0 its v-gradient is g / sqrt(eps)
    assert d_g[1] == 0.0
    if eps == 0.0:
        assert np.all(d_v[1] == 0.0)
    else:
        assert_close_to_scale(
            d_v[1], np.full(4, 2.0 / math.sqrt(eps)), 2.0 / math.sqrt(eps), rtol=1e-15, what="dv"
        )


# ---------------------------------------------------------------------------
# Spectral normalization


def _torch_legacy_spectral(torch, w, u, v, dy, n):
    """torch.nn.utils.spectral_norm (v first) on a module holding w, with our u, v as its state."""
    module = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).double()
    if w.ndim == 4:
        module = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], bias=False).double()
    torch.nn.utils.spectral_norm(module, n_power_iterations=n)
    with torch.no_grad():
        module.weight_orig.copy_(torch.tensor(w))
        module.weight_u.copy_(torch.tensor(u))
        module.weight_v.copy_(torch.tensor(v))
    module.train()
    input_shape = (1, w.shape[1]) if w.ndim == 2 else (1, w.shape[1], *w.shape[2:])
    module(torch.zeros(input_shape, dtype=torch.float64))  # the forward pre-hook iterates
    weight = module.weight
    weight.backward(torch.tensor(dy))
    return (
        weight.detach().numpy(),
        module.weight_u.numpy(),
        module.weight_v.numpy(),
        module.weight_orig.grad.numpy(),
    )


def _torch_parametrized_spectral(torch, w, u, v, dy, n):
    """torch.nn.utils.parametrizations.spectral_norm (u first), its u, v buffers set to ours."""
    module = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).double()
    if w.ndim == 4:
        module = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], bias=False).double()
    torch.nn.utils.parametrizations.spectral_norm(module, n_power_iterations=n)
    norm = module.parametrizations.weight[0]
    with torch.no_grad():
        module.parametrizations.weight.original.copy_(torch.tensor(w))
        norm._u.copy_(torch.tensor(u))
        norm._v.copy_(torch.tensor(v))
    module.train()
    weight = module.weight
    weight.backward(torch.tensor(dy))
    original = module.parametrizations.weight.original
    return weight.detach().numpy(), norm._u.numpy(), norm._v.numpy(), original.grad.numpy()


@pytest.mark.parametrize("order", ["v_first", "u_first"])
@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 2, 2)])
@pytest.mark.parametrize("n", [1, 3])
def test_spectral_norm_matches_torch(order, shape, n):
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    w, dy = _weight(29, shape), _weight(30, shape)
    fan_in = math.prod(shape[1:])
    u, v = _weight(31, (shape[0],)), _weight(32, (fan_in,))
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    run = _torch_legacy_spectral if order == "v_first" else _torch_parametrized_spectral
    t_weight, t_u, t_v, t_grad = run(torch, w, u, v, dy, n)
    kwargs = {"n_power_iterations": n, "order": order}
    ours = normref.spectral_norm(w, u, v, **kwargs)
    grad = normref.spectral_norm_vjp(dy, w, u, v, **kwargs).w
    for name, mine, theirs in (
        ("weight", ours.weight, t_weight),
        ("u", ours.u, t_u),
        ("v", ours.v, t_v),
    ):
        assert_close_to_scale(mine, theirs, 1.0, rtol=FRAMEWORK_RTOL, what=f"{name}, {order}")
    assert_close_to_scale(
        ours.sigma,
        np.linalg.norm(w) / np.linalg.norm(t_weight),
        1.0,
        rtol=FRAMEWORK_RTOL,
        what="sigma",
    )
    assert_close_to_scale(
        grad, t_grad, np.abs(dy).sum(), rtol=FRAMEWORK_RTOL, what=f"gradient, {order}"
    )


def test_spectral_norm_matches_flax():
    """flax SpectralNorm on a Dense kernel (in, out): v first from u, eps=1e-12 inside the root."""
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    import flax.linen as nn
    import jax.numpy as jnp

    w, u = _weight(33, (4, 3)), _weight(34, (3,))  # flax starts from an unnormalized u
    module = nn.SpectralNorm(nn.Dense(3, use_bias=False, param_dtype=jnp.float64))
    variables = {
        "params": {"layer_instance": {"kernel": jnp.asarray(w)}},
        "batch_stats": {
            "layer_instance/kernel/u": jnp.asarray(u[None, :]),
            "layer_instance/kernel/sigma": jnp.asarray(1.0),
        },
    }
    y, state = module.apply(variables, jnp.eye(4), update_stats=True, mutable=["batch_stats"])
    ours = normref.spectral_norm(w, u, out_axis=-1, eps_mode="add")
    stats = state["batch_stats"]
    assert_close_to_scale(ours.weight, np.asarray(y), 1.0, rtol=FRAMEWORK_RTOL, what="weight")
    assert_close_to_scale(
        ours.u, np.asarray(stats["layer_instance/kernel/u"])[0], 1.0, rtol=FRAMEWORK_RTOL, what="u"
    )
    assert_close_to_scale(
        ours.sigma,
        np.asarray(stats["layer_instance/kernel/sigma"]),
        1.0,
        rtol=FRAMEWORK_RTOL,
        what="sigma",
    )


@pytest.mark.parametrize("order", ["v_first", "u_first"])
@pytest.mark.parametrize(("shape", "out_axis"), [((6, 5), 0), ((2, 3, 4), -1)])
def test_spectral_norm_converges_to_the_largest_singular_value(order, shape, out_axis):
    """Power iteration from a generic start converges to sigma_max (numpy's SVD) at rate
    (sigma_2 / sigma_1)^(2k); 500 steps on these matrices reach float64 rounding."""
    w = _weight(35, shape)
    matrix = np.moveaxis(w, out_axis, 0).reshape(shape[out_axis], -1)
    singular = np.linalg.svd(matrix, compute_uv=False)
    assert (singular[1] / singular[0]) ** 1000 < 1e-20  # converged after 500 steps
    u, v = _weight(36, (matrix.shape[0],)), _weight(37, (matrix.shape[1],))
    result = normref.spectral_norm(w, u, v, n_power_iterations=500, order=order, out_axis=out_axis)
    assert_close_to_scale(result.sigma, singular[0], singular[0], rtol=64 * U64, what="sigma")
    normalized = np.moveaxis(result.weight, out_axis, 0).reshape(matrix.shape)
    assert_close_to_scale(
        np.linalg.norm(normalized, 2), 1.0, 1.0, rtol=64 * U64, what="||w / sigma||_2"
    )


def test_spectral_norm_vjp_holds_the_iterated_vectors_constant():
    """After n steps the VJP is the exact derivative of w / (u_n^T W v_n) with u_n, v_n fixed."""
    w, dy = _weight(38, (4, 3, 2)), _weight(39, (4, 3, 2))
    u = _weight(40, (4,))
    iterated = normref.spectral_norm(w, u, n_power_iterations=2)
    grad = normref.spectral_norm_vjp(dy, w, u, n_power_iterations=2).w
    fixed = normref.spectral_norm_vjp(dy, w, iterated.u, iterated.v, n_power_iterations=0).w
    assert_close_to_scale(grad, fixed, np.abs(dy).sum(), rtol=16 * U64, what="gradient")
    assert_vjp_matches_finite_differences(
        lambda w: normref.spectral_norm_weight(w, iterated.u, iterated.v, n_power_iterations=0),
        normref.WeightGrad(grad),
        {"w": w},
        dy,
        what="spectral norm with fixed u, v",
    )


def test_spectral_norm_of_a_vector_is_its_normalization():
    """A rank-1 weight is a (units, 1) matrix: sigma = ||w||, as torch's 1-D F.normalize path."""
    w = _weight(41, (7,))
    result = normref.spectral_norm(w, _weight(42, (7,)))
    assert_close_to_scale(
        result.weight, w / np.linalg.norm(w), 1.0, rtol=16 * U64, what="w / ||w||"
    )


def test_spectral_norm_of_a_zero_weight_is_finite(standard_backend: Backend):
    """sigma = 0 leaves the weight unscaled (as flax); the gradient is then dy."""
    xp = standard_backend
    w, u, dy = np.zeros((3, 4)), np.ones(3), _weight(43, (3, 4))
    result = normref.spectral_norm(xp.asarray(w, "float64"), xp.asarray(u, "float64"))
    assert float(xp.to_numpy(result.sigma)) == 0.0
    assert np.all(xp.to_numpy(result.weight) == 0.0)
    assert np.all(np.isfinite(xp.to_numpy(result.u)))
    assert np.all(np.isfinite(xp.to_numpy(result.v)))
    grad = normref.spectral_norm_vjp(
        xp.asarray(dy, "float64"), xp.asarray(w, "float64"), xp.asarray(u, "float64")
    )
    np.testing.assert_array_equal(xp.to_numpy(grad.w), dy)


def test_spectral_norm_state_dtypes_and_eps_mode_errors():
    w = _weight(44, (3, 4)).astype(np.float32)
    result = normref.spectral_norm(w, np.ones(3, np.float16))
    assert (result.weight.dtype, result.u.dtype, result.v.dtype, result.sigma.dtype) == (
        np.float32,
        np.float16,
        np.float32,
        np.float32,
    )
    with pytest.raises(ValueError, match=r"eps_mode must be one of \('max', 'add'\)"):
        normref.spectral_norm(w, np.ones(3), eps_mode="add_std")
    with pytest.raises(TypeError, match="n_power_iterations must be an integer"):
        normref.spectral_norm(w, np.ones(3), n_power_iterations=1.5)
