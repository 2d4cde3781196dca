"""tf-keras (Keras 2 on TensorFlow): ``BatchNormalization``, in training (with its moving
statistics) and inference, differentiated by ``tf.GradientTape``.

Declared convention: ``FRAMEWORK_MODELS["tf-keras"]``, :data:`normref.conventions.KERAS`
(momentum 0.99 weighing the old value, ``epsilon=1e-3``, biased moving variance, statistics
of float16 and bfloat16 in float32; TensorFlow keeps float64 in float64). Its layer holds
its weights in float32 for float16 and bfloat16 input. ``fused=None`` (the default) runs
TensorFlow's fused kernel for input of rank 4 or 5 with the channels at 1 or last, except in
float64: the fused kernel updates the moving variance with the unbiased batch variance
(:data:`FUSED`), the other path with the biased one, so the training step is bound with
``fused=False`` and ``fused=True`` both (an input the fused kernel does not take is "not
implemented"). Sources are cited in ``docs/conventions.md``.

The layer's weights are tf.Variables: the case's values are assigned to them and the
gradients taken with respect to them; the moving statistics are read back from the
variables after the (stateful) training call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.adapters.arrays import Evaluation, TensorflowKind
from conformance.adapters.base import Adapter, Binding, FrameworkLacksError
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

FRAMEWORK = "tf-keras"
MODEL = FRAMEWORK_MODELS["tf-keras"]
FUSED = MODEL.replace(running_var_correction=1)
"""The fused kernel: the moving variance updated with the unbiased batch variance."""

WEIGHTS = {
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
"""tf-keras's weight names -> the case's."""


def param_dtype(dtype: str) -> str:
    """tf-keras holds float16 and bfloat16 layers' weights in float32."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(":")[0]


def _run(
    train: bool, state: bool, fused: bool | None
) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        kind = TensorflowKind()
        tf = kind.tf
        import tf_keras

        args, kwargs = prepared.sample.args, prepared.sample.kwargs
        x = args["x"]
        options: dict[str, Any] = {
            "axis": get_op(prepared.case.op).param_axes(prepared.sample)[0] % x.ndim,
            "scale": args.get("gamma") is not None,
            "center": args.get("beta") is not None,
            "fused": fused,
            "dtype": prepared.dtype,
        }
        if kwargs.get("momentum") is not None:
            options["momentum"] = 1.0 - kwargs["momentum"]  # the old value's weight
        if not prepared.case.default_eps:
            options["epsilon"] = kwargs["eps"]
        try:
            layer = tf_keras.layers.BatchNormalization(**options)
            layer.build(x.shape)
        except ValueError as error:
            if fused and "fused" in str(error):
                raise FrameworkLacksError(str(error).splitlines()[0]) from error
            raise
        held = param_dtype(prepared.dtype)
        for weight in layer.weights:
            value = args.get(WEIGHTS.get(_short(weight.name), ""))
            if value is not None:
                weight.assign(kind.asarray(value, held))
        xt = kind.asarray(x, prepared.dtype)
        trainable = list(layer.trainable_weights)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=train)
        outputs = {"y": y}
        if state:
            outputs.update({WEIGHTS[_short(w.name)]: w for w in layer.non_trainable_weights})
        if backward:
            cotangent = kind.asarray(prepared.dy, y.dtype.name)
            grads = tape.gradient(y, [xt, *trainable], output_gradients=cotangent)
            names = ["x", *(WEIGHTS[_short(w.name)] for w in trainable)]
            outputs.update({f"d{n}": g for n, g in zip(names, grads, strict=True)})
        values = {k: kind.to_numpy(v) for k, v in outputs.items()}
        dtypes = {k: v.dtype.name for k, v in outputs.items()}
        return Evaluation({k: np.asarray(v) for k, v in values.items()}, dtypes)

    return run


def binding(
    op: str, label: str, run: Callable[[Prepared, Model, bool], Evaluation], model: Model = MODEL
) -> Binding:
    """A tf-keras binding (weights in :func:`param_dtype`)."""
    return Binding(op, label, FRAMEWORK, run, model, param_dtype=param_dtype)


BINDINGS = (
    binding(
        "batch_norm",
        "tf_keras.layers.BatchNormalization (training)",
        _run(True, False, None),
    ),
    binding(
        "batch_norm_train",
        "tf_keras.layers.BatchNormalization (training, fused=False)",
        _run(True, True, False),
    ),
    binding(
        "batch_norm_train",
        "tf_keras.layers.BatchNormalization (training, fused=True)",
        _run(True, True, True),
        FUSED,
    ),
    binding(
        "batch_norm_inference",
        "tf_keras.layers.BatchNormalization (inference)",
        _run(False, False, None),
    ),
)


def _versions() -> dict[str, str]:
    tf = TensorflowKind().tf
    import tf_keras

    return {"tf-keras": tf_keras.__version__, "tensorflow": tf.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="tf-keras (Keras 2) BatchNormalization on TensorFlow (tf.GradientTape backward)",
    model=MODEL,
    requires=("tf_keras", "tensorflow"),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[tf-keras]'",
    replicas_unavailable=(
        "BatchNormalization(synchronized=True) runs on TensorFlow under a tf.distribute "
        "strategy only: the suite does not run it"
    ),
)
