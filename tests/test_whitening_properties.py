"""Hypothesis over the whitening family: D in 1..16, M above and below D, G groups, scales.

Each example is built with a known covariance spectrum (``tests/whitening_cases.py``):
``min(D, M - 1)`` eigenvalues spread over a condition number ``kappa`` (1: all
equal) and, for ``M <= D``, the ``D - M + 1`` zero eigenvalues that ``M``
centred samples leave, which only ``eps`` regularizes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normref import ops
from tests.support import FD_STEPS, Backend, assert_within, fd_jvp
from tests.whitening_cases import U64, WHITENINGS, condition, sample_covariance, with_spectrum

WHITEN = {"zca": ops.zca_whiten, "pca": ops.pca_whiten, "cholesky": ops.cholesky_whiten}
VJPS = {
    "zca": (ops.zca_whiten, ops.zca_whiten_vjp),
    "cholesky": (ops.cholesky_whiten, ops.cholesky_whiten_vjp),
    "iter_norm": (ops.iter_norm_whiten, ops.iter_norm_whiten_vjp),
    "pca": (ops.pca_whiten, ops.pca_whiten_vjp),
}
EPS = 1e-4
"""eps relative to the largest eigenvalue (1 before scaling)."""


@st.composite
def cases(draw):
    """(x, eps, lam): samples, eps and the eigenvalues of their covariance (before scaling)."""
    d = draw(st.integers(1, 16))
    m = draw(st.one_of(st.integers(d + 1, d + 24), st.integers(2, max(2, d))))
    groups = draw(st.integers(1, 3))
    kappa = draw(st.sampled_from([1.0, 1e2, 1e4]))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    rank = min(d, m - 1)
    lam = np.zeros(d)
    lam[:rank] = np.geomspace(1.0, 1.0 / kappa, rank)
    x = with_spectrum(np.random.default_rng(seed), lam, m, groups=groups)
    return x * scale, EPS * scale**2, lam


@pytest.mark.parametrize("method", WHITENINGS)
@given(case=cases())
def test_output_spectrum(method, case, standard_backend: Backend):
    """cov(y) has eigenvalues λ / (λ + eps) (0 on the null space when M <= D), to 8 D u κ.

    κ is the condition number of Σ + eps I; the construction's own rounding
    (a few u of λ_max in Σ) moves the expected values by u κ at most.
    """
    x, eps, lam = case
    y = standard_backend.to_numpy(WHITEN[method](standard_backend.asarray(x, "float64"), eps=eps))
    spectrum = np.linalg.eigvalsh(sample_covariance(y))
    expected = np.broadcast_to(np.sort(lam / (lam + EPS)), spectrum.shape)
    bound = 8 * lam.size * U64 * condition(lam, EPS)
    assert_within(spectrum, expected, bound, what=f"spectrum of cov({method}(x))")


@pytest.mark.parametrize("method", VJPS)
@given(case=cases())
def test_adjoint_identity(method, case, standard_backend: Backend):
    """<J v, u> (finite differences) = <v, J^T u> (the VJP) for any spectrum, M < D included.

    PCA's gradient exists only where the eigenvalues are distinct: with repeated
    ones (kappa = 1, or two or more zero eigenvalues when M < D) its VJP must raise.
    Rounding of the VJP's terms: 8 D u κ of their sum of magnitudes.
    """
    x, eps, lam = case
    forward, vjp = VJPS[method]
    rng = np.random.default_rng(0)
    u = rng.standard_normal(x.shape)
    v = rng.standard_normal(x.shape)
    xb = standard_backend.asarray(x, "float64")
    ub = standard_backend.asarray(u, "float64")
    repeated = len(set(lam.tolist())) < lam.size
    if method == "pca" and repeated:
        with pytest.raises(ValueError, match="repeated eigenvalues"):
            vjp(ub, xb, eps=eps)
        return
    kappa = condition(lam, EPS)
    if method == "pca" and lam.size > 1:  # the eigenvectors' conditioning: λ_max / smallest gap
        distinct = np.sort(lam + EPS)
        kappa = max(kappa, distinct[-1] / np.min(np.diff(distinct)))
    # finite-difference steps are relative to max(1, max|x|): scale them down with small data
    steps = tuple(h * min(1.0, float(np.max(np.abs(x)))) for h in FD_STEPS)
    jv, jv_error = fd_jvp(
        lambda x: forward(x, eps=eps), {"x": x}, {"x": v}, steps=steps, forward_ulps=16 * kappa
    )
    grad = standard_backend.to_numpy(vjp(ub, xb, eps=eps).x)
    terms = np.concatenate([np.ravel(jv * u), -np.ravel(v * grad)])
    bound = 8 * lam.size * U64 * kappa * np.sum(np.abs(terms)) + np.sum(jv_error * np.abs(u))
    assert abs(np.sum(terms)) <= bound
