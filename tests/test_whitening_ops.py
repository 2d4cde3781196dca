"""The whitening family's mathematics: what each operation's output is, and its exact gradients.

Inputs are built with a known covariance spectrum (``tests/whitening_cases.py``),
so expected values come from that construction or from identities, never from
normref. Tolerances: a float64 whitening of a covariance with condition number
κ is exact to about ``p(D) u κ`` (a backward-stable decomposition perturbs the
covariance by ``p(D) u ‖Σ‖``, which moves ``λ^-1/2`` by ``p(D) u κ / 2``
relatively); each bound below says which terms it adds.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg

from normref import ops
from normref.conventions import FLAX
from tests.support import Backend, assert_close_to_scale, assert_within
from tests.whitening_cases import (
    METHODS,
    U64,
    WHITENINGS,
    condition,
    random_orthogonal,
    sample_covariance,
    with_spectrum,
)

OPS = {
    "zca": (ops.zca_whiten, ops.zca_whiten_vjp),
    "pca": (ops.pca_whiten, ops.pca_whiten_vjp),
    "cholesky": (ops.cholesky_whiten, ops.cholesky_whiten_vjp),
    "iter_norm": (ops.iter_norm_whiten, ops.iter_norm_whiten_vjp),
    "decorrelate": (ops.decorrelate, ops.decorrelate_vjp),
}


def _on(backend: Backend, x: np.ndarray):
    return backend.asarray(x, "float64")


def _whiten(backend: Backend, method: str, x: np.ndarray, **kwargs) -> np.ndarray:
    return backend.to_numpy(OPS[method][0](_on(backend, x), **kwargs))


# ---------------------------------------------------------------------------
# Forward: covariance of the output


@pytest.mark.parametrize("method", WHITENINGS)
@pytest.mark.parametrize("kappa", [1e2, 1e4, 1e8])
def test_whitened_covariance_is_the_identity(method, kappa, standard_backend):
    """cov(y) = W Σ W^T with W^T W = (Σ + eps I)^-1 for every whitening W: its eigenvalues are
    λ / (λ + eps), so it is I within eps / λ_min.

    Rounding: 8 D u κ, κ the condition number of Σ + eps I (up to 1e8 here): the
    decomposition perturbs Σ by about D u ‖Σ‖, which moves λ / (λ + eps) by
    D u κ, and forming W and y adds a few more such terms.
    """
    rng = np.random.default_rng(int(math.log10(kappa)))
    lam = np.geomspace(1.0, 1.0 / kappa, 6)
    eps = 1e-6 / kappa
    x = with_spectrum(rng, lam, 40, groups=2)
    cov = sample_covariance(_whiten(standard_backend, method, x, eps=eps))
    d = lam.size
    rounding = 8 * d * U64 * condition(lam, eps)
    expected = np.broadcast_to(np.sort(lam / (lam + eps)), (2, d))
    assert_within(np.linalg.eigvalsh(cov), expected, rounding, what=f"spectrum of cov({method})")
    identity = np.broadcast_to(np.eye(d), cov.shape)
    assert_within(cov, identity, eps / (lam.min() + eps) + rounding, what=f"cov({method})")


def test_decorrelation_gives_the_diagonal_spectrum(standard_backend):
    """cov(decorrelate(x)) = diag(λ) in descending order, eps or not (it shifts no eigenvector).

    Rounding: the eigenvectors are exact to u λ_max / gap (gaps here >= λ_max / 4),
    so the entries of cov(y) are exact to 8 D u λ_max times that ratio.
    """
    lam = np.array([0.5, 8.0, 2.0, 1.0])
    x = with_spectrum(np.random.default_rng(3), lam, 30, groups=3)
    expected = np.diag(np.sort(lam)[::-1])
    for eps in (1e-5, 1.0):
        cov = sample_covariance(_whiten(standard_backend, "decorrelate", x, eps=eps))
        bound = 8 * lam.size * U64 * lam.max() * 4
        assert_within(cov, np.broadcast_to(expected, cov.shape), bound, what=f"eps={eps}")


def test_pca_is_decorrelation_scaled_by_its_spectrum(standard_backend):
    """pca_whiten(x) = decorrelate(x) / sqrt(var + eps), feature by feature (same order, signs)."""
    x = with_spectrum(np.random.default_rng(4), np.array([9.0, 4.0, 1.0]), 12, groups=2)
    eps = 1e-3
    rotated = _whiten(standard_backend, "decorrelate", x, eps=eps)
    variances = rotated.var(axis=1, keepdims=True)
    pca = _whiten(standard_backend, "pca", x, eps=eps)
    assert_close_to_scale(pca, rotated / np.sqrt(variances + eps), 1.0, rtol=64 * U64, what="pca")


def test_pca_order_and_signs_are_the_specified_ones(backend: Backend):
    """Eigenvalues descending; each eigenvector's largest-|.| entry positive, ties to the lowest index.

    Σ = [[2, 1], [1, 2]] has eigenvectors (1, 1)/√2 (λ = 3) and (1, -1)/√2 (λ = 1): both
    entries tie in absolute value, so the first is the positive one. Every library's
    eigh returns these magnitudes exactly equal (both are fl(1/√2)).
    """
    cov = np.array([[2.0, 1.0], [1.0, 2.0]])
    w = backend.to_numpy(ops.whitening_matrix(_on(backend, cov), method="pca", eps=1e-300))
    expected = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0) / np.sqrt([[3.0], [1.0]])
    assert_close_to_scale(w, expected, 1.0, rtol=8 * U64, what="PCA matrix")
    # random covariances: the largest |.| entry of each row of W (an eigenvector) is positive
    rng = np.random.default_rng(5)
    a = rng.standard_normal((20, 5, 30))
    covs = a @ np.swapaxes(a, -1, -2) / 30
    w = backend.to_numpy(ops.whitening_matrix(_on(backend, covs), method="pca"))
    pivots = np.take_along_axis(w, np.argmax(np.abs(w), axis=-1)[..., None], axis=-1)
    assert np.all(pivots > 0)
    lam = np.linalg.eigvalsh(covs)[:, ::-1] + 1e-5
    # row norms of Λ^-1/2 U^T are λ^-1/2 (descending eigenvalues: ascending norms), each
    # exact to 8 D u κ relatively
    kappa = np.max(lam[:, 0] / lam[:, -1])
    assert_close_to_scale(
        np.linalg.norm(w, axis=-1), lam**-0.5, lam**-0.5, rtol=8 * 5 * U64 * kappa, what="norms"
    )


def test_cholesky_matrix_is_lower_triangular(standard_backend):
    """L^-1 by forward substitution is exactly lower triangular, with a positive diagonal."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 7, 20))
    cov = a @ np.swapaxes(a, -1, -2) / 20 + 1e-5 * np.eye(7)
    w = standard_backend.to_numpy(
        ops.whitening_matrix(_on(standard_backend, cov), method="cholesky", eps=1e-300)
    )
    assert np.all(np.triu(w, 1) == 0.0)
    assert np.all(np.diagonal(w, axis1=-2, axis2=-1) > 0)
    # W Σ W^T = I to 8 D u κ
    lam = np.linalg.eigvalsh(cov)
    kappa = np.max(lam[:, -1] / lam[:, 0])
    product = w @ cov @ np.swapaxes(w, -1, -2)
    bound = 8 * 7 * U64 * kappa
    assert_within(product, np.broadcast_to(np.eye(7), product.shape), bound, what="W Σ W^T")


def test_cholesky_output_feature_depends_on_earlier_features_only(standard_backend):
    """y_k = (L^-1 x_c)_k uses features 0..k: new values of feature 2 leave outputs 0, 1 as they were."""
    rng = np.random.default_rng(7)
    x = with_spectrum(rng, np.array([3.0, 2.0, 1.0, 0.5]), 10)
    changed = x.copy()
    changed[..., 2] = rng.standard_normal(10)
    y0 = _whiten(standard_backend, "cholesky", x)
    y1 = _whiten(standard_backend, "cholesky", changed)
    assert_close_to_scale(y1[..., :2], y0[..., :2], 1.0, rtol=64 * U64, what="features 0, 1")
    assert np.max(np.abs(y1[..., 2:] - y0[..., 2:])) > 0.1


def test_zca_is_the_whitening_closest_to_its_input(standard_backend):
    """ZCA minimizes sum_i |W x_i - x_i|^2 over the whitenings W' = Q W_zca, Q orthogonal.

    tr(Q A Σ) <= tr(A Σ) for the positive definite A Σ (von Neumann): every other
    whitening, PCA and Cholesky included, is farther. Rounding of the sums: 64 u of them.
    """
    rng = np.random.default_rng(8)
    x = with_spectrum(rng, np.array([5.0, 3.0, 2.0, 1.0, 0.2]), 25)
    xc = x - x.mean(axis=1, keepdims=True)
    zca = _whiten(standard_backend, "zca", x)

    def distortion(y):
        return float(np.sum((y - xc) ** 2))

    least = distortion(zca)
    skew = rng.standard_normal((5, 5))
    near_identity = scipy.linalg.expm(1e-3 * (skew - skew.T))
    others = [zca @ random_orthogonal(rng, 5).T for _ in range(30)] + [zca @ near_identity.T]
    others += [_whiten(standard_backend, m, x) for m in ("pca", "cholesky")]
    for y in others:
        assert distortion(y) >= least - 64 * U64 * least


def _iter_norm_gaps(backend: Backend, x: np.ndarray, iterations) -> tuple[list, list, float]:
    """max |W_T - W_zca| and max |cov(y_T) - I| for each T, and max |W_zca|."""
    cov = _on(backend, sample_covariance(x))
    zca = backend.to_numpy(ops.whitening_matrix(cov, method="zca"))
    to_zca, to_identity = [], []
    for t in iterations:
        w = backend.to_numpy(ops.whitening_matrix(cov, method="iter_norm", iterations=t))
        to_zca.append(float(np.max(np.abs(w - zca))))
        y = _whiten(backend, "iter_norm", x, iterations=t)
        to_identity.append(float(np.max(np.abs(sample_covariance(y) - np.eye(x.shape[-1])))))
    return to_zca, to_identity, float(np.max(np.abs(zca)))


def test_iter_norm_converges_to_zca(standard_backend):
    """Each eigenvalue's residual r = 1 - p^2 ν falls as r^2 (3 + r) / 4: W_T -> W_zca monotonically.

    In floating point the iteration is stable only where κ(Σ) < 2.4 or so (see the next
    test), so this covariance has κ = 2: then W_T reaches W_zca to rounding (8 D u of
    |W|) and stays there, and cov(y) reaches I - eps (Σ + eps I)^-1, within eps / λ_min of I.
    """
    lam = np.geomspace(2.0, 1.0, 5)
    x = with_spectrum(np.random.default_rng(9), lam, 30, groups=2)
    to_zca, to_identity, scale = _iter_norm_gaps(standard_backend, x, (1, 2, 4, 8, 16, 32, 64))
    rounding = 8 * 5 * U64 * scale
    assert to_zca[0] > 0.1 * scale
    assert all(b <= a + rounding for a, b in itertools.pairwise(to_zca))
    assert to_zca[-1] <= rounding
    assert to_identity[0] > 0.5
    assert all(b <= a + rounding for a, b in itertools.pairwise(to_identity))
    assert to_identity[-1] <= 1e-5 / lam.min() + 8 * 5 * U64 * 2


def test_iter_norm_float64_iteration_is_unstable_past_convergence(standard_backend):
    """The documented limit: near its fixed point the uncoupled Newton–Schulz map multiplies a
    rounding error along (i, j) of the eigenbasis by (r + r^2 - 2)/2, r^2 = λ_j/λ_i.

    With κ = 100 that is about 54 per step: W_T gets within 1e-6 of W_zca (T = 10 here,
    far beyond the T = 5 used in practice) and then departs from it again.
    """
    lam = np.geomspace(1.0, 1e-2, 5)
    x = with_spectrum(np.random.default_rng(9), lam, 30, groups=2)
    to_zca, _, scale = _iter_norm_gaps(standard_backend, x, (5, 10, 14))
    assert to_zca[0] > 0.1 * scale
    assert to_zca[1] <= 1e-6 * scale
    assert to_zca[2] >= 100 * to_zca[1]


@pytest.mark.parametrize("method", METHODS)
def test_one_feature_is_standardization(method, standard_backend):
    """With D = 1 every whitening is standardization (x - μ)/sqrt(v + eps), and decorrelation centring."""
    rng = np.random.default_rng(10)
    x = 3.0 + 2.0 * rng.standard_normal((4, 9, 1))
    y = _whiten(standard_backend, method, x, eps=0.1)
    expected = standard_backend.to_numpy(ops.standardize(_on(standard_backend, x), eps=0.1))
    assert_close_to_scale(y, expected, 1.0, rtol=16 * U64, what=method)
    centred = standard_backend.to_numpy(ops.center(_on(standard_backend, x)))
    rotated = _whiten(standard_backend, "decorrelate", x)
    assert_close_to_scale(rotated, centred, np.abs(x), rtol=8 * U64, what="decorrelate")


def test_modelling_a_convention_uses_its_covariance_algorithm():
    """precision=FLAX forms X^T X - M μμ^T in float32, which cancels when |mean| >> std.

    With |mean|/std = 1e4 the entries of X^T X / M are near 1e8, where float32's spacing
    is 8: the modelled variance, and so the output, errs by O(1); the two-pass
    float32 covariance (precision="native") errs by about u32 |mean| / std = 1e-3.
    """
    rng = np.random.default_rng(11)
    x = (1e4 + rng.standard_normal((2, 256, 1))).astype(np.float32)
    exact = ops.zca_whiten(x.astype(np.float64))
    flax_like = ops.zca_whiten(x, precision=FLAX)
    assert flax_like.dtype == np.float32
    assert np.max(np.abs(flax_like - exact)) > 0.1
    assert np.max(np.abs(ops.zca_whiten(x, precision="native") - exact)) < 1e-2


@pytest.mark.parametrize("method", [*METHODS, "decorrelate"])
def test_unbiased_covariance_is_the_biased_one_of_rescaled_data(method, standard_backend):
    """correction=1 whitens C M/(M-1) + eps I: the biased whitening of x sqrt(M/(M-1)), rescaled.

    Both are exact to 8 D u κ of the output's size, κ = 4 (eigenvalues 4, 2, 1; for PCA
    λ_max / gap = 4 as well).
    """
    lam = np.array([4.0, 2.0, 1.0])
    x = with_spectrum(np.random.default_rng(14), lam, 9, groups=2)
    a = math.sqrt(9 / 8)
    unbiased = _whiten(standard_backend, method, x, correction=1)
    rescaled = _whiten(standard_backend, method, a * x) / a
    scale = np.abs(unbiased).max()
    rtol = 8 * lam.size * U64 * 4
    assert_close_to_scale(unbiased, rescaled, scale, rtol=rtol, what=method)


def test_non_finite_values_poison_their_group_only(standard_backend):
    """An inf in group 1 makes group 1's whole output and gradient NaN; group 0 is untouched."""
    x = with_spectrum(np.random.default_rng(15), np.array([3.0, 2.0, 1.0]), 8, groups=2)
    x[1, 4, 2] = np.inf
    b = standard_backend
    for method in (*METHODS, "decorrelate"):
        forward, vjp = OPS[method]
        # inf - inf (the centring of the inf's feature) is NumPy's "invalid" warning: expected
        with np.errstate(invalid="ignore"):
            y = b.to_numpy(forward(_on(b, x)))
            dx = b.to_numpy(vjp(_on(b, np.ones_like(x)), _on(b, x)).x)
        for out in (y, dx):
            assert np.isnan(out[1]).all(), method
            assert np.isfinite(out[0]).all(), method
    covs = np.stack([np.eye(3), np.full((3, 3), np.nan)])
    w = b.to_numpy(ops.whitening_matrix(_on(b, covs)))
    assert np.isfinite(w[0]).all()
    assert np.isnan(w[1]).all()


def test_whitening_matrix_errors():
    with pytest.raises(
        ValueError, match=r"cov must be a stack of square matrices \(\.\.\., D, D\)"
    ):
        ops.whitening_matrix(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"cov must have rank >= 2"):
        ops.whitening_matrix(np.ones(3))
    with pytest.raises(
        ValueError, match=r"method must be one of \('zca', 'pca', 'cholesky', 'iter"
    ):
        ops.whitening_matrix(np.eye(2), method="svd")
    with pytest.raises(ValueError, match=r"iterations must be an integer >= 1, got 0"):
        ops.whitening_matrix(np.eye(2), method="iter_norm", iterations=0)
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got -1"):
        ops.whitening_matrix(np.eye(2), eps=-1)
