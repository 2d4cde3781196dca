"""Unit-wise norms, adaptive gradient clipping and global-norm clipping beyond the registry's tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normref
from tests.reference_weights import adaptive_grad_clip as agc_reference
from tests.support import Backend, assert_close_to_scale

U64 = np.finfo(np.float64).eps


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _unit_norms(x: np.ndarray, out_axis: int) -> np.ndarray:
    if x.ndim <= 1:
        return np.array([math.sqrt(math.fsum(np.ravel(x) ** 2))])
    units = np.moveaxis(x, out_axis, 0).reshape(x.shape[out_axis], -1)
    return np.array([math.sqrt(math.fsum(row**2)) for row in units])


# ---------------------------------------------------------------------------
# Unit-wise norm


@pytest.mark.parametrize(
    ("shape", "out_axis", "kept"),
    [
        ((5, 3), 0, (5, 1)),
        ((3, 5), -1, (1, 5)),
        ((2, 2, 3, 4), -1, (1, 1, 1, 4)),
        ((4,), 0, (1,)),
        ((), -1, ()),
    ],
)
def test_unitwise_norm_per_unit_keeps_dims(shape, out_axis, kept, standard_backend: Backend):
    x = _rng(0).standard_normal(shape)
    xp = standard_backend
    norm = xp.to_numpy(normref.unitwise_norm(xp.asarray(x, "float64"), out_axis=out_axis))
    assert norm.shape == kept
    # sqrt of a sum of squares, each step correctly rounded: a few ulps of the norm
    assert_close_to_scale(
        norm.ravel(), _unit_norms(x, out_axis), _unit_norms(x, out_axis), rtol=8 * U64, what="norms"
    )


def test_unitwise_norm_matches_optax_for_jax_layouts():
    """optax infers units from the rank for jax layouts: rank 2 and 4 are out_axis=-1 here."""
    pytest.importorskip("optax", reason="optax is not installed (pip install -e '.[jax]')")
    import jax

    jax.config.update("jax_enable_x64", True)
    import optax

    for shape in [(5, 3), (3, 3, 4, 2), (6,)]:
        x = _rng(1).standard_normal(shape)
        theirs = np.asarray(optax.transforms.unitwise_norm(x))  # broadcast to x's shape
        ours = np.broadcast_to(normref.unitwise_norm(x, out_axis=-1), shape)
        assert_close_to_scale(ours, theirs, theirs, rtol=8 * U64, what=f"shape {shape}")


def test_rank3_units_differ_from_optax_as_documented():
    """optax (and the NFNets code) reduce a rank-3 (in, heads, out) weight over axis 0 only: one
    unit per (head, out) pair, the units of that weight reshaped to (in, heads * out) here."""
    pytest.importorskip("optax", reason="optax is not installed (pip install -e '.[jax]')")
    import jax

    jax.config.update("jax_enable_x64", True)
    import optax

    x = _rng(2).standard_normal((4, 3, 2))
    theirs = np.asarray(optax.transforms.unitwise_norm(x))
    per_pair = np.broadcast_to(normref.unitwise_norm(x.reshape(4, 6), out_axis=-1), (4, 6)).reshape(
        4, 3, 2
    )
    assert_close_to_scale(per_pair, theirs, theirs, rtol=8 * U64, what="(head, out) units")
    ours = np.broadcast_to(normref.unitwise_norm(x, out_axis=-1), x.shape)
    assert not np.allclose(ours, theirs)  # per out unit over (in, heads): another quantity


# ---------------------------------------------------------------------------
# Adaptive gradient clipping


def _agc_case(seed: int, shape: tuple[int, ...], clipping: float) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    return np.asarray(rng.standard_normal(shape) * rng.uniform(0.001, 0.1)), rng.standard_normal(
        shape
    )


@pytest.mark.parametrize("shape", [(8, 4), (3, 3, 4, 6), (6,), ()])
def test_adaptive_grad_clip_matches_optax(shape):
    """optax.adaptive_grad_clip with params, jax layouts (out_axis=-1 here); eps and clipping its
    defaults and a clipping that clips some units and not others."""
    pytest.importorskip("optax", reason="optax is not installed (pip install -e '.[jax]')")
    import jax

    jax.config.update("jax_enable_x64", True)
    import optax

    for clipping in (0.01, 0.05):
        grad, param = _agc_case(3, shape, clipping)
        transform = optax.adaptive_grad_clip(clipping)
        theirs, _ = transform.update({"p": grad}, transform.init({"p": param}), {"p": param})
        ours = normref.adaptive_grad_clip(grad, param, clipping=clipping, out_axis=-1)
        # the same float64 formula up to operation order: a few ulps of the gradient's size
        assert_close_to_scale(
            ours, np.asarray(theirs["p"]), np.abs(grad).max(), rtol=16 * U64, what=str(shape)
        )


@given(
    seed=st.integers(0, 2**31 - 1),
    clipping=st.sampled_from([1e-3, 0.01, 0.1, 1.0]),
    log_scale=st.floats(-4, 2),
    out_axis=st.sampled_from([0, -1]),
)
def test_adaptive_grad_clip_never_increases_a_norm_and_keeps_small_units(
    seed, clipping, log_scale, out_axis
):
    """Per unit: the norm never grows; a unit at or below the threshold m is returned exactly; a
    clipped unit ends with norm m (up to the rounding of G * m / ||G||: a few ulps)."""
    rng = _rng(seed)
    shape = (4, 3, 2)
    param = rng.standard_normal(shape) * rng.choice([0.0, 1e-4, 1.0], size=(1, 1, 1))
    grad = rng.standard_normal(shape) * 10.0**log_scale
    grad *= rng.choice([0.0, 1.0], size=(4, 1, 1) if out_axis == 0 else (1, 1, 2))  # zero units
    clipped = normref.adaptive_grad_clip(grad, param, clipping=clipping, out_axis=out_axis)
    before, after = _unit_norms(grad, out_axis), _unit_norms(clipped, out_axis)
    threshold = clipping * np.maximum(_unit_norms(param, out_axis), 1e-3)
    assert np.all(after <= before * (1 + 8 * U64))
    kept = before <= threshold
    axis = out_axis % 3
    units_in = np.moveaxis(grad, axis, 0)
    units_out = np.moveaxis(clipped, axis, 0)
    np.testing.assert_array_equal(units_out[kept], units_in[kept])
    assert_close_to_scale(
        after[~kept], threshold[~kept], threshold[~kept], rtol=8 * U64, what="clipped norm"
    )


def test_adaptive_grad_clip_at_the_boundary_and_at_zero(standard_backend: Backend):
    """||G|| = m exactly (3-4-5 triangles): unchanged, one-sided VJP of the unclipped side. A zero
    gradient stays 0; a zero weight clips to lambda * eps. All finite."""
    xp = standard_backend
    param = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])  # norms 5, 0 (-> eps), 1
    grad = np.array([[1.5, 2.0], [3.0, 4.0], [0.0, 0.0]])  # norms 2.5 = 0.5 * 5, 5, 0
    kwargs = {"clipping": 0.5, "eps": 1e-3}
    arrays = [xp.asarray(a, "float64") for a in (grad, param)]
    out = xp.to_numpy(normref.adaptive_grad_clip(*arrays, **kwargs))
    np.testing.assert_array_equal(out[0], grad[0])  # factor exactly m / m = 1
    assert_close_to_scale(out[1], grad[1] * (0.5e-3 / 5.0), 1e-4, rtol=4 * U64, what="zero weight")
    np.testing.assert_array_equal(out[2], 0.0)
    dy = np.array([[1.0, -2.0], [0.5, 0.25], [2.0, 1.0]])
    grads = normref.adaptive_grad_clip_vjp(xp.asarray(dy, "float64"), *arrays, **kwargs)
    d_grad, d_param = xp.to_numpy(grads.grad), xp.to_numpy(grads.param)
    np.testing.assert_array_equal(d_grad[[0, 2]], dy[[0, 2]])  # unclipped: identity
    np.testing.assert_array_equal(d_param, 0.0)  # no unit both clipped and with ||W|| >= eps
    assert np.all(np.isfinite(d_grad))


def test_adaptive_grad_clip_vjp_through_the_weight_norm():
    """A clipped unit with ||W|| > eps: the weight gradient lambda s / (n p) W, against FD."""
    from tests.vjp_check import assert_vjp_matches_finite_differences

    rng = _rng(4)
    param, grad, dy = (
        rng.standard_normal((3, 4)),
        2.0 * rng.standard_normal((3, 4)),
        rng.standard_normal((3, 4)),
    )
    kwargs = {"clipping": 0.3, "eps": 1e-3}
    assert np.all(_unit_norms(grad, 0) > 1.2 * 0.3 * _unit_norms(param, 0))  # all clipped
    grads = normref.adaptive_grad_clip_vjp(dy, grad, param, **kwargs)
    assert_vjp_matches_finite_differences(
        lambda grad, param: normref.adaptive_grad_clip(grad, param, **kwargs),
        grads,
        {"grad": grad, "param": param},
        dy,
        what="clipped AGC",
    )


def test_adaptive_grad_clip_tree_clips_each_leaf(standard_backend: Backend):
    xp = standard_backend
    rng = _rng(5)
    grads = {
        "conv": [rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(4)],
        "scale": rng.standard_normal(()),
    }
    params = {
        "conv": [rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(4)],
        "scale": rng.standard_normal(()),
    }

    def on(tree):
        if isinstance(tree, dict):
            return {k: on(v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [on(v) for v in tree]
        return xp.asarray(tree, "float64")

    out = normref.adaptive_grad_clip_tree(on(grads), on(params), clipping=0.05)
    assert set(out) == {"conv", "scale"}
    assert isinstance(out["conv"], list)
    leaves = [
        (out["conv"][0], grads["conv"][0], params["conv"][0]),
        (out["conv"][1], grads["conv"][1], params["conv"][1]),
        (out["scale"], grads["scale"], params["scale"]),
    ]
    for clipped, grad, param in leaves:
        expected = agc_reference(grad, param, clipping=0.05, eps=1e-3, out_axis=0)
        assert_close_to_scale(
            xp.to_numpy(clipped), expected, np.abs(grad).max(), rtol=16 * U64, what="leaf"
        )


def test_adaptive_grad_clip_tree_structures_must_match():
    g = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"grads and params must have the same structure"):
        normref.adaptive_grad_clip_tree({"a": g}, {"b": g})
    with pytest.raises(ValueError, match=r"grads and params must have the same structure"):
        normref.adaptive_grad_clip_tree([g, g], [g])
    import array_api_strict

    with pytest.raises(
        TypeError, match=r"grads\['a'\] is .*numpy, params\['a'\] is array_api_strict"
    ):
        normref.adaptive_grad_clip_tree({"a": g}, {"a": array_api_strict.asarray(g)})


@pytest.mark.parametrize(
    ("value", "name"), [(0.0, "clipping"), (float("nan"), "clipping"), (-1e-3, "eps")]
)
def test_adaptive_grad_clip_rejects_non_positive_constants(value, name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
        normref.adaptive_grad_clip(np.ones((2, 2)), np.ones((2, 2)), **{name: value})


def test_unitwise_layout_errors_name_the_layouts():
    with pytest.raises(
        ValueError, match=r"out_axis=1 is out of range for x of shape \(3,\).*0 for \(out, in\)"
    ):
        normref.unitwise_norm(np.ones(3), out_axis=1)
    with pytest.raises(TypeError, match="out_axis must be an integer, got str"):
        normref.adaptive_grad_clip(np.ones((2, 2)), np.ones((2, 2)), out_axis="out")


# ---------------------------------------------------------------------------
# Global-norm clipping


def _tree(seed: int, scale: float) -> list[np.ndarray]:
    rng = _rng(seed)
    return [
        scale * rng.standard_normal((4, 3)),
        scale * rng.standard_normal(5),
        scale * rng.standard_normal(()),
    ]


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_by_global_norm_matches_torch_with_its_eps(scale):
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    grads = _tree(6, scale)
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.0)
    ours = normref.clip_by_global_norm(grads, 1.0, eps=1e-6)
    assert_close_to_scale(
        float(normref.global_norm(grads)), float(total), float(total), rtol=8 * U64, what="norm"
    )
    for mine, t in zip(ours, tensors, strict=True):
        # torch multiplies by the clamped factor: a few roundings of each element
        assert_close_to_scale(
            mine,
            t.grad.numpy(),
            np.abs(t.grad.numpy()).max() + 1e-300,
            rtol=8 * U64,
            what="clipped",
        )


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_by_global_norm_matches_optax_without_eps(scale):
    pytest.importorskip("optax", reason="optax is not installed (pip install -e '.[jax]')")
    import jax

    jax.config.update("jax_enable_x64", True)
    import optax

    grads = _tree(7, scale)
    transform = optax.clip_by_global_norm(1.0)
    theirs, _ = transform.update(grads, transform.init(grads))
    ours = normref.clip_by_global_norm(grads, 1.0)
    for mine, their in zip(ours, theirs, strict=True):
        their = np.asarray(their)
        assert_close_to_scale(
            mine, their, np.abs(their).max() + 1e-300, rtol=8 * U64, what="clipped"
        )


def test_clip_by_global_norm_keeps_structure_dtypes_and_zeros():
    grads = {"w": np.zeros((3, 2), np.float32), "b": (np.zeros(2, np.float16),)}
    out = normref.clip_by_global_norm(grads, 0.5)
    assert isinstance(out["b"], tuple)
    assert (out["w"].dtype, out["b"][0].dtype) == (np.float32, np.float16)
    assert np.all(out["w"] == 0)
    assert np.all(out["b"][0] == 0)
    big = {"w": np.full((3, 2), 2.0), "b": (np.full(2, 2.0),)}
    clipped = normref.clip_by_global_norm(big, 0.5)
    total = math.sqrt(sum(float((a**2).sum()) for a in (clipped["w"], clipped["b"][0])))
    assert_close_to_scale(
        total, 0.5, 0.5, rtol=8 * U64, what="clipped norm (eps = 0: exactly max_norm)"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_norm": 0.0}, ValueError, "max_norm must be a finite number > 0"),
        ({"max_norm": 1.0, "eps": -1e-6}, ValueError, "eps must be a finite number >= 0"),
        ({"max_norm": "1"}, TypeError, "max_norm must be a number"),
    ],
)
def test_clip_by_global_norm_rejects_bad_constants(kwargs, error, match):
    with pytest.raises(error, match=match):
        normref.clip_by_global_norm([np.ones(3)], **kwargs)


def test_global_norm_needs_arrays():
    with pytest.raises(ValueError, match="grads must hold at least one array"):
        normref.global_norm({})
    with pytest.raises(TypeError, match=r"grads\[1\] must be an array, got str"):
        normref.global_norm([np.ones(2), "x"])


def test_tree_and_norm_functions_on_every_backend(backend: Backend):
    """unitwise_norm, adaptive_grad_clip_tree, global_norm and clip_by_global_norm on each library,
    against the float64 numpy computation (the same formulas: a few roundings)."""
    grads = _tree(8, 2.0)
    params = _tree(9, 1.0)
    on = [backend.asarray(g, "float64") for g in grads]
    norm = backend.to_numpy(normref.unitwise_norm(on[0], out_axis=-1))
    assert_close_to_scale(
        norm.ravel(), _unit_norms(grads[0], -1), 10.0, rtol=8 * U64, what="unitwise"
    )
    clipped = normref.adaptive_grad_clip_tree(
        on, [backend.asarray(p, "float64") for p in params], clipping=0.1
    )
    for mine, grad, param in zip(clipped, grads, params, strict=True):
        expected = agc_reference(grad, param, clipping=0.1, eps=1e-3, out_axis=0)
        assert_close_to_scale(
            backend.to_numpy(mine), expected, np.abs(grad).max(), rtol=16 * U64, what="agc tree"
        )
    total = math.sqrt(math.fsum(float((g**2).sum()) for g in grads))
    assert_close_to_scale(
        float(backend.to_numpy(normref.global_norm(on))), total, total, rtol=8 * U64, what="norm"
    )
    for mine, grad in zip(normref.clip_by_global_norm(on, 1.0), grads, strict=True):
        assert_close_to_scale(
            backend.to_numpy(mine), grad / total, np.abs(grad).max(), rtol=8 * U64, what="clip"
        )


def test_non_finite_values_propagate_as_documented():
    finite, bad = np.ones((2, 3)), np.array([1.0, np.inf])
    with np.errstate(invalid="ignore"):  # inf * 0 is the documented NaN
        inf_out = normref.clip_by_global_norm([finite, bad], 1.0)
        nan_out = normref.clip_by_global_norm([finite, np.array([1.0, np.nan])], 1.0)
        agc = normref.adaptive_grad_clip(np.array([[1.0, np.inf], [1.0, 2.0]]), np.ones((2, 2)))
    np.testing.assert_array_equal(inf_out[0], 0.0)
    assert np.isnan(inf_out[1][1])
    assert np.all(np.isnan(nan_out[0]))
    assert agc[0, 0] == 0.0  # the unit's norm is inf: factor 0
    assert np.isnan(agc[0, 1])
    assert np.all(np.isfinite(agc[1]))


@pytest.mark.parametrize("poisoned", ["grad", "param"])
def test_nan_in_a_unit_makes_both_gradients_of_that_unit_nan(poisoned):
    """The forward of a unit with NaN is NaN, so is its backward; other units stay finite."""
    rng = np.random.default_rng(0)
    arrays = {"grad": rng.standard_normal((3, 4)), "param": 0.01 * rng.standard_normal((3, 4))}
    arrays[poisoned][1, 2] = np.nan
    y = normref.adaptive_grad_clip(arrays["grad"], arrays["param"])
    grads = normref.adaptive_grad_clip_vjp(np.ones((3, 4)), arrays["grad"], arrays["param"])
    for out in (y, grads.grad, grads.param):
        assert np.all(np.isnan(out[1]))
        assert np.all(np.isfinite(out[[0, 2]]))


# ---------------------------------------------------------------------------
# The compiled path: float32 units as rows, summed in float64 by the kernels


def _f32_units(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 units (rows over the trailing axes) of magnitudes from 2**-140 (subnormal) to
    2**100, one magnitude per unit."""
    units = shape[0] if len(shape) > 1 else 1
    exponents = rng.integers(-140, 101, size=units).astype(float)
    per_unit = np.ldexp(1.0, exponents.astype(int)).reshape((-1,) + (1,) * (len(shape) - 1))
    return (rng.standard_normal(shape) * per_unit).astype(np.float32)


def _agc_vjp_reference(dy, grad, param, *, clipping, eps):
    """The VJP of AGC from its definition, per unit as a row (units first), in float64 with
    correctly rounded sums: ``dG = f dy - f s / n**2 G`` and ``dW = lambda s / (n p) W`` on a
    clipped unit (``n > m``; ``dW`` 0 where ``p < eps``), ``dG = dy``, ``dW = 0`` elsewhere."""
    rows = (grad.shape[0], -1) if grad.ndim > 1 else (1, -1)
    g, w, d = (np.asarray(a, np.float64).reshape(rows) for a in (grad, param, dy))
    d_grad, d_param = d.copy(), np.zeros_like(w)
    for u in range(g.shape[0]):
        n = math.sqrt(math.fsum(g[u] ** 2))
        p = math.sqrt(math.fsum(w[u] ** 2))
        m = clipping * max(p, eps)
        if n > m:
            s = math.fsum(d[u] * g[u])
            d_grad[u] = (m / n) * d[u] - (m / n) * s / n**2 * g[u]
            if p >= eps:
                d_param[u] = clipping * s / (n * p) * w[u]
    return d_grad.reshape(grad.shape), d_param.reshape(param.shape)


def _float32_ulps(mine: np.ndarray, expected: np.ndarray, slack: np.ndarray) -> float:
    """The largest ``|mine - expected|`` in ulps of float32 at ``expected``, less ``slack``
    (the float64 reference's own error bound) first."""
    excess = np.maximum(np.abs(mine.astype(np.float64) - expected) - slack, 0.0)
    ulps = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    return float(np.max(excess / ulps))


@pytest.mark.parametrize("shape", [(24, 300), (16, 4, 3, 3), (700,), (9, 1)])
def test_agc_compiled_path_rounds_float64_results_once(shape):
    """On float32 input under "highest" the kernels sum each unit in float64 (no power of two
    needed: float32 squares and products neither overflow nor underflow there): the clipped
    gradient and both gradients of the VJP are float64 results rounded once, within half an
    ulp of float32 of an independent float64 computation (plus its own error), over units of
    magnitudes 2**-140 to 2**100, rows longer than the kernels' pieces, and vectors."""
    if not normref.compiled.available():
        pytest.skip("the compiled path needs numba (pip install -e '.[fast]')")
    rng = _rng(7)
    grad, param, dy = (_f32_units(rng, shape) for _ in range(3))
    clipping, eps = 0.5, 1e-30
    expected = agc_reference(grad, param, clipping=clipping, eps=eps, out_axis=0)
    d_grad, d_param = _agc_vjp_reference(dy, grad, param, clipping=clipping, eps=eps)
    with normref.compiled.enabled(True):
        y = normref.adaptive_grad_clip(grad, param, clipping=clipping, eps=eps)
        grads = normref.adaptive_grad_clip_vjp(dy, grad, param, clipping=clipping, eps=eps)
    assert y.dtype == grads.grad.dtype == grads.param.dtype == np.float32
    assert not np.array_equal(expected, grad.astype(np.float64))  # some units are clipped
    assert _float32_ulps(y, expected, 4 * U64 * np.abs(expected)) <= 0.5
    # dG = f dy - k G: the float64 error is relative to the two terms, not to their difference
    terms = np.abs(dy.astype(np.float64)) + np.abs(d_grad)
    assert _float32_ulps(grads.grad, d_grad, 64 * U64 * terms) <= 0.5
    assert _float32_ulps(grads.param, d_param, 16 * U64 * np.abs(d_param)) <= 0.5


def test_agc_compiled_path_non_finite_and_zero_units():
    """Through the kernels as through the generic path: a unit holding an infinity is scaled by
    0 (finite values 0, infinities NaN), NaN anywhere in a unit makes it NaN in every result,
    a zero gradient stays 0 and a zero weight clips to clipping * eps."""
    grad = np.array(
        [[np.inf, 1.0, 2.0], [np.nan, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1, 2, 3]],
        np.float32,
    )
    param = np.array(
        [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [np.nan, 1, 1]],
        np.float32,
    )
    dy = np.ones_like(grad)
    results = {}
    for fused in (True, False):
        with normref.compiled.enabled(fused), np.errstate(invalid="ignore"):
            results[fused] = (
                normref.adaptive_grad_clip(grad, param, clipping=0.1, eps=0.5),
                *normref.adaptive_grad_clip_vjp(dy, grad, param, clipping=0.1, eps=0.5),
            )
    y = results[True][0]
    np.testing.assert_array_equal(y[0], [np.nan, 0.0, 0.0])
    assert np.all(np.isnan(y[[1, 4]]))
    np.testing.assert_array_equal(y[2], 0.0)
    np.testing.assert_array_equal(y[3], np.float32(np.array([3.0, 4.0, 0.0]) * (0.1 * 0.5 / 5.0)))
    for mine, generic in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(mine, generic)
