r"""Error budgets: how far a correct implementation may land from the exact result.

This is the one place where the suite's tolerances live. Nothing here is
tuned to make an implementation pass: every budget is a worst-case rounding
error bound, derived from operation counts times the unit roundoff of the
dtype each operation runs in. ``docs/conformance-tolerances.md`` repeats the
derivation with examples.

Unit
    An error is reported in ulps of the output dtype at the *scale of the
    terms* :math:`S` (:mod:`conformance.bounds.terms`): ``|actual - exact| / ulp(S)``,
    and an element's budget is its bound in the same unit. An output passes
    when every element is within its bound.

The bound of one element
    With :math:`r` the exact result, :math:`u_s` the unit roundoff of the
    dtype the statistics are computed in, :math:`u_e` that of the
    elementwise operations, :math:`K = (a n + b m)\,u_s + k\,u_e` the rounding
    of the output's operations (:data:`BUDGETS`) and :math:`R` the relative
    error of the divisor carried into it,

    .. math::

        |\text{actual} - r| \le \tfrac12\,\mathrm{ulp}_{out}(r)
            + S\,\big(K (1 + R) + R\big) + e_{ref},

    where the first term is the final rounding to the output dtype and
    :math:`e_{ref}` is the same bound for the float64 reference itself
    (two-pass, :math:`u_s = u_e = 2^{-53}`, no final rounding): the reference is
    only as exact as the input's conditioning, and the suite says so.

Operation counts
    :math:`n` is the group size, :math:`m` the number of elements summed into
    a parameter's gradient. A sum of :math:`n` terms computed in any order errs
    by at most :math:`(n-1)u` of the sum of their magnitudes (Higham, *Accuracy
    and Stability of Numerical Algorithms*, 2002, §4.2): no bound assumes
    pairwise summation. The mean's error :math:`\delta\mu \le n u_s
    \overline{|x|}` is an :math:`n u_s` share of :math:`S`, whose terms
    include :math:`\overline{|x|}/s`. The divisor costs 3.5 roundings (adding
    ``eps``, halved by the square root, the root, and a division that may be
    an ``rsqrt`` and a product); every other elementwise operation one.

The divisor's error
    The computed variance errs by :math:`\delta v`: for the two-pass
    algorithm (the squares of the centred values sum to
    :math:`n v + n\,\delta\mu^2` exactly, then round), the fast
    :math:`E[x^2] - E[x]^2` (clamped at 0 or not) and the mean square (RMS),

    .. math::

        \delta v_{two\,pass} \le (n+3) u_s (v + \delta\mu^2) + \delta\mu^2, \qquad
        \delta v_{fast} \le (n+2) u_s \overline{x^2} + 2 u_s \mu^2
            + 2|\mu|\,\delta\mu + \delta\mu^2, \qquad
        \delta q \le (n+1) u_s \overline{x^2},

    times :math:`n/(n-c)` for the correction :math:`c`. The fast variance's
    error is relative to :math:`\mu^2`, not to :math:`v`: with
    :math:`|\mu|/\sigma = 10^4` float32 has no correct digit left. The divisor
    then errs relatively by at most

    .. math::

        \rho = s(v)/s(\max(v - \delta v, 0)) - 1,

    finite however large :math:`\delta v` is (:math:`\epsilon > 0`). An output
    in which the divisor appears :math:`c` times has :math:`R = c\rho`; the
    x-gradient also uses :math:`s'(v)`, whose relative error :math:`\rho_f` is
    0 for ``"add"``, up to 1 where ``"max"`` is within :math:`\delta v` of its
    kink, and :math:`\sqrt{v/(v-\delta v)} - 1` for ``"add_std"``.

Dtypes of the arithmetic
    Statistics of float32 and float64 input are computed in their own dtype;
    of float16 and bfloat16 input in float32 (``low_precision_compute=
    "float32"``, what torch, flax, keras and onnx do) or in their own dtype
    (``"input"``); in float32 for every input under ``stash_dtype="float32"``
    (ONNX's ``stash_type=1``). Elementwise operations may run in the less
    precise of that dtype and the input's: torch's float16 batch norm applies
    its affine in float16. The final rounding is to the output dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from conformance.bounds.terms import Divisor, GroupStats, OpTerms, OutputTerms
from conformance.checked.formats import ulp, unit_roundoff
from conformance.checked.models import Model


class Budget(NamedTuple):
    """Operation counts of one output: :math:`K = a n + b m + d D + k`; divisor factors ``c``.

    ``derivative`` says whether the output also uses :math:`s'(v)`; ``per_feature``
    counts the dot products of length :math:`D` (the features whitened jointly).
    """

    per_sample: int
    per_summed: int
    constant: int
    divisor_factors: int
    derivative: bool = False
    per_feature: int = 0


BUDGETS: dict[tuple[str, str], Budget] = {
    # Counts in units of u. Shared pieces: a mean of n terms, n (n - 1 additions, 1 division);
    # the divisor path, 3.5: eps added (1, halved by the square root), the root (1), and the
    # division, possibly as rsqrt and a product (2); x_hat = (x - mean) / s, n + 4.5 (mean,
    # subtraction, divisor path), each relative to the magnitude of its terms.
    # y = x - mean: the mean and the subtraction
    ("centering", "y"): Budget(1, 0, 1, 0),
    # dx = dy - mean(dy): the same
    ("centering", "dx"): Budget(1, 0, 1, 0),
    # y = x - mean + beta (mean-only batch norm): the mean, the subtraction, the addition
    ("centering", "shifted"): Budget(1, 0, 2, 0),
    # d beta = sum of m values of dy
    ("centering", "dbeta"): Budget(0, 1, 0, 0),
    # y = gamma x_hat + beta: x_hat (n + 4.5), gamma (1), beta (1)
    ("standardizing", "y"): Budget(1, 0, 7, 1),
    # dx = (g - mean(g) - f x_hat_i sum_j(g_j x_hat_j) / (n - c)) / s, g = gamma dy (1):
    # each g_j x_hat_j within n + 6.5, their sum adds n - 1, x_hat_i n + 4.5, the division by
    # n - c, the subtraction and the divisor path 4.5 more: 3n + 14; s enters three times
    ("standardizing", "dx"): Budget(3, 0, 14, 3, derivative=True),
    # d gamma = sum of m products dy x_hat: each within n + 5.5, the sum adds m - 1
    ("standardizing", "dgamma"): Budget(1, 1, 5, 1),
    # d beta = sum of m values of dy
    ("standardizing", "dbeta"): Budget(0, 1, 0, 0),
    # y = x / s(v): the divisor path
    ("scaling", "y"): Budget(0, 0, 4, 1),
    # dx = dy / s + (x - mean) k, k = -(2 / (n - c)) (s' / s) sum(dy y): the sum n + 4.5, k's
    # factors 4, the centred value n + 1, the product and the addition 2: 2n + 12
    ("scaling", "dx"): Budget(2, 0, 12, 3, derivative=True),
    # y = gamma x / s(mean(x^2)): the divisor path and gamma (the mean square's error is in rho)
    ("rms_scaling", "y"): Budget(0, 0, 5, 1),
    # dx = (g - f x_hat_i sum_j(g_j x_hat_j) / n) / s with x_hat = x / s: each product within
    # 5.5, the sum n - 1, x_hat_i 3.5, the division by n, the subtraction, the divisor path
    ("rms_scaling", "dx"): Budget(1, 0, 15, 3, derivative=True),
    # d gamma = sum of m products dy x_hat: each within 4.5, the sum m - 1
    ("rms_scaling", "dgamma"): Budget(0, 1, 4, 1),
    # y = gamma (x - mean) / s(var) + beta with given statistics: subtraction, divisor path,
    # gamma, beta
    ("given_statistics", "y"): Budget(0, 0, 7, 0),
    # dx = gamma dy / s
    ("given_statistics", "dx"): Budget(0, 0, 5, 0),
    # d gamma = sum of m products dy x_hat, each within 5.5
    ("given_statistics", "dgamma"): Budget(0, 1, 5, 0),
    ("given_statistics", "dbeta"): Budget(0, 1, 0, 0),
    # new = (1 - w) old + w mean: the batch mean (n), two products, one addition
    ("state", "running_mean"): Budget(1, 0, 3, 0),
    # new = (1 - w) old + w c_r v: the Bessel factor and its product (2), two products, one
    # addition; the batch variance's own error is added separately
    ("state", "running_var"): Budget(0, 0, 5, 0),
    # ---- Scaled WS: y = a x_hat, a = gamma gain / sqrt(N) (the root, two products: 3)
    # y: x_hat (n + 4.5), a (3), the product
    ("scaled_standardizing", "y"): Budget(1, 0, 9, 1),
    # dw: the standardize backward of a dy, a three roundings more than gamma
    ("scaled_standardizing", "dx"): Budget(3, 0, 17, 3, derivative=True),
    # dgain = (gamma / sqrt(N)) sum(dy x_hat): the sum as standardize's dgamma, the factor 2
    ("scaled_standardizing", "dgamma"): Budget(1, 1, 7, 1),
    # ---- weight norm: y = a v / s(q + eps/N), a = g / sqrt(N) (the root and the division: 2)
    # y: the rms divisor path and a's product (5), a (2)
    ("weight_normalizing", "y"): Budget(0, 0, 7, 1),
    # dv: the rms backward (n + 15) of a dy, a two more
    ("weight_normalizing", "dx"): Budget(1, 0, 17, 3, derivative=True),
    # dg = (1 / sqrt(N)) sum(dy x_hat): rms's dgamma (m + 4), the factor 2
    ("weight_normalizing", "dgamma"): Budget(0, 1, 6, 1),
    # ---- spectral norm, n = O N: sigma = u^T W v errs relatively by rho (the divisor)
    # y = W / sigma: the division
    ("spectral_normalizing", "y"): Budget(0, 0, 1, 1),
    # dW = (dy - p u v^T) / sigma, p = sum(dy W / sigma): each product dy (W / sigma) within 2,
    # the sum n - 1, the outer product u v^T, p times it, the subtraction, the division: n + 5;
    # sigma enters twice
    ("spectral_normalizing", "dw"): Budget(1, 0, 6, 2),
    # the training step: y and dW as above with sigma' = u'^T W v' (its error, from the power
    # iteration's running error bound, in rho); u', v' and sigma' are bounded by that running
    # bound alone (conformance.bounds.terms_weights)
    ("spectral_step", "y"): Budget(0, 0, 1, 1),
    ("spectral_step", "dw"): Budget(1, 0, 6, 2),
    ("spectral_step", "u"): Budget(0, 0, 0, 0),
    ("spectral_step", "v"): Budget(0, 0, 0, 0),
    ("spectral_step", "sigma"): Budget(0, 0, 0, 0),
    # ---- AGC, n = N (a unit's fan-in): a norm of N values errs relatively by N/2 + 1 (the sum of
    # squares of positive terms, halved by the root, and the root)
    # y = G m / max(n, m): the two norms (N, and their roots 2), m = clipping * max(p, eps) (1),
    # the division and the product (2)
    ("adaptive_clipping", "y"): Budget(1, 0, 5, 0),
    # dG = f dy - (f s / n^2) G on a clipped unit: f (N + 4), s = sum(dy G) (N), n^2 (N + 2),
    # two products, times G, the subtraction: 3 N + 10 (the first term, N + 5, is smaller)
    ("adaptive_clipping", "dgrad"): Budget(3, 0, 10, 0),
    # dW = clipping s / (n p) W: s (N), the norms n and p (N and 2), four products: 2 N + 6
    ("adaptive_clipping", "dparam"): Budget(2, 0, 6, 0),
    # ---- the unit-wise norm: the sum of squares (N, no cancellation), the root
    ("unit_norm", "y"): Budget(1, 0, 1, 0),
    # ---- global-norm clipping, n = L (every value of every gradient): the norm (L), the roots
    # of the leaves' norms and of their norm (3), eps added, the division, the product
    ("global_clipping", "y"): Budget(1, 0, 6, 0),
    ("global_clipping", "clipped_bias_grad"): Budget(1, 0, 6, 0),
    # ---- SkipInit, y = x + alpha f: the product and the sum; dx = dy is exact; d f = alpha dy;
    # d alpha = sum(dy f) over the axes alpha is broadcast along (m - 1, the products 1)
    ("residual", "y"): Budget(0, 0, 2, 0),
    ("residual", "dx"): Budget(0, 0, 0, 0),
    ("residual", "dbranch_out"): Budget(0, 0, 1, 0),
    ("residual", "dalpha"): Budget(0, 1, 1, 0),
    # ---- whitening, n = M samples of D features per group, y = gamma W (x - mean) + beta; W's own
    # error, amplified by the covariance's conditioning, is bounded separately
    # (conformance.bounds.terms_whitening)
    # y: the mean (M), the subtraction (1), the dot product with a row of W (D), gamma, beta
    ("whitening", "y"): Budget(1, 0, 3, 0, per_feature=1),
    # dx = P(g W) + X_c (S + S^T) / (M - c), g = gamma dy: the product g W (D), its mean over the
    # samples (M), the subtraction, gamma; the centred values and the dot with S (D), the
    # symmetric sum, the division, the final addition: M + D + 4
    ("whitening", "dx"): Budget(1, 0, 4, 0, per_feature=1),
    # dgamma = sum(dy y_hat): y_hat (M + D + 1), the products, the sum m - 1
    ("whitening", "dgamma"): Budget(1, 1, 2, 0, per_feature=1),
    ("whitening", "dbeta"): Budget(0, 1, 0, 0),
    # with given statistics: the subtraction, the dot product (D), gamma, beta
    ("given_whitening", "y"): Budget(0, 0, 3, 0, per_feature=1),
    # dx = W^T (gamma dy): gamma, the dot product
    ("given_whitening", "dx"): Budget(0, 0, 1, 0, per_feature=1),
    # dgamma = sum(dy y_hat): y_hat (D + 1), the products, the sum
    ("given_whitening", "dgamma"): Budget(0, 1, 2, 0, per_feature=1),
    ("given_whitening", "dbeta"): Budget(0, 1, 0, 0),
}
"""Operation counts of every (kind, output), with the reason for each in its comment. The
gamma-scaled nonlinearities' counts are :data:`NONLINEARITY_ROUNDINGS`."""

LIBRARY_FUNCTION_ROUNDINGS = 4
"""A library's exp, expm1, log1p, tanh, erf and pow are assumed accurate to 2 ulps (4 unit
roundoffs): none of them is correctly rounded, and libraries document errors of 1 to 2 ulps.
An implementation whose functions are less accurate is out of budget."""

_F = LIBRARY_FUNCTION_ROUNDINGS
_SOFTMAX = _F + 4
"""A softmax weight's relative error: exp, its argument ``l - max`` (1), the sum of three (2),
the division (1)."""

BUDGETS.update(
    {
        # ---- batch renorm, n = the channel's values, y = gamma (x_hat r + d) + beta with
        # r = sigma_B / sigma and d = (mu_B - mu) / sigma from the running statistics (clipping
        # is 1-Lipschitz: it adds no error). y: x_hat (n + 4.5), sigma (its path 2.5), r's
        # division (1), gamma r and its product (2), d's mean (the same n), subtraction and
        # division (2), gamma d, the two additions (3): 2n + 15, counted as n of the sum of
        # every term's magnitude; sigma_B enters twice (in x_hat and in r)
        ("renormalizing", "y"): Budget(1, 0, 15, 2),
        # dx: standardize's backward of gamma r dy (3n + 14), r and gamma r (4.5); sigma_B four
        # times
        ("renormalizing", "dx"): Budget(3, 0, 19, 4, derivative=True),
        # d gamma = r sum(dy x_hat) + d sum(dy): standardize's d gamma (n + 5.5 per term, the sum
        # m - 1), r (3.5), d (n + 4.5), the two products and the addition (3)
        ("renormalizing", "dgamma"): Budget(1, 1, 16, 2),
        ("renormalizing", "dbeta"): Budget(0, 1, 0, 0),
        # ---- switchable norm, n = the largest group (the batch's or the layer's): mu and v are
        # mixtures of three means and variances (their errors, n u of their terms, in rho for v),
        # the weights err relatively by _SOFTMAX each, the mixtures' products and sums 3.
        # y: mu (n + _SOFTMAX + 3), the subtraction, the divisor path (4.5), gamma, beta
        ("switchable", "y"): Budget(1, 0, _SOFTMAX + 9, 1),
        # dx = g/s + sum_k (a_k mean_k(d_mu) + 2 b_k d_var_k (x - m_k)) / n_k: the sums of d_mu
        # and d_var (n each), x_hat (n + 8.5 with the mixture), m_k (n); g, the divisions, the
        # products (8), the weights (_SOFTMAX), the seven-term sum (6); s enters three times
        ("switchable", "dx"): Budget(3, 0, _SOFTMAX + 23, 3),
        # d gamma = sum(dy x_hat): x_hat (n + _SOFTMAX + 8.5), the products, the sum m - 1
        ("switchable", "dgamma"): Budget(1, 1, _SOFTMAX + 9, 1),
        ("switchable", "dbeta"): Budget(0, 1, 0, 0),
        # d mean_logits = a (a_bar - a^T a_bar), a_bar_k = sum over (n, c) of d_mu m_k: d_mu (its
        # sum n, g and the division 4.5), m_k (n + 1), the product, the sum over the N C pairs
        # (m - 1), then a twice (2 _SOFTMAX), three products and two sums (5)
        ("switchable", "dmean_logits"): Budget(2, 1, 2 * _SOFTMAX + 12, 1),
        # d var_logits likewise with d_var = -sum(g x_hat) / (2 s^2) (x_hat n + 8.5, the sum n,
        # the products and the division 5) and v_k (its own error is added as extra); s enters
        # three times
        ("switchable", "dvar_logits"): Budget(2, 1, 2 * _SOFTMAX + 20, 3),
        # ---- AdaIN, n = the larger of the content's and the style's spatial sizes:
        # y = sigma_s x_hat + mu_s: x_hat (n + 4.5), sigma_s (its path 3.5, its variance's error
        # in rho), mu_s (n), the product and the addition (2); both divisors' rho
        ("adaptive_instance", "y"): Budget(1, 0, 10, 1),
        # dx: standardize's backward of sigma_s dy (3n + 14), sigma_s (3.5)
        ("adaptive_instance", "dx"): Budget(3, 0, 18, 3, derivative=True),
        # d style = d_beta / n_s + d_gamma (s - mu_s) / ((n_s - c) sigma_s): d_gamma and d_beta
        # sums of m values (d_gamma's terms n + 5.5), s - mu_s (n + 1), the divisions and the
        # products (5.5), the addition; the divisors' rho as extra (their terms are the style's)
        ("adaptive_instance", "dstyle"): Budget(2, 1, 13, 0),
        # ---- LRN, n = size: D = k + alpha / n sum x^2 (its relative error (n + 3) u carried by
        # the power into rho); y = x D^-beta: pow (_F) and the product
        ("local_response", "y"): Budget(0, 0, _F + 1, 1),
        # dx = dy D^-beta - (2 alpha beta / n) x sum_window(dy x D^-beta / D): the powers (_F),
        # the division by D, the products (4), the window's sum (n), the constant (2), the
        # subtraction
        ("local_response", "dx"): Budget(1, 0, _F + 8, 1),
        # ---- centred weight norm: y = a x_hat, a = g / sqrt(N) (the root and the division: 2)
        # y: x_hat (n + 4.5), a (2), the product
        ("centred_weight_normalizing", "y"): Budget(1, 0, 8, 1),
        # dv: the standardize backward of a dy, a two roundings more than gamma
        ("centred_weight_normalizing", "dx"): Budget(3, 0, 16, 3, derivative=True),
        # dg = (1 / sqrt(N)) sum(dy x_hat): the sum as standardize's d gamma, the factor 2
        ("centred_weight_normalizing", "dgamma"): Budget(1, 1, 7, 1),
        # ---- OWN and ONI: whitening's counts (n = the fan-in M, D = the group's units) with the
        # constant affine 1/sqrt(N) (the root and the division: 2 more)
        ("orthogonalizing", "y"): Budget(1, 0, 5, 0, per_feature=1),
        ("orthogonalizing", "dx"): Budget(1, 0, 6, 0, per_feature=1),
    }
)
NONLINEARITY_ROUNDINGS: dict[str, int] = {
    # gamma g(x), in units of u_e relative to the magnitude of g's terms (|x| for the gelus,
    # whose 1 + erf and 1 + tanh cancel for x < 0; |g(x)| for the others); the product by gamma
    # counts 1 everywhere; a library function's argument error passes through it unamplified
    # (the condition numbers of tanh, erf and log1p on these arguments are at most 1)
    "identity": 1,
    "relu": 1,
    "relu6": 1,
    "leaky_relu": 2,  # 0.01 x
    "tanh": _F + 1,
    "sigmoid": _F + 3,  # exp(-x), 1 + it, the reciprocal
    "silu": _F + 4,  # x sigmoid(x)
    "swish": _F + 4,
    "softplus": 2 * _F + 2,  # max(x, 0) + log1p(exp(-|x|))
    "log_sigmoid": 2 * _F + 2,
    "elu": _F + 1,  # expm1
    "celu": _F + 1,
    "selu": _F + 3,  # scale * alpha * expm1(x)
    "soft_sign": 3,  # x / (1 + |x|)
    # 0.5 x (1 + erf(x / sqrt 2)): the argument (2), erf, 1 + it, times x
    "gelu": _F + 5,
    # 0.5 x (1 + tanh(c (x + 0.044715 x^3))): the argument (x^3 2, two constants 2, their
    # products 2, the sum 1), tanh, 1 + it, times x
    "gelu_tanh": _F + 10,
}
r"""Operation counts of :math:`\gamma\,g(x)` for every nonlinearity."""

BUDGETS.update(
    {
        (f"nonlinearity:{name}", "y"): Budget(0, 0, k, 0)
        for name, k in NONLINEARITY_ROUNDINGS.items()
    }
)

DECOMPOSITION_ROUNDINGS_PER_FEATURE = 2
"""A symmetric eigensolver or a Cholesky factorization of a D x D matrix is backward stable:
it is exact for the matrix perturbed by at most ``2 D u`` times its trace (LAPACK's bounds are
a modest multiple of ``D u ||Sigma||``; ``Sigma``'s trace bounds its norm)."""


class Arithmetic(NamedTuple):
    """The arithmetic an implementation is assumed to use.

    ``dtype`` is the dtype of its statistics (reductions: means, variances,
    the sums of the backward); ``elementwise_dtype`` that of its elementwise
    operations, which may be the input's even when the statistics are wider
    (torch's float16 kernels apply the affine in float16).
    """

    dtype: str
    elementwise_dtype: str
    variance_algorithm: str

    @property
    def unit_roundoff(self) -> float:
        """The statistics' unit roundoff."""
        return unit_roundoff(self.dtype)

    @property
    def elementwise_roundoff(self) -> float:
        """The elementwise operations' unit roundoff."""
        return unit_roundoff(self.elementwise_dtype)


REFERENCE_ARITHMETIC = Arithmetic("float64", "float64", "two_pass")
"""How normref computes its reference (``precision="highest"``)."""


def compute_dtype(model: Model, dtype: str) -> str:
    """The dtype an implementation of ``model`` computes its statistics in for ``dtype`` input."""
    if model.stash_dtype == "float32":
        return "float32"
    low = dtype in ("float16", "bfloat16")
    if low and model.convention.low_precision_compute == "float32":
        return "float32"
    return dtype


def arithmetic_of(model: Model, dtype: str) -> Arithmetic:
    """The arithmetic ``model`` implies for ``dtype`` input: statistics in its compute dtype,
    elementwise operations in the less precise of that and the input's dtype."""
    statistics = compute_dtype(model, dtype)
    elementwise = max((statistics, dtype), key=unit_roundoff)
    return Arithmetic(statistics, elementwise, model.convention.variance_algorithm)


def variance_error(stats: GroupStats, arithmetic: Arithmetic) -> np.ndarray:
    """Bound on the error of each group's computed biased variance (module docstring)."""
    u, n = arithmetic.unit_roundoff, stats.n
    d_mean = n * u * stats.mean_abs
    if arithmetic.variance_algorithm == "two_pass":
        return (n + 3) * u * (stats.var_biased + d_mean**2) + d_mean**2
    mean = np.abs(stats.mean)
    return (n + 2) * u * stats.mean_square + 2 * u * mean**2 + 2 * mean * d_mean + d_mean**2


def divisor_errors(
    stats: GroupStats, div: Divisor, arithmetic: Arithmetic
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the divisor's relative error bound :math:`\\rho` and its derivative's
    :math:`\\rho_f` (module docstring)."""
    u, n = arithmetic.unit_roundoff, stats.n
    v = div.argument(stats)
    if div.of == "mean_square":
        dv = (n + 1) * u * stats.mean_square
    else:
        dv = variance_error(stats, arithmetic) * (n / (n - div.correction))
        dv = dv + div.argument_roundings * u * v
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        low = np.maximum(v - dv, 0.0)
        # a zero divisor without eps (a zero unit of weight norm) divides no term
        rho = np.where(div.value(v) == 0, 0.0, div.value(v) / div.value(low) - 1.0)
        if div.eps_mode == "max":
            rho_f = np.where(np.abs(v - div.eps) <= dv, 1.0, 0.0)
        elif div.eps_mode == "add_std":
            rho_f = np.where(v > 0, np.sqrt(v / low) - 1.0, 0.0)
        else:
            rho_f = np.zeros_like(v)
    return rho, rho_f


def error_bound(terms: OpTerms, name: str, arithmetic: Arithmetic) -> np.ndarray:
    """Bound on ``|actual - exact|`` for output ``name`` from rounding in ``arithmetic``.

    This is the term :math:`S (K u (1 + R) + R)` of the module docstring (plus
    the batch variance's error for the running variance); the final rounding
    to the output dtype is added by :func:`element_bounds`.
    """
    out = terms.outputs[name]
    budget = budget_of(terms, name)
    counts = (
        budget.per_sample * terms.size
        + budget.per_summed * out.summed
        + budget.per_feature * terms.features
    )
    rounding = counts * arithmetic.unit_roundoff + budget.constant * arithmetic.elementwise_roundoff
    factor = _divisor_factor(terms, budget, arithmetic)
    with np.errstate(invalid="ignore", over="ignore"):
        per_term = out.magnitude * (rounding * (1.0 + factor) + factor)
        # a term of magnitude 0 is exact, whatever the divisor's error
        per_term = np.where(out.magnitude == 0, 0.0, per_term)
    bound = per_term if out.reduce is None else out.reduce(per_term)
    if out.variance_weight is not None and terms.stats is not None:
        bound = bound + out.variance_weight * variance_error(terms.stats, arithmetic).ravel()
    if out.extra is not None:
        bound = bound + out.extra(arithmetic)
    return bound


def budget_of(terms: OpTerms, name: str) -> Budget:
    """The operation counts of output ``name`` of ``terms`` (by its role, e.g. ``"dx"``)."""
    out = terms.outputs[name]
    kind = "state" if name.startswith("running_") else terms.kind
    return BUDGETS[(kind, out.role or name)]


def _divisor_factor(terms: OpTerms, budget: Budget, arithmetic: Arithmetic) -> np.ndarray | float:
    if terms.divisor is None or budget.divisor_factors == 0:
        return 0.0
    if isinstance(terms.divisor, Divisor):
        stats = terms.stats
        if stats is None:
            msg = f"{terms.kind}: a Divisor of the groups' statistics needs them (stats is None)"
            raise ValueError(msg)
        rho, rho_f = divisor_errors(stats, terms.divisor, arithmetic)
        rho, rho_f = stats.broadcast(rho), stats.broadcast(rho_f)
    else:
        rho, rho_f = terms.divisor.relative_errors(arithmetic)
    return budget.divisor_factors * rho + (rho_f if budget.derivative else 0.0)


class ElementBounds(NamedTuple):
    """Per element of one output: the bound on ``|actual - exact|`` and the unit of its ulps."""

    bound: np.ndarray
    unit: np.ndarray
    reference: np.ndarray


def element_bounds(
    terms: OpTerms, name: str, exact: np.ndarray, out_dtype: str, arithmetic: Arithmetic
) -> ElementBounds:
    """The full bound of every element of output ``name`` (module docstring), in ``out_dtype``.

    ``unit`` is ``ulp_out(S)``, the unit errors are reported in; ``reference``
    is the float64 reference's own share of the bound.
    """
    out: OutputTerms = terms.outputs[name]
    reference = error_bound(terms, name, REFERENCE_ARITHMETIC)
    implementation = error_bound(terms, name, arithmetic)
    bound = 0.5 * ulp(exact, out_dtype) + implementation + reference
    return ElementBounds(bound, ulp(out.scale(), out_dtype), reference)


def budget_ulps(
    kind: str,
    name: str,
    dtype: str,
    *,
    n: int,
    summed: int = 0,
    features: int = 0,
    model: Model | None = None,
) -> float:
    """The budget in ulps of ``dtype`` for an element whose terms have no divisor error.

    At most :math:`\\tfrac12 + K u_c / u_{out}` (``ulp(S) > u_{out} S``) plus the reference's :math:`K u_{64} / u_{out}`: the
    part of every bound that depends only on the op, its sizes and the dtypes (the docs'
    table). Divisor errors (conditioning, fast variance) come on top, per case.
    """
    from conformance.checked.models import NORMREF

    budget = BUDGETS[(kind, name)]
    reductions = budget.per_sample * n + budget.per_summed * summed + budget.per_feature * features
    u_out, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    u_c = unit_roundoff(compute_dtype(model or NORMREF, dtype))
    implementation = reductions * u_c + budget.constant * u_out
    return 0.5 + (implementation + (reductions + budget.constant) * u64) / u_out


# ----------------------------------------------------------------------------- running bounds
# Operations whose errors are not a count times the magnitude of their terms: the power
# iteration of spectral norm carries the error of one vector into the next, so its bound is
# propagated step by step (a running error analysis), first order in the unit roundoff.


def matvec_error(matrix: np.ndarray, x: np.ndarray, x_error: np.ndarray, u: float) -> np.ndarray:
    """Bound on the error of ``matrix @ x`` computed from ``x`` known within ``x_error``: the
    perturbation carried, ``|M| x_err``, and the dot products' rounding, ``k u |M| |x|`` for
    dot products of length ``k`` (Higham, 2002, §3.1)."""
    magnitude = np.abs(matrix)
    return magnitude @ x_error + matrix.shape[1] * u * (magnitude @ np.abs(x))


def normalized_error(
    t: np.ndarray, t_error: np.ndarray, eps: float, eps_mode: str, u: float
) -> tuple[np.ndarray, np.ndarray]:
    """``t / r`` with ``r = max(||t||, eps)`` (``"max"``) or ``sqrt(||t||^2 + eps)`` (``"add"``),
    and a bound on its error when ``t`` is known within ``t_error``.

    ``r`` errs by the perturbation, ``||t_error||``, and its own rounding,
    ``(k/2 + 2) u r`` (the sum of ``k`` squares of one sign, halved by the root; the
    root; ``eps``); the division adds ``u``: ``|t_err|/r + |t/r| r_err/r + u |t/r|``.
    """
    norm = float(np.sqrt(np.sum(t * t)))
    r = max(norm, eps) if eps_mode == "max" else float(np.sqrt(norm * norm + eps))
    if r == 0.0:
        return np.zeros_like(t), np.zeros_like(t)
    y = t / r
    r_error = float(np.sqrt(np.sum(t_error * t_error))) + (t.size / 2 + 2) * u * r
    return y, (t_error + np.abs(y) * r_error) / r + u * np.abs(y)


def power_iteration_error(
    matrix: np.ndarray,
    u0: np.ndarray,
    v0: np.ndarray,
    *,
    steps: int,
    order: str,
    eps: float,
    eps_mode: str,
    u: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the errors of ``u`` and ``v`` after ``steps`` power-iteration steps from the
    given (exact) ``u0`` and ``v0``, each vector normalized by :func:`normalized_error`."""
    vec_u, vec_v = u0, v0
    err_u, err_v = np.zeros_like(u0), np.zeros_like(v0)
    for _ in range(steps):
        if order == "v_first":
            vec_v, err_v = normalized_error(
                matrix.T @ vec_u, matvec_error(matrix.T, vec_u, err_u, u), eps, eps_mode, u
            )
            vec_u, err_u = normalized_error(
                matrix @ vec_v, matvec_error(matrix, vec_v, err_v, u), eps, eps_mode, u
            )
        else:
            vec_u, err_u = normalized_error(
                matrix @ vec_v, matvec_error(matrix, vec_v, err_v, u), eps, eps_mode, u
            )
            vec_v, err_v = normalized_error(
                matrix.T @ vec_u, matvec_error(matrix.T, vec_u, err_u, u), eps, eps_mode, u
            )
    return err_u, err_v


def carried_error(
    matrix: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    left_error: np.ndarray,
    right_error: np.ndarray,
) -> float:
    """The error that ``left @ matrix @ right`` (``sigma = u^T W v``) inherits from its vectors'
    errors (its own rounding, ``(O + N) u |u|^T |W| |v|``, is counted with it)."""
    magnitude = np.abs(matrix)
    return float(left_error @ magnitude @ np.abs(right) + np.abs(left) @ magnitude @ right_error)


def norm_relative_error(count: int, arithmetic: Arithmetic) -> float:
    """Relative error of a Euclidean norm of ``count`` values: the sum of their squares (of one
    sign, no cancellation) errs by ``count`` u, halved by the root, and the root adds one."""
    return (count / 2 + 1) * arithmetic.unit_roundoff + arithmetic.elementwise_roundoff
