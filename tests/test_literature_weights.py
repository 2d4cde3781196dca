"""Centred weight norm, OWN, ONI, gradient centralization, Fixup's scale and AGC's exclusion:
what the registry-driven tests do not check.

Expected values come from identities (exact in real arithmetic, held to float64 rounding),
from NumPy formulas written here, or from finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import normref
from tests.support import fd_vjp

U64 = np.finfo(np.float64).eps


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- centred weight norm


@pytest.mark.parametrize("out_axis", [0, -1])
def test_centred_weight_norm_is_scaled_weight_standardization(out_axis):
    """g (v - mean) / sqrt(||v - mean||^2 + eps) = g / sqrt(N) WS(v, eps / N)."""
    rng = _rng(1)
    v = rng.standard_normal((4, 3, 2) if out_axis == 0 else (3, 2, 4))
    g = 1 + 0.5 * rng.standard_normal(4)
    eps, n = 0.3, 6
    y = normref.centered_weight_norm(v, g, eps=eps, out_axis=out_axis)
    shape = [1] * v.ndim
    shape[out_axis] = -1
    ws = normref.weight_standardize(v, eps=eps / n, out_axis=out_axis)
    expected = g.reshape(shape) / math.sqrt(n) * ws
    np.testing.assert_allclose(y, expected, rtol=0, atol=16 * U64 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fan_in", [5, 600])
@pytest.mark.parametrize("with_g", [True, False])
def test_a_constant_unit_has_no_direction(dtype, fan_in, with_g):
    """With eps = 0 a constant unit gives 0 and zero gradients (as weight norm's zero unit);
    the other units are untouched by the guard: float64 and float32 (in float64 under
    "highest", the compiled path where numba is installed), units shorter and longer than
    the kernels' pieces, with and without ``g``."""
    rng = _rng(2)
    v = rng.standard_normal((3, fan_in)).astype(dtype)
    v[1] = 0.1  # 0.1 * n / n rounds: a computed mean would not centre it exactly
    g = np.array([1.5, 2.0, -0.5], dtype) if with_g else None
    y = normref.centered_weight_norm(v, g)
    assert y.dtype == v.dtype
    assert np.all(y[1] == 0)
    wide = v.astype(np.float64)
    others = wide[[0, 2]] - wide[[0, 2]].mean(axis=1, keepdims=True)
    gains = g[[0, 2], None].astype(np.float64) if with_g else 1.0
    expected = gains * others / np.linalg.norm(others, axis=1, keepdims=True)
    # float64: a few roundings of the unit's size (an entry near the mean is a difference);
    # float32: the float64 value rounded once
    rounding = 16 * U64 if dtype == "float64" else float(np.finfo(np.float32).eps) / 2
    atol = 16 * U64 * np.abs(expected).max()
    np.testing.assert_allclose(y[[0, 2]], expected, rtol=rounding, atol=atol)
    grads = normref.centered_weight_norm_vjp(rng.standard_normal(v.shape).astype(dtype), v, g)
    assert np.all(grads.v[1] == 0)
    assert grads.g is None if g is None else grads.g[1] == 0
    assert np.all(np.isfinite(grads.v))


def test_an_infinite_unit_is_nan_and_the_others_are_untouched():
    """A unit of one infinity repeated is constant by max == min, but its centred values are
    inf - inf: NaN, as non-finite values propagate everywhere; the other units are as alone."""
    v = _rng(4).standard_normal((3, 7))
    alone = normref.centered_weight_norm(v[[0, 2]])
    v[1] = np.inf
    with np.errstate(invalid="ignore"):
        y = normref.centered_weight_norm(v)
    assert np.all(np.isnan(y[1]))
    np.testing.assert_array_equal(y[[0, 2]], alone)


# ---------------------------------------------------------------------------- OWN and ONI


def _gram(w: np.ndarray) -> np.ndarray:
    return w @ w.T


@pytest.mark.parametrize(("units", "fan_in"), [(3, 4), (4, 9), (2, 3)])
def test_own_rows_are_orthonormal_up_to_eps(units, fan_in):
    """W W^T = I - eps (V_c V_c^T + eps I)^-1 when group_size <= fan_in - 1: within
    eps / lambda_min of I."""
    v = _rng(3).standard_normal((units, fan_in))
    eps = 1e-5
    w = normref.orthogonal_weight_norm(v, eps=eps)
    centred = v - v.mean(axis=1, keepdims=True)
    smallest = np.linalg.eigvalsh(_gram(centred)).min()
    np.testing.assert_allclose(_gram(w), np.eye(units), rtol=0, atol=eps / smallest + 1e-12)


def test_own_needs_group_size_at_most_fan_in_minus_one():
    """Centring removes one rank: with as many units as the fan-in, V_c V_c^T is singular and
    W W^T has an eigenvalue near 0 instead of 1."""
    v = _rng(4).standard_normal((4, 4))
    eigenvalues = np.linalg.eigvalsh(_gram(normref.orthogonal_weight_norm(v)))
    assert eigenvalues.min() < 1e-3
    np.testing.assert_allclose(eigenvalues[1:], 1.0, atol=1e-3)


def test_own_groups_are_orthonormalized_apart():
    v = _rng(5).standard_normal((4, 6, 2))
    w = normref.orthogonal_weight_norm(v, group_size=2, eps=1e-12)
    rows = w.reshape(4, -1)
    for group in (slice(0, 2), slice(2, 4)):
        np.testing.assert_allclose(_gram(rows[group]), np.eye(2), atol=1e-9)
    assert abs(rows[0] @ rows[2]) > 1e-3  # across groups: not orthogonalized
    with pytest.raises(ValueError, match=r"group_size=3 must divide the number of output units"):
        normref.orthogonal_weight_norm(v, group_size=3)


def test_own_gradient_exists_at_repeated_eigenvalues():
    """Rows already orthogonal and of one norm: every eigenvalue of the Gram matrix repeats.
    ZCA's divided differences keep the VJP finite and exact there (finite differences)."""
    basis, _ = np.linalg.qr(_rng(6).standard_normal((8, 3)))
    v = 2.0 * (basis.T - basis.T.mean(axis=1, keepdims=True))
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    dy = _rng(7).standard_normal(v.shape)
    grads = normref.orthogonal_weight_norm_vjp(dy, v)
    fd, bound = fd_vjp(lambda **a: normref.orthogonal_weight_norm(a["v"]), {"v": v}, dy, "v")
    assert np.all(np.abs(grads.v - fd) <= bound)


def test_oni_converges_to_own_for_a_well_conditioned_group():
    """The Newton-Schulz steps on S / ||S||_F (eigenvalues in (0, 1]) approach OWN's W; the
    group here has a condition number near 1.5, where the iteration is stable."""
    rng = _rng(8)
    rows = rng.standard_normal((3, 12))
    basis, _ = np.linalg.qr((rows - rows.mean(axis=1, keepdims=True)).T)  # zero-mean columns
    v = basis.T * np.array([[1.0], [1.1], [1.2]]) + rng.standard_normal((3, 1))  # unit shifts
    own = normref.orthogonal_weight_norm(v, eps=1e-5)
    errors = [
        np.abs(normref.oni_weight_norm(v, iterations=t, eps=1e-5) - own).max()
        for t in (1, 2, 3, 4, 6)
    ]
    assert errors[0] > errors[1] > errors[2] > errors[3] > errors[4]
    assert errors[4] <= 4 * U64


def test_oni_is_iter_norm_with_the_frobenius_norm():
    """W = P_T(S / ||S||_F) V_c / sqrt(||S||_F), the code's order of operations, in NumPy."""
    v = _rng(9).standard_normal((3, 7))
    eps, steps = 1e-5, 4
    centred = v - v.mean(axis=1, keepdims=True)
    s = centred @ centred.T + eps * np.eye(3)
    norm = np.linalg.norm(s)
    b = np.eye(3)
    for _ in range(steps):
        b = 1.5 * b - 0.5 * np.linalg.matrix_power(b, 3) @ (s / norm)
    expected = b @ centred / math.sqrt(norm)
    y = normref.oni_weight_norm(v, iterations=steps, eps=eps)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------- gradients


def test_gradient_centralization_leaves_vectors_as_they_are():
    g = _rng(10).standard_normal(5)
    y = normref.gradient_centralize(g)
    np.testing.assert_array_equal(y, g)
    assert y is not g
    dy = _rng(11).standard_normal(5)
    np.testing.assert_array_equal(normref.gradient_centralize_vjp(dy, g).grad, dy)
    with pytest.raises(ValueError, match="out_axis=1 is out of range"):
        normref.gradient_centralize(g, out_axis=1)


@pytest.mark.parametrize(("out_axis", "reduced"), [(0, (1, 2, 3)), (-1, (0, 1, 2))])
def test_gradient_centralization_centres_each_output_unit(out_axis, reduced):
    g = _rng(12).standard_normal((3, 3, 4, 5))
    expected = g - g.mean(axis=reduced, keepdims=True)
    np.testing.assert_allclose(normref.gradient_centralize(g, out_axis=out_axis), expected)


@pytest.mark.parametrize(
    ("branches", "layers", "expected"), [(16, 2, 0.25), (8, 3, 8**-0.25), (1, 5, 1.0)]
)
def test_fixup_scale(branches, layers, expected):
    assert normref.fixup_scale(branches, layers) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("branches", "layers", "error", "match"),
    [
        (16, 1, ValueError, "branch_layers must be an integer >= 2"),
        (0, 2, ValueError, "num_branches must be an integer >= 1"),
        (16, 2.0, TypeError, "branch_layers must be an integer"),
    ],
)
def test_fixup_scale_refuses(branches, layers, error, match):
    with pytest.raises(error, match=match):
        normref.fixup_scale(branches, layers)


def test_agc_tree_leaves_the_excluded_leaves_unclipped():
    """NFNets does not clip its classifier: ``exclude`` sees each leaf's key path."""
    rng = _rng(13)
    params = {
        "stem": [rng.standard_normal((4, 3)), rng.standard_normal(4)],
        "head": {"w": rng.standard_normal((2, 4)), "b": rng.standard_normal(2)},
    }
    grads = {
        "stem": [10 * rng.standard_normal((4, 3)), 10 * rng.standard_normal(4)],
        "head": {"w": 10 * rng.standard_normal((2, 4)), "b": 10 * rng.standard_normal(2)},
    }
    seen = []

    def exclude(path):
        seen.append(path)
        return path[0] == "head"

    clipped = normref.adaptive_grad_clip_tree(grads, params, exclude=exclude, clipping=0.01)
    assert seen == [("stem", 0), ("stem", 1), ("head", "w"), ("head", "b")]
    for key in ("w", "b"):
        np.testing.assert_array_equal(clipped["head"][key], grads["head"][key])
        assert clipped["head"][key] is not grads["head"][key]
    for i in range(2):
        expected = normref.adaptive_grad_clip(grads["stem"][i], params["stem"][i], clipping=0.01)
        np.testing.assert_array_equal(clipped["stem"][i], expected)
        assert not np.array_equal(clipped["stem"][i], grads["stem"][i])
    with pytest.raises(TypeError, match="exclude must be a callable"):
        normref.adaptive_grad_clip_tree(grads, params, exclude="head")
