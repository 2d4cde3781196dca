r"""The terms of the whitening family, and how the covariance's conditioning amplifies rounding.

For one group of :math:`M` samples of :math:`D` features (the canonical layout
of :mod:`normref.partition`), :math:`X_c` the centred samples,
:math:`\Sigma = C + \epsilon I` with eigenvalues :math:`\lambda_1 \ge \dots \ge
\lambda_D`, smallest :math:`\lambda`, smallest gap :math:`g` and the whitening
matrix :math:`W = W(\Sigma)`:

====================  ======  =====================================================================
kind                  output  magnitude of the terms
====================  ======  =====================================================================
whitening             y       :math:`|\gamma|\,\big((|x_i| + \overline{|x|}) |W|^\top\big) + |\beta|`
whitening             dx      :math:`|\bar g| |W| + \overline{|\bar g||W|} + 2 (|x_i| + \overline{|x|}) |S|/(M - c)`
whitening             dgamma  :math:`\sum |\bar y|` times y's magnitude without the affine
given_whitening       y, dx   the same with the given :math:`\hat W` and mean, no :math:`S` term
====================  ======  =====================================================================

(:math:`\bar g = \gamma \bar y`, :math:`S` the symmetric part of the
covariance's cotangent :math:`\bar\Sigma`.) The operation counts of
:mod:`conformance.bounds.budgets` cover these terms. What they cannot cover is
:math:`W`'s own error: the implementation decomposes a covariance that
rounding has perturbed by :math:`E`, first order in the unit roundoff :math:`u`,

.. math::

    \|E\|_F \le u\big((M + 2)\operatorname{tr} C + 2\|X_c\|_F \| |X| + \overline{|x|} \|_F/(M - c)
        + (2D + 1)\operatorname{tr}\Sigma\big) + \tfrac{M}{M - c}\|\delta\mu\|^2

(the products and sums of :math:`X_c^\top X_c`; the centring's rounding; the
decomposition's backward error, :data:`~conformance.bounds.budgets.DECOMPOSITION_ROUNDINGS_PER_FEATURE`;
the mean's error :math:`\delta\mu_j \le M u \overline{|x_j|}`, which shifts
:math:`C` by :math:`\delta\mu\,\delta\mu^\top`), and :math:`W(\Sigma + E)`
differs from :math:`W(\Sigma)` by at most :math:`L_1 \|E\|_F`, its cotangent
:math:`\bar\Sigma` by :math:`L_2 \|E\|_F \|\bar W\|_F`:

===========  ===========================================================  ===============================================================
method       :math:`L_1` (Fréchet derivative of :math:`W`)                :math:`L_2` (of the cotangent map)
===========  ===========================================================  ===============================================================
decorrelate  :math:`1/g` (eigenvectors)                                   :math:`5/g^2`
pca          :math:`\tfrac12\lambda^{-3/2} + \lambda^{-1/2}/g`            :math:`\tfrac34\lambda^{-5/2} + 2\lambda^{-3/2}/g + 5\lambda^{-1/2}/g^2`
zca          :math:`\tfrac12\lambda^{-3/2}` (divided differences)         :math:`\tfrac34\lambda^{-5/2}` (second divided differences)
cholesky     :math:`\|W\|_2^3 = \lambda^{-3/2}`                            :math:`3\lambda^{-5/2}`
iter_norm    the Newton–Schulz recursion, step by step (below)
===========  ===========================================================  ===============================================================

``docs/conformance-tolerances.md`` derives each. IterNorm's bound is carried
through its iterations: in the eigenbasis of :math:`N = \Sigma/\operatorname{tr}\Sigma`,
one step multiplies entry :math:`(i, j)` of a perturbation of :math:`P_k` by
:math:`\tfrac32 - \tfrac12\nu_j(p_j^2 + p_i p_j + p_i^2)`, whose largest modulus
:math:`a_k` exceeds 1 where eigenvalues are far apart: the documented
instability of the uncoupled Newton–Schulz iteration. The product of the
:math:`a_k` is the conditioning its rows state. PCA and decorrelation
state :math:`\lambda_{\max}/g`, the others the condition number
:math:`\lambda_{\max}/\lambda`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.bounds.budgets import DECOMPOSITION_ROUNDINGS_PER_FEATURE, Arithmetic
from conformance.bounds.terms import Conditioning, OpTerms, OutputTerms, parameter_on, parameter_sum
from normref.ops.base import canonical_partition
from normref.ops.sample_blocks import sample_blocks
from normref.ops.whitening import (
    DECORRELATION,
    FROBENIUS_NEWTON,
    METHODS,
    Whitening,
    group_covariance,
    unit_shift,
)
from normref.partition import fan_in
from normref.registry import Sample


def _method(op: Any, sample: Sample) -> str:
    """The whitening method: the op's own, or the sample's ``method`` (batch whitening's)."""
    return op.spec.method or sample.kwargs.get("method", "zca")


def _whitening(method: str) -> Whitening:
    others = {w.name: w for w in (DECORRELATION, FROBENIUS_NEWTON)}
    return others[method] if method in others else METHODS[method]


def _frobenius(a: np.ndarray) -> np.ndarray:
    """Frobenius norms of the trailing two axes, keeping them (as size 1)."""
    return np.sqrt(np.sum(a * a, axis=(-2, -1), keepdims=True))


@dataclass(frozen=True)
class Groups:
    """The exact statistics of every group of ``(G, M, D)`` samples, and :math:`W(\\Sigma)`."""

    x: np.ndarray
    mean_abs: np.ndarray
    centred: np.ndarray
    cov: np.ndarray
    eigenvalues: np.ndarray
    w: np.ndarray
    saved: Any
    correction: int
    eps: float

    @property
    def m(self) -> int:
        """Samples per group."""
        return self.x.shape[1]

    @property
    def d(self) -> int:
        """Features per group."""
        return self.x.shape[2]

    def sigma_error(self, arithmetic: Arithmetic) -> np.ndarray:
        """:math:`\\|E\\|_F` per group, shape ``(G, 1, 1)`` (module docstring)."""
        u, m, d = arithmetic.unit_roundoff, self.m, self.d
        dof = m - self.correction
        trace_c = np.trace(self.cov, axis1=-2, axis2=-1)[:, None, None]
        d_mean = m * u * self.mean_abs  # (G, 1, D)
        spread = _frobenius(self.centred) * _frobenius(np.abs(self.x) + self.mean_abs)
        if arithmetic.variance_algorithm == "two_pass":
            products = (m + 2) * trace_c + 2 * spread / dof
            shift = (m / dof) * np.sum(d_mean * d_mean, axis=-1, keepdims=True)
        else:  # X^T X / M - mu mu^T: relative to the second moments, not to C
            mean = np.mean(self.x, axis=1, keepdims=True)
            second = np.sum(self.x * self.x, axis=(1, 2), keepdims=True) / dof
            squared = np.sum(mean * mean, axis=-1, keepdims=True)
            products = (m + 2) * second + 2 * squared
            shift = 2 * np.sqrt(squared) * np.sqrt(np.sum(d_mean**2, axis=-1, keepdims=True))
            shift = shift + np.sum(d_mean * d_mean, axis=-1, keepdims=True)
        trace_sigma = np.sum(self.eigenvalues, axis=-1)[:, None, None]
        decomposition = (DECOMPOSITION_ROUNDINGS_PER_FEATURE * d + 1) * trace_sigma
        return u * (products + decomposition) + shift

    @property
    def smallest(self) -> np.ndarray:
        """:math:`\\lambda_{\\min}(\\Sigma)` per group, ``(G, 1, 1)``."""
        return self.eigenvalues[:, :1, None]

    @property
    def gap(self) -> np.ndarray:
        """The smallest gap between eigenvalues of :math:`\\Sigma` per group (``inf`` for D=1)."""
        if self.d == 1:
            return np.full((len(self.x), 1, 1), math.inf)
        return np.min(np.diff(self.eigenvalues, axis=-1), axis=-1)[:, None, None]


def groups_of(x: np.ndarray, method: str, eps: float, correction: int, params: dict) -> Groups:
    """The :class:`Groups` of canonical ``x`` (non-finite groups get NaN statistics)."""
    # a group that is not finite has normref's stand-in covariance (so W and its cotangent run)
    # and NaN statistics
    stats, _ = group_covariance(
        xp_numpy,
        sample_blocks(xp_numpy, canonical_partition(x.shape), x),
        dtype=x.dtype,
        eps=eps,
        correction=correction,
        algorithm="two_pass",
    )
    # normref takes the statistics of the values times a power of two: these are the unscaled
    finite = stats.finite
    centred = x - stats.mean / stats.scale
    stand_in = np.where(finite, (stats.cov / stats.scale) / stats.scale, stats.cov)
    ok = finite[:, 0, 0]
    eigenvalues = np.full(stand_in.shape[:-1], np.nan)
    if ok.any():
        eigenvalues[ok] = np.linalg.eigvalsh(stand_in[ok]) + eps
    w, saved = _whitening(method).matrix(
        xp_numpy, stand_in, unit_shift(xp_numpy, eps, stand_in), **params
    )
    return Groups(
        x,
        np.mean(np.abs(x), axis=1, keepdims=True),
        centred,
        np.where(finite, stand_in, np.nan),
        eigenvalues,
        np.where(finite, w, np.nan),
        saved,
        correction,
        eps,
    )


# ----------------------------------------------------------------------------- sensitivities


@dataclass(frozen=True)
class Sensitivity:
    """How :math:`W` and the cotangent map err for one method, per group ``(G, 1, 1)``.

    ``w_error(a)`` bounds :math:`\\|\\delta W\\|_F`; ``cotangent_error(a, b, db)`` bounds
    :math:`\\|\\delta\\bar\\Sigma\\|_F` for :math:`\\|\\bar W\\|_F = b` known within ``db``.
    """

    w_error: Callable[[Arithmetic], np.ndarray]
    cotangent_error: Callable[[Arithmetic, np.ndarray, np.ndarray], np.ndarray]
    conditioning: Conditioning


def _reciprocal(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(np.isinf(a), 0.0, 1.0 / a)


def _eigen_sensitivity(groups: Groups, method: str) -> Sensitivity:
    lam, inv_gap, d = groups.smallest, _reciprocal(groups.gap), groups.d
    w_f = _frobenius(groups.w)
    root = lam**-0.5
    # L1, L2 and the rounding of forming W and of the cotangent map, per the module docstring
    if method == DECORRELATION.name:
        l1, l2 = inv_gap, 5 * inv_gap**2
        forming = np.zeros_like(lam)
        map_count, map_norm = 4 * d + 4, inv_gap
    elif method == "pca":
        l1 = 0.5 * lam**-1.5 + root * inv_gap
        l2 = 0.75 * lam**-2.5 + 2 * lam**-1.5 * inv_gap + 5 * root * inv_gap**2
        forming, map_count, map_norm = 2 * w_f, 4 * d + 6, l1
    elif method == "zca":
        l1, l2 = 0.5 * lam**-1.5, 0.75 * lam**-2.5
        forming, map_count, map_norm = (d + 2) * d * root, 4 * d + 4, l1
    else:  # cholesky: W = L^-1, ||W||_2 = lambda^-1/2
        l1, l2 = lam**-1.5, 3 * lam**-2.5
        inverse_trace = np.sum(1.0 / groups.eigenvalues, axis=-1)[:, None, None]
        trace = np.sum(groups.eigenvalues, axis=-1)[:, None, None]
        forming = d * root * np.sqrt(trace * inverse_trace)
        map_count, map_norm = 3 * d + 1, w_f**3 / d**2

    def w_error(a: Arithmetic) -> np.ndarray:
        return l1 * groups.sigma_error(a) + a.unit_roundoff * forming

    def cotangent_error(a: Arithmetic, b: np.ndarray, db: np.ndarray) -> np.ndarray:
        rounding = map_count * d * d * a.unit_roundoff * map_norm * b
        return l2 * groups.sigma_error(a) * b + l1 * db + rounding

    largest = groups.eigenvalues[:, -1:, None]
    if method in (DECORRELATION.name, "pca"):
        value, what = largest * inv_gap, "largest eigenvalue / smallest gap of the covariance"
    else:
        value, what = largest / lam, "condition number of the covariance + eps"
    return Sensitivity(w_error, cotangent_error, Conditioning(_worst(value), what))


def _worst(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.max(finite)) if finite.size else math.nan


def _iter_norm_sensitivity(
    groups: Groups, iterations: int, normalizer: str = "trace"
) -> Sensitivity:
    """IterNorm: the perturbations of :math:`N = \\Sigma/t` and each step's rounding, carried
    through the Newton–Schulz steps :math:`P_{k+1} = \\tfrac32 P_k - \\tfrac12 P_k^3 N`
    (and back through the unrolled backward), with the norms of :math:`P_k = p_k(N)` from
    the eigenvalues :math:`\\nu` of :math:`N` (each :math:`p_k(\\nu)` by the scalar recursion).

    :math:`t` is the trace (IterNorm) or, with ``normalizer="frobenius"``, the Frobenius
    norm (ONI): :math:`\\lVert E \\rVert_F` moves it by at most :math:`\\lVert E \\rVert_F`
    (the trace by :math:`\\sqrt D\\,\\lVert E \\rVert_F`), its own rounding is that of a
    sum of :math:`D^2` squares and a root (of :math:`D` values), and its cotangent reaches
    :math:`\\bar\\Sigma` through :math:`N` (through :math:`I`)."""
    d = groups.d
    trace = np.sum(groups.eigenvalues, axis=-1)[:, None, None]
    frobenius = normalizer == "frobenius"
    if frobenius:
        trace = np.sqrt(np.sum(groups.eigenvalues**2, axis=-1))[:, None, None]
    nu = groups.eigenvalues[:, None, :] / trace  # (G, 1, D)
    p = [np.ones_like(nu)]
    for _ in range(iterations):
        p.append(1.5 * p[-1] - 0.5 * p[-1] ** 3 * nu)

    def largest(a: np.ndarray) -> np.ndarray:
        return np.max(a, axis=-1, keepdims=True)

    def frob(a: np.ndarray) -> np.ndarray:
        return np.sqrt(np.sum(a * a, axis=-1, keepdims=True))

    n_2, n_f = largest(nu), frob(nu)
    p_2, p_f = [largest(pk) for pk in p], [frob(pk) for pk in p]
    # in the eigenbasis of N the step's derivative multiplies entry (i, j) of a perturbation
    # of P_k by 3/2 - nu_j (p_j^2 + p_i p_j + p_i^2) / 2: its largest modulus is a_k, exactly
    growth = [
        np.max(
            np.abs(
                1.5
                - 0.5
                * nu[..., None, :]
                * (
                    pk[..., None, :] ** 2
                    + pk[..., :, None] * pk[..., None, :]
                    + pk[..., :, None] ** 2
                )
            ),
            axis=(-2, -1),
        )[..., None]
        for pk in p
    ]
    w_f = p_f[-1] / np.sqrt(trace)

    def perturbations(a: Arithmetic) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        u, e_sigma = a.unit_roundoff, groups.sigma_error(a)
        if frobenius:
            d_trace = e_sigma + (d * d / 2 + 2) * u * trace
        else:
            d_trace = math.sqrt(d) * e_sigma + d * u * trace
        d_n = (e_sigma + n_f * d_trace) / trace + u * n_f
        errors = [np.zeros_like(trace)]
        for k in range(iterations):
            local = u * (3 * p_f[k] + (1.5 * d + 1) * p_f[k] ** 3 * n_f)
            errors.append(growth[k] * errors[-1] + 0.5 * p_2[k] ** 3 * d_n + local)
        return errors, d_trace, d_n

    def w_error(a: Arithmetic) -> np.ndarray:
        errors, d_trace, _ = perturbations(a)
        return (
            errors[-1] / np.sqrt(trace)
            + 0.5 * p_f[-1] * d_trace / trace**1.5
            + 2 * a.unit_roundoff * w_f
        )

    def cotangent_error(a: Arithmetic, b: np.ndarray, db: np.ndarray) -> np.ndarray:
        u = a.unit_roundoff
        errors, d_trace, d_n = perturbations(a)
        bar, d_bar = b / np.sqrt(trace), db / np.sqrt(trace) + b * d_trace / (2 * trace**1.5)
        d_bar = d_bar + u * bar
        n_bar, d_n_bar = np.zeros_like(trace), np.zeros_like(trace)
        for k in reversed(range(iterations)):
            n_bar = n_bar + 0.5 * p_2[k] ** 3 * bar
            d_n_bar = d_n_bar + 0.5 * (3 * p_2[k] ** 2 * errors[k] * bar + p_2[k] ** 3 * d_bar)
            d_n_bar = d_n_bar + u * ((1.5 * d + 1) * p_f[k] ** 3 * bar + n_bar)
            if k:
                d_bar = growth[k] * d_bar + bar * (
                    3 * p_2[k] * n_2 * errors[k] + 1.5 * p_2[k] ** 2 * d_n
                )
                d_bar = d_bar + u * bar * (3 + (4.5 * d + 2) * p_f[k] ** 2 * n_f)
                bar = growth[k] * bar
        trace_bar = 0.5 * b * p_f[-1] / trace**1.5 + n_bar * n_f / trace
        d_trace_bar = (
            0.5
            * (db * p_f[-1] + b * errors[-1] + b * p_f[-1] * (1.5 * d_trace / trace + (d + 2) * u))
            / trace**1.5
            + (d_n_bar * n_f + n_bar * d_n + n_bar * n_f * (d_trace / trace + (d + 1) * u)) / trace
        )
        # t's cotangent enters as t_bar I (norm sqrt(D) t_bar) or t_bar N (norm t_bar ||N||_F,
        # and N's own error)
        through_t = (
            n_f * (d_trace_bar + u * trace_bar) + trace_bar * d_n
            if frobenius
            else math.sqrt(d) * (d_trace_bar + u * trace_bar)
        )
        return d_n_bar / trace + n_bar * (d_trace / trace**2 + u / trace) + through_t

    amplification = np.prod(np.concatenate(growth[:iterations], axis=-1), axis=-1)
    conditioning = Conditioning(
        _worst(amplification), "amplification of the Newton–Schulz steps, product of a_k"
    )
    return Sensitivity(w_error, cotangent_error, conditioning)


def sensitivity(groups: Groups, method: str, params: dict) -> Sensitivity:
    """The :class:`Sensitivity` of ``method`` on ``groups``."""
    if method == "iter_norm":
        return _iter_norm_sensitivity(groups, params["iterations"])
    if method == FROBENIUS_NEWTON.name:
        return _iter_norm_sensitivity(groups, params["iterations"], "frobenius")
    return _eigen_sensitivity(groups, method)


# ----------------------------------------------------------------------------- terms


@dataclass(frozen=True)
class _Layout:
    """A whitening op's input and its canonical ``(G, M, D)`` layout."""

    x: np.ndarray
    partition: Any
    axes: tuple[int, ...]

    @classmethod
    def of(cls, op: Any, sample: Sample) -> _Layout:
        x = np.asarray(sample.args["x"], dtype=np.float64)
        return cls(x, op.partition(sample), op.param_axes(sample))

    def canonical(self, a: np.ndarray) -> np.ndarray:
        """An x-shaped array in the canonical layout."""
        return np.asarray(self.partition.to_canonical(xp_numpy, np.ascontiguousarray(a)))

    def back(self, a: np.ndarray) -> np.ndarray:
        """A canonical array on x's layout."""
        return np.asarray(self.partition.from_canonical(xp_numpy, np.ascontiguousarray(a)))

    def parameter(self, param: np.ndarray | None, fill: float) -> np.ndarray:
        """A per-channel parameter's absolute values in the canonical layout."""
        if param is None:
            return np.full(self.canonical(self.x).shape, fill)
        return np.abs(self.canonical(parameter_on(param, self.x, self.axes)))

    @property
    def summed(self) -> int:
        """Elements of x summed into each parameter gradient."""
        return self.x.size // max(1, math.prod(self.x.shape[a] for a in self.axes))


def _row_norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(a * a, axis=-1, keepdims=True))


def whitening_terms(op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """A whitening op on ``(G, M, D)``, or batch whitening with its per-channel affine."""
    method = _method(op, sample)
    return _whitened(
        _Layout.of(op, sample),
        method,
        sample.kwargs["eps"],
        _params(method, sample),
        model.correction or sample.kwargs.get("correction", 0),
        sample.args.get("gamma"),
        sample.args.get("beta"),
        dy,
    )


def _params(method: str, sample: Sample) -> dict[str, Any]:
    """The Newton–Schulz methods' number of steps (the sample's, or IterNorm's default 5)."""
    if method in ("iter_norm", FROBENIUS_NEWTON.name):
        return {"iterations": sample.kwargs.get("iterations", 5)}
    return {}


def _whitened(
    layout: _Layout,
    method: str,
    eps: float,
    params: dict[str, Any],
    correction: int,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    dy: np.ndarray | None,
) -> OpTerms:
    """The terms of ``gamma W (x - mean) + beta`` on ``layout``'s groups (module docstring)."""
    canonical, back = layout.canonical, layout.back
    groups = groups_of(canonical(layout.x), method, eps, correction, params)
    found = sensitivity(groups, method, params)
    gamma_c, beta_c = layout.parameter(gamma, 1.0), layout.parameter(beta, 0.0)
    abs_w = np.abs(groups.w)
    spread = np.abs(groups.x) + groups.mean_abs
    y_hat = spread @ np.swapaxes(abs_w, -1, -2)
    sample_norms = _row_norms(groups.centred)

    def y_hat_error(a: Arithmetic) -> np.ndarray:
        return np.broadcast_to(sample_norms * found.w_error(a), groups.x.shape)

    outputs = {
        "y": OutputTerms(
            back(gamma_c * y_hat + beta_c), extra=lambda a: back(gamma_c * y_hat_error(a))
        )
    }
    if dy is not None:
        g = gamma_c * canonical(dy)
        abs_g = np.abs(g)
        w_bar = np.swapaxes(g, -1, -2) @ groups.centred
        sigma_bar = _whitening(method).cotangent(xp_numpy, w_bar, groups.saved)
        symmetric = np.abs(sigma_bar + np.swapaxes(sigma_bar, -1, -2)) / 2
        dof = groups.m - correction
        direct = abs_g @ abs_w
        magnitude = direct + np.mean(direct, axis=1, keepdims=True) + 2 * spread @ symmetric / dof
        w_bar_terms = _frobenius(np.swapaxes(abs_g, -1, -2) @ spread)
        g_norms = _row_norms(g)

        def dx_error(a: Arithmetic) -> np.ndarray:
            d_w_bar = (2 * groups.m + 1) * a.unit_roundoff * w_bar_terms
            d_sigma_bar = found.cotangent_error(a, _frobenius(w_bar), d_w_bar)
            through_w = (g_norms + np.mean(g_norms, axis=1, keepdims=True)) * found.w_error(a)
            bound = through_w + 2 * sample_norms * d_sigma_bar / dof
            return back(np.broadcast_to(bound, groups.x.shape))

        outputs["dx"] = OutputTerms(back(magnitude), extra=dx_error)
        reduce = parameter_sum(layout.x.ndim, layout.axes)
        if gamma is not None:
            abs_dy = np.abs(dy)
            outputs["dgamma"] = OutputTerms(
                abs_dy * back(y_hat),
                reduce,
                layout.summed,
                extra=lambda a: reduce(abs_dy * back(y_hat_error(a))),
            )
        if beta is not None:
            outputs["dbeta"] = OutputTerms(np.abs(dy), reduce, layout.summed)
    return OpTerms(
        "whitening", None, None, outputs, groups.m, found.conditioning, features=groups.d
    )


def orthogonal_terms(op: Any, sample: Sample, dy: np.ndarray | None, _model: Any) -> OpTerms:
    """OWN and ONI: the whitening of a weight's groups of units (samples: the fan-in) with
    :math:`\\epsilon/N` and the constant affine :math:`1/\\sqrt N`, whose gradient is not an
    output."""
    v = np.asarray(sample.args["v"], dtype=np.float64)
    axis = sample.kwargs["out_axis"] % v.ndim
    n = fan_in(tuple(v.shape), axis)
    method = _method(op, sample)
    found = _whitened(
        _Layout(v, op.partition(sample), (axis,)),
        method,
        sample.kwargs["eps"] / n,
        _params(method, sample),
        0,
        np.full(v.shape[axis], 1.0 / math.sqrt(n)),
        None,
        dy,
    )
    outputs = {"y": found.outputs["y"]}
    if dy is not None:
        outputs["dv"] = dataclasses.replace(found.outputs["dx"], role="dx")
    return dataclasses.replace(found, kind="orthogonalizing", outputs=outputs)


def whitening_inference_terms(
    op: Any, sample: Sample, dy: np.ndarray | None, _model: Any
) -> OpTerms:
    """Batch whitening with given statistics: :math:`\\gamma \\hat W (x - \\hat\\mu) + \\beta`."""
    layout = _Layout.of(op, sample)
    canonical, back = layout.canonical, layout.back
    abs_w = np.abs(sample.args["running_whitening"])
    mean = layout.parameter(sample.args["running_mean"], 0.0)
    gamma, beta = sample.args.get("gamma"), sample.args.get("beta")
    gamma_c, beta_c = layout.parameter(gamma, 1.0), layout.parameter(beta, 0.0)
    y_hat = (np.abs(canonical(layout.x)) + mean) @ np.swapaxes(abs_w, -1, -2)
    outputs = {"y": OutputTerms(back(gamma_c * y_hat + beta_c))}
    if dy is not None:
        outputs["dx"] = OutputTerms(back((gamma_c * np.abs(canonical(dy))) @ abs_w))
        reduce = parameter_sum(layout.x.ndim, layout.axes)
        if gamma is not None:
            outputs["dgamma"] = OutputTerms(np.abs(dy) * back(y_hat), reduce, layout.summed)
        if beta is not None:
            outputs["dbeta"] = OutputTerms(np.abs(dy), reduce, layout.summed)
    return OpTerms("given_whitening", None, None, outputs, 0, features=abs_w.shape[-1])
