r"""Error budgets: how far a correct implementation may land from the exact result.

This is the one place where the suite's tolerances live. Nothing here is
tuned to make an implementation pass: every budget is a worst-case rounding
error bound, derived from operation counts times the unit roundoff of the
dtype each operation runs in. ``docs/conformance-tolerances.md`` repeats the
derivation with examples.

Unit
    An error is reported in ulps of the output dtype at the *scale of the
    terms* :math:`S` (:mod:`conformance.terms`): ``|actual - exact| / ulp(S)``,
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

from conformance.models import Model
from conformance.terms import Divisor, GroupStats, OpTerms, OutputTerms
from conformance.ulp import ulp, unit_roundoff


class Budget(NamedTuple):
    """Operation counts of one output: :math:`K = a n + b m + k`; divisor factors ``c``.

    ``derivative`` says whether the output also uses :math:`s'(v)`.
    """

    per_sample: int
    per_summed: int
    constant: int
    divisor_factors: int
    derivative: bool = False


BUDGETS: dict[tuple[str, str], Budget] = {
    # Counts in units of u. Shared pieces: a mean of n terms, n (n - 1 additions, 1 division);
    # the divisor path, 3.5: eps added (1, halved by the square root), the root (1), and the
    # division, possibly as rsqrt and a product (2); x_hat = (x - mean) / s, n + 4.5 (mean,
    # subtraction, divisor path), each relative to the magnitude of its terms.
    # y = x - mean: the mean and the subtraction
    ("center", "y"): Budget(1, 0, 1, 0),
    # dx = dy - mean(dy): the same
    ("center", "dx"): Budget(1, 0, 1, 0),
    # y = gamma x_hat + beta: x_hat (n + 4.5), gamma (1), beta (1)
    ("standardize", "y"): Budget(1, 0, 7, 1),
    # dx = (g - mean(g) - f x_hat_i sum_j(g_j x_hat_j) / (n - c)) / s, g = gamma dy (1):
    # each g_j x_hat_j within n + 6.5, their sum adds n - 1, x_hat_i n + 4.5, the division by
    # n - c, the subtraction and the divisor path 4.5 more: 3n + 14; s enters three times
    ("standardize", "dx"): Budget(3, 0, 14, 3, derivative=True),
    # d gamma = sum of m products dy x_hat: each within n + 5.5, the sum adds m - 1
    ("standardize", "dgamma"): Budget(1, 1, 5, 1),
    # d beta = sum of m values of dy
    ("standardize", "dbeta"): Budget(0, 1, 0, 0),
    # y = x / s(v): the divisor path
    ("scale", "y"): Budget(0, 0, 4, 1),
    # dx = dy / s + (x - mean) k, k = -(2 / (n - c)) (s' / s) sum(dy y): the sum n + 4.5, k's
    # factors 4, the centred value n + 1, the product and the addition 2: 2n + 12
    ("scale", "dx"): Budget(2, 0, 12, 3, derivative=True),
    # y = gamma x / s(mean(x^2)): the divisor path and gamma (the mean square's error is in rho)
    ("rms", "y"): Budget(0, 0, 5, 1),
    # dx = (g - f x_hat_i sum_j(g_j x_hat_j) / n) / s with x_hat = x / s: each product within
    # 5.5, the sum n - 1, x_hat_i 3.5, the division by n, the subtraction, the divisor path
    ("rms", "dx"): Budget(1, 0, 15, 3, derivative=True),
    # d gamma = sum of m products dy x_hat: each within 4.5, the sum m - 1
    ("rms", "dgamma"): Budget(0, 1, 4, 1),
    # y = gamma (x - mean) / s(var) + beta with given statistics: subtraction, divisor path,
    # gamma, beta
    ("inference", "y"): Budget(0, 0, 7, 0),
    # dx = gamma dy / s
    ("inference", "dx"): Budget(0, 0, 5, 0),
    # d gamma = sum of m products dy x_hat, each within 5.5
    ("inference", "dgamma"): Budget(0, 1, 5, 0),
    ("inference", "dbeta"): Budget(0, 1, 0, 0),
    # new = (1 - w) old + w mean: the batch mean (n), two products, one addition
    ("state", "running_mean"): Budget(1, 0, 3, 0),
    # new = (1 - w) old + w c_r v: the Bessel factor and its product (2), two products, one
    # addition; the batch variance's own error is added separately
    ("state", "running_var"): Budget(0, 0, 5, 0),
}
"""Operation counts of every (kind, output), with the reason for each in its comment."""


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
        dv = variance_error(stats, arithmetic) * (n / (n - div.correction)) + u * v
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        low = np.maximum(v - dv, 0.0)
        rho = div.value(v) / div.value(low) - 1.0
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
    kind = "state" if name.startswith("running_") else terms.kind
    budget = BUDGETS[(kind, name)]
    n = terms.stats.n if terms.stats is not None else 0
    reductions = (budget.per_sample * n + budget.per_summed * out.summed) * arithmetic.unit_roundoff
    rounding = reductions + budget.constant * arithmetic.elementwise_roundoff
    factor = _divisor_factor(terms, budget, arithmetic)
    with np.errstate(invalid="ignore", over="ignore"):
        per_term = out.magnitude * (rounding * (1.0 + factor) + factor)
    bound = per_term if out.reduce is None else out.reduce(per_term)
    if out.variance_weight is not None and terms.stats is not None:
        bound = bound + out.variance_weight * variance_error(terms.stats, arithmetic).ravel()
    return bound


def _divisor_factor(terms: OpTerms, budget: Budget, arithmetic: Arithmetic) -> np.ndarray | float:
    if terms.divisor is None or terms.stats is None or budget.divisor_factors == 0:
        return 0.0
    rho, rho_f = divisor_errors(terms.stats, terms.divisor, arithmetic)
    factor = budget.divisor_factors * rho + (rho_f if budget.derivative else 0.0)
    return terms.stats.broadcast(factor)


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
    kind: str, name: str, dtype: str, *, n: int, summed: int = 0, model: Model | None = None
) -> float:
    """The budget in ulps of ``dtype`` for an element whose terms have no divisor error.

    At most :math:`\\tfrac12 + K u_c / u_{out}` (``ulp(S) > u_{out} S``) plus the reference's :math:`K u_{64} / u_{out}`: the
    part of every bound that depends only on the op, its sizes and the dtypes (the docs'
    table). Divisor errors (conditioning, fast variance) come on top, per case.
    """
    from conformance.models import NORMREF

    budget = BUDGETS[(kind, name)]
    reductions = budget.per_sample * n + budget.per_summed * summed
    u_out, u64 = unit_roundoff(dtype), unit_roundoff("float64")
    u_c = unit_roundoff(compute_dtype(model or NORMREF, dtype))
    implementation = reductions * u_c + budget.constant * u_out
    return 0.5 + (implementation + (reductions + budget.constant) * u64) / u_out
