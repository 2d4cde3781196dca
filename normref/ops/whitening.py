r"""The whitening family: decorrelation, PCA, ZCA, Cholesky and IterNorm whitening.

Each operation acts on the canonical ``(G, M, D)`` layout: for every group
``g`` the ``M`` samples ``x[g, i, :]`` are rows of a matrix :math:`X`
(``M x D``) whose ``D`` features are transformed *jointly*. Notation for one
group, with the variance correction ``c`` (0: biased, the default; 1:
unbiased) and the regularizer :math:`\epsilon`:

.. math::

    \mu = \tfrac1M X^\top \mathbf 1, \qquad
    X_c = X - \mathbf 1 \mu^\top, \qquad
    C = \frac{X_c^\top X_c}{M - c}, \qquad
    \Sigma = C + \epsilon I, \qquad
    Y = X_c W^\top,

that is :math:`y_i = W (x_i - \mu)` for every sample, where the *whitening
matrix* :math:`W = W(\Sigma)` is, with the eigendecomposition
:math:`\Sigma = U \Lambda U^\top` and the Cholesky factor :math:`\Sigma = L L^\top`:

====================  ==============================================  =======================================
operation             :math:`W`                                       covariance of :math:`y` (``eps=0``)
====================  ==============================================  =======================================
``decorrelate``       :math:`U^\top`                                  :math:`\Lambda` (diagonal)
``pca_whiten``        :math:`\Lambda^{-1/2} U^\top`                   :math:`I`
``zca_whiten``        :math:`U \Lambda^{-1/2} U^\top`                 :math:`I`
``cholesky_whiten``   :math:`L^{-1}`                                  :math:`I`
``iter_norm_whiten``  :math:`P_T / \sqrt{\operatorname{tr}\Sigma}`     :math:`\to I` as :math:`T` grows
====================  ==============================================  =======================================

With :math:`\epsilon > 0` the covariance of :math:`y` is
:math:`W C W^\top = W (\Sigma - \epsilon I) W^\top`, e.g. :math:`I - \epsilon \Sigma^{-1}`
for ZCA: identity up to :math:`\epsilon / \lambda_{\min}`. ``eps`` also makes the
operations defined when :math:`M \le D`, where the sample covariance is singular.

Specification of the non-unique parts
    The eigenvalues of ``decorrelate`` and ``pca_whiten`` are in *descending*
    order (output feature 0 has the largest variance) and every eigenvector
    (a column of :math:`U`) is signed so that its entry of largest absolute
    value is positive (ties: the lowest index). Where eigenvalues repeat
    (including :math:`M < D`, where the zero eigenvalues of the sample
    covariance repeat) the eigenvectors inside the repeated eigenspace are not
    unique: those outputs depend on the eigensolver, and only their span (and
    the covariance of the output) is specified. ``zca_whiten``,
    ``cholesky_whiten`` and ``iter_norm_whiten`` are unique everywhere.

Backward (derived by hand in the documentation, *whitening*): with
:math:`\bar Y` the cotangent, :math:`\bar W = \bar Y^\top X_c` and
:math:`\bar\Sigma` the cotangent of :math:`\Sigma` that :math:`W(\Sigma)` passes back,

.. math::

    \bar X = P(\bar Y W) + X_c \frac{\bar\Sigma + \bar\Sigma^\top}{M - c}

(:math:`P` subtracts the mean over samples), and

* ZCA: :math:`\bar\Sigma = U (F \circ U^\top \bar W U) U^\top` with the divided
  differences of :math:`f(\lambda) = \lambda^{-1/2}` written without
  cancellation, :math:`F_{ij} = -1 / (\sqrt{\lambda_i}\sqrt{\lambda_j}(\sqrt{\lambda_i}
  + \sqrt{\lambda_j}))`, which is also the derivative :math:`f'(\lambda_i)` at
  :math:`i = j`: finite and accurate for equal or nearly equal eigenvalues;
* PCA and decorrelation: :math:`\bar\Sigma = U (\operatorname{diag}\bar\lambda +
  K \circ U^\top \bar U) U^\top` with :math:`K_{ij} = 1/(\lambda_j - \lambda_i)`
  (:math:`i \ne j`). The gradient does not exist where eigenvalues repeat: the
  VJP raises :class:`ValueError` where two eigenvalues of a group are closer
  than their rounding level :math:`4 D u \lambda_{\max}` (``u`` the unit
  roundoff of the compute dtype), and is exact (to rounding) above it;
* Cholesky: :math:`\bar\Sigma = -W^\top \Phi(\bar W W^\top) W` with :math:`\Phi`
  the lower triangle with its diagonal halved;
* IterNorm: back through the unrolled Newton–Schulz iterations.

Implementation notes
    Only the Array API and its ``linalg`` extension are used (``eigh``,
    ``cholesky``). The operations read the canonical rows of their input a
    block of samples at a time (:mod:`normref.ops.sample_blocks`), converted
    to the compute dtype as they are read: the covariance in one pass over the
    blocks (:func:`group_covariance`: each block centred on its own mean, the
    blocks merged exactly), the output :math:`X_c W^\top` and the gradient
    :math:`\bar X` block by block into a new array of the input's shape, so
    that a call holds its result, a few blocks and its ``D x D`` matrices, and
    no copy of the whole input. The covariance is symmetrized, :math:`(C + C^\top)/2`,
    before it is decomposed, so every library sees the same symmetric matrix.
    The eigen-methods decompose :math:`C` and add :math:`\epsilon` to its
    eigenvalues (exact: :math:`C` and :math:`C + \epsilon I` share their
    eigenvectors), so that the eigenvectors are as accurate as the gaps of
    :math:`C`'s own eigenvalues allow, :math:`u \lVert C \rVert / \text{gap}`,
    even where :math:`\epsilon` dominates :math:`C`; Cholesky and IterNorm
    add :math:`\epsilon` to the diagonal.
    Scaling: each group's values are multiplied by a power of two :math:`c`
    from their largest magnitude (``normref._lib.scaling``), exactly, before
    anything is summed, so that the covariance, the whitening matrix and the
    cotangents neither overflow nor underflow from the smallest subnormal
    :math:`|x|` to the largest finite one; :math:`\epsilon` enters as
    :math:`c^2\epsilon`, held as a ``Shift`` where that would leave the
    range (:math:`\epsilon` dominating tiny values), and the results are scaled
    back (:math:`W(c^2\Sigma) = W(\Sigma)/c`). A float16 or bfloat16 covariance
    (``precision="native"``) is factored in float32, as no library factors those
    dtypes, and its whitening matrix rounded back.
    The Array API has no triangular solve: :math:`L^{-1}` is computed by a
    written forward substitution (row by row, each row one batched
    vector-matrix product), which is backward stable and exactly lower
    triangular; ``linalg.solve`` would factor the triangular matrix again with
    pivoting. Non-finite values propagate: a group whose covariance is not
    finite is decomposed as a stand-in, :math:`\operatorname{diag}(1, \dots, D)`,
    and its whole output (all ``M`` samples and ``D`` features) and gradient
    are NaN. A covariance that rounding leaves indefinite (``eps`` below the
    rounding level :math:`D u \lambda_{\max}`) gives NaN (``eigh``) or the
    library's error (``cholesky``). A convention passed as ``precision``
    models its covariance algorithm too (see :func:`group_covariance`).
    The VJPs of PCA whitening and decorrelation read the eigenvalues to check
    for ties (a host synchronization), so they cannot be traced by ``jax.jit``;
    every other function here can. Dask arrays have neither a batched ``eigh``
    nor a batched ``cholesky``: every operation here but IterNorm raises
    :class:`TypeError` on them (the covariance itself is computed on Dask by
    :func:`normref.stats.comoments`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import array_api_compat
from array_api_compat import device

from normref._lib.checks import check_correction, check_eps, check_positive_int, check_rank
from normref._lib.namespace import (
    Array,
    Namespace,
    compute_dtype,
    namespace_of,
    output_dtype,
    to_dtype,
)
from normref._lib.scaling import max_magnitude, power_of_two_scale
from normref.affine import affine
from normref.ops.base import (
    CANONICAL_AXES,
    GroupOp,
    XGrad,
    run_canonical,
    run_canonical_vjp,
)
from normref.ops.sample_blocks import Block, SampleBlocks
from normref.types import Precision

# ---------------------------------------------------------------------------
# Covariance


def _mT(xp: Namespace, a: Array) -> Array:
    return xp.matrix_transpose(a)


def _eye(xp: Namespace, like: Array) -> Array:
    """The identity of ``like``'s last size, dtype and device."""
    return xp.eye(like.shape[-1], dtype=like.dtype, device=device(like))


def symmetrized(xp: Namespace, cov: Array) -> tuple[Array, Array]:
    r"""``(C, finite)``: :math:`(C + C^\top)/2` and where it is finite.

    ``finite`` has ``cov``'s shape with its last two axes of size 1. Where it is
    false, ``C`` is the stand-in :math:`\operatorname{diag}(1, \dots, D)`
    (positive definite, distinct eigenvalues), so that every decomposition and
    its VJP run; the caller makes those groups' results NaN with :func:`poisoned`.
    """
    d = cov.shape[-1]
    eye = _eye(xp, cov)
    cov = (cov + _mT(xp, cov)) / 2
    finite = xp.all(xp.isfinite(cov), axis=(-2, -1), keepdims=True)
    stand_in = eye * xp.arange(1, d + 1, dtype=cov.dtype, device=device(cov))
    return xp.where(finite, cov, stand_in), finite


def poisoned(xp: Namespace, matrices: Array, finite: Array) -> Array:
    """``D x D`` ``matrices`` with every entry NaN where their group's covariance was not finite.

    A matrix product with an all-NaN matrix on the right is NaN in every entry
    (each entry sums products with NaN), so poisoning the small ``W`` and
    ``Σ̄`` makes a group's whole output and gradient NaN without a pass over
    its ``M x D`` values.
    """
    nan = xp.asarray(xp.nan, dtype=matrices.dtype, device=device(matrices))
    return matrices + xp.where(finite, xp.zeros_like(nan), nan)


def sample_sums(xp: Namespace, x: Array) -> Array:
    """Sums over the samples of ``(..., M, D)`` ``x``, shape ``(..., 1, D)``: a matrix product
    with a row of ones (one BLAS pass; a reduction over the middle axis adds row by row)."""
    return xp.ones((1, x.shape[-2]), dtype=x.dtype, device=device(x)) @ x


def group_cross(
    xp: Namespace, x: Array, *, algorithm: str, overwrite: bool = False
) -> tuple[Array, Array, Array]:
    r"""Mean, centred values and cross-products :math:`X_c^\top X_c` of each group of ``(..., M, D)`` ``x``.

    ``algorithm="two_pass"`` forms :math:`X_c^\top X_c` (exact); ``"fast"`` and
    ``"fast_clamped"`` model frameworks that use :math:`X^\top X - M \mu\mu^\top`
    (the latter clamping the diagonal at 0, as it does for ``D = 1``). With
    ``overwrite``, ``x`` is the caller's own array and is centred in place (the
    centred values returned are ``x``).
    """
    m = x.shape[-2]
    mean = sample_sums(xp, x) / m
    if algorithm != "two_pass":
        cross = _mT(xp, x) @ x - m * (_mT(xp, mean) @ mean)
        if algorithm == "fast_clamped":
            cross = xp.where(_eye(xp, x) > 0, xp.clip(cross, min=0.0), cross)
    if overwrite:
        x -= mean
        centred = x
    else:
        centred = x - mean
    if algorithm == "two_pass":
        cross = _mT(xp, centred) @ centred
    return mean, centred, cross


class Shift(NamedTuple):
    r"""The regularizer :math:`\epsilon` of a covariance :math:`C` of values scaled by a power of
    two :math:`c`, which is :math:`c^2 \epsilon`, held so that neither part overflows nor
    underflows: :math:`c^2 \epsilon = \epsilon_a / \rho^2`.

    ``eps`` is :math:`\epsilon_a = c_a^2 \epsilon` and ``ratio`` is :math:`\rho = c_a / c`
    (at most 1), with :math:`c_a` the power of two of the larger of the values' magnitude
    and :math:`\sqrt\epsilon` (``normref._lib.scaling``): :math:`\Sigma_a = \rho^2 C +
    \epsilon_a I` is :math:`\Sigma = C + c^2\epsilon I` in the units where whichever of the
    data and :math:`\epsilon` dominates is of order 1. Both are ``(..., 1, 1)``.
    """

    eps: Array
    ratio: Array


def unit_shift(xp: Namespace, eps: float, like: Array) -> Shift:
    """The :class:`Shift` of an unscaled covariance (``c = 1``) of ``like``'s dtype."""
    one = xp.ones((*like.shape[:-2], 1, 1), dtype=like.dtype, device=device(like))
    return Shift(one * eps, one)


def shift_of(xp: Namespace, eps: float, magnitude: Array, scale: Array) -> Shift:
    """The :class:`Shift` of ``eps`` for values of largest ``magnitude`` scaled by ``scale``."""
    floor = power_of_two_scale(xp, xp.maximum(magnitude, xp.full_like(magnitude, math.sqrt(eps))))
    return Shift((eps * floor) * floor, floor / scale)


class ScaledCovariance(NamedTuple):
    """Each group's values times a power of two (``scale``, ``(G, 1, 1)``): their mean
    (``(G, 1, D)``), their covariance ``cov`` (with a stand-in where it is not finite,
    ``finite``: :func:`symmetrized`) and the :class:`Shift` of ``eps`` for it."""

    scale: Array
    mean: Array
    cov: Array
    finite: Array
    shift: Shift


class CotangentSums(NamedTuple):
    r"""What a backward needs of the cotangent :math:`\bar Y` of a group's rows: the products
    :math:`\bar Y^\top X_c` with the scaled centred rows (``(G, D, D)``) and the sums
    :math:`\mathbf 1^\top \bar Y` (``(G, 1, D)``)."""

    products: Array
    sums: Array


def group_covariance(
    xp: Namespace,
    x: SampleBlocks,
    *,
    dtype: Any,
    eps: float,
    correction: int,
    algorithm: str,
    cotangent: SampleBlocks | None = None,
) -> tuple[ScaledCovariance, CotangentSums | None]:
    r"""The covariance :math:`C = X_c^\top X_c / (M - c)` of each group of ``x``'s canonical
    rows, computed in ``dtype`` of its values times the group's power of two
    (``normref._lib.scaling``), symmetrized (:func:`symmetrized`); ``algorithm`` as
    :func:`group_cross`'s. With ``cotangent`` (the blocks of ``dy``, under ``x``'s
    partition) the same pass forms the :class:`CotangentSums` a backward needs, returned
    beside the statistics (``None`` without it).

    Two passes over ``x``: its largest magnitude (read in place, nothing converted), then
    the blocks. Each block :math:`b` of :math:`n_b` rows is centred on its own computed
    mean :math:`\mu_b`, :math:`C_b = X_b - \mathbf 1 \mu_b^\top`, and its products taken;
    the blocks' sums merge exactly (Chan, Golub and LeVeque 1983), with
    :math:`\delta_b = \mu_b - \mu` and the residual sums :math:`r_b = \mathbf 1^\top C_b`
    (zero but for the rounding of :math:`\mu_b`, kept so that the merge is exact for the
    computed means):

    .. math::

        X_c^\top X_c = \sum_b C_b^\top C_b
        + \delta_b^\top (n_b \delta_b + r_b) + r_b^\top \delta_b, \qquad
        \bar Y^\top X_c = \sum_b \bar Y_b^\top C_b + (\mathbf 1^\top \bar Y_b)^\top \delta_b,

    each a sum of products of centred values, as the two-pass formula's (one block: it).
    ``"fast"`` sums the blocks' :math:`X_b^\top X_b` and subtracts :math:`M \mu^\top \mu`.
    """
    m, d = x.samples, x.features
    magnitude = x.magnitude(dtype)
    scale = power_of_two_scale(xp, magnitude)
    sums = xp.zeros((x.groups, 1, d), dtype=dtype, device=device(scale))
    products = xp.zeros((x.groups, d, d), dtype=dtype, device=device(scale))
    dy_products, dy_sums = xp.zeros_like(products), xp.zeros_like(sums)
    block_sums, residuals, block_dy_sums = [], [], []
    for block in x.blocks:
        values = x.rows(block, dtype)
        values *= scale
        block_sum = sample_sums(xp, values)
        sums += block_sum
        if algorithm != "two_pass":
            products += _mT(xp, values) @ values
        if algorithm == "two_pass" or cotangent is not None:
            values -= block_sum / block.count
            block_sums.append(block_sum)
        if algorithm == "two_pass":
            products += _mT(xp, values) @ values
            residuals.append(sample_sums(xp, values))
        if cotangent is not None:
            dy = cotangent.rows(block, dtype)
            dy_products += _mT(xp, dy) @ values
            block_dy_sum = sample_sums(xp, dy)
            dy_sums += block_dy_sum
            block_dy_sums.append(block_dy_sum)
    mean = sums / m
    if block_sums and len(x.blocks) > 1:  # the blocks' means about the mean: (G, blocks, D)
        counts = xp.asarray([b.count for b in x.blocks], dtype=dtype, device=device(scale))[:, None]
        deltas = xp.concat(block_sums, axis=1) / counts - mean
        if algorithm == "two_pass":
            rest = xp.concat(residuals, axis=1)
            products += _mT(xp, deltas) @ (deltas * counts + rest) + _mT(xp, rest) @ deltas
        if cotangent is not None:
            dy_products += _mT(xp, xp.concat(block_dy_sums, axis=1)) @ deltas
    if algorithm != "two_pass":
        products -= m * (_mT(xp, mean) @ mean)
        if algorithm == "fast_clamped":
            products = xp.where(_eye(xp, products) > 0, xp.clip(products, min=0.0), products)
    cov, finite = symmetrized(xp, products / (m - correction))
    stats = ScaledCovariance(scale, mean, cov, finite, shift_of(xp, eps, magnitude, scale))
    return stats, None if cotangent is None else CotangentSums(dy_products, dy_sums)


# ---------------------------------------------------------------------------
# Whitening matrices W(Σ) and the cotangents of Σ they pass back.


def ordered_eigh(xp: Namespace, symmetric: Array) -> tuple[Array, Array]:
    """Eigenvalues in descending order, eigenvectors (columns) with their largest-|.| entry > 0.

    Ties in the largest absolute value go to the lowest index (``argmax``'s first
    occurrence); equal eigenvalues keep the solver's order (a stable sort).
    """
    lam, u = xp.linalg.eigh(symmetric)
    order = xp.argsort(lam, axis=-1, descending=True, stable=True)
    lam = xp.take_along_axis(lam, order, axis=-1)
    u = xp.take_along_axis(u, xp.broadcast_to(order[..., None, :], u.shape), axis=-1)
    pivot = xp.take_along_axis(u, xp.argmax(xp.abs(u), axis=-2, keepdims=True), axis=-2)
    return lam, xp.where(pivot < 0, -u, u)


def _require_distinct(xp: Namespace, lam: Array, what: str) -> None:
    """Raise where two (descending) eigenvalues of a group are within rounding of each other.

    ``lam`` are the covariance's own eigenvalues (without eps). A backward-stable
    eigensolver returns the eigenvalues of ``C + E`` with ``‖E‖ <= p(D) u ‖C‖``; by
    Weyl's inequality a computed gap below twice that (``4 D u λ_max`` with
    ``p(D) = 2D``) is consistent with an exact tie.
    """
    d = lam.shape[-1]
    if d < 2:
        return
    gaps = lam[..., :-1] - lam[..., 1:]
    # u = finfo.eps / 2, the unit roundoff
    level = 2 * d * xp.finfo(lam.dtype).eps * xp.max(xp.abs(lam), axis=-1, keepdims=True)
    tied = gaps <= level
    if not bool(xp.any(tied)):
        return
    rows = xp.reshape(tied, (-1, d - 1))
    group = int(xp.argmax(xp.astype(xp.any(rows, axis=-1), xp.int32)))
    k = int(xp.argmax(xp.astype(rows[group, :], xp.int32)))
    values = xp.reshape(lam, (-1, d))[group, :]
    a, b = float(values[k]), float(values[k + 1])
    msg = (
        f"the gradient of {what} does not exist where eigenvalues of a group's covariance "
        f"repeat, and group {group} has repeated eigenvalues {a!r} and {b!r} "
        f"(gap {a - b:.3g} <= {float(xp.reshape(level, (-1,))[group]):.3g}, their rounding "
        f"level): its eigenvectors are not unique there. ZCA, Cholesky and IterNorm whitening "
        f"have gradients at repeated eigenvalues"
    )
    raise ValueError(msg)


def _eigen_cotangent(
    xp: Namespace, lam: Array, u: Array, lam_bar: Array | None, u_bar: Array, what: str
) -> Array:
    r"""Cotangent of Σ from those of its eigenvalues and eigenvectors.

    :math:`U (\operatorname{diag}\bar\lambda + K \circ U^\top \bar U) U^\top`
    with :math:`K_{ij} = 1/(\lambda_j - \lambda_i)` off the diagonal, 0 on it.
    """
    _require_distinct(xp, lam, what)
    off = _eye(xp, lam) == 0
    gap = lam[..., None, :] - lam[..., :, None]
    one = xp.asarray(1.0, dtype=lam.dtype, device=device(lam))
    k = xp.where(off, one / xp.where(off, gap, one), xp.zeros_like(gap))
    inner = k * (_mT(xp, u) @ u_bar)
    if lam_bar is not None:
        inner = inner + xp.where(off, xp.zeros_like(gap), lam_bar[..., None, :])
    return u @ inner @ _mT(xp, u)


def _inverse_roots(xp: Namespace, lam: Array, shift: Shift) -> Array:
    r""":math:`(\lambda + c^2\epsilon)^{-1/2}` for eigenvalues ``lam`` of a scaled covariance,
    as :math:`\rho / \sqrt{\rho^2 \lambda + \epsilon_a}` (:class:`Shift`): no step overflows."""
    ratio = shift.ratio[..., 0]
    return ratio / xp.sqrt((lam * ratio) * ratio + shift.eps[..., 0])


def _decorrelation_matrix(xp: Namespace, cov: Array, _shift: Shift) -> tuple[Array, Any]:
    # the gaps are C's own: eps shifts every eigenvalue alike, and adding it first would
    # round the gaps to u (λ + eps) instead of u λ
    lam, u = ordered_eigh(xp, cov)
    return _mT(xp, u), (lam, u)


def _decorrelation_cotangent(xp: Namespace, w_bar: Array, saved: Any) -> Array:
    lam, u = saved
    return _eigen_cotangent(xp, lam, u, None, _mT(xp, w_bar), DECORRELATION.label)


PCA_WHITENING = "PCA whitening"


def _pca_matrix(xp: Namespace, cov: Array, shift: Shift) -> tuple[Array, Any]:
    lam, u = ordered_eigh(xp, cov)
    # the eigenvector term takes C's own gaps (see _decorrelation_matrix), Λ + eps the rest
    inverse_root = _inverse_roots(xp, lam, shift)
    return _mT(xp, u) * inverse_root[..., :, None], (lam, u, inverse_root)


def _pca_cotangent(xp: Namespace, w_bar: Array, saved: Any) -> Array:
    lam, u, t = saved
    # W = (Λ + eps)^-1/2 Uᵀ = T Uᵀ: λ̄_k = -½ (λ_k + eps)^-3/2 (W̄ U)_kk, Ū = W̄ᵀ T
    lam_bar = -0.5 * xp.sum(w_bar * _mT(xp, u), axis=-1) * (t * t * t)
    return _eigen_cotangent(xp, lam, u, lam_bar, _mT(xp, w_bar) * t[..., None, :], PCA_WHITENING)


def _zca_matrix(xp: Namespace, cov: Array, shift: Shift) -> tuple[Array, Any]:
    lam, u = xp.linalg.eigh(cov)
    inverse_root = _inverse_roots(xp, lam, shift)
    return (u * inverse_root[..., None, :]) @ _mT(xp, u), (u, inverse_root)


def _zca_cotangent(xp: Namespace, w_bar: Array, saved: Any) -> Array:
    u, t = saved
    a, b = t[..., :, None], t[..., None, :]
    # with t = (λ + eps)^-1/2: (t_i - t_j) / (λ_i - λ_j) = -(t_i t_j)² / (t_i + t_j), without
    # 0/0; at t_i = t_j it is d(λ^-1/2)/dλ = -½ t³
    divided = -(a * b) * ((a * b) / (a + b))
    return u @ (divided * (_mT(xp, u) @ w_bar @ u)) @ _mT(xp, u)


def lower_triangular_inverse(xp: Namespace, low: Array) -> Array:
    """``L^-1`` of a stack of lower triangular matrices, by forward substitution.

    Row ``i`` of ``W = L^-1`` is ``(e_i - L[i, :i] W[:i, :]) / L[i, i]``; its
    entries right of the diagonal are exactly 0.
    """
    d = low.shape[-1]
    eye = _eye(xp, low)
    rows: list[Array] = []
    for i in range(d):
        row = eye[i, :]
        if i:
            row = row - (low[..., i : i + 1, :i] @ xp.stack(rows, axis=-2))[..., 0, :]
        rows.append(row / low[..., i : i + 1, i])
    return xp.stack(rows, axis=-2)


def _lower_half(xp: Namespace, a: Array) -> Array:
    """Φ(A): the lower triangle of ``A`` with its diagonal halved."""
    diagonal = _eye(xp, a) > 0
    return xp.where(diagonal, 0.5 * a, xp.tril(a))


def _shifted(xp: Namespace, cov: Array, shift: Shift) -> Array:
    """:math:`\\Sigma_a = \rho^2 C + \\epsilon_a I` (:class:`Shift`)."""
    return (cov * shift.ratio) * shift.ratio + shift.eps * _eye(xp, cov)


def _cholesky_matrix(xp: Namespace, cov: Array, shift: Shift) -> tuple[Array, Any]:
    # W(Σ) = ρ W(ρ² Σ): L^-1 scales as Σ^-1/2
    w = shift.ratio * lower_triangular_inverse(xp, xp.linalg.cholesky(_shifted(xp, cov, shift)))
    return w, w


def _cholesky_cotangent(xp: Namespace, w_bar: Array, w: Any) -> Array:
    return -(_mT(xp, w) @ _lower_half(xp, w_bar @ _mT(xp, w)) @ w)


def _newton_scale(xp: Namespace, sigma: Array, normalizer: str) -> Array:
    """The scalar ``Σ`` is divided by before the Newton–Schulz steps, per matrix ``(..., 1, 1)``:
    its trace (IterNorm) or its Frobenius norm (ONI)."""
    if normalizer == "trace":
        return xp.linalg.trace(sigma)[..., None, None]
    return xp.sqrt(xp.sum(sigma * sigma, axis=(-2, -1), keepdims=True))


def _iter_norm_matrix(
    xp: Namespace, cov: Array, shift: Shift, *, iterations: int, normalizer: str = "trace"
) -> tuple[Array, Any]:
    sigma = _shifted(xp, cov, shift)
    trace = _newton_scale(xp, sigma, normalizer)
    n = sigma / trace
    ps = [_eye(xp, sigma)]
    for _ in range(iterations):
        p = ps[-1]
        ps.append(1.5 * p - 0.5 * (p @ p @ p) @ n)
    # W(Σ) = ρ W(Σ_a): P_T is the same for both, t(Σ_a) = ρ² t(Σ) (t is homogeneous)
    return ps[-1] * (shift.ratio / xp.sqrt(trace)), (ps, n, trace, normalizer, shift.ratio)


def _iter_norm_cotangent(xp: Namespace, w_bar: Array, saved: Any) -> Array:
    ps, n, trace, normalizer, ratio = saved
    # of Σ_a, from W̄_a = ρ W̄ (W = ρ W_a); that of Σ = Σ_a / ρ² is then ρ² Σ̄_a
    w_bar = w_bar * ratio
    root = xp.sqrt(trace)
    p_bar = w_bar / root
    trace_bar = -0.5 * xp.sum(w_bar * ps[-1], axis=(-2, -1), keepdims=True) / (trace * root)
    n_bar = xp.zeros_like(n)
    # P_{k+1} = 1.5 P_k - 0.5 P_k P_k P_k N, back from k = T-1 to 0 (P_0 = I is constant)
    for k in reversed(range(len(ps) - 1)):
        p = ps[k]
        p2 = p @ p
        n_bar = n_bar - 0.5 * _mT(xp, p2 @ p) @ p_bar
        if k:
            p_bar = 1.5 * p_bar - 0.5 * (
                p_bar @ _mT(xp, p2 @ n)
                + _mT(xp, p) @ p_bar @ _mT(xp, p @ n)
                + _mT(xp, p2) @ p_bar @ _mT(xp, n)
            )
    # N = Σ_a / t, t = tr Σ_a (dt/dΣ_a = I) or ||Σ_a||_F (dt/dΣ_a = Σ_a / t = N)
    trace_bar = trace_bar - xp.sum(n_bar * n, axis=(-2, -1), keepdims=True) / trace
    eye_or_n = _eye(xp, n) if normalizer == "trace" else n
    return (n_bar / trace + trace_bar * eye_or_n) * (ratio * ratio)


@dataclass(frozen=True)
class Whitening:
    """A whitening matrix ``W(Σ)`` and the cotangent of ``Σ`` it passes back.

    ``name`` is the method's (``"zca"``, ...), ``label`` how messages call it;
    ``matrix(xp, cov, shift, **params) -> (W, saved)`` whitens ``Σ = C + eps I``
    (``eps`` held as a :class:`Shift`); ``cotangent(xp, w_bar, saved) -> Σ̄`` (not
    yet symmetrized); ``decomposes``: whether ``matrix`` factors ``Σ`` (``eigh``
    or ``cholesky``); ``degree``: ``W(c² Σ) = c**-degree W(Σ)`` (1 for a whitening,
    0 for a rotation).
    """

    name: str
    label: str
    matrix: Callable[..., tuple[Array, Any]]
    cotangent: Callable[..., Array]
    decomposes: bool = True
    degree: int = 1

    def checked_matrix(self, xp: Namespace, cov: Array, shift: Shift, **params: Any) -> Any:
        """``matrix``, or a :class:`TypeError` where the namespace cannot factor a stack of matrices.

        ``dask.array`` cannot: it has no ``eigh``, and its ``cholesky`` takes
        one matrix. A float16 or bfloat16 covariance is factored in float32 (no
        library factors those dtypes), and ``W`` rounded back.
        """
        if self.decomposes and array_api_compat.is_dask_namespace(xp):
            msg = (
                f"{self.label} factors each group's covariance (eigh or cholesky), which "
                "dask.array cannot do for a stack of matrices: on Dask arrays, compute the "
                "covariance with normref.stats.comoments and call whitening_matrix on the "
                "computed covariance, or use IterNorm whitening"
            )
            raise TypeError(msg)
        wide = factor_dtype(xp, cov.dtype)
        w, saved = self.matrix(
            xp, to_dtype(xp, cov, wide), Shift(*(to_dtype(xp, a, wide) for a in shift)), **params
        )
        return to_dtype(xp, w, cov.dtype), saved

    def checked_cotangent(self, xp: Namespace, w_bar: Array, saved: Any) -> Array:
        """``cotangent`` of ``saved`` from :meth:`checked_matrix` (in float32 for a narrower
        ``w_bar``, rounded back)."""
        wide = factor_dtype(xp, w_bar.dtype)
        return to_dtype(xp, self.cotangent(xp, to_dtype(xp, w_bar, wide), saved), w_bar.dtype)


def factor_dtype(xp: Namespace, dtype: Any) -> Any:
    """The dtype a covariance of ``dtype`` is factored in: float32 for float16 and bfloat16."""
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


DECORRELATION = Whitening(
    "decorrelate", "decorrelation", _decorrelation_matrix, _decorrelation_cotangent, degree=0
)
METHODS: dict[str, Whitening] = {
    w.name: w
    for w in (
        Whitening("zca", "ZCA whitening", _zca_matrix, _zca_cotangent),
        Whitening("pca", PCA_WHITENING, _pca_matrix, _pca_cotangent),
        Whitening("cholesky", "Cholesky whitening", _cholesky_matrix, _cholesky_cotangent),
        Whitening(
            "iter_norm",
            "IterNorm whitening",
            _iter_norm_matrix,
            _iter_norm_cotangent,
            decomposes=False,
        ),
    )
}
"""The whitening methods of :func:`whitening_matrix` and :func:`normref.batch_whiten`."""

FROBENIUS_NEWTON = Whitening(
    "frobenius_newton",
    "Newton–Schulz whitening of the Frobenius-normalized covariance",
    partial(_iter_norm_matrix, normalizer="frobenius"),
    _iter_norm_cotangent,
    decomposes=False,
)
r"""IterNorm's Newton–Schulz steps with :math:`\Sigma` divided by its Frobenius norm instead of
its trace, :math:`W = P_T(\Sigma/\lVert\Sigma\rVert_F)/\sqrt{\lVert\Sigma\rVert_F}`: the
orthogonalization of ONI (:func:`normref.oni_weight_norm`), as the authors' code computes it."""


# ---------------------------------------------------------------------------
# The operations on (G, M, D)


def _output_matrix(method: Whitening, w: Array, scale: Array) -> Array:
    """``W`` of scaled values as the matrix that takes them to the output: ``W`` itself for a
    whitening (its output does not depend on the scale), ``W / c`` for a rotation."""
    return w if method.degree else w / scale


def _folds(xp: Namespace, dtype: Any) -> bool:
    """Whether a group's power of two is folded into its small matrices (one pass fewer over
    the samples): not in float16 or bfloat16, where it could take their entries below the
    normal range that the samples' values are in."""
    return bool(xp.finfo(dtype).bits >= 32)


def _forward(
    method: Whitening,
    xp: Namespace,
    x: SampleBlocks,
    gamma: Array | None,
    beta: Array | None,
    *,
    dtype: Any,
    out_dtype: Any,
    eps: float,
    correction: int,
    algorithm: str,
    **params: Any,
) -> Array:
    r""":math:`\gamma \odot (X_c W^\top) + \beta` (per-feature ``gamma`` and ``beta`` of shape
    ``(G, 1, D)``, ``None`` for 1 and 0) of ``x``'s canonical rows, computed in ``dtype`` a
    block at a time and written, in ``out_dtype``, into a new array of ``x``'s shape."""
    stats, _ = group_covariance(
        xp, x, dtype=dtype, eps=eps, correction=correction, algorithm=algorithm
    )
    w = poisoned(xp, method.checked_matrix(xp, stats.cov, stats.shift, **params)[0], stats.finite)
    folds = _folds(xp, w.dtype) or method.degree
    matrix = _mT(xp, _output_matrix(method, w, stats.scale) if folds else w)

    def output(block: Block) -> Array:
        y = x.times(x.centred(block, dtype, stats.scale, stats.mean), matrix)
        if not folds:
            y /= stats.scale
        return affine(xp, y, gamma, beta, CANONICAL_AXES, overwrite=True)

    return x.assembled(output, out_dtype)


class AffineGrads(NamedTuple):
    """What the backward of a whitening layer computes: the gradient ``dx`` (of ``x``'s
    shape) and the affine's sums over samples (``(G, 1, D)``)."""

    dx: Array
    dy_dot_y: Array
    dy_sum: Array


def _vjp(
    method: Whitening,
    xp: Namespace,
    dy: SampleBlocks,
    x: SampleBlocks,
    gamma: Array | None,
    *,
    dtype: Any,
    out_dtype: Any,
    eps: float,
    correction: int,
    algorithm: str,
    **params: Any,
) -> AffineGrads:
    r"""The VJP of :math:`\gamma \odot (X_c W^\top) + \beta` (per-feature ``gamma`` of shape
    ``(G, 1, D)``, ``None`` for 1) with cotangent ``dy``, computed in ``dtype`` a block
    at a time; ``dx`` is a new array of ``x``'s shape in ``out_dtype``.

    ``gamma`` scales the rows of the small matrices instead of ``dy``:
    :math:`\bar W = \Gamma \bar Y^\top X_c` and
    :math:`\bar X = P(\bar Y) \Gamma W + X_c (\bar\Sigma + \bar\Sigma^\top)/(M - c)`
    (:math:`P(\bar Y) W = P(\bar Y W)`). The affine's sums over samples come from the
    same :math:`D \times D` product: :math:`\sum_i \bar y_{id} y_{id} =
    \sum_e W_{de} (\bar Y^\top X_c)_{de}` and :math:`\sum_i \bar y_{id}`, each
    ``(G, 1, D)``.

    All of it is computed of the values times the group's power of two :math:`c`: with
    :math:`W(c^2\Sigma) = c^{-d} W(\Sigma)` (``degree`` d), :math:`\bar X` is
    :math:`c^d` times the expression above in the scaled values, the cotangent of the
    covariance taken of :math:`\bar Y^\top X_c` of the scaled :math:`X_c` (by linearity).
    """
    stats, sums = group_covariance(
        xp, x, dtype=dtype, eps=eps, correction=correction, algorithm=algorithm, cotangent=dy
    )
    assert sums is not None  # a cotangent was given
    w, saved = method.checked_matrix(xp, stats.cov, stats.shift, **params)
    w = poisoned(xp, w, stats.finite)
    dy_dot_y = _mT(xp, xp.sum(w * sums.products, axis=-1, keepdims=True))
    if not method.degree:
        dy_dot_y /= stats.scale  # Σ (W/c) ∘ (Ȳᵀ X_c), formed without overflow
    rows = None if gamma is None else _mT(xp, gamma)
    products = sums.products if rows is None else rows * sums.products
    sigma_bar = method.checked_cotangent(xp, products, saved)
    m = x.samples
    through_sigma = poisoned(xp, (sigma_bar + _mT(xp, sigma_bar)) / (m - correction), stats.finite)
    # dx = c (P(dy) W + X_c Σ̄'), c folded into the small matrices or not
    folds = _folds(xp, w.dtype)
    if method.degree and folds:
        w, through_sigma = w * stats.scale, through_sigma * stats.scale
    through_w = w if rows is None else rows * w
    dy_sum = sums.sums
    dy_mean = dy_sum / m
    # what the method saved (IterNorm's iterates) and the D x D matrices done with: not held
    # through the last pass
    del saved, products, sigma_bar, w, sums

    def centred_cotangent(block: Block) -> Array:
        values = dy.rows(block, dtype)
        values -= dy_mean
        return values

    def gradient(block: Block) -> Array:
        dx = x.times(centred_cotangent(block), through_w)  # which is not held past this line
        dx += x.times(x.centred(block, dtype, stats.scale, stats.mean), through_sigma)
        if method.degree and not folds:
            dx *= stats.scale
        return dx

    return AffineGrads(x.assembled(gradient, out_dtype), dy_dot_y, dy_sum)


def whitening_op(method: Whitening) -> GroupOp:
    """The :class:`GroupOp` that applies ``method`` to each group's centred samples."""
    return GroupOp(
        method.label,
        partial(_forward, method),
        partial(_vjp, method),
        needs_variance=True,
        joint_features=True,
    )


DECORRELATE = whitening_op(DECORRELATION)
WHITENING_OPS: dict[str, GroupOp] = {name: whitening_op(m) for name, m in METHODS.items()}


def batch_whitening(
    x: SampleBlocks,
    *,
    method: str,
    eps: float,
    correction: int,
    iterations: int,
    precision: Precision,
) -> tuple[Array, Array]:
    """The mean ``(G, D)`` and whitening matrix ``(G, D, D)`` of each group of ``x``'s
    canonical rows, in the compute dtype: :func:`whitening_matrix` of the groups'
    covariances, which are taken scaled (so that neither overflows where the matrix does not)."""
    xp = x.xp
    whitening = METHODS[check_method(method)]
    params = method_params(whitening.name, iterations)
    stats, _ = group_covariance(
        xp,
        x,
        dtype=compute_dtype(xp, x.source.dtype, precision),
        eps=eps,
        correction=correction,
        algorithm="two_pass",
    )
    w, _ = whitening.checked_matrix(xp, stats.cov, stats.shift, **params)
    return (stats.mean / stats.scale)[..., 0, :], poisoned(xp, w, stats.finite) * stats.scale


def check_method(method: object) -> str:
    """``method`` must name one of :data:`METHODS`."""
    if method not in METHODS:
        msg = f"method must be one of {tuple(METHODS)}, got {method!r}"
        raise ValueError(msg)
    return str(method)


def method_params(method: str, iterations: object) -> dict[str, Any]:
    """The parameters ``method`` takes beyond ``eps``: IterNorm's ``iterations``."""
    if method == "iter_norm":
        return {"iterations": check_positive_int(iterations, name="iterations")}
    return {}


def whitening_params(eps: float, correction: int) -> dict[str, Any]:
    """Checked covariance parameters of every operation of the family."""
    return {"eps": check_eps(eps), "correction": check_correction(correction)}


def decorrelate(
    x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> Array:
    r"""Rotate each group onto the eigenbasis of its covariance: :math:`y = U^\top (x - \mu)`.

    Parameters
    ----------
    x
        Canonical array of shape ``(G, M, D)``, ``M > correction``; the covariance of
        each group is over axis 1.
    eps
        Finite, > 0; added to the diagonal of the covariance. It shifts every
        eigenvalue alike and so changes neither the eigenvectors nor the
        output; it is accepted so that the whole family has one signature.
    correction
        0 for the biased covariance :math:`X_c^\top X_c / M`, 1 for :math:`/(M - 1)`.
    precision
        ``"highest"`` (float64), ``"native"`` or a convention to model.

    Returns
    -------
    Array of ``x``'s shape and dtype: output feature ``k`` is the projection on
    the eigenvector of the ``k``-th largest eigenvalue, signed so that its
    entry of largest absolute value is positive (ties: lowest index). The
    output's covariance is the diagonal :math:`\Lambda - \epsilon I`. Where
    eigenvalues repeat, the features of that eigenspace are not unique (see
    the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.decorrelate(x)
    >>> print(np.round(y, 4))
    [[[-0.2396 -0.4389]
      [-0.6381  0.918 ]
      [-2.4742 -0.3582]
      [ 3.3519 -0.121 ]]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    return run_canonical(DECORRELATE, x, precision, whitening_params(eps, correction))


def decorrelate_vjp(
    dy: Array, x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> XGrad:
    r"""VJP of :func:`decorrelate`: :math:`\bar\Sigma = U (K \circ U^\top \bar W^\top) U^\top`.

    Raises :class:`ValueError` where two eigenvalues of a group's covariance
    repeat (to within :math:`4 D u \lambda_{\max}`): the gradient does not exist there.
    The check reads the eigenvalues, so this VJP cannot be traced by ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.decorrelate(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.decorrelate_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-1.0962 -0.2986]
      [-0.3686 -0.2906]
      [ 0.7602 -0.0246]
      [ 0.7045  0.6138]]]

    References
    ----------
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    return run_canonical_vjp(DECORRELATE, dy, x, precision, whitening_params(eps, correction))


def pca_whiten(
    x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> Array:
    r"""PCA whitening: :math:`y = \Lambda^{-1/2} U^\top (x - \mu)`, :math:`\Sigma = C + \epsilon I = U \Lambda U^\top`.

    Parameters are those of :func:`zca_whiten`.

    Returns
    -------
    Array of ``x``'s shape and dtype. Output feature ``k`` belongs to the
    ``k``-th largest eigenvalue; each eigenvector is signed so that its entry
    of largest absolute value is positive (ties: the lowest index). The output
    covariance is :math:`I - \epsilon \Lambda^{-1}`. Where eigenvalues repeat
    (always for ``M < D``: the zero eigenvalues of the sample covariance) the
    features of that eigenspace are not unique; only their span is.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.pca_whiten(x)
    >>> print(np.round(y[0].T @ y[0] / 4, 4))
    [[1. 0.]
     [0. 1.]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    """
    return run_canonical(WHITENING_OPS["pca"], x, precision, whitening_params(eps, correction))


def pca_whiten_vjp(
    dy: Array, x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> XGrad:
    r"""VJP of :func:`pca_whiten` (module docstring).

    Raises :class:`ValueError` where two eigenvalues of a group's covariance
    repeat (to within :math:`4 D u \lambda_{\max}`, their rounding level): the
    gradient does not exist there. Just above that gap it is returned, exactly
    (to rounding); it grows like the inverse of the gap. The check reads the
    eigenvalues, so this VJP cannot be traced by ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.pca_whiten(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.pca_whiten_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-1.5084  0.5221]
      [-0.3557 -0.2091]
      [ 1.2307 -0.2099]
      [ 0.6334 -0.1031]]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    """
    return run_canonical_vjp(
        WHITENING_OPS["pca"], dy, x, precision, whitening_params(eps, correction)
    )


def zca_whiten(
    x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> Array:
    r"""ZCA (Mahalanobis) whitening: :math:`y = \Sigma^{-1/2} (x - \mu)`, :math:`\Sigma = C + \epsilon I`.

    :math:`W = U \Lambda^{-1/2} U^\top` is the symmetric inverse square root: the
    whitening whose output is closest to its input,
    :math:`\min_W \sum_i \lVert W x_i - x_i \rVert^2` over all :math:`W` that whiten.
    It is unique, repeated eigenvalues included.

    Parameters
    ----------
    x
        Canonical array of shape ``(G, M, D)``, ``M > correction``; ``M <= D`` (a singular
        sample covariance) needs ``eps`` well above the covariance's rounding level.
    eps
        Finite, > 0; added to the diagonal of the covariance.
    correction
        0 for the biased covariance :math:`X_c^\top X_c / M`, 1 for :math:`/(M - 1)`.
    precision
        ``"highest"`` (float64), ``"native"`` or a convention to model.

    Returns
    -------
    Array of ``x``'s shape and dtype, with covariance :math:`I - \epsilon \Sigma^{-1}`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.zca_whiten(x)
    >>> print(np.round(y[0].T @ y[0] / 4, 4))  # identity covariance
    [[1. 0.]
     [0. 1.]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    return run_canonical(WHITENING_OPS["zca"], x, precision, whitening_params(eps, correction))


def zca_whiten_vjp(
    dy: Array, x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> XGrad:
    r"""VJP of :func:`zca_whiten`, finite and accurate at repeated eigenvalues.

    :math:`\bar\Sigma = U (F \circ U^\top \bar W U) U^\top`,
    :math:`F_{ij} = -1/(\sqrt{\lambda_i}\sqrt{\lambda_j}(\sqrt{\lambda_i} + \sqrt{\lambda_j}))`,
    the divided difference of :math:`\lambda^{-1/2}` written without cancellation.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.zca_whiten(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.zca_whiten_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0.7971 -0.1307]
      [-0.1889 -0.116 ]
      [ 0.5353  0.2066]
      [ 0.4507  0.0401]]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    - Huang, L., Yang, D., Lang, B. and Deng, J. (2018). Decorrelated batch normalization.
      CVPR. https://arxiv.org/abs/1804.08450
    """
    return run_canonical_vjp(
        WHITENING_OPS["zca"], dy, x, precision, whitening_params(eps, correction)
    )


def cholesky_whiten(
    x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> Array:
    r"""Cholesky whitening: :math:`y = L^{-1} (x - \mu)`, :math:`\Sigma = C + \epsilon I = L L^\top`.

    :math:`L^{-1}` is lower triangular (output feature ``k`` depends on input
    features ``0..k`` only) and is computed by forward substitution (the Array
    API has no triangular solve). Unique, repeated eigenvalues included.
    Parameters are those of :func:`zca_whiten`.

    Returns
    -------
    Array of ``x``'s shape and dtype, with covariance :math:`I - \epsilon L^{-1} L^{-\top}`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.cholesky_whiten(x)
    >>> print(np.round(y[0].T @ y[0] / 4, 4))
    [[1. 0.]
     [0. 1.]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    """
    return run_canonical(WHITENING_OPS["cholesky"], x, precision, whitening_params(eps, correction))


def cholesky_whiten_vjp(
    dy: Array, x: Array, *, eps: float = 1e-5, correction: int = 0, precision: Precision = "highest"
) -> XGrad:
    r"""VJP of :func:`cholesky_whiten`: :math:`\bar\Sigma = -W^\top \Phi(\bar W W^\top) W`.

    :math:`\Phi` takes the lower triangle and halves the diagonal; smooth at
    repeated eigenvalues.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.cholesky_whiten(x)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.cholesky_whiten_vjp(dy, x)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[ 0.3505 -0.8365]
      [ 0.1887 -0.1195]
      [-0.2966  0.5975]
      [-0.2426  0.3585]]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    """
    return run_canonical_vjp(
        WHITENING_OPS["cholesky"], dy, x, precision, whitening_params(eps, correction)
    )


def iter_norm_whiten(
    x: Array,
    *,
    iterations: int = 5,
    eps: float = 1e-5,
    correction: int = 0,
    precision: Precision = "highest",
) -> Array:
    r"""IterNorm (Huang et al., 2019): Newton–Schulz iterations towards :math:`\Sigma^{-1/2}`.

    .. math::

        \Sigma_N = \Sigma / \operatorname{tr}\Sigma, \quad P_0 = I, \quad
        P_{k+1} = \tfrac32 P_k - \tfrac12 P_k^3 \Sigma_N, \quad
        W = P_T / \sqrt{\operatorname{tr}\Sigma}

    (:math:`\Sigma` includes :math:`\epsilon I`, as in the authors' code). The
    trace normalization puts the eigenvalues :math:`\nu` of :math:`\Sigma_N` in
    :math:`(0, 1]`, where each eigenvalue's residual :math:`r = 1 - p^2\nu`
    falls monotonically, :math:`r_{k+1} = r_k^2 (3 + r_k)/4`: in exact arithmetic
    ``W`` converges to the ZCA matrix as ``iterations`` grows, slowly for small
    :math:`\nu`. In floating point the literal iteration (computed as published)
    amplifies rounding where :math:`\kappa` exceeds about 2.4, and many
    iterations diverge (the whitening page of the documentation, on IterNorm).

    Parameters
    ----------
    x
        Canonical array of shape ``(G, M, D)``, ``M > correction``.
    iterations
        Number of Newton–Schulz steps :math:`T \ge 1` (the authors' default 5).
    eps, correction, precision
        As :func:`zca_whiten`.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.iter_norm_whiten(x, iterations=8)
    >>> print(np.round(y[0].T @ y[0] / 4, 3))  # close to the identity
    [[1. 0.]
     [0. 1.]]

    References
    ----------
    - Huang, L., Zhou, Y., Zhu, F., Liu, L. and Shao, L. (2019). Iterative normalization:
      beyond standardization towards efficient whitening. CVPR.
      https://arxiv.org/abs/1904.03441
    """
    params = {**whitening_params(eps, correction), **method_params("iter_norm", iterations)}
    return run_canonical(WHITENING_OPS["iter_norm"], x, precision, params)


def iter_norm_whiten_vjp(
    dy: Array,
    x: Array,
    *,
    iterations: int = 5,
    eps: float = 1e-5,
    correction: int = 0,
    precision: Precision = "highest",
) -> XGrad:
    """VJP of :func:`iter_norm_whiten`, back through the unrolled iterations (derived by hand).

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> x = np.array([[[1.0, 2.0], [2.0, 1.0], [0.0, 0.0], [3.0, 5.0]]])  # one group of 4 samples x 2
    >>> y = normref.ops.iter_norm_whiten(x, iterations=8)
    >>> dy = np.linspace(-1.0, 1.0, y.size).reshape(y.shape)
    >>> g = normref.ops.iter_norm_whiten_vjp(dy, x, iterations=8)
    >>> print(g._fields)
    ('x',)
    >>> print(np.round(g[0], 4))
    [[[-0.7971 -0.1307]
      [-0.1889 -0.116 ]
      [ 0.5353  0.2066]
      [ 0.4507  0.0401]]]

    References
    ----------
    - Huang, L., Zhou, Y., Zhu, F., Liu, L. and Shao, L. (2019). Iterative normalization:
      beyond standardization towards efficient whitening. CVPR.
      https://arxiv.org/abs/1904.03441
    """
    params = {**whitening_params(eps, correction), **method_params("iter_norm", iterations)}
    return run_canonical_vjp(WHITENING_OPS["iter_norm"], dy, x, precision, params)


def whitening_matrix(
    cov: Array,
    *,
    method: str = "zca",
    eps: float = 1e-5,
    iterations: int = 5,
    precision: Precision = "highest",
) -> Array:
    r"""The whitening matrix :math:`W` of a stack of covariance matrices (for inference).

    ``y = W @ (x - mean)`` whitens data with covariance ``cov``; the operations
    of this module are :math:`W` applied to their own batch covariance.

    Parameters
    ----------
    cov
        Covariance matrices, shape ``(..., D, D)``; symmetrized as
        :math:`(C + C^\top)/2` before use.
    method
        ``"zca"`` (:math:`U\Lambda^{-1/2}U^\top`), ``"pca"``
        (:math:`\Lambda^{-1/2}U^\top`, spec'd order and signs), ``"cholesky"``
        (:math:`L^{-1}`) or ``"iter_norm"`` (:math:`P_T/\sqrt{\operatorname{tr}\Sigma}`).
    eps
        Finite, > 0; added to the diagonal: :math:`\Sigma = C + \epsilon I`.
    iterations
        Newton–Schulz steps of ``"iter_norm"`` (ignored by the other methods).
    precision
        ``"highest"`` (float64), ``"native"`` or a convention to model.

    Returns
    -------
    Array of ``cov``'s shape and dtype; NaN for a matrix that is not finite.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> cov = np.array([[[4.0, 0.0], [0.0, 9.0]]])
    >>> y = normref.ops.whitening_matrix(cov)
    >>> print(np.round(y[0], 4))
    [[0.5    0.    ]
     [0.     0.3333]]

    References
    ----------
    - Kessy, A., Lewin, A. and Strimmer, K. (2018). Optimal whitening and decorrelation. The
      American Statistician 72(4). https://arxiv.org/abs/1512.00809
    - Huang, L., Zhou, Y., Zhu, F., Liu, L. and Shao, L. (2019). Iterative normalization:
      beyond standardization towards efficient whitening. CVPR.
      https://arxiv.org/abs/1904.03441
    """
    xp = namespace_of(cov=cov)
    shape = tuple(cov.shape)
    check_rank(shape, minimum=2, layout="a stack of D x D matrices", name="cov")
    if shape[-1] != shape[-2]:
        msg = f"cov must be a stack of square matrices (..., D, D), got shape {shape}"
        raise ValueError(msg)
    whitening = METHODS[check_method(method)]
    params = method_params(whitening.name, iterations)
    eps = check_eps(eps)
    out = output_dtype(xp, precision, cov)
    if math.prod(shape) == 0:  # no matrices, or matrices of no features
        return xp.zeros(shape, dtype=out, device=device(cov))
    wide = to_dtype(xp, cov, compute_dtype(xp, cov.dtype, precision))
    # the covariance of values times c is c² C: c from the square root of its magnitude
    magnitude = xp.sqrt(max_magnitude(xp, wide, (-2, -1)))
    scale = power_of_two_scale(xp, magnitude)
    symmetric, finite = symmetrized(xp, (wide * scale) * scale)
    w, _ = whitening.checked_matrix(xp, symmetric, shift_of(xp, eps, magnitude, scale), **params)
    return to_dtype(xp, poisoned(xp, w, finite) * scale, out)
