"""ONNX: one-node models run by onnxruntime and by onnx's reference evaluator (forward only).

Each case builds a model of one node (BatchNormalization-15,
LayerNormalization-17, GroupNormalization-21 and -18, InstanceNormalization-22,
RMSNormalization-23, LRN-13) for its shapes and dtype, and runs it. ONNX has no
backward: these bindings are checked forward only, and the report says so.

Declared convention: :data:`normref.conventions.ONNX` (momentum 0.9 as the
weight of the old value, biased running variance, ``eps`` 1e-5, the
function bodies' ``E[x^2] - E[x]^2`` variance, ``stash_type`` float32).
GroupNormalization-18 takes one scale and bias per *group*: its binding passes
each group's first channel's values and declares ``group_affine="per_group"``
(opset 21 takes them per channel, as normref). LRN's window of an even size has its
extra channel after the centre (``lrn_window="onnx"``); both runtimes take 4-D input
only, onnxruntime an odd size only (other inputs are "not implemented"). Sources:
``docs/conventions.md``.

Layouts: the channel axis is moved to 1 and normalized axes to the end (ONNX
normalizes ``[axis, rank)``); both moves are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.adapters.arrays import Evaluation
from conformance.adapters.base import Adapter, Binding, FrameworkLacksError
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

MODEL = FRAMEWORK_MODELS["onnx"]
"""ONNX's convention; attributes (``epsilon``, ``momentum``) are float32."""
STASHED = MODEL.replace(stash_dtype="float32")
"""GroupNormalization-21, whose ``stash_type`` (default 1) the runtimes honour: statistics of
float64 input in float32. LayerNormalization-17 and RMSNormalization-23 have the same
attribute, but onnxruntime and the reference evaluator compute float64 input's statistics in
float64 (errors of an ulp, not of float32): they are declared with :data:`MODEL`."""
DTYPES = ("float16", "float32", "float64")
Runner = Callable[[Any, dict[str, np.ndarray], int], list[np.ndarray]]


class Node:
    """One ONNX node: its op, opset, inputs in order, attributes and number of outputs."""

    def __init__(
        self,
        op_type: str,
        opset: int,
        inputs: dict[str, np.ndarray],
        attributes: dict[str, Any],
        outputs: int = 1,
    ) -> None:
        self.op_type, self.opset, self.inputs = op_type, opset, inputs
        self.attributes, self.outputs = attributes, outputs

    def model(self) -> Any:
        """The node as an ONNX model."""
        from onnx import helper

        def info(name: str, value: np.ndarray) -> Any:
            element = helper.np_dtype_to_tensor_dtype(value.dtype)
            return helper.make_tensor_value_info(name, element, list(value.shape))

        names = [f"y{i}" for i in range(self.outputs)]
        element = helper.np_dtype_to_tensor_dtype(next(iter(self.inputs.values())).dtype)
        node = helper.make_node(self.op_type, list(self.inputs), names, **self.attributes)
        graph = helper.make_graph(
            [node],
            self.op_type,
            [info(n, v) for n, v in self.inputs.items()],
            [helper.make_tensor_value_info(n, element, None) for n in names],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])


def _eps(prepared: Prepared) -> dict[str, float]:
    return {} if prepared.case.default_eps else {"epsilon": float(prepared.sample.kwargs["eps"])}


def _arrays(prepared: Prepared) -> dict[str, np.ndarray]:
    return {
        k: np.asarray(v, dtype=prepared.dtype)
        for k, v in prepared.sample.args.items()
        if isinstance(v, np.ndarray)
    }


def _affine(arrays: dict[str, np.ndarray], size: int, dtype: str) -> tuple[np.ndarray, ...]:
    """scale and bias, with the identity where the case has none."""
    scale = arrays.get("gamma", np.ones(size, dtype))
    return scale, arrays.get("beta", np.zeros(np.shape(scale), dtype))


# Each layout function returns (node, inverse) where inverse maps the node's y back.
Layout = tuple[Node, Callable[[np.ndarray], np.ndarray]]


def _channel_first(prepared: Prepared) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    axis = get_op(prepared.case.op).param_axes(prepared.sample)[0]
    x = np.moveaxis(_arrays(prepared)["x"], axis, 1)
    return x, lambda y: np.moveaxis(y, 1, axis)


def _batch_normalization(training: bool) -> Callable[[Prepared], Layout]:
    def node(prepared: Prepared) -> Layout:
        arrays = _arrays(prepared)
        x, back = _channel_first(prepared)
        c = x.shape[1]
        scale, bias = _affine(arrays, c, prepared.dtype)
        mean = arrays.get("running_mean", np.zeros(c, prepared.dtype))
        var = arrays.get("running_var", np.ones(c, prepared.dtype))
        attributes: dict[str, Any] = {"training_mode": int(training), **_eps(prepared)}
        momentum = prepared.sample.kwargs.get("momentum")
        if momentum is not None:
            attributes["momentum"] = 1.0 - momentum  # ONNX: the weight of the old value
        inputs = {"X": x, "scale": scale, "B": bias, "input_mean": mean, "input_var": var}
        outputs = 3 if training else 1
        return Node("BatchNormalization", 15, inputs, attributes, outputs), back

    return node


def _trailing(prepared: Prepared) -> tuple[np.ndarray, int, Callable[[np.ndarray], np.ndarray]]:
    axes = get_op(prepared.case.op).param_axes(prepared.sample)
    x = _arrays(prepared)["x"]
    order = [a for a in range(x.ndim) if a not in axes] + list(axes)
    inverse = sorted(range(x.ndim), key=order.__getitem__)
    return x.transpose(order), x.ndim - len(axes), lambda y: y.transpose(inverse)


def _layer_normalization(prepared: Prepared) -> Layout:
    x, axis, back = _trailing(prepared)
    arrays = _arrays(prepared)
    scale = arrays.get("gamma", np.ones(x.shape[axis:], prepared.dtype))
    inputs = {"X": x, "Scale": scale}
    if "beta" in arrays:
        inputs["B"] = arrays["beta"]
    return Node("LayerNormalization", 17, inputs, {"axis": axis, **_eps(prepared)}), back


def _rms_normalization(prepared: Prepared) -> Layout:
    x, axis, back = _trailing(prepared)
    scale = _arrays(prepared).get("gamma", np.ones(x.shape[axis:], prepared.dtype))
    attributes = {"axis": axis, **_eps(prepared)}
    return Node("RMSNormalization", 23, {"X": x, "scale": scale}, attributes), back


def _instance_normalization(prepared: Prepared) -> Layout:
    x, back = _channel_first(prepared)
    scale, bias = _affine(_arrays(prepared), x.shape[1], prepared.dtype)
    inputs = {"input": x, "scale": scale, "B": bias}
    return Node("InstanceNormalization", 22, inputs, _eps(prepared)), back


def _lrn(prepared: Prepared) -> Layout:
    x, back = _channel_first(prepared)
    if x.ndim != 4:
        msg = "ONNX LRN runs on 4-D input here (onnxruntime and the reference evaluator)"
        raise FrameworkLacksError(msg)
    kwargs = prepared.sample.kwargs
    attributes = {
        "size": prepared.sample.args["size"],
        "alpha": float(kwargs["alpha"]),
        "beta": float(kwargs["beta"]),
        "bias": float(kwargs["k"]),
    }
    return Node("LRN", 13, {"X": x}, attributes), back


def _group_normalization(opset: int) -> Callable[[Prepared], Layout]:
    def node(prepared: Prepared) -> Layout:
        x, back = _channel_first(prepared)
        groups = prepared.sample.args["num_groups"]
        scale, bias = _affine(_arrays(prepared), x.shape[1], prepared.dtype)
        if opset == 18:  # one value per group: each group's first channel's
            size = x.shape[1] // groups
            scale, bias = scale[::size], bias[::size]
        inputs = {"X": x, "scale": scale, "bias": bias}
        attributes = {"num_groups": groups, **_eps(prepared)}
        return Node("GroupNormalization", opset, inputs, attributes), back

    return node


OUTPUTS = ("y", "running_mean", "running_var")


def _run(layout: Callable[[Prepared], Layout], runner: Runner) -> Any:
    def run(prepared: Prepared, _model: Model, _backward: bool) -> Evaluation:
        if prepared.dtype not in DTYPES:
            msg = f"{prepared.dtype} inputs are not run through ONNX here"
            raise FrameworkLacksError(msg)
        node, back = layout(prepared)
        results = runner(node.model(), node.inputs, node.outputs)
        names = OUTPUTS[: len(results)] if get_op(prepared.case.op).running_stats else ("y",)
        values = {name: np.asarray(r) for name, r in zip(names, results, strict=False)}
        values["y"] = back(values["y"])
        return Evaluation(
            {k: v.astype(np.float64) for k, v in values.items()},
            {k: str(v.dtype) for k, v in values.items()},
        )

    return run


def run_onnxruntime(model: Any, inputs: dict[str, np.ndarray], _outputs: int) -> list[Any]:
    """Run ``model`` with onnxruntime's CPU provider; a missing kernel is "not implemented".

    onnxruntime's own log stays quiet below fatal: every error it logs is raised too, and
    reported with its row.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        if "NOT_IMPLEMENTED" in str(error):
            raise FrameworkLacksError(str(error).splitlines()[0]) from error
        if "size_ % 2 == 1" in str(error):
            msg = "onnxruntime's LRN takes an odd size only"
            raise FrameworkLacksError(msg) from error
        raise
    return session.run(None, inputs)


def run_reference(model: Any, inputs: dict[str, np.ndarray], _outputs: int) -> list[Any]:
    """Run ``model`` with ``onnx.reference.ReferenceEvaluator``."""
    from onnx.reference import ReferenceEvaluator

    outputs = ReferenceEvaluator(model).run(None, inputs)
    assert isinstance(outputs, list)  # run returns a dict only when asked for intermediate=True
    return outputs


LAYOUTS: tuple[tuple[str, str, Callable[[Prepared], Layout], Model], ...] = (
    ("batch_norm", "BatchNormalization-15 (training_mode=1)", _batch_normalization(True), MODEL),
    (
        "batch_norm_train",
        "BatchNormalization-15 (training_mode=1, running statistics)",
        _batch_normalization(True),
        MODEL,
    ),
    ("batch_norm_inference", "BatchNormalization-15", _batch_normalization(False), MODEL),
    ("layer_norm", "LayerNormalization-17", _layer_normalization, MODEL),
    ("instance_norm", "InstanceNormalization-22", _instance_normalization, MODEL),
    ("group_norm", "GroupNormalization-21", _group_normalization(21), STASHED),
    (
        "group_norm",
        "GroupNormalization-18 (scale and bias per group)",
        _group_normalization(18),
        MODEL.replace(group_affine="per_group"),
    ),
    ("rms_norm", "RMSNormalization-23", _rms_normalization, MODEL),
    ("local_response_norm", "LRN-13", _lrn, MODEL),
)


def _bindings(framework: str, runner: Runner) -> tuple[Binding, ...]:
    return tuple(
        Binding(
            op,
            f"{framework} {label}",
            framework,
            _run(layout, runner),
            model,
            backward=False,
            dtypes=DTYPES,
            notes="forward only: ONNX has no backward",
        )
        for op, label, layout, model in LAYOUTS
    )


def _onnxruntime_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _onnx_versions() -> dict[str, str]:
    import onnx

    return {"onnx": onnx.__version__}


ONNXRUNTIME = Adapter(
    name="onnxruntime",
    description="ONNX one-node models run by onnxruntime's CPU provider (forward only)",
    model=MODEL,
    requires=("onnx", "onnxruntime"),
    bindings=_bindings("onnxruntime", run_onnxruntime),
    versions=_onnxruntime_versions,
    install_hint="pip install -e '.[onnx]'",
)

ONNX_REFERENCE = Adapter(
    name="onnx-reference",
    description="ONNX one-node models run by onnx.reference.ReferenceEvaluator (forward only)",
    model=MODEL,
    requires=("onnx",),
    bindings=_bindings("onnx-reference", run_reference),
    versions=_onnx_versions,
    install_hint="pip install -e '.[onnx]'",
)


# ----------------------------------------------------------------------------- backend tests

MVN_EPS = 1e-9
"""MeanVarianceNormalization's ``eps``, fixed in its function body and added to the
standard deviation."""


@dataclass(frozen=True)
class Operator:
    """An ONNX operator that computes an op: ``node(prepared)`` builds it for a case,
    ``sample`` turns the op's case into the operator's (its fixed choices), and ``model``
    is the convention its rows are judged under."""

    op: str
    label: str
    node: Callable[[Prepared], Node]
    model: Model
    sample: Callable[[Prepared], Prepared] = lambda prepared: prepared


def _layout(op: str, label: str) -> Callable[[Prepared], Node]:
    """The node the onnx adapter builds for ``op`` (its binding labelled ``label``)."""
    found = next(layout for o, name, layout, _ in LAYOUTS if o == op and name == label)
    return lambda prepared: found(prepared)[0]


def _model(op: str, label: str) -> Model:
    return next(model for o, name, _, model in LAYOUTS if o == op and name == label)


def _at_opset(node: Callable[[Prepared], Node], opset: int) -> Callable[[Prepared], Node]:
    """``node`` at another opset of the same semantics."""

    def build(prepared: Prepared) -> Node:
        found = node(prepared)
        return Node(found.op_type, opset, found.inputs, found.attributes, found.outputs)

    return build


def _mvn_sample(prepared: Prepared) -> Prepared:
    """A batch-norm case as MVN computes it: no affine, its own ``eps`` on the deviation."""
    sample = prepared.sample.replace(gamma=None, beta=None, eps=MVN_EPS, eps_mode="add_std")
    return Prepared(prepared.case, prepared.dtype, sample, prepared.dy)


def _mvn_node(prepared: Prepared) -> Node:
    x = np.asarray(prepared.sample.args["x"], dtype=prepared.dtype)
    axes = [a for a in range(x.ndim) if a != 1]
    return Node("MeanVarianceNormalization", 13, {"X": x}, {"axes": axes})


def _lp_sample(prepared: Prepared) -> Prepared:
    sample = prepared.sample.replace(g=None)
    return Prepared(prepared.case, prepared.dtype, sample, prepared.dy)


def _lp_node(prepared: Prepared) -> Node:
    v = np.asarray(prepared.sample.args["v"], dtype=prepared.dtype)
    return Node("LpNormalization", 1, {"input": v}, {"axis": 1, "p": 2})


_BN_STATISTICS = "BatchNormalization-15 (training_mode=1, running statistics)"
BACKEND_TESTS: tuple[Operator, ...] = (
    Operator(
        "batch_norm_train",
        "BatchNormalization-15",
        _layout("batch_norm_train", _BN_STATISTICS),
        _model("batch_norm_train", _BN_STATISTICS),
    ),
    Operator(
        "batch_norm_inference",
        "BatchNormalization-15",
        _layout("batch_norm_inference", "BatchNormalization-15"),
        _model("batch_norm_inference", "BatchNormalization-15"),
    ),
    Operator(
        "instance_norm",
        "InstanceNormalization-6",
        _at_opset(_layout("instance_norm", "InstanceNormalization-22"), 6),
        _model("instance_norm", "InstanceNormalization-22"),
    ),
    Operator(
        "layer_norm",
        "LayerNormalization-17",
        _layout("layer_norm", "LayerNormalization-17"),
        _model("layer_norm", "LayerNormalization-17"),
    ),
    Operator(
        "group_norm",
        "GroupNormalization-21",
        _layout("group_norm", "GroupNormalization-21"),
        _model("group_norm", "GroupNormalization-21"),
    ),
    Operator(
        "batch_norm",
        "MeanVarianceNormalization-13",
        _mvn_node,
        MODEL.replace(eps_mode="add_std", batch_norm_eps=MVN_EPS),
        _mvn_sample,
    ),
    Operator("weight_norm", "LpNormalization-1", _lp_node, MODEL, _lp_sample),
    Operator(
        "rms_norm",
        "RMSNormalization-23",
        _layout("rms_norm", "RMSNormalization-23"),
        _model("rms_norm", "RMSNormalization-23"),
    ),
)
"""Every operator whose ONNX backend tests ``export-golden --format onnx-backend`` writes
(:mod:`conformance.onnx_backend`), with the op whose cases it takes."""
