r"""The terms of the other layers of the literature (see :mod:`conformance.bounds.terms`).

For ``x`` of shape ``(N, C, *S)``, :math:`g = \gamma \bar y`, each statistic exact in
float64 from the rounded inputs, the magnitudes of the terms are

* batch renorm (``renormalizing``): ``y``,
  :math:`|\gamma| r X_i + |\gamma|(\overline{|x|} + |\mu|)/\sigma + |\beta|`; ``dx``,
  standardize's with :math:`|\gamma| r` for :math:`|\gamma|`; ``dgamma``,
  :math:`\sum |\bar y| (r X + (\overline{|x|} + |\mu|)/\sigma)`;
* switchable norm (``switchable``): ``y``,
  :math:`|\gamma| (|x_i| + \sum_k a_k \overline{|x|}_k)/s + |\beta|`; ``dx``,
  :math:`|g|/s + \sum_k (a_k \overline{|g|/s}_k + b_k \overline{|g| X/s}_k (|x_i| +
  \overline{|x|}_k))`; the logits', :math:`a_j (T_j + \sum_k a_k T_k)` with
  :math:`T_k = \sum |g|/s\,\overline{|x|}_k` (and with :math:`b` and
  :math:`\tfrac12 |g| X/s\, v_k` for the variance's);
* AdaIN (``adaptive_instance``): ``y`` and ``dx``, standardize's with :math:`\sigma(s)`
  for :math:`|\gamma|` and :math:`\overline{|s|}` for :math:`|\beta|`; ``dstyle``,
  :math:`\sum|\bar y|/n_s + \sum|\bar y| X\,(|s_i| + \overline{|s|})/((n_s - c)\sigma(s))`;
* LRN (``local_response``): ``y``, :math:`|x| D^{-\beta}`; ``dx``,
  :math:`|\bar y| D^{-\beta} + \tfrac{2\alpha\beta}{n} |x| \sum_{W^\top} |\bar y x| D^{-\beta-1}`

(:math:`X_i = (|x_i| + \overline{|x|})/s`, :math:`\overline{\cdot}_k` the mean over
statistic :math:`k`'s group; batch renorm's :math:`r`, :math:`d` and :math:`\sigma` from
the running statistics, :math:`\mu` the running mean.) Beyond the operation counts:

* batch renorm's :math:`r` and :math:`d` are clipped, which is 1-Lipschitz: the
  computed correction errs by at most its argument's error, clipped or not;
  :math:`r` contains the batch's standard deviation once more (a second divisor factor);
* switchable norm's variance is a mixture: its error is the weighted sum of the three
  two-pass bounds plus the weights' relative error, carried into :math:`s` as
  :math:`\rho` (:class:`MixedDivisor`); its logits' gradients add the variances' own
  errors;
* AdaIN's output carries both standard deviations' relative errors, the content's and
  the style's (:class:`JointDivisor`);
* LRN's power carries :math:`D`'s relative error :math:`(n + 3) u` (a sum of squares,
  no cancellation) as :math:`(1 + (n + 3) u)^{\beta + 1} - 1`
  (:class:`PowerDivisor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.bounds.budgets import (
    LIBRARY_FUNCTION_ROUNDINGS,
    Arithmetic,
    divisor_errors,
    variance_error,
)
from conformance.bounds.terms import (
    Conditioning,
    Divisor,
    GroupStats,
    OpTerms,
    OutputTerms,
    StandardForm,
    group_stats,
    parameter_on,
    parameter_sum,
    standard_terms,
    state_terms,
)
from normref.layers.local_response import window_extents
from normref.partition import batch_partition, instance_partition, layer_partition
from normref.registry import Sample

SOFTMAX_ROUNDINGS = LIBRARY_FUNCTION_ROUNDINGS + 4
"""A softmax weight's relative error: ``exp`` (a library function), its argument ``l - max``
(1), the sum of three (2) and the division (1)."""


def _float64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _summed(x: np.ndarray, axes: tuple[int, ...]) -> int:
    return x.size // max(1, math.prod(x.shape[a] for a in axes))


# ----------------------------------------------------------------------------- batch renorm


def renorm_terms(op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """Batch renorm: standardize's terms with :math:`|\\gamma| r` and the shift :math:`d`'s
    terms; a training step adds the running statistics' (:func:`state_terms`)."""
    x = _float64(sample.args["x"])
    axes = op.param_axes(sample)
    partition = op.partition(sample)
    stats = group_stats(x, partition)
    eps = sample.kwargs["eps"]
    running_mean = _float64(sample.args["running_mean"])
    sigma = np.sqrt(_float64(sample.args["running_var"]) + eps)

    def channel(per_channel: np.ndarray) -> np.ndarray:
        return parameter_on(per_channel, x, axes)

    sigma_b = np.sqrt(stats.var_biased + eps).ravel()
    r_max = sample.kwargs["r_max"]
    r = channel(np.clip(sigma_b / sigma, 1.0 / r_max, r_max))
    shift_terms = channel((stats.mean_abs.ravel() + np.abs(running_mean)) / sigma)
    gamma, beta = sample.args.get("gamma"), sample.args.get("beta")
    abs_gamma = np.ones_like(x) if gamma is None else np.abs(channel(_float64(gamma)))
    shift = abs_gamma * shift_terms + (0.0 if beta is None else np.abs(channel(_float64(beta))))
    names = {"dx": "dx"}
    if gamma is not None:
        names["dgamma"] = "dgamma"
    if beta is not None:
        names["dbeta"] = "dbeta"
    reduce, summed = parameter_sum(x.ndim, axes), _summed(x, axes)
    form = StandardForm(
        x,
        partition,
        abs_gamma * r,
        shift,
        Divisor("variance", eps, "add", 0),
        names,
        reduce,
        summed,
    )
    found = standard_terms("renormalizing", form, dy)
    outputs = dict(found.outputs)
    if dy is not None and gamma is not None:
        x_hat = (np.abs(x) + stats.broadcast(stats.mean_abs)) / stats.broadcast(
            np.sqrt(stats.var_biased + eps)
        )
        outputs["dgamma"] = OutputTerms(
            np.abs(dy) * (r * x_hat + shift_terms), reduce, summed, role="dgamma"
        )
    if op.running_stats:
        outputs.update(
            state_terms(
                sample,
                stats,
                sample.kwargs.get("momentum"),
                model.convention.running_var_correction,
            )
        )
    return OpTerms("renormalizing", stats, found.divisor, outputs)


# ----------------------------------------------------------------------------- switchable norm


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - np.max(logits))
    return e / np.sum(e)


@dataclass(frozen=True)
class MixedDivisor:
    """:math:`s = \\sqrt{\\sum_k b_k v_k + \\epsilon}` per element: the mixture's error
    (the three two-pass bounds, weighted, and the weights' and the sums' roundings) as
    :math:`\\rho`."""

    groups: tuple[GroupStats, ...]
    weights: np.ndarray
    mixed: np.ndarray
    eps: float

    def relative_errors(self, arithmetic: Arithmetic) -> tuple[np.ndarray, np.ndarray]:
        """:math:`\\rho` on x's layout, and 0 (``eps`` is added)."""
        error = sum(
            w * stats.broadcast(variance_error(stats, arithmetic))
            for w, stats in zip(self.weights, self.groups, strict=True)
        )
        error = error + (SOFTMAX_ROUNDINGS + 4) * arithmetic.unit_roundoff * self.mixed
        low = np.maximum(self.mixed - error, 0.0)
        with np.errstate(invalid="ignore"):
            rho = np.sqrt(self.mixed + self.eps) / np.sqrt(low + self.eps) - 1.0
        return rho, np.zeros_like(rho)


def _logit_terms(weights: np.ndarray, per_statistic: list[np.ndarray]) -> np.ndarray:
    """``(3, *x.shape)``: the terms of :math:`w_j (t_j + \\sum_k w_k t_k)` for each logit."""
    mixed = sum(w * t for w, t in zip(weights, per_statistic, strict=True))
    return np.stack([w * (t + mixed) for w, t in zip(weights, per_statistic, strict=True)])


def switchable_terms(op: Any, sample: Sample, dy: np.ndarray | None, _model: Any) -> OpTerms:
    """Switchable norm: the mixtures' terms (module docstring)."""
    x = _float64(sample.args["x"])
    axis = op.param_axes(sample)[0]
    shape = tuple(x.shape)
    groups = (
        group_stats(x, instance_partition(shape, axis)),
        group_stats(x, layer_partition(shape, tuple(range(1, x.ndim)))),
        group_stats(x, batch_partition(shape, axis)),
    )
    a = _softmax(_float64(sample.args["mean_logits"]))
    b = _softmax(_float64(sample.args["var_logits"]))
    eps = sample.kwargs["eps"]
    mean_abs = [stats.broadcast(stats.mean_abs) for stats in groups]
    variances = [stats.broadcast(stats.var_biased) for stats in groups]
    mixed = sum(w * v for w, v in zip(b, variances, strict=True))
    divisor = MixedDivisor(groups, b, mixed, eps)
    s = np.sqrt(mixed + eps)
    x_terms = (np.abs(x) + sum(w * m for w, m in zip(a, mean_abs, strict=True))) / s
    gamma, beta = sample.args.get("gamma"), sample.args.get("beta")
    axes = (axis,)
    abs_gamma = np.ones_like(x) if gamma is None else np.abs(parameter_on(gamma, x, axes))
    abs_beta = 0.0 if beta is None else np.abs(parameter_on(beta, x, axes))
    outputs = {"y": OutputTerms(abs_gamma * x_terms + abs_beta)}
    if dy is not None:
        g = abs_gamma * np.abs(dy)
        through_mean = [stats.mean_of(g / s) for stats in groups]
        through_var = [stats.mean_of(g * x_terms / s) for stats in groups]
        dx = g / s
        for k in range(len(groups)):
            dx = dx + a[k] * through_mean[k] + b[k] * through_var[k] * (np.abs(x) + mean_abs[k])
        outputs["dx"] = OutputTerms(dx)
        reduce, summed = parameter_sum(x.ndim, axes), _summed(x, axes)
        if gamma is not None:
            outputs["dgamma"] = OutputTerms(np.abs(dy) * x_terms, reduce, summed)
        if beta is not None:
            outputs["dbeta"] = OutputTerms(np.abs(dy), reduce, summed)
        pairs = x.shape[0] * x.shape[axis]

        def over_x(t: np.ndarray) -> np.ndarray:
            return np.sum(t, axis=tuple(range(1, t.ndim)))

        outputs["dmean_logits"] = OutputTerms(
            _logit_terms(a, [g / s * m for m in mean_abs]), over_x, pairs
        )
        var_path = 0.5 * g * x_terms / s

        def var_errors(arithmetic: Arithmetic) -> np.ndarray:
            errors = [
                var_path * stats.broadcast(variance_error(stats, arithmetic)) for stats in groups
            ]
            return over_x(_logit_terms(b, errors))

        outputs["dvar_logits"] = OutputTerms(
            _logit_terms(b, [var_path * v for v in variances]),
            over_x,
            pairs,
            extra=var_errors,
        )
    n = max(stats.n for stats in groups)
    return OpTerms("switchable", None, divisor, outputs, n, _conditioning(groups))


def _conditioning(groups: tuple[GroupStats, ...]) -> Conditioning:
    """The worst :math:`|\\mu|/\\sigma` of the statistics' groups."""
    values = [stats.conditioning() for stats in groups]
    known = [v for v in values if not math.isnan(v)]
    return Conditioning(max(known) if known else math.nan, "|mean|/std")


# ----------------------------------------------------------------------------- AdaIN


@dataclass(frozen=True)
class JointDivisor:
    """The content's and the style's standard deviations: both relative errors, on x's layout."""

    content: GroupStats
    content_divisor: Divisor
    style: GroupStats
    style_divisor: Divisor

    def parts(self, arithmetic: Arithmetic) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rho_content, rho_f, rho_style)``, per group."""
        rho_x, rho_f = divisor_errors(self.content, self.content_divisor, arithmetic)
        rho_s, _ = divisor_errors(self.style, self.style_divisor, arithmetic)
        return rho_x, rho_f, rho_s

    def relative_errors(self, arithmetic: Arithmetic) -> tuple[np.ndarray, np.ndarray]:
        """:math:`\\rho_x + \\rho_s` and the content's :math:`\\rho_f`, on x's layout."""
        rho_x, rho_f, rho_s = self.parts(arithmetic)
        return self.content.broadcast(rho_x + rho_s), self.content.broadcast(rho_f)


def adain_terms(op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """AdaIN: instance standardization with :math:`\\sigma(s)` and :math:`\\mu(s)` as its
    affine, and the style's gradient through its statistics."""
    x, style = _float64(sample.args["x"]), _float64(sample.args["style"])
    axis = op.param_axes(sample)[0]
    content = group_stats(x, instance_partition(tuple(x.shape), axis))
    styled = group_stats(style, instance_partition(tuple(style.shape), axis))
    eps = sample.kwargs["eps"]
    correction = model.correction or sample.kwargs.get("correction", 0)
    content_divisor = Divisor("variance", eps, "add", correction)
    style_divisor = Divisor("variance", eps, "add", correction)
    sigma_s = style_divisor.value(style_divisor.argument(styled))
    form = StandardForm(
        x,
        op.partition(sample),
        content.broadcast(sigma_s),
        content.broadcast(styled.mean_abs),
        content_divisor,
        {"dx": "dx"},
        parameter_sum(x.ndim, (axis,)),
        0,
    )
    found = standard_terms("adaptive_instance", form, dy)
    divisor = JointDivisor(content, content_divisor, styled, style_divisor)
    outputs = dict(found.outputs)
    if dy is not None:
        s_x = content_divisor.value(content_divisor.argument(content))
        x_terms = (np.abs(x) + content.broadcast(content.mean_abs)) / content.broadcast(s_x)
        abs_dy = np.abs(dy)
        per_group_dy = content.gather(abs_dy).sum(axis=1, keepdims=True)
        per_group_dgamma = content.gather(abs_dy * x_terms).sum(axis=1, keepdims=True)
        n_s = styled.n
        spread = (np.abs(style) + styled.broadcast(styled.mean_abs)) / styled.broadcast(
            (n_s - correction) * sigma_s
        )
        through_sigma = styled.broadcast(per_group_dgamma) * spread

        def sigma_errors(arithmetic: Arithmetic) -> np.ndarray:
            rho_x, _, rho_s = divisor.parts(arithmetic)
            return through_sigma * styled.broadcast(2 * (rho_x + rho_s))

        outputs["dstyle"] = OutputTerms(
            styled.broadcast(per_group_dy) / n_s + through_sigma,
            summed=content.n,
            extra=sigma_errors,
        )
    n = max(content.n, styled.n)
    return OpTerms("adaptive_instance", content, divisor, outputs, n)


# ----------------------------------------------------------------------------- LRN


@dataclass(frozen=True)
class PowerDivisor:
    """:math:`D^{\\beta}` and :math:`D^{\\beta + 1}` with :math:`D = k + \\alpha/n \\sum x^2`:
    :math:`D` errs relatively by :math:`(n + 3) u` (the sum of ``n`` squares, ``alpha / n``
    and its product, ``k``), which the power raises to
    :math:`(1 + (n + 3) u)^{\\beta + 1} - 1`."""

    size: int
    beta: float

    def relative_errors(self, arithmetic: Arithmetic) -> tuple[float, float]:
        """:math:`\\rho` of both powers, and 0."""
        d = (self.size + 3) * arithmetic.unit_roundoff
        return (1.0 + d) ** (self.beta + 1.0) - 1.0, 0.0


def _window_sums(a: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    moved = np.moveaxis(a, axis, 0)
    padded = np.concatenate(
        [np.zeros((before, *moved.shape[1:])), moved, np.zeros((after, *moved.shape[1:]))]
    )
    total = padded[: moved.shape[0]].copy()
    for offset in range(1, before + after + 1):
        total += padded[offset : offset + moved.shape[0]]
    return np.moveaxis(total, 0, axis)


def lrn_terms(op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """Local response normalization: every term positive but the gradient's two."""
    x = _float64(sample.args["x"])
    axis = op.param_axes(sample)[0]
    size = sample.args["size"]
    alpha, beta, k = (sample.kwargs[name] for name in ("alpha", "beta", "k"))
    before, after = window_extents(size, model.convention.lrn_window)
    d = k + alpha / size * _window_sums(x * x, axis, before, after)
    outputs = {"y": OutputTerms(np.abs(x) * d**-beta)}
    if dy is not None:
        through = _window_sums(np.abs(dy * x) * d ** (-beta - 1.0), axis, after, before)
        outputs["dx"] = OutputTerms(
            np.abs(dy) * d**-beta + 2.0 * alpha * beta / size * np.abs(x) * through
        )
    return OpTerms("local_response", None, PowerDivisor(size, beta), outputs, size)
