"""Whitening VJPs against finite differences at separated, nearly equal and equal eigenvalues.

ZCA, Cholesky and IterNorm whitening are smooth functions of the covariance
everywhere, repeated eigenvalues included: their VJPs must be finite and match
finite differences there. PCA whitening and decorrelation rotate onto
eigenvectors, which are not unique at a repeated eigenvalue: the gradient
does not exist there and the VJP raises; just off it, the gradient exists
(and is large, ~1/gap) and must be exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from normref import ops
from tests.support import FD_STEPS, Backend, assert_within, fd_jvp, fd_vjp
from tests.whitening_cases import U64, hadamard_columns, random_orthogonal, with_spectrum

SMOOTH = {
    "zca": (ops.zca_whiten, ops.zca_whiten_vjp),
    "cholesky": (ops.cholesky_whiten, ops.cholesky_whiten_vjp),
    "iter_norm": (ops.iter_norm_whiten, ops.iter_norm_whiten_vjp),
}
EIGENVECTOR = {
    "pca": (ops.pca_whiten, ops.pca_whiten_vjp),
    "decorrelate": (ops.decorrelate, ops.decorrelate_vjp),
}

NEAR_GAP = 1e-6
"""Relative gap of the nearly equal eigenvalues."""


def _spectrum_case(kind: str) -> np.ndarray:
    """``(1, 8, 3)`` samples whose covariance has well-separated, nearly equal or equal eigenvalues."""
    rng = np.random.default_rng(["separated", "nearly_equal", "equal"].index(kind))
    if kind == "separated":
        return with_spectrum(rng, np.array([4.0, 2.0, 1.0]), 8)
    if kind == "nearly_equal":
        return with_spectrum(rng, np.array([4.0, 1.0 + NEAR_GAP, 1.0]), 8)
    # exactly diag(4, 1, 1) before a random rotation; the rotation's rounding leaves the two
    # equal eigenvalues equal to within a few ulps
    return hadamard_columns(8, (2.0, 1.0, 1.0)) @ random_orthogonal(rng, 3).T + rng.random(3)


def _check_vjp(backend: Backend, forward, vjp, x: np.ndarray, **fd_options) -> None:
    dy = np.random.default_rng(100).standard_normal(x.shape)
    grad = backend.to_numpy(vjp(backend.asarray(dy, "float64"), backend.asarray(x, "float64")).x)
    assert np.all(np.isfinite(grad))
    expected, bound = fd_vjp(lambda x: forward(x), {"x": x}, dy, "x", **fd_options)
    assert_within(grad, expected, bound, what=f"{forward.__name__} on {backend.name}")


@pytest.mark.parametrize("method", SMOOTH)
@pytest.mark.parametrize("kind", ["separated", "nearly_equal", "equal"])
def test_smooth_whitenings_have_exact_gradients_at_any_spectrum(method, kind, backend: Backend):
    forward, vjp = SMOOTH[method]
    _check_vjp(backend, forward, vjp, _spectrum_case(kind))


@pytest.mark.parametrize("method", EIGENVECTOR)
def test_eigenvector_gradients_at_separated_eigenvalues(method, backend: Backend):
    forward, vjp = EIGENVECTOR[method]
    _check_vjp(backend, forward, vjp, _spectrum_case("separated"))


@pytest.mark.parametrize("method", EIGENVECTOR)
def test_eigenvector_gradients_take_the_gaps_of_the_covariance_itself(method, standard_backend):
    """Data of spread 1e-9 under the default eps = 1e-5: eigenvalues ~1e-18, gaps as large.

    eps shifts every eigenvalue alike and leaves the eigenvectors as they are; their
    gradient is exact only if the gaps are taken before the shift (after it, each gap
    would carry a rounding of u eps ~ 1e-21, a relative error of 1e-3 here). Finite
    differences with steps scaled to the data hold the VJP to rtol 1e-8.
    """
    forward, vjp = EIGENVECTOR[method]
    scale = 1e-9
    steps = tuple(step * scale for step in FD_STEPS)
    _check_vjp(standard_backend, forward, vjp, scale * _spectrum_case("separated"), steps=steps)


@pytest.mark.parametrize("method", EIGENVECTOR)
def test_eigenvector_gradients_just_off_a_repeated_eigenvalue(method, standard_backend):
    """At a relative gap of 1e-6 the gradient exists, ~1/gap in size, and the VJP returns it.

    The eigenvectors turn on a scale of the gap, so the finite differences need steps far
    below it; and the forward itself is exact only to u λ_max / gap (the eigenvectors'
    condition number), which is the noise the differences are held to.
    """
    forward, vjp = EIGENVECTOR[method]
    steps = (1e-8, 2.5e-9, 6.25e-10, 1.5625e-10)
    _check_vjp(
        standard_backend,
        forward,
        vjp,
        _spectrum_case("nearly_equal"),
        steps=steps,
        forward_ulps=16 * 4.0 / NEAR_GAP,
    )


@pytest.mark.parametrize("method", EIGENVECTOR)
def test_eigenvector_gradients_raise_at_a_repeated_eigenvalue(method, backend: Backend):
    forward, vjp = EIGENVECTOR[method]
    x = backend.asarray(_spectrum_case("equal"), "float64")
    assert np.all(np.isfinite(backend.to_numpy(forward(x))))
    with pytest.raises(ValueError, match=r"repeated eigenvalues .* not unique"):
        vjp(x, x)


@pytest.mark.parametrize("method", EIGENVECTOR)
def test_the_tie_threshold_is_the_eigenvalues_rounding_level(method, standard_backend):
    """An exactly diagonal covariance: equal variances raise, variances 1 apart by 1e-12 do not.

    The threshold is 4 D u λ_max ≈ 1e-15 here; a gap of 2e-12 is resolvable, and the
    gradient there is finite (of size ~1/gap).
    """
    _, vjp = EIGENVECTOR[method]
    dy = standard_backend.asarray(np.random.default_rng(13).standard_normal((1, 8, 3)), "float64")
    tied = standard_backend.asarray(hadamard_columns(8, (1.0, 1.0, 2.0)), "float64")
    with pytest.raises(ValueError, match="repeated eigenvalues"):
        vjp(dy, tied)
    apart = standard_backend.asarray(hadamard_columns(8, (1.0, 1.0 + 1e-12, 2.0)), "float64")
    grad = standard_backend.to_numpy(vjp(dy, apart).x)
    assert np.all(np.isfinite(grad))
    assert np.max(np.abs(grad)) > 1e9


@pytest.mark.parametrize("method", EIGENVECTOR)
@pytest.mark.parametrize(("gap_in_u", "refused"), [(6, True), (12, False)])
def test_the_tie_threshold_is_4_d_u_lambda_max(method, gap_in_u, refused):
    """Variances 1 and 1 - g u (u = 2^-53, the unit roundoff), D = 2: the threshold 4 D u λ_max
    is 8 u, so a gap of 6 u is a tie and one of 12 u is not (a threshold of 8 D u would refuse
    both). The samples are ±1 and ±s with s² rounding to exactly 1 - g u, so the covariance is
    exactly diagonal and its eigenvalues exact."""
    u = np.finfo(np.float64).eps / 2
    target = 1.0 - gap_in_u * u
    s = np.sqrt(target)
    while s * s != target:  # the nearest s whose square rounds to the target
        s = np.nextafter(s, 2.0 if s * s < target else 0.0)
    x = hadamard_columns(8, (1.0, s))
    _, vjp = EIGENVECTOR[method]
    dy = np.random.default_rng(14).standard_normal(x.shape)
    if refused:
        with pytest.raises(ValueError, match="repeated eigenvalues"):
            vjp(dy, x)
    else:
        assert np.all(np.isfinite(vjp(dy, x).x))


@pytest.mark.parametrize("method", SMOOTH)
@pytest.mark.parametrize("kappa", [1e4, 1e8])
def test_ill_conditioned_gradients(method, kappa, standard_backend):
    """Condition numbers up to 1e8 in float64: <J v, u> = <v, J^T u> to rounding.

    The forward is exact to about D u κ of its output (the eigenvalues move by
    D u λ_max, λ_min^-1/2 relatively by D u κ / 2), which bounds the finite
    differences' noise; their steps sit below the data's smallest spread,
    sqrt(λ_min) = κ^-1/2 of its size. The VJP's terms carry 8 D u κ relatively.
    """
    forward, vjp = SMOOTH[method]
    rng = np.random.default_rng(12)
    d = 4
    x = with_spectrum(rng, np.geomspace(1.0, 1.0 / kappa, d), 12)
    eps = 1e-8 / kappa
    u = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)
    jv, jv_error = fd_jvp(
        lambda x: forward(x, eps=eps),
        {"x": x},
        {"x": v},
        steps=tuple(h / np.sqrt(kappa) for h in FD_STEPS),
        forward_ulps=d * kappa,
    )
    grad = standard_backend.to_numpy(
        vjp(
            standard_backend.asarray(u, "float64"), standard_backend.asarray(x, "float64"), eps=eps
        ).x
    )
    terms = np.concatenate([np.ravel(jv * u), -np.ravel(v * grad)])
    gap = np.sum(terms)
    bound = 8 * d * U64 * kappa * np.sum(np.abs(terms)) + np.sum(jv_error * np.abs(u))
    assert abs(gap) <= bound, f"{method}: <Jv,u> - <v,J^T u> = {gap:.3e} > {bound:.3e}"


@pytest.mark.parametrize("method", [*SMOOTH, *EIGENVECTOR])
def test_gradient_with_the_unbiased_covariance(method, standard_backend):
    """correction=1 divides by M - 1: the VJP's covariance term carries the same divisor."""
    forward, vjp = {**SMOOTH, **EIGENVECTOR}[method]
    x = _spectrum_case("separated")
    dy = np.random.default_rng(101).standard_normal(x.shape)
    grad = standard_backend.to_numpy(
        vjp(
            standard_backend.asarray(dy, "float64"),
            standard_backend.asarray(x, "float64"),
            correction=1,
        ).x
    )
    expected, bound = fd_vjp(lambda x: forward(x, correction=1), {"x": x}, dy, "x")
    assert_within(grad, expected, bound, what=f"{method} with correction=1")
