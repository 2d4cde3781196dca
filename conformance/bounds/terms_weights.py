r"""The terms of the operations on weights, gradients and residual sums (see :mod:`conformance.bounds.terms`).

For a weight's output units (``out_axis``) of fan-in :math:`N`, :math:`O` units:

====================  ============  ==================================================================
kind                  output        magnitude of the terms
====================  ============  ==================================================================
scaled_standardizing  y, dw, dgain  standardize's, with the affine :math:`a = \gamma g/\sqrt N`
weight_normalizing    y, dv, dg     rms's, with :math:`a = g/\sqrt N` and :math:`\epsilon/N`
spectral_normalizing  y             :math:`|W_{ij}|/|\sigma|`
spectral_normalizing  dw            :math:`(|\bar y_{ij}| + P |u_i||v_j|)/|\sigma|`, :math:`P = \sum |\bar y||W|/|\sigma|`
adaptive_clipping     y             :math:`|G| f`, :math:`f = m/\max(n, m)`
adaptive_clipping     dgrad         :math:`f|\bar y| + f S |G|/n^2` (clipped), :math:`|\bar y|` (not)
adaptive_clipping     dparam        :math:`\lambda S |W|/(n p)` (clipped, :math:`p \ge \epsilon`), 0
residual              y             :math:`|x| + |\alpha f|`
global_clipping       each output   :math:`|g_k| c`
unit_norm             y             :math:`\|x\|_u`
nonlinearity          y             :math:`\gamma |x|` (gelu, whose sums cancel), :math:`\gamma |g(x)|`
====================  ============  ==================================================================

Centred weight norm (``centred_weight_normalizing``) has standardize's terms with
:math:`a = g/\sqrt N` and :math:`\epsilon/N`, as Scaled WS has them with its own
:math:`a`. (:math:`n = \|G\|_u`, :math:`p = \|W\|_u`, :math:`m = \lambda\max(p, \epsilon)`,
:math:`S = \sum_u |\bar y||G|`, :math:`c` the clipping factor.) Three things are
bounded beyond operation counts, as ``extra`` or as a divisor's relative error:
:math:`\sigma = u^\top W v` errs relatively by :math:`(O + N) u\, |u|^\top|W||v|/|\sigma|`
(the conditioning the report states); after a power-iteration step, the new
``u``, ``v`` and :math:`\sigma` carry the running bound of
:func:`conformance.bounds.budgets.power_iteration_error`; and an AGC unit within
rounding of its clipping threshold (or of :math:`\|W\|_u = \epsilon`) may take
either branch, so the bound adds the difference between the branches, as the
standardize bound does at the kink of ``eps_mode="max"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import normref
from conformance.bounds.budgets import (
    Arithmetic,
    carried_error,
    norm_relative_error,
    power_iteration_error,
)
from conformance.bounds.terms import (
    Conditioning,
    Divisor,
    OpTerms,
    OutputTerms,
    StandardForm,
    parameter_on,
    standard_terms,
)
from conformance.checked import semantics
from normref.nonlinearities import NONLINEARITIES, nonlinearity_gain
from normref.partition import fan_in, fan_in_axes, unit_norm_axes
from normref.registry import Sample

# ----------------------------------------------------------------------------- standard forms


def _units(op: Any, sample: Sample) -> tuple[np.ndarray, int, int, Callable, tuple[int, ...]]:
    """The primary weight, its unit axis, fan-in, the sum onto one value per unit, and the
    unit axis as a tuple (the axes a per-unit parameter spans)."""
    w = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    axis = sample.kwargs["out_axis"] % w.ndim
    others = fan_in_axes(w.ndim, axis)
    return w, axis, fan_in(w.shape, axis), lambda t: np.sum(t, axis=others), (axis,)


def scaled_ws_terms(op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """Scaled WS: standardize on the units, with ``max_fan_in`` as ``max`` with
    :math:`\\epsilon/N` (whose ``max(N var, eps)`` rounds its argument once more)."""
    w, _, n, reduce, axes = _units(op, sample)
    eps, mode = sample.kwargs["eps"], model.convention.scaled_ws_eps_mode
    if mode == "max_fan_in":
        divisor = Divisor("variance", eps / n, "max", 0, argument_roundings=2)
    else:
        divisor = Divisor("variance", eps, mode, 0)
    factor = sample.kwargs.get("gamma", 1.0) / math.sqrt(n)
    gain = sample.args.get("gain")
    scale = np.full(w.shape, factor) if gain is None else factor * parameter_on(gain, w, axes)
    names = {"dx": "dw"} if gain is None else {"dx": "dw", "dgamma": "dgain"}
    form = StandardForm(w, op.partition(sample), scale, None, divisor, names, reduce, n, factor)
    return standard_terms("scaled_standardizing", form, dy)


def weight_norm_terms(op: Any, sample: Sample, dy: np.ndarray | None, _model: Any) -> OpTerms:
    """Weight norm: RMS scale on the units with :math:`\\epsilon/N`, times :math:`g/\\sqrt N`."""
    v, _, n, reduce, axes = _units(op, sample)
    divisor = Divisor("mean_square", sample.kwargs.get("eps", 0.0) / n, "add", 0)
    g = sample.args.get("g")
    factor = 1.0 / math.sqrt(n)
    scale = np.full(v.shape, factor) if g is None else factor * parameter_on(g, v, axes)
    names = {"dx": "dv"} if g is None else {"dx": "dv", "dgamma": "dg"}
    form = StandardForm(v, op.partition(sample), scale, None, divisor, names, reduce, n, factor)
    return standard_terms("weight_normalizing", form, dy)


def centred_weight_norm_terms(
    op: Any, sample: Sample, dy: np.ndarray | None, _model: Any
) -> OpTerms:
    r"""Centred weight norm: standardize on the units with :math:`\epsilon/N`, times
    :math:`g/\sqrt N`."""
    v, _, n, reduce, axes = _units(op, sample)
    divisor = Divisor("variance", sample.kwargs.get("eps", 0.0) / n, "add", 0)
    g = sample.args.get("g")
    factor = 1.0 / math.sqrt(n)
    scale = np.full(v.shape, factor) if g is None else factor * parameter_on(g, v, axes)
    names = {"dx": "dv"} if g is None else {"dx": "dv", "dgamma": "dg"}
    form = StandardForm(v, op.partition(sample), scale, None, divisor, names, reduce, n, factor)
    return standard_terms("centred_weight_normalizing", form, dy)


# ----------------------------------------------------------------------------- spectral norm


def _matrix(w: np.ndarray, axis: int) -> np.ndarray:
    """``w`` as the ``(units, fan-in)`` matrix (normref's view)."""
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _unmatrix(m: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved = tuple(shape[a] for a in (axis, *fan_in_axes(len(shape), axis)))
    return np.moveaxis(m.reshape(moved), 0, axis)


@dataclass(frozen=True)
class SigmaDivisor:
    """:math:`\\sigma = u^\\top W v` as a divisor: its relative error, the rounding of its dot
    products plus ``carried(u)``, the error of ``u`` and ``v`` (0 when they are given)."""

    sigma: float
    terms: float
    length: int
    carried: Callable[[float], float] = lambda _u: 0.0

    def error(self, u: float) -> float:
        """Bound on :math:`\\sigma`'s error: its dot products' rounding and the carried error."""
        return self.length * u * self.terms + self.carried(u)

    def relative_errors(self, arithmetic: Arithmetic) -> tuple[float, float]:
        """:math:`R = \\rho/(1 - \\rho)` for the division by :math:`\\sigma` (infinite once
        :math:`\\rho \\ge 1`: no digit of :math:`\\sigma` is determined), and 0."""
        if self.sigma == 0.0:  # the weight is returned unscaled: nothing divides
            return 0.0, 0.0
        rho = self.error(arithmetic.unit_roundoff) / abs(self.sigma)
        return (rho / (1.0 - rho) if rho < 1.0 else math.inf), 0.0

    @property
    def conditioning(self) -> Conditioning:
        """:math:`|u|^\\top|W||v| / |u^\\top W v|`, the cancellation in :math:`\\sigma`."""
        value = math.inf if self.sigma == 0.0 else self.terms / abs(self.sigma)
        return Conditioning(value, "|u|^T |W| |v| / |u^T W v|")


def _spectral_outputs(
    w: np.ndarray,
    axis: int,
    vec_u: np.ndarray,
    vec_v: np.ndarray,
    sigma: float,
    dy: np.ndarray | None,
) -> dict[str, OutputTerms]:
    matrix = _matrix(w, axis)
    scale = abs(sigma) if sigma != 0.0 else 1.0
    outputs = {"y": OutputTerms(np.abs(w) / scale)}
    if dy is not None:
        dy_m = np.abs(_matrix(dy, axis))
        projection = float(np.sum(dy_m * np.abs(matrix))) / scale if sigma != 0.0 else 0.0
        magnitude = (dy_m + projection * np.outer(np.abs(vec_u), np.abs(vec_v))) / scale
        outputs["dw"] = OutputTerms(_unmatrix(magnitude, w.shape, axis))
    return outputs


def spectral_terms(_op: Any, sample: Sample, dy: np.ndarray | None, _model: Any) -> OpTerms:
    """Spectral norm with the given ``u`` and ``v`` (no power iteration)."""
    w = np.asarray(sample.args["w"], dtype=np.float64)
    axis = sample.kwargs["out_axis"] % w.ndim
    vec_u, vec_v = sample.args["u"], sample.args["v"]
    matrix = _matrix(w, axis)
    sigma = float(vec_u @ matrix @ vec_v)
    divisor = SigmaDivisor(
        sigma, float(np.abs(vec_u) @ np.abs(matrix) @ np.abs(vec_v)), sum(matrix.shape)
    )
    outputs = _spectral_outputs(w, axis, vec_u, vec_v, sigma, dy)
    return OpTerms(
        "spectral_normalizing", None, divisor, outputs, matrix.size, divisor.conditioning
    )


def spectral_train_terms(_op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
    """One training step: the power iteration's new ``u``, ``v`` carry its running error bound
    into :math:`\\sigma` and into the gradient's outer product."""
    w = np.asarray(sample.args["w"], dtype=np.float64)
    axis = sample.kwargs["out_axis"] % w.ndim
    kwargs = {
        "n_power_iterations": sample.kwargs["n_power_iterations"],
        "order": model.convention.power_iteration_order,
        "eps_mode": model.convention.l2_eps_mode,
        "eps": sample.kwargs["eps"],
        "out_axis": axis,
    }
    step = normref.spectral_norm(w, sample.args["u"], sample.args["v"], **kwargs)
    matrix = _matrix(w, axis)
    vec_u, vec_v, sigma = np.asarray(step.u), np.asarray(step.v), float(step.sigma)

    def errors(u: float) -> tuple[np.ndarray, np.ndarray]:
        return power_iteration_error(
            matrix,
            sample.args["u"],
            sample.args["v"],
            steps=kwargs["n_power_iterations"],
            order=kwargs["order"],
            eps=kwargs["eps"],
            eps_mode=kwargs["eps_mode"],
            u=u,
        )

    def carried(u: float) -> float:
        return carried_error(matrix, vec_u, vec_v, *errors(u))

    terms_sum = float(np.abs(vec_u) @ np.abs(matrix) @ np.abs(vec_v))
    divisor = SigmaDivisor(sigma, terms_sum, sum(matrix.shape), carried)
    outputs = _spectral_outputs(w, axis, vec_u, vec_v, sigma, dy)
    outputs["u"] = OutputTerms(np.abs(vec_u), extra=lambda a: errors(a.unit_roundoff)[0])
    outputs["v"] = OutputTerms(np.abs(vec_v), extra=lambda a: errors(a.unit_roundoff)[1])
    outputs["sigma"] = OutputTerms(
        np.asarray(terms_sum), extra=lambda a: np.asarray(divisor.error(a.unit_roundoff))
    )
    if dy is not None and sigma != 0.0:
        projection = float(np.sum(np.abs(_matrix(dy, axis)) * np.abs(matrix))) / abs(sigma)

        def outer_error(a: Arithmetic) -> np.ndarray:
            err_u, err_v = errors(a.unit_roundoff)
            spread = np.outer(err_u, np.abs(vec_v)) + np.outer(np.abs(vec_u), err_v)
            return _unmatrix(projection * spread / abs(sigma), w.shape, axis)

        outputs["dw"] = OutputTerms(outputs["dw"].magnitude, extra=outer_error)
    return OpTerms("spectral_step", None, divisor, outputs, matrix.size, divisor.conditioning)


# ----------------------------------------------------------------------------- unit-wise norms


def _viewed(
    build: Callable[[Sample, np.ndarray | None], OpTerms], primary: str
) -> Callable[[Any, Sample, np.ndarray | None, Any], OpTerms]:
    """A builder that follows ``model.convention.unit_axes``: under ``"by_rank"`` the terms are measured
    on the view of :mod:`conformance.checked.semantics` and mapped back."""

    def terms_of(_op: Any, sample: Sample, dy: np.ndarray | None, model: Any) -> OpTerms:
        if model.convention.unit_axes == "out_axis":
            return build(sample, dy)
        layout = semantics.rank_layout(sample, primary)
        shape = layout.shape
        viewed = Sample(
            {
                k: layout.to_view(v) if isinstance(v, np.ndarray) and v.shape == shape else v
                for k, v in sample.args.items()
            },
            {**sample.kwargs, "out_axis": -1},
        )
        found = build(viewed, None if dy is None else layout.to_view(dy))
        outputs = {
            name: OutputTerms(
                layout.from_view(out.magnitude),
                role=out.role,
                extra=None if out.extra is None else _from_view(layout, out.extra),
            )
            for name, out in found.outputs.items()
        }
        return OpTerms(found.kind, None, None, outputs, found.n, found.conditioning)

    return terms_of


def _from_view(
    layout: semantics.RankLayout, extra: Callable[[Arithmetic], np.ndarray]
) -> Callable[[Arithmetic], np.ndarray]:
    return lambda arithmetic: layout.from_view(extra(arithmetic))


def _unit_norms(x: np.ndarray, out_axis: int) -> tuple[np.ndarray, tuple[int, ...], int]:
    axes = unit_norm_axes(x.shape, out_axis, name="x")
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True)) if axes else np.abs(x)
    return norm, axes, math.prod(x.shape[a] for a in axes)


def _agc(sample: Sample, dy: np.ndarray | None) -> OpTerms:
    grad, param = sample.args["grad"], sample.args["param"]
    clipping, eps = sample.kwargs["clipping"], sample.kwargs["eps"]
    n, axes, size = _unit_norms(grad, sample.kwargs["out_axis"])
    p, _, _ = _unit_norms(param, sample.kwargs["out_axis"])
    m = clipping * np.maximum(p, eps)
    f = m / np.maximum(n, m)
    clipped = n > m
    with np.errstate(divide="ignore", invalid="ignore"):
        away = np.where(n == m, math.inf, m / np.abs(n - m))

    def ambiguous(arithmetic: Arithmetic) -> np.ndarray:
        """Units whose computed norm may fall on the other side of the threshold."""
        rel = norm_relative_error(size, arithmetic)
        return np.abs(n - m) <= rel * n + (rel + arithmetic.elementwise_roundoff) * m

    outputs = {
        "y": OutputTerms(
            np.abs(grad) * f,
            extra=lambda a: np.where(
                ambiguous(a), np.abs(grad) * np.abs(1 - m / np.maximum(n, m)), 0.0
            ),
        )
    }
    if dy is not None:
        spread = (
            np.sum(np.abs(dy) * np.abs(grad), axis=axes, keepdims=True)
            if axes
            else np.abs(dy * grad)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            through_n = np.where(n > 0, spread / (n * n), 0.0) * np.abs(grad)
            through_m = np.where(n > 0, clipping * spread / (n * np.maximum(p, eps)), 0.0) * np.abs(
                param
            )
        moves_m = p >= eps

        def branch(arithmetic: Arithmetic) -> tuple[np.ndarray, np.ndarray]:
            flips = ambiguous(arithmetic)
            kink = np.abs(p - eps) <= norm_relative_error(size, arithmetic) * p
            grad_extra = np.where(flips, through_n, 0.0)
            param_extra = np.where(flips & moves_m, through_m, 0.0)
            param_extra = param_extra + np.where((clipped | flips) & kink, through_m, 0.0)
            return grad_extra, param_extra

        outputs["dgrad"] = OutputTerms(
            np.where(clipped, f * np.abs(dy) + f * through_n, np.abs(dy)),
            extra=lambda a: branch(a)[0],
        )
        outputs["dparam"] = OutputTerms(
            np.where(clipped & moves_m, through_m, 0.0), extra=lambda a: branch(a)[1]
        )
    known = away[~np.isnan(away)]
    closeness = Conditioning(
        float(np.max(known, initial=0.0)), "closeness to the clipping threshold, m / |n - m|"
    )
    return OpTerms("adaptive_clipping", None, None, outputs, size, closeness)


def _unit_norm(sample: Sample, _dy: np.ndarray | None) -> OpTerms:
    x = sample.args["x"]
    norm, _, size = _unit_norms(x, sample.kwargs["out_axis"])
    return OpTerms(
        "unit_norm", None, None, {"y": OutputTerms(np.broadcast_to(norm, x.shape))}, size
    )


agc_terms = _viewed(_agc, "grad")
unit_norm_terms = _viewed(_unit_norm, "x")


# ----------------------------------------------------------------------------- the others


def residual_terms(_op: Any, sample: Sample, dy: np.ndarray | None, _model: Any) -> OpTerms:
    """SkipInit: :math:`x + \\alpha f`, ``alpha`` broadcast along some axes."""
    x, branch, alpha = (np.asarray(sample.args[k]) for k in ("x", "branch_out", "alpha"))
    spread = np.broadcast_to(np.abs(alpha), x.shape)
    outputs = {"y": OutputTerms(np.abs(x) + spread * np.abs(branch))}
    if dy is not None:
        outputs["dx"] = OutputTerms(np.abs(dy))
        outputs["dbranch_out"] = OutputTerms(spread * np.abs(dy))
        outputs["dalpha"] = OutputTerms(
            np.abs(dy * branch),
            lambda t: _sum_to(t, alpha.shape),
            x.size // max(alpha.size, 1),
        )
    return OpTerms("residual", None, None, outputs, 0)


def _sum_to(t: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``t`` summed over the axes an array of ``shape`` is broadcast along to ``t``'s shape."""
    lead = t.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and t.shape[lead + i] != 1
    )
    return np.sum(t, axis=axes).reshape(shape)


def global_clip_terms(_op: Any, sample: Sample, _dy: np.ndarray | None, _model: Any) -> OpTerms:
    """Global-norm clipping: every output is its gradient times one factor."""
    grad, bias = sample.args["grad"], sample.args["bias_grad"]
    norm = math.sqrt(float(np.sum(grad * grad) + np.sum(bias * bias)))
    max_norm = sample.kwargs["max_norm"]
    factor = max_norm / max(norm + sample.kwargs.get("eps", 0.0), max_norm)
    outputs = {
        "y": OutputTerms(np.abs(grad) * factor),
        "clipped_bias_grad": OutputTerms(np.abs(bias) * factor),
    }
    return OpTerms("global_clipping", None, None, outputs, grad.size + bias.size)


_CANCELLING = ("gelu", "gelu_tanh")


def nonlinearity_terms(_op: Any, sample: Sample, _dy: np.ndarray | None, model: Any) -> OpTerms:
    """:math:`\\gamma g(x)`: the terms of ``0.5 x (1 + erf)`` and ``0.5 x (1 + tanh)`` are of
    size :math:`|x|`; every other nonlinearity is computed without cancellation."""
    x = np.asarray(sample.args["x"], dtype=np.float64)
    name = sample.kwargs["nonlinearity"]
    gain = abs(nonlinearity_gain(name, model.convention.nonlinearity_gammas))
    function = np.vectorize(NONLINEARITIES[name].fn, otypes=[np.float64])
    magnitude = np.abs(x) if name in _CANCELLING else np.abs(function(x))
    return OpTerms(f"nonlinearity:{name}", None, None, {"y": OutputTerms(gain * magnitude)}, 0)
