r"""The magnitudes of the terms behind every output element, from the exact inputs.

An output can be small because large terms cancel: a centred value
:math:`x_i - \mu` of data with :math:`|\mu| \gg \sigma`, the output of a
constant group (exactly 0), the x-gradient of a group of two samples (each
normalized value is :math:`\pm 1` whatever x is, so the gradient is 0 by
cancellation). Rounding errors are proportional to the terms, not to the
result, so every error is measured against the sum of the terms' magnitudes
(:attr:`OutputTerms.magnitude`), which the float64 reference computes here
from the rounded inputs. For one group of :math:`n` samples, with
:math:`s = s(v)` the divisor, :math:`\hat x = (x - \mu)/s`,
:math:`X_i = (|x_i| + \overline{|x|})/s` the magnitude of the terms of
:math:`\hat x_i` (the mean's terms are :math:`x_j / n`, of total
:math:`\overline{|x|}`), :math:`g = \gamma\,\bar y` and
:math:`f = 2 s'(v)\, s` (1 for ``eps_mode="add"``):

==============  ======  =====================================================================
kind            output  magnitude of the terms
==============  ======  =====================================================================
standardize     y       :math:`|\gamma| X_i + |\beta|`
standardize     dx      :math:`\big(|g_i| + \overline{|g|} + f X_i \sum_j |g_j| X_j/(n-c)\big)/s`
standardize     dgamma  :math:`\sum |\bar y| X` over the parameter's elements
any             dbeta   :math:`\sum |\bar y|`
scale           y       :math:`|x_i|/s`
scale           dx      :math:`\big(|\bar y_i| + f X_i \sum_j |\bar y_j||x_j|/s/(n-c)\big)/s`
rms             y       :math:`|\gamma x_i|/s` (here :math:`s = s(\overline{x^2})`)
rms             dx      :math:`\big(|g_i| + f |\hat x_i| \sum_j |g_j \hat x_j|/n\big)/s`
rms             dgamma  :math:`\sum |\bar y \hat x|`
center          y       :math:`|x_i| + \overline{|x|}`
center          dx      :math:`|\bar y_i| + \overline{|\bar y|}`
inference       y       :math:`|\gamma|(|x| + |\hat\mu|)/s + |\beta|` (given statistics)
inference       dx      :math:`|g|/s`
inference       dgamma  :math:`\sum |\bar y| (|x| + |\hat\mu|)/s`
state           r_mean  :math:`(1-w)|\hat\mu_{old}| + w\,\overline{|x|}`
state           r_var   :math:`(1-w)|\hat\sigma^2_{old}| + w\,c_r\,\sigma^2_B`
==============  ======  =====================================================================

(``dx``, ``dgamma``, ``dbeta`` are gradients; ``r_mean`` and ``r_var`` the
running ``running_mean`` and ``running_var``; :math:`w` is the weight of the
batch, :math:`c_r` the running variance's Bessel factor.) :mod:`conformance.tolerances` turns magnitudes into error
bounds; this module only measures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.ops import CheckedOp
from normref.affine import broadcast_param
from normref.ops.standardization import divisor, divisor_derivative
from normref.partition import Partition
from normref.registry import Sample


@dataclass(frozen=True)
class GroupStats:
    """Exact statistics of every group, in the canonical ``(G, 1, D)`` layout.

    ``gather`` maps an x-shaped array to the canonical ``(G, M, D)`` layout;
    ``broadcast`` spreads a per-group array back onto x's layout.
    """

    n: int
    mean: np.ndarray
    mean_abs: np.ndarray
    var_biased: np.ndarray
    mean_square: np.ndarray
    gather: Callable[[np.ndarray], np.ndarray]
    broadcast: Callable[[np.ndarray], np.ndarray]

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The sum of x-shaped ``values`` over each element's group, on x's layout."""
        return self.broadcast(self.gather(values).sum(axis=1, keepdims=True))

    def mean_of(self, values: np.ndarray) -> np.ndarray:
        """The mean of x-shaped ``values`` over each element's group, on x's layout."""
        return self.sum(values) / self.n

    def conditioning(self) -> float:
        r"""The largest :math:`|\mu|/\sigma` of a group (``inf`` for a constant group).

        The float64 reference loses about this factor times its unit roundoff
        in the centred values; so does every implementation in its own dtype.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(self.mean) / np.sqrt(self.var_biased)
        ratio = np.where(np.abs(self.mean) == 0, 0.0, ratio)
        finite = ratio[~np.isnan(ratio)]
        return float(np.max(finite)) if finite.size else float("nan")


def group_stats(x: np.ndarray, partition: Partition) -> GroupStats:
    """Statistics of ``x``'s groups under ``partition`` (biased variance, float64)."""

    def gather(values: np.ndarray) -> np.ndarray:
        return np.asarray(partition.to_canonical(xp_numpy, values))

    canonical = gather(x)
    shape = canonical.shape

    def broadcast(per_group: np.ndarray) -> np.ndarray:
        spread = np.broadcast_to(per_group, shape)
        return np.asarray(partition.from_canonical(xp_numpy, np.ascontiguousarray(spread)))

    mean = canonical.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return GroupStats(
            n=shape[1],
            mean=mean,
            mean_abs=np.abs(canonical).mean(axis=1, keepdims=True),
            var_biased=((canonical - mean) ** 2).mean(axis=1, keepdims=True),
            mean_square=(canonical**2).mean(axis=1, keepdims=True),
            gather=gather,
            broadcast=broadcast,
        )


@dataclass(frozen=True)
class Divisor:
    """What an op divides by, per group: :math:`s` of the centred variance or of the mean square.

    Attributes
    ----------
    of
        ``"variance"`` or ``"mean_square"``.
    eps, eps_mode
        As normref's argument of the same name.
    correction
        The variance's correction (0 or 1).
    """

    of: str
    eps: float
    eps_mode: str
    correction: int

    def argument(self, stats: GroupStats) -> np.ndarray:
        """The exact value it takes the divisor of, per group."""
        if self.of == "mean_square":
            return stats.mean_square
        n = stats.n
        return stats.var_biased * (n / (n - self.correction))

    def value(self, v: np.ndarray) -> np.ndarray:
        """:math:`s(v)`."""
        return np.asarray(divisor(xp_numpy, v, eps=self.eps, eps_mode=self.eps_mode))

    def derivative_factor(self, v: np.ndarray) -> np.ndarray:
        """:math:`f = 2 s'(v) s`: 1 for ``"add"``; 1 or 0 for ``"max"``; ``s/sqrt(v)`` for
        ``"add_std"``."""
        s = self.value(v)
        return (
            2.0
            * s
            * np.asarray(divisor_derivative(xp_numpy, v, s, eps=self.eps, eps_mode=self.eps_mode))
        )


@dataclass(frozen=True)
class OutputTerms:
    """The magnitude of the terms behind one output.

    Attributes
    ----------
    magnitude
        Per element of x (for a parameter gradient, before ``reduce`` sums it),
        or per element of the output.
    reduce
        Sums an x-shaped array onto a parameter's shape; ``None`` when
        ``magnitude`` already has the output's shape.
    summed
        How many elements of x are summed into each output element (0 if none).
    variance_weight
        Coefficient of the batch variance's own error in this output (the
        running variance), or ``None``.
    """

    magnitude: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray] | None = None
    summed: int = 0
    variance_weight: np.ndarray | None = None

    def scale(self) -> np.ndarray:
        """The magnitude on the output's shape: the unit errors are measured against."""
        return self.magnitude if self.reduce is None else self.reduce(self.magnitude)


@dataclass(frozen=True)
class OpTerms:
    """Everything the error bound of one evaluation needs.

    ``stats`` and ``divisor`` are ``None`` for ops without groups or without a
    computed divisor; ``outputs`` maps output and gradient names to their terms.
    """

    kind: str
    stats: GroupStats | None
    divisor: Divisor | None
    outputs: dict[str, OutputTerms]


def op_terms(
    op: CheckedOp,
    sample: Sample,
    dy: np.ndarray | None,
    *,
    eps: float | None,
    eps_mode: str,
    correction: int,
    batch_weight: float | None = None,
    running_var_correction: int = 0,
) -> OpTerms:
    """The terms of ``op``'s outputs (and gradients, given ``dy``) on a float64 ``sample``."""
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    axes = op.param_axes(sample)
    gamma = _param(sample.args.get("gamma"), x, axes, fill=1.0)
    beta = sample.args.get("beta")
    reduce = _parameter_sum(x.ndim, axes)
    summed = x.size // max(1, int(np.prod([x.shape[a] for a in axes], dtype=np.int64)))
    abs_beta = np.abs(_param(beta, x, axes, fill=0.0))
    if op.kind == "inference":
        return _inference_terms(
            op, sample, x, dy, gamma, abs_beta, axes, reduce, summed, eps, eps_mode
        )
    stats = group_stats(x, op.partition(sample))
    mean_abs = stats.broadcast(stats.mean_abs)
    if op.kind == "center":
        outputs = {"y": OutputTerms(np.abs(x) + mean_abs)}
        if dy is not None:
            dy_abs = np.abs(dy)
            outputs["dx"] = OutputTerms(dy_abs + stats.mean_of(dy_abs))
        return OpTerms(op.kind, stats, None, outputs)
    assert eps is not None
    of = "mean_square" if op.kind == "rms" else "variance"
    div = Divisor(of, eps, eps_mode, correction if of == "variance" else 0)
    v = div.argument(stats)
    s = stats.broadcast(div.value(v))
    f = stats.broadcast(div.derivative_factor(v))
    n_eff = stats.n - div.correction
    if op.kind == "rms":
        magnitude_x = np.abs(x) / s
        centred_x = magnitude_x
    else:
        magnitude_x = (np.abs(x) + mean_abs) / s
        centred_x = magnitude_x if op.kind == "standardize" else np.abs(x) / s
    outputs = {"y": OutputTerms(np.abs(gamma) * centred_x + abs_beta)}
    if dy is not None:
        g = np.abs(gamma * dy)
        path = f * magnitude_x * stats.sum(g * centred_x) / n_eff
        direct = g + (stats.mean_of(g) if op.kind == "standardize" else 0.0)
        outputs["dx"] = OutputTerms((direct + path) / s)
        if "gamma" in op.affine_args and sample.args.get("gamma") is not None:
            outputs["dgamma"] = OutputTerms(np.abs(dy) * centred_x, reduce, summed)
        if "beta" in op.affine_args and beta is not None:
            outputs["dbeta"] = OutputTerms(np.abs(dy), reduce, summed)
    if op.running_stats:
        outputs.update(_state_terms(sample, stats, batch_weight, running_var_correction))
    return OpTerms(op.kind, stats, div, outputs)


def _inference_terms(
    op: CheckedOp,
    sample: Sample,
    x: np.ndarray,
    dy: np.ndarray | None,
    gamma: np.ndarray,
    abs_beta: np.ndarray,
    axes: tuple[int, ...],
    reduce: Callable[[np.ndarray], np.ndarray],
    summed: int,
    eps: float | None,
    eps_mode: str,
) -> OpTerms:
    assert eps is not None
    mean = _param(sample.args["running_mean"], x, axes, fill=0.0)
    var = sample.args["running_var"]
    s = _param(np.asarray(divisor(xp_numpy, var, eps=eps, eps_mode=eps_mode)), x, axes, fill=1.0)
    magnitude_x = (np.abs(x) + np.abs(mean)) / s
    outputs = {"y": OutputTerms(np.abs(gamma) * magnitude_x + abs_beta)}
    if dy is not None:
        outputs["dx"] = OutputTerms(np.abs(gamma * dy) / s)
        if sample.args.get("gamma") is not None:
            outputs["dgamma"] = OutputTerms(np.abs(dy) * magnitude_x, reduce, summed)
        if sample.args.get("beta") is not None:
            outputs["dbeta"] = OutputTerms(np.abs(dy), reduce, summed)
    return OpTerms(op.kind, None, None, outputs)


def _state_terms(
    sample: Sample, stats: GroupStats, batch_weight: float | None, running_var_correction: int
) -> dict[str, OutputTerms]:
    """Terms of the running statistics (one group per channel: per-group arrays ravel to C)."""
    assert batch_weight is not None
    w = batch_weight
    n = stats.n
    bessel = n / (n - 1) if running_var_correction else 1.0
    old_mean = np.abs(sample.args["running_mean"])
    old_var = np.abs(sample.args["running_var"])
    return {
        "running_mean": OutputTerms((1 - w) * old_mean + w * stats.mean_abs.ravel()),
        "running_var": OutputTerms(
            (1 - w) * old_var + w * bessel * stats.var_biased.ravel(),
            variance_weight=np.full(old_var.shape, w * bessel),
        ),
    }


def _param(
    param: np.ndarray | None, x: np.ndarray, axes: tuple[int, ...], *, fill: float
) -> np.ndarray:
    if param is None:
        return np.full(x.shape, fill)
    return np.broadcast_to(broadcast_param(xp_numpy, np.asarray(param), x.ndim, axes), x.shape)


def _parameter_sum(ndim: int, axes: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    other = tuple(a for a in range(ndim) if a not in axes)
    return lambda values: np.sum(values, axis=other)
