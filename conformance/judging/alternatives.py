"""Structural hypotheses: what a wrong implementation computes instead, built from the reference.

Where no convention explains a failing row, the diagnosis tests the standard
ways an implementation of the op goes wrong. Each :class:`Alternative` is an
exact (float64) result that such an implementation would give on the row's
input, computed with normref's own pieces (its partitions, group operations
and affine, the reference's terms :mod:`conformance.bounds.terms`, its unit
norms); :mod:`conformance.judging.causes` holds it to the reference's budget
and names it only where it reproduces the implementation's outputs.

* **Layers** (standardizing, centring, scaling and RMS layers, weight
  standardization): the statistics over other axes (every other set of axes
  of ``x``), channels assigned to groups interleaved (``c % G``) instead of
  contiguously, the other operation of the family (the mean subtracted where
  an RMS norm does not subtract it, or not subtracted where it must be), the
  forward right but the gradient of the other operation; the gradient of
  ``x`` without its mean term :math:`-\\operatorname{mean}(g)/s`, without its
  variance term, without both (the statistics taken as constants), with the
  unbiased variance (a factor :math:`n/(n-1)`); ``dgamma`` and ``dbeta``
  swapped, or summed over other axes (whatever shape that gives).
* **Units** (an ``out_axis``: weights, unit-wise norms, AGC): the other unit
  axis; the whole tensor as one unit (a global norm instead of unit-wise
  ones); for AGC, the clipping inverted (units below the threshold scaled up
  to it, those above left).
* **eps**: the op with ``eps`` at the smallest normal float64 (no ``eps``
  floor, no ``eps`` in the root).
* **Whitening** without an affine: an orthogonal rotation of each group's
  exact output, and by name the PCA-whitened result (ZCA's rotated by the
  covariance's eigenvectors), its columns in any order and sign.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from conformance.bounds.measure import terms_of
from conformance.bounds.terms import (
    Divisor,
    OpTerms,
    StandardForm,
    layer_form,
    parameter_on,
    standard_terms,
)
from conformance.checked.models import Model
from conformance.judging.reference import model_sample
from conformance.judging.rows import Row
from normref.gradients import unitwise_norm
from normref.layers.compose import Layer, normalize, normalize_vjp
from normref.ops import pca_whiten
from normref.ops.base import GroupOp
from normref.ops.standardization import (
    CENTER,
    RMS_SCALE,
    SCALE,
    STANDARDIZE,
    rms_params,
    std_params,
)
from normref.partition import GROUP, SAMPLE, Partition, layer_partition, split_origins
from normref.registry import Kind, Sample

TINY_EPS = float(np.finfo(np.float64).tiny)
"""The ``eps`` of the hypothesis "no eps": the smallest normal float64 (normref refuses 0)."""


@dataclass(frozen=True)
class Alternative:
    """An exact result of a wrong implementation: ``values`` replace the reference's outputs of
    those names (``terms``, by output name, measure them where the reference's terms do not: the
    terms of another computation, a gradient of another shape), ``text``
    says in the report's words what the implementation does (the same on every row it fits,
    like ``key``), ``note`` what it is on this row."""

    key: str
    text: str
    values: dict[str, np.ndarray]
    terms: dict[str, OpTerms] | None = None
    note: str | None = None


Builder = Callable[[Row, Model], Iterator[Alternative]]

GROUP_OPERATIONS: dict[Kind, GroupOp] = {
    Kind.CENTERING: CENTER,
    Kind.STANDARDIZING: STANDARDIZE,
    Kind.SCALING: SCALE,
    Kind.RMS_SCALING: RMS_SCALE,
}
"""The group operation of each kind of layer."""

FAMILY: dict[str, tuple[GroupOp, str]] = {
    STANDARDIZE.name: (RMS_SCALE, "the mean not subtracted (an RMS norm's scaling)"),
    RMS_SCALE.name: (STANDARDIZE, "the mean subtracted (a standardization, not an RMS norm)"),
}
"""For an operation, the other of its family an implementation may compute instead."""


def _axes_text(axes: tuple[int, ...]) -> str:
    return f"({', '.join(str(a) for a in axes)})"


# ----------------------------------------------------------------------------- layers


KIND_OF: dict[str, str] = {
    CENTER.name: Kind.CENTERING.value,
    STANDARDIZE.name: Kind.STANDARDIZING.value,
    SCALE.name: Kind.SCALING.value,
    RMS_SCALE.name: Kind.RMS_SCALING.value,
}
"""The kind of computation (for its terms) of each group operation."""


@dataclass(frozen=True)
class LayerView:
    """A row's op as partition x group operation x affine, on its float64 inputs under a model,
    with its standard form (:class:`~conformance.bounds.terms.StandardForm`) for the terms."""

    sample: Sample
    x: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    dy: np.ndarray | None
    partition: Partition
    operation: GroupOp
    param_axes: tuple[int, ...]
    eps: float
    eps_mode: str
    correction: int
    form: StandardForm

    @property
    def names(self) -> dict[str, str]:
        """The names of the gradients of x and of the affine parameters the row has."""
        return self.form.names

    def evaluate(
        self,
        *,
        partition: Partition | None = None,
        operation: GroupOp | None = None,
        gradient_operation: GroupOp | None = None,
        gradient_correction: int | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, OpTerms]]:
        """The op's outputs with another partition or operation (its gradients with another
        operation or correction), and the terms that measure each; ``ValueError`` where normref
        refuses that (a group of one sample)."""
        part = partition or self.partition
        forward_op = operation or self.operation
        backward_op = gradient_operation or forward_op
        correction = self.correction if gradient_correction is None else gradient_correction
        forward = self._layer(part, forward_op, self.correction)
        values = {"y": np.asarray(normalize(forward, self.x, self.gamma, self.beta, "highest"))}
        terms = {"y": self._terms(part, forward_op, self.correction)}
        if self.dy is not None:
            backward = self._layer(part, backward_op, correction)
            grads = normalize_vjp(backward, self.dy, self.x, self.gamma, self.beta, "highest")
            measured = self._terms(part, backward_op, correction)
            found = {"dx": grads.x, "dgamma": grads.gamma, "dbeta": grads.beta}
            for role, name in self.names.items():
                if found.get(role) is not None:
                    values[name] = np.asarray(found[role])
                    terms[name] = measured
        return values, terms

    def centred_rms(self) -> tuple[dict[str, np.ndarray], dict[str, OpTerms]]:
        """The mean subtracted, then divided by the root mean square: a standardization (biased
        variance) that, unlike normref's, takes groups of one sample (each output 0)."""
        centre = self._layer(self.partition, CENTER, 0)
        rms = self._layer(self.partition, RMS_SCALE, 0)
        centred = np.asarray(normalize(centre, self.x, None, None, "highest"))
        values = {"y": np.asarray(normalize(rms, centred, self.gamma, self.beta, "highest"))}
        if self.dy is not None:
            grads = normalize_vjp(rms, self.dy, centred, self.gamma, self.beta, "highest")
            values[self.names["dx"]] = np.asarray(
                normalize_vjp(centre, grads.x, self.x, None, None, "highest").x
            )
            found = {"dgamma": grads.gamma, "dbeta": grads.beta}
            for role in ("dgamma", "dbeta"):
                if role in self.names and found[role] is not None:
                    values[self.names[role]] = np.asarray(found[role])
        measured = self._terms(self.partition, STANDARDIZE, 0)
        return values, dict.fromkeys(values, measured)

    def _layer(self, partition: Partition, op: GroupOp, correction: int) -> Layer:
        if op is CENTER:
            params: dict[str, Any] = {}
        elif op is RMS_SCALE:
            params = rms_params(self.eps, self.eps_mode)
        else:
            params = std_params(self.eps, self.eps_mode, correction)
        return Layer("alternative", partition, op, params, self.param_axes, "a diagnosis")

    def _terms(self, partition: Partition, op: GroupOp, correction: int) -> OpTerms:
        """The terms of ``op`` on ``partition`` (:func:`~conformance.bounds.terms.standard_terms`)."""
        divisor = None
        if op is not CENTER:
            of = "mean_square" if op is RMS_SCALE else "variance"
            divisor = Divisor(of, self.eps, self.eps_mode, 0 if op is RMS_SCALE else correction)
        form = dataclasses.replace(self.form, partition=partition, divisor=divisor)
        return standard_terms(KIND_OF[op.name], form, self.dy)

    def normalized(self) -> np.ndarray:
        """The exact normalized value x_hat (before the affine)."""
        layer = self._layer(self.partition, self.operation, self.correction)
        return np.asarray(normalize(layer, self.x, None, None, "highest"))


def layer_view(row: Row, model: Model) -> LayerView | None:
    """The row's op as a :class:`LayerView` (``None`` for an op that is not such a layer)."""
    op = row.prepared.op
    operation = GROUP_OPERATIONS.get(op.kind)
    if operation is None or op.spec.partition is None:
        return None
    sample = model_sample(row.prepared, model)
    partition = op.partition(sample)
    if partition is None or partition.D != 1:
        return None
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    return LayerView(
        sample,
        x,
        sample.args.get("gamma") if "gamma" in op.affine_args else None,
        sample.args.get("beta") if "beta" in op.affine_args else None,
        row.prepared.dy if row.backward else None,
        partition,
        operation,
        op.param_axes(sample),
        float(sample.kwargs.get("eps", 1e-5)),
        model.convention.eps_mode,
        model.correction,
        layer_form(op, sample, model),
    )


def _assignment(partition: Partition) -> np.ndarray:
    """Each element's group, on x's layout (two partitions group alike where these agree up to a
    renaming of the groups)."""
    index = np.arange(int(np.prod(partition.shape)), dtype=np.float64).reshape(partition.shape)
    canonical = np.asarray(partition.to_canonical(xp_numpy, index))
    first = np.broadcast_to(canonical[:, :1, :], canonical.shape)
    return np.asarray(partition.from_canonical(xp_numpy, np.ascontiguousarray(first)))


def _reduced_axes(partition: Partition) -> tuple[int, ...] | None:
    """The axes of x a partition takes its statistics over, where it does so over whole axes."""
    origins = split_origins(partition.shape, partition.split_shape)
    if origins is None:
        return None
    labels = [
        lab for lab, size in zip(partition.labels, partition.split_shape, strict=True) if size > 1
    ]
    by_axis: dict[int, set[str]] = {}
    for axis, label in zip(origins, labels, strict=True):
        by_axis.setdefault(axis, set()).add(label)
    if any(len(found) > 1 for found in by_axis.values()):
        return None
    return tuple(sorted(a for a, found in by_axis.items() if SAMPLE in found))


def _roles(view: LayerView) -> tuple[tuple[str, set[int]], ...]:
    """The axes of x by their role: normalized (reduced by the op), of the channels (or units)
    the parameters span, and the others."""
    partition = view.partition
    if partition.split_shape == partition.shape:  # whole axes, those of size 1 included
        reduced = {a for a, label in enumerate(partition.labels) if label == SAMPLE}
    else:
        reduced = set(_reduced_axes(partition) or ())
    params = set(view.param_axes) - reduced
    others = set(range(view.x.ndim)) - reduced - params
    channel = "channel" if view.names.keys() & {"dgamma", "dbeta"} else "unit"
    return (("normalized", reduced), (channel, params), ("other", others))


def _roles_of(axes: tuple[int, ...], view: LayerView) -> tuple[str, str]:
    """A key and words for ``axes`` by the roles they hold (all, some or none of each role's
    axes): the same mistake on inputs of other ranks has the same key."""
    chosen = set(axes)
    keys, words = [], []
    for name, role in _roles(view):
        held = len(role & chosen)
        share = "none" if held == 0 else "all" if held == len(role) else "some"
        keys.append(f"{name}={share}")
        if share == "all":
            words.append(f"the {name} axes")
        elif share == "some":
            words.append(f"some of the {name} axes")
    return ",".join(keys), " and ".join(words) or "no axis"


def _other_axes(view: LayerView) -> Iterator[Alternative]:
    """The statistics over every other set of whole axes of x."""
    if "out_axis" in view.sample.kwargs:
        return  # the unit axis is the op's own hypothesis (:func:`_other_unit_axis`)
    own = _assignment(view.partition)
    own_axes = _reduced_axes(view.partition)
    described = "its groups" if own_axes is None else f"axes {_axes_text(own_axes)}"
    # axes of size 1 group nothing: axes that differ by them compute the same, and each such
    # set is offered under its own key (the key the same mistake has on other inputs)
    evaluated: list[tuple[Any, Any]] = [(own, None)]
    for count in range(1, view.x.ndim + 1):
        for axes in itertools.combinations(range(view.x.ndim), count):
            partition = layer_partition(view.x.shape, axes)
            grouping = _assignment(partition)
            known = [e for g, e in evaluated if np.array_equal(grouping, g)]
            if known:
                same = known[0]
            else:
                try:
                    same = view.evaluate(partition=partition)
                except ValueError:
                    same = None  # a group of one sample with the unbiased variance, say
                evaluated.append((grouping, same))
            if same is None:
                continue  # the op's own grouping, or one it cannot evaluate
            values, terms = same
            key, words = _roles_of(axes, view)
            own_words = "its groups" if own_axes is None else _roles_of(own_axes, view)[1]
            yield Alternative(
                f"axes:{key}",
                f"statistics over the wrong axes: over {words} instead of {own_words}",
                values,
                terms,
                note=f"y: statistics over axes {_axes_text(axes)} instead of {described}",
            )


def _interleaved(view: LayerView) -> Iterator[Alternative]:
    """Channels assigned to groups as ``c % G`` instead of contiguous blocks."""
    if "num_groups" not in view.sample.args:
        return
    partition = view.partition
    origins = split_origins(partition.shape, partition.split_shape)
    if origins is None:
        return
    channel = view.param_axes[0]
    pieces = [i for i, size in enumerate(partition.split_shape) if size > 1]
    split = [pieces[k] for k, origin in enumerate(origins) if origin == channel]
    if len(split) != 2:
        return  # one group, or a group per channel: interleaving changes nothing
    first, second = split
    sizes, labels = list(partition.split_shape), list(partition.labels)
    sizes[first], sizes[second] = sizes[second], sizes[first]
    labels[first], labels[second] = labels[second], labels[first]
    interleaved = Partition(partition.shape, tuple(sizes), tuple(labels))
    if labels[first] != SAMPLE or labels[second] != GROUP:
        return
    yield Alternative(
        "interleaved",
        "channels assigned to groups interleaved (channel c in group c % G) instead of "
        "contiguously",
        *view.evaluate(partition=interleaved),
    )


def _family(view: LayerView) -> Iterator[Alternative]:
    """The other operation of the family, forward and gradient."""
    found = FAMILY.get(view.operation.name)
    if found is None:
        return
    other, what = found
    if other is STANDARDIZE:
        yield Alternative(f"family:{other.name}", what, *view.centred_rms())
    else:
        yield Alternative(f"family:{other.name}", what, *view.evaluate(operation=other))


def _family_gradient(view: LayerView) -> Iterator[Alternative]:
    """The forward right, the gradient the other operation's of the family."""
    found = FAMILY.get(view.operation.name)
    if found is None or view.dy is None:
        return
    other, what = found
    yield Alternative(
        f"family-gradient:{other.name}",
        f"the gradient of another operation: {what} in the backward only",
        *view.evaluate(gradient_operation=other),
    )


def _gradient_terms(row: Row, view: LayerView, model: Model) -> Iterator[Alternative]:
    """dx without its mean term, its variance term or both; with the unbiased variance."""
    if view.dy is None or view.operation is CENTER:
        return
    reference = row.expected(model)
    dx_name = view.names["dx"]
    exact = reference.values.get(dx_name)
    stats, divisor = reference.terms.stats, reference.terms.divisor
    if exact is None or stats is None or divisor is None or not hasattr(divisor, "argument"):
        return
    g = (
        view.dy
        if view.gamma is None
        else view.dy * parameter_on(view.gamma, view.x, view.param_axes)
    )
    with np.errstate(all="ignore"):
        s = stats.broadcast(divisor.value(divisor.argument(stats)))
        mean_g = stats.mean_of(g)
        centred = view.operation is STANDARDIZE
        direct = (g - mean_g) / s if centred else g / s
        if centred:
            yield Alternative(
                "mean-term",
                "dx lacks its mean term -mean(g)/s (g = gamma dy): the gradient through the mean",
                {dx_name: exact + mean_g / s},
            )
        yield Alternative(
            "variance-term",
            "dx lacks its variance term: the gradient through the variance",
            {dx_name: direct},
        )
        if centred:
            yield Alternative(
                "constant-statistics",
                "dx lacks both its mean and its variance terms: the statistics taken as constants",
                {dx_name: g / s},
            )
    if view.operation is not RMS_SCALE and view.correction == 0:
        try:
            values, measured = view.evaluate(gradient_correction=1)
        except ValueError:
            return
        yield Alternative(
            "gradient-correction",
            "the gradient computed with the unbiased variance (a factor n/(n-1))",
            {k: v for k, v in values.items() if k != "y"},
            measured,
        )


def _parameter_gradients(row: Row, view: LayerView, model: Model) -> Iterator[Alternative]:
    """dgamma and dbeta swapped, or summed over other axes."""
    if view.dy is None:
        return
    reference = row.expected(model)
    names = {k: view.names[k] for k in ("dgamma", "dbeta") if k in view.names}
    if len(names) == 2:
        dgamma, dbeta = (reference.values.get(names[k]) for k in ("dgamma", "dbeta"))
        outputs = reference.terms.outputs
        if dgamma is not None and dbeta is not None and dgamma.shape == dbeta.shape:
            swapped = {
                names["dgamma"]: outputs[names["dbeta"]],
                names["dbeta"]: outputs[names["dgamma"]],
            }
            measured = dataclasses.replace(reference.terms, outputs={**outputs, **swapped})
            yield Alternative(
                "swapped",
                "dgamma and dbeta swapped",
                {names["dgamma"]: dbeta, names["dbeta"]: dgamma},
                dict.fromkeys(names.values(), measured),
            )
    given = row.outcome(model).values
    x_hat = view.normalized()
    own = tuple(a for a in range(view.x.ndim) if a not in view.param_axes)
    for key, name in names.items():
        summand = view.dy * x_hat if key == "dgamma" else view.dy
        actual = given.get(name)
        out = reference.terms.outputs.get(name)
        if actual is None or out is None:
            continue
        for count in range(view.x.ndim + 1):
            for axes in itertools.combinations(range(view.x.ndim), count):
                if axes == own:
                    continue
                summed = np.sum(summand, axis=axes)
                if summed.size != np.size(actual):
                    continue
                shape = np.shape(actual)
                terms = dataclasses.replace(
                    reference.terms,
                    outputs={
                        **reference.terms.outputs,
                        name: dataclasses.replace(
                            out, reduce=_sum_to(axes, shape), summed=_count(view.x, axes)
                        ),
                    },
                )
                roles, words = _roles_of(axes, view)
                yield Alternative(
                    f"{key}-axes:{roles}",
                    f"{key} summed over the wrong axes: over {words} instead of "
                    f"{_roles_of(own, view)[1]}",
                    {name: summed.reshape(shape)},
                    {name: terms},
                    note=f"{key}: summed over axes {_axes_text(axes)} instead of {_axes_text(own)}",
                )


def _sum_to(axes: tuple[int, ...], shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda values: np.sum(values, axis=axes).reshape(shape)


def _count(x: np.ndarray, axes: tuple[int, ...]) -> int:
    return int(np.prod([x.shape[a] for a in axes], dtype=np.int64))


def layer_forward_alternatives(row: Row, model: Model) -> Iterator[Alternative]:
    """A layer's structural hypotheses that change its forward (module docstring)."""
    view = layer_view(row, model)
    if view is None:
        return
    yield from _other_axes(view)
    yield from _interleaved(view)
    yield from _family(view)


def layer_gradient_alternatives(row: Row, model: Model) -> Iterator[Alternative]:
    """A layer's structural hypotheses that change its gradients only (module docstring)."""
    view = layer_view(row, model)
    if view is None:
        return
    yield from _family_gradient(view)
    yield from _gradient_terms(row, view, model)
    yield from _parameter_gradients(row, view, model)


# ----------------------------------------------------------------------------- units and eps


def _evaluate(row: Row, model: Model, sample: Sample) -> dict[str, np.ndarray]:
    """normref's outputs (and gradients, where the row has them) on ``sample`` under ``model``."""
    op = row.prepared.op
    dy = row.prepared.dy if row.backward else None
    with np.errstate(all="ignore"):
        return op.evaluate(sample, dy, model)


def _other_unit_axis(row: Row, model: Model) -> Iterator[Alternative]:
    """The units along the other axis (``out_axis`` 0 for -1 and the other way round)."""
    sample = model_sample(row.prepared, model)
    given = sample.kwargs.get("out_axis")
    primary = sample.args[row.prepared.op.spec.primary]
    if given is None or np.ndim(primary) < 2:
        return
    own = given % np.ndim(primary)
    for other in (0, -1):
        if other % np.ndim(primary) == own:
            continue
        try:
            values = _evaluate(row, model, sample.replace(out_axis=other))
        except ValueError:
            continue
        fan_in = tuple(a for a in range(np.ndim(primary)) if a != other % np.ndim(primary))
        own_fan_in = tuple(a for a in range(np.ndim(primary)) if a != own)
        yield Alternative(
            f"out_axis:{other}",
            f"units along the wrong axis: out_axis={other} instead of {given} (the unit's axes "
            f"{_axes_text(fan_in)} instead of {_axes_text(own_fan_in)})",
            values,
        )


def _whole_tensor(row: Row, model: Model) -> Iterator[Alternative]:
    """Every array of the op taken as one unit: a norm or statistics of the whole tensor instead
    of unit-wise ones."""
    op = row.prepared.op
    sample = model_sample(row.prepared, model)
    primary = sample.args[op.spec.primary]
    if "out_axis" not in sample.kwargs or np.ndim(primary) < 2:
        return
    text = "the whole tensor's norm and statistics instead of unit-wise ones (one unit)"
    shape = np.shape(primary)
    view = layer_view(row, model)
    if view is not None:
        whole = layer_partition(shape, tuple(range(len(shape))))
        yield Alternative("whole-tensor", text, *view.evaluate(partition=whole))
        return
    if any(
        isinstance(v, np.ndarray) and v.shape != shape and name in op.arrays
        for name, v in sample.args.items()
    ):
        return  # a parameter per unit (weight norm's g) has no whole-tensor form
    flat = Sample(
        {
            name: np.reshape(value, (1, -1))
            if isinstance(value, np.ndarray) and value.shape == shape
            else value
            for name, value in sample.args.items()
        },
        {**sample.kwargs, "out_axis": 0},
    )
    dy = np.reshape(row.prepared.dy, (1, -1)) if row.backward else None
    try:
        with np.errstate(all="ignore"):
            values = op.evaluate(flat, dy, model)
            terms = terms_of(op, flat, dy, model)
    except ValueError:
        return
    measured = _reshaped(terms, shape)
    yield Alternative(
        "whole-tensor",
        text,
        {k: np.reshape(v, shape) for k, v in values.items() if np.size(v) == np.prod(shape)},
        None if measured is None else dict.fromkeys(values, measured),
    )


def _reshaped(terms: OpTerms, shape: tuple[int, ...]) -> OpTerms | None:
    """``terms`` measured on a reshaped input, on ``shape`` (``None`` where they hold statistics
    or a divisor of that layout, which do not reshape)."""
    if terms.stats is not None or terms.divisor is not None:
        return None
    if any(
        out.reduce is not None or out.variance_weight is not None for out in terms.outputs.values()
    ):
        return None

    def back(extra: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
        return lambda arithmetic: np.reshape(extra(arithmetic), shape)

    outputs = {
        name: dataclasses.replace(
            out,
            magnitude=np.reshape(out.magnitude, shape),
            extra=None if out.extra is None else back(out.extra),
        )
        for name, out in terms.outputs.items()
    }
    return dataclasses.replace(terms, outputs=outputs)


def _inverted_clipping(row: Row, model: Model) -> Iterator[Alternative]:
    """AGC scaling the units below the threshold up to it, and leaving those above it."""
    op = row.prepared.op
    if op.kind is not Kind.ADAPTIVE_CLIPPING:
        return
    sample = model_sample(row.prepared, model)
    grad, param = (np.asarray(sample.args[n], dtype=np.float64) for n in op.arrays[:2])
    out_axis, eps = sample.kwargs["out_axis"], sample.kwargs["eps"]
    clipping = sample.kwargs["clipping"]
    with np.errstate(all="ignore"):
        norm = np.asarray(unitwise_norm(grad, out_axis=out_axis))
        threshold = clipping * np.maximum(np.asarray(unitwise_norm(param, out_axis=out_axis)), eps)
        factor = np.where((norm < threshold) & (norm > 0), threshold / norm, 1.0)
    reference = row.expected(model).terms
    # its terms: each element of the gradient times its unit's factor, as the reference's are
    scaled = dataclasses.replace(reference.outputs["y"], magnitude=np.abs(grad) * factor)
    yield Alternative(
        "inverted",
        "clipping inverted: units whose norm is below the threshold scaled up to it, those "
        "above it left",
        {"y": grad * factor},
        {"y": dataclasses.replace(reference, outputs={**reference.outputs, "y": scaled})},
    )


def _without_eps(row: Row, model: Model) -> Iterator[Alternative]:
    """The op with no ``eps`` (the smallest normal float64: no floor, nothing in the root)."""
    sample = model_sample(row.prepared, model)
    if "eps" not in sample.kwargs:
        return
    try:
        values = _evaluate(row, model, sample.replace(eps=TINY_EPS))
    except ValueError:
        return
    yield Alternative(
        "no-eps",
        f"eps missing: no eps floor or eps term (the result with eps -> 0, where "
        f"{sample.kwargs['eps']!r} is given)",
        values,
    )


# ----------------------------------------------------------------------------- whitening


def _rotations(row: Row, model: Model) -> Iterator[Alternative]:
    """A rotation of each group's exact output: PCA's (columns in any order and sign), or the
    orthogonal transform of the exact output nearest the implementation's (Procrustes)."""
    op = row.prepared.op
    if op.kind is not Kind.WHITENING:
        return
    sample = model_sample(row.prepared, model)
    if any(sample.args.get(a) is not None for a in op.affine_args):
        return
    partition = op.partition(sample)
    actual = row.outcome(model).values.get("y")
    exact = row.expected(model).values.get("y")
    if partition is None or actual is None or exact is None or actual.shape != exact.shape:
        return
    got = np.asarray(partition.to_canonical(xp_numpy, actual))
    if not np.all(np.isfinite(got)):
        return
    x = np.asarray(sample.args[op.spec.primary], dtype=np.float64)
    canonical = np.asarray(partition.to_canonical(xp_numpy, x))
    try:
        pca = np.asarray(
            pca_whiten(canonical, eps=sample.kwargs["eps"], correction=model.correction)
        )
    except ValueError:
        pca = None
    matched = None if pca is None else _matched_columns(pca, got)
    if matched is not None:
        yield Alternative(
            "pca",
            "the PCA-whitened result: a rotation of the exact result by the covariance's "
            "eigenvectors (PCA returned; columns in any order and sign)",
            {"y": np.asarray(partition.from_canonical(xp_numpy, matched))},
        )
    exact_c = np.asarray(partition.to_canonical(xp_numpy, exact))
    rotated = np.empty_like(exact_c)
    for g in range(exact_c.shape[0]):
        u, _, vt = np.linalg.svd(exact_c[g].T @ got[g])
        rotated[g] = exact_c[g] @ (u @ vt)
    yield Alternative(
        "rotation",
        "a rotation of the exact result (an orthogonal transform of each group's features)",
        {"y": np.asarray(partition.from_canonical(xp_numpy, rotated))},
    )


def _matched_columns(pca: np.ndarray, got: np.ndarray) -> np.ndarray | None:
    """``pca``'s columns reordered and signed to match ``got``'s, group by group: each column of
    ``got`` paired with the column of ``pca`` it is most aligned with, columns of (nearly) zero
    norm (directions of a zero eigenvalue, which whitening maps to 0) with the others left;
    ``None`` where no one-to-one pairing exists."""
    matched = np.empty_like(pca)
    for g in range(pca.shape[0]):
        norms = np.linalg.norm(got[g], axis=0)
        live = norms > 1e-8 * max(float(np.max(norms, initial=0.0)), np.finfo(np.float64).tiny)
        dots = pca[g].T @ got[g]
        order = [-1] * got.shape[2]
        for j in np.flatnonzero(live):
            order[j] = int(np.argmax(np.abs(dots[:, j])))
        taken = [k for k in order if k >= 0]
        if len(set(taken)) != len(taken):
            return None
        spare = iter(k for k in range(pca.shape[2]) if k not in taken)
        order = [k if k >= 0 else next(spare) for k in order]
        signs = np.sign(dots[order, np.arange(len(order))])
        matched[g] = pca[g][:, order] * np.where(signs == 0, 1.0, signs)
    return matched


FORWARD_BUILDERS: tuple[Builder, ...] = (
    layer_forward_alternatives,
    _other_unit_axis,
    _whole_tensor,
    _inverted_clipping,
    _without_eps,
    _rotations,
)
"""The builders of structural hypotheses that change the forward, each of which yields nothing
for an op it does not apply to."""

GRADIENT_BUILDERS: tuple[Builder, ...] = (layer_gradient_alternatives,)
"""The builders of structural hypotheses that change the gradients only."""


def alternatives(row: Row, model: Model, failing: set[str]) -> Iterator[Alternative]:
    """The structural hypotheses for ``row`` under ``model`` (module docstring) that can explain
    its ``failing`` outputs: those that change the forward where a forward or state output
    fails (a hypothesis that changes a forward output that is right cannot fit), those that
    change the gradients only where only gradients fail."""
    op = row.prepared.op
    forward = any(op.direction(name) != "backward" for name in failing)
    for build in FORWARD_BUILDERS if forward else GRADIENT_BUILDERS:
        try:
            yield from build(row, model)
        except (ValueError, TypeError, KeyError, np.linalg.LinAlgError):
            continue  # a hypothesis that cannot be formed on this input tests nothing
