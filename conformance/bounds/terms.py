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

====================  ======  =====================================================================
kind                  output  magnitude of the terms
====================  ======  =====================================================================
standardizing         y       :math:`|\gamma| X_i + |\beta|`
standardizing         dx      :math:`\big(|g_i| + \overline{|g|} + f X_i \sum_j |g_j| X_j/(n-c)\big)/s`
standardizing         dgamma  :math:`\sum |\bar y| X` over the parameter's elements
any                   dbeta   :math:`\sum |\bar y|`
scaling               y       :math:`|x_i|/s`
scaling               dx      :math:`\big(|\bar y_i| + f X_i \sum_j |\bar y_j||x_j|/s/(n-c)\big)/s`
rms_scaling           y       :math:`|\gamma x_i|/s` (here :math:`s = s(\overline{x^2})`)
rms_scaling           dx      :math:`\big(|g_i| + f |\hat x_i| \sum_j |g_j \hat x_j|/n\big)/s`
rms_scaling           dgamma  :math:`\sum |\bar y \hat x|`
centering             y       :math:`|x_i| + \overline{|x|} (+ |\beta|)`
centering             dx      :math:`|\bar y_i| + \overline{|\bar y|}`
given_statistics      y       :math:`|\gamma|(|x| + |\hat\mu|)/s + |\beta|` (given statistics)
given_statistics      dx      :math:`|g|/s`
given_statistics      dgamma  :math:`\sum |\bar y| (|x| + |\hat\mu|)/s`
state                 r_mean  :math:`(1-w)|\hat\mu_{old}| + w\,\overline{|x|}`
state                 r_var   :math:`(1-w)|\hat\sigma^2_{old}| + w\,c_r\,\sigma^2_B`
====================  ======  =====================================================================

(``dx``, ``dgamma``, ``dbeta`` are gradients; ``r_mean`` and ``r_var`` the
running ``running_mean`` and ``running_var``; :math:`w` is the weight of the
batch, :math:`c_r` the running variance's Bessel factor.) An op that is one of
these kinds in disguise is measured in its :class:`StandardForm`: weight
standardization on the units of a weight, Scaled WS and weight norm with their
affine :math:`a` (:mod:`conformance.bounds.terms_weights`, which also has the terms of
spectral norm, the clipping ops, SkipInit and the nonlinearities;
:mod:`conformance.bounds.terms_whitening` those of the whitening family). Each output's
*role* names its operation counts (the gradient of a weight ``w`` counts as
``dx``). :mod:`conformance.bounds.budgets` turns magnitudes into error bounds; these
modules only measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.checked import semantics
from normref.affine import broadcast_param
from normref.ops.standardization import divisor, divisor_derivative
from normref.partition import Partition
from normref.registry import Kind, Sample

if TYPE_CHECKING:
    from conformance.checked.ops import CheckedOp


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
    argument_roundings
        Roundings of its argument after the reduction: the division by the group size (1);
        Scaled WS's ``max(N var, eps)`` multiplies by the fan-in too (2).
    """

    of: str
    eps: float
    eps_mode: str
    correction: int
    argument_roundings: int = 1

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
    role
        The output's name in the operation counts (:data:`conformance.bounds.budgets.BUDGETS`):
        ``"dx"`` for the gradient of the primary input whatever its name, ``"dgamma"``
        for the scale parameter's; ``None``: the output's own name.
    extra
        ``extra(arithmetic)``: a further bound on the output's error, on its shape,
        that is not a count times the magnitude (a perturbation amplified by the
        input's conditioning, an ambiguous branch); ``None`` if there is none.
    """

    magnitude: np.ndarray
    reduce: Callable[[np.ndarray], np.ndarray] | None = None
    summed: int = 0
    variance_weight: np.ndarray | None = None
    role: str | None = None
    extra: Callable[[Any], np.ndarray] | None = None

    def scale(self) -> np.ndarray:
        """The magnitude on the output's shape: the unit errors are measured against."""
        return self.magnitude if self.reduce is None else self.reduce(self.magnitude)


@dataclass(frozen=True)
class Conditioning:
    """How well the input determines the exact result: ``value`` of the quantity ``what``
    (``"|mean|/std"``, ``"condition number of the covariance"``, ...), at worst over groups."""

    value: float
    what: str


@dataclass(frozen=True)
class OpTerms:
    r"""Everything the error bound of one evaluation needs.

    ``stats`` and ``divisor`` are ``None`` for ops without groups or without a
    computed divisor (a divisor is a :class:`Divisor` of the groups' statistics,
    or any object with ``relative_errors(arithmetic)`` returning :math:`\rho` and
    :math:`\rho_f` on x's layout); ``outputs`` maps output and gradient names to
    their terms; ``n`` is the length of the reductions the per-sample counts
    multiply (the group size by default), ``features`` that of the dot products
    the per-feature counts multiply; ``conditioning`` what the report states.
    """

    kind: str
    stats: GroupStats | None
    divisor: Any
    outputs: dict[str, OutputTerms]
    n: int | None = None
    conditioning: Conditioning | None = None
    features: int = 0

    @property
    def size(self) -> int:
        """The reduction length of the per-sample operation counts."""
        if self.n is not None:
            return self.n
        return self.stats.n if self.stats is not None else 0

    def stated_conditioning(self) -> Conditioning | None:
        r"""What the report states: the op's own measure, or its groups' :math:`|\mu|/\sigma`."""
        if self.conditioning is not None:
            return self.conditioning
        if self.stats is None:
            return None
        return Conditioning(self.stats.conditioning(), "|mean|/std")


@dataclass(frozen=True)
class StandardForm:
    r"""An op as ``y = a * op(x) + b`` on the groups of a partition, for its error terms.

    ``x`` is the normalized input, ``scale`` and ``shift`` the affine :math:`a`
    and :math:`b` on x's layout (``None`` if absent), ``divisor`` what it divides by
    and ``names`` the names of the gradients of x, of the scale parameter and of
    the shift (``"dx"``, ``"dgamma"``, ``"dbeta"`` for layers; ``"dw"`` and
    ``"dgain"`` for Scaled WS), each present only when the op has it.
    ``param_factor`` multiplies the scale parameter's gradient (weight norm's
    ``g`` scales by :math:`1/\sqrt N`). ``reduce`` and ``summed`` sum x-shaped
    terms onto the parameters.
    """

    x: np.ndarray
    partition: Partition
    scale: np.ndarray | None
    shift: np.ndarray | None
    divisor: Divisor | None
    names: dict[str, str]
    reduce: Callable[[np.ndarray], np.ndarray]
    summed: int
    param_factor: float = 1.0


COMPUTATIONS = {
    "centering": "centred",
    "renormalizing": "standardized",
    "adaptive_instance": "standardized",
    "centred_weight_normalizing": "standardized",
    "standardizing": "standardized",
    "scaled_standardizing": "standardized",
    "scaling": "divided",
    "rms_scaling": "rms",
    "weight_normalizing": "rms",
}
"""What each kind of :func:`standard_terms` computes: centred values (``centred``), centred and
divided (``standardized``), divided by the centred variance (``divided``), or by the mean
square (``rms``)."""


def layer_form(op: CheckedOp, sample: Sample, model: Any) -> StandardForm:
    """The standard form of a normalization layer (or of one op on ``(G, M, D)``)."""
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    axes = op.param_axes(sample)
    gamma, beta = sample.args.get("gamma"), sample.args.get("beta")
    names = {"dx": f"d{op.spec.primary}"}
    if "gamma" in op.affine_args and gamma is not None:
        names["dgamma"] = "dgamma"
    if "beta" in op.affine_args and beta is not None:
        names["dbeta"] = "dbeta"
    divisor = None
    computation = COMPUTATIONS.get(op.kind.value)
    if computation != "centred":
        rms = computation == "rms"
        divisor = Divisor(
            "mean_square" if rms else "variance",
            sample.kwargs["eps"],
            model.convention.eps_mode,
            0 if rms else model.correction,
        )
    summed = x.size // max(1, int(np.prod([x.shape[a] for a in axes], dtype=np.int64)))
    partition = op.partition(sample)
    if partition is None:
        msg = f"{op.name} does not group its input: it has no standard form"
        raise TypeError(msg)
    return StandardForm(
        x,
        partition,
        None if gamma is None else parameter_on(gamma, x, axes),
        None if beta is None else parameter_on(beta, x, axes),
        divisor,
        names,
        parameter_sum(x.ndim, axes),
        summed,
    )


def op_terms(op: CheckedOp, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """The terms of a normalization layer's outputs (and gradients, given ``dy``) on a float64
    ``sample`` under ``model`` (whose units of gradient centralization it follows)."""
    if "centralize_axes" in op.spec.convention_fields:
        sample = semantics.leading_units(sample, model)
    if op.kind is Kind.GIVEN_STATISTICS:
        return _inference_terms(op, sample, dy, model.convention.eps_mode)
    found = standard_terms(op.kind.value, layer_form(op, sample, model), dy)
    if not op.running_stats:
        return found
    assert found.stats is not None  # standard_terms always computes the groups' statistics
    outputs = {
        **found.outputs,
        **state_terms(
            sample,
            found.stats,
            sample.kwargs.get("momentum"),
            model.convention.running_var_correction,
        ),
    }
    return dataclasses.replace(found, outputs=outputs)


def standard_terms(kind: str, form: StandardForm, dy: np.ndarray | None) -> OpTerms:
    """The terms of an op of :data:`COMPUTATIONS` in its :class:`StandardForm`."""
    x = form.x
    stats = group_stats(x, form.partition)
    mean_abs = stats.broadcast(stats.mean_abs)
    computation = COMPUTATIONS[kind]
    outputs: dict[str, OutputTerms] = {}
    if computation == "centred":
        if form.shift is None:
            outputs["y"] = OutputTerms(np.abs(x) + mean_abs)
        else:
            outputs["y"] = OutputTerms(np.abs(x) + mean_abs + np.abs(form.shift), role="shifted")
        if dy is not None:
            dy_abs = np.abs(dy)
            outputs[form.names["dx"]] = OutputTerms(dy_abs + stats.mean_of(dy_abs), role="dx")
            if "dbeta" in form.names:
                outputs[form.names["dbeta"]] = OutputTerms(
                    dy_abs, form.reduce, form.summed, role="dbeta"
                )
        return OpTerms(kind, stats, None, outputs)
    div = form.divisor
    if div is None:
        msg = f"a {kind} op divides its groups: its standard form must have a divisor"
        raise TypeError(msg)
    v = div.argument(stats)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = stats.broadcast(div.value(v))
        f = np.where(s == 0, 0.0, stats.broadcast(div.derivative_factor(v)))
        if computation == "rms":
            magnitude_x = _divided(np.abs(x), s)
            centred_x = magnitude_x
        else:
            magnitude_x = _divided(np.abs(x) + mean_abs, s)
            centred_x = magnitude_x if computation == "standardized" else _divided(np.abs(x), s)
        a = np.ones_like(x) if form.scale is None else np.abs(form.scale)
        b = 0.0 if form.shift is None else np.abs(form.shift)
        outputs["y"] = OutputTerms(a * centred_x + b)
        if dy is not None:
            n_eff = stats.n - div.correction
            g = a * np.abs(dy)
            path = f * magnitude_x * stats.sum(g * centred_x) / n_eff
            direct = g + (stats.mean_of(g) if computation == "standardized" else 0.0)
            outputs[form.names["dx"]] = OutputTerms(_divided(direct + path, s), role="dx")
            if "dgamma" in form.names:
                outputs[form.names["dgamma"]] = OutputTerms(
                    abs(form.param_factor) * np.abs(dy) * centred_x,
                    form.reduce,
                    form.summed,
                    role="dgamma",
                )
            if "dbeta" in form.names:
                outputs[form.names["dbeta"]] = OutputTerms(
                    np.abs(dy), form.reduce, form.summed, role="dbeta"
                )
    return OpTerms(kind, stats, div, outputs)


def _divided(terms_: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``terms / s``, and 0 where ``s`` is 0: a zero unit of weight norm without ``eps``, whose
    output and gradients normref defines as exactly 0 (no terms are computed there)."""
    return np.where(s == 0, 0.0, terms_ / np.where(s == 0, 1.0, s))


def _inference_terms(
    op: CheckedOp, sample: Sample, dy: np.ndarray | None, eps_mode: str
) -> OpTerms:
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    axes = op.param_axes(sample)
    reduce = parameter_sum(x.ndim, axes)
    summed = x.size // max(1, int(np.prod([x.shape[a] for a in axes], dtype=np.int64)))
    gamma = _param(sample.args.get("gamma"), x, axes, fill=1.0)
    abs_beta = np.abs(_param(sample.args.get("beta"), x, axes, fill=0.0))
    eps = sample.kwargs["eps"]
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
    return OpTerms(op.kind.value, None, None, outputs)


def state_terms(
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


def parameter_on(param: np.ndarray, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A parameter spanning ``axes`` of ``x``, broadcast to x's layout."""
    return np.broadcast_to(broadcast_param(xp_numpy, np.asarray(param), x.ndim, axes), x.shape)


def _param(
    param: np.ndarray | None, x: np.ndarray, axes: tuple[int, ...], *, fill: float
) -> np.ndarray:
    return np.full(x.shape, fill) if param is None else parameter_on(param, x, axes)


def parameter_sum(ndim: int, axes: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Sums an array of rank ``ndim`` over every axis but ``axes`` (onto a parameter)."""
    other = tuple(a for a in range(ndim) if a not in axes)
    return lambda values: np.sum(values, axis=other)
