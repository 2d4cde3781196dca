"""Keras 3: ``BatchNormalization``, ``LayerNormalization`` (and its ``rms_scaling``),
``RMSNormalization``, ``GroupNormalization`` and ``SpectralNormalization``, called without
side effects (``Layer.stateless_call``) and differentiated by the backend's autograd.

The backend is ``KERAS_BACKEND``, jax unless it is set (set before Keras is first imported;
``jax.vjp``, ``torch.autograd`` or ``tf.GradientTape`` then differentiate). Each layer is built
with the case's dtype as its dtype policy (``dtype="float16"``, ... ``"float64"``), so its
weights are held in that dtype, and the suite reports what Keras then computes.

Declared convention: ``FRAMEWORK_MODELS["keras"]``, :data:`normref.conventions.KERAS`
(momentum 0.99 as the weight of the old value, biased running variance, ``eps`` 1e-3 for
batch, layer and group norm and 1e-6 for RMS norm, statistics of float16 and bfloat16 in
float32) with ``stash_dtype="float32"``: on the jax and torch backends Keras's type
promotion maps float64 to float32, so a float64 layer computes in float32 and returns
float64; the tensorflow backend keeps float64. ``SpectralNormalization`` computes in the
kernel's dtype and normalizes by ``x * min(rsqrt(sum(x * x)), 1 / 1e-7)``, ignoring the
case's ``eps`` (:data:`SPECTRAL`). Sources are cited in ``docs/conventions.md``.

``LayerNormalization(rms_scaling=True)`` is bound to RMS norm, which it claims to compute
(Keras itself warns that it scales by the variance instead); ``SpectralNormalization``
wraps a ``Dense`` layer whose kernel is the case's weight with its unit axis last and its
other axes flattened (Keras's own reshape): its training step runs in a
``keras.StatelessScope`` and the kernel and ``vector_u`` it assigns are read back (``v`` is
not kept: each step starts from ``u``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from conformance.adapters.arrays import (
    ArrayKind,
    Evaluation,
    JaxKind,
    Native,
    TensorflowKind,
    TorchKind,
)
from conformance.adapters.base import Adapter, Binding, evaluate_on, unit_axis
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

FRAMEWORK = "keras"
BACKEND = os.environ.get("KERAS_BACKEND", "jax")
"""The backend Keras runs on: ``KERAS_BACKEND``, else jax."""

MODEL = (
    FRAMEWORK_MODELS["keras"]
    if BACKEND != "tensorflow"
    else FRAMEWORK_MODELS["keras"].replace(stash_dtype="input")
)
SPECTRAL = MODEL.replace(stash_dtype="input", low_precision_compute="input", fixed_eps=1e-7)
"""``SpectralNormalization``: no promotion at all, and ``backend.epsilon()`` (1e-7) whatever
``eps`` the case gives."""

Call = Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]

_KINDS: dict[str, Callable[[], ArrayKind]] = {
    "jax": JaxKind,
    "torch": TorchKind,
    "tensorflow": TensorflowKind,
}


def _kind() -> ArrayKind:
    """The backend's array kind, created before Keras is imported (jax's float64 mode)."""
    return _KINDS[BACKEND]()


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", BACKEND)
    import keras

    if keras.backend.backend() != BACKEND:
        msg = (
            f"keras was imported on its {keras.backend.backend()} backend before the adapter "
            f"could select {BACKEND}: set KERAS_BACKEND before keras is first imported"
        )
        raise RuntimeError(msg)
    return keras


def _eps(prepared: Prepared) -> dict[str, float]:
    if prepared.case.default_eps:
        return {}
    return {"epsilon": prepared.sample.kwargs["eps"]}


def _axes(prepared: Prepared) -> list[int]:
    return list(get_op(prepared.case.op).param_axes(prepared.sample))


def _affine(arrays: dict[str, Native]) -> dict[str, bool]:
    return {"scale": "gamma" in arrays, "center": "beta" in arrays}


def _stateless(
    layer: Any, arrays: dict[str, Native], names: dict[str, str], *inputs: Native, **options: Any
) -> tuple[Native, dict[str, Native]]:
    """``layer``'s output on ``inputs`` with its weights named in ``names`` (Keras's name ->
    the case's) replaced by the case's arrays, and its updated non-trainable weights."""
    layer.build(tuple(inputs[0].shape))

    def value(variable: Any) -> Native:
        name = names.get(variable.name, "")
        return arrays.get(name, variable.value)

    trainable = [value(v) for v in layer.trainable_variables]
    fixed = [value(v) for v in layer.non_trainable_variables]
    y, updated = layer.stateless_call(trainable, fixed, *inputs, **options)
    state = {
        names[v.name]: new
        for v, new in zip(layer.non_trainable_variables, updated, strict=True)
        if v.name in names
    }
    return y, state


_AFFINE = {"gamma": "gamma", "beta": "beta"}
_STATISTICS = {**_AFFINE, "moving_mean": "running_mean", "moving_variance": "running_var"}


def _batch_norm(train: bool, state: bool) -> Call:
    def call(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict[str, Native]]:
        batch_weight = prepared.sample.kwargs.get("momentum")
        extra = {} if batch_weight is None else {"momentum": 1.0 - batch_weight}  # old weight
        layer = _keras().layers.BatchNormalization(
            axis=_axes(prepared)[0],
            dtype=prepared.dtype,
            **extra,
            **_eps(prepared),
            **_affine(arrays),
        )
        y, new = _stateless(layer, arrays, _STATISTICS, arrays["x"], training=train)
        return y, (new if state else {})

    return call


def _layer_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    layer = _keras().layers.LayerNormalization(
        axis=_axes(prepared), dtype=prepared.dtype, **_eps(prepared), **_affine(arrays)
    )
    return _stateless(layer, arrays, _AFFINE, arrays["x"])


def _rms_scaling(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import warnings

    with warnings.catch_warnings():  # rms_scaling is deprecated, with a warning
        warnings.simplefilter("ignore")
        layer = _keras().layers.LayerNormalization(
            axis=_axes(prepared),
            rms_scaling=True,
            scale="gamma" in arrays,
            dtype=prepared.dtype,
            **_eps(prepared),
        )
    return _stateless(layer, arrays, _AFFINE, arrays["x"])


def _rms_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    layer = _keras().layers.RMSNormalization(
        axis=_axes(prepared), dtype=prepared.dtype, **_eps(prepared)
    )
    # without the case's gamma the layer's own scale, initialized to ones, applies
    return _stateless(layer, arrays, {"scale": "gamma"}, arrays["x"])


def _group_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    layer = _keras().layers.GroupNormalization(
        groups=prepared.sample.args["num_groups"],
        axis=_axes(prepared)[0],
        dtype=prepared.dtype,
        **_eps(prepared),
        **_affine(arrays),
    )
    return _stateless(layer, arrays, _AFFINE, arrays["x"])


def _spectral_norm_train(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    """One training step of ``SpectralNormalization(Dense)``: the kernel and ``vector_u`` it
    assigns, read back from a ``StatelessScope`` holding the case's weight and ``u``."""
    keras = _keras()
    ops = keras.ops
    axis = unit_axis(prepared)
    w = ops.moveaxis(arrays["w"], axis, -1)
    units = w.shape[-1]
    kernel = ops.reshape(w, (math.prod(w.shape[:-1]), units))
    dense = keras.layers.Dense(units, use_bias=False, dtype=prepared.dtype)
    layer = keras.layers.SpectralNormalization(
        dense, power_iterations=prepared.sample.kwargs["n_power_iterations"], dtype=prepared.dtype
    )
    x = ops.zeros((1, kernel.shape[0]), prepared.dtype)
    layer.build(tuple(x.shape))
    given = [(layer.kernel, kernel), (layer.vector_u, ops.reshape(arrays["u"], (1, units)))]
    with keras.StatelessScope(state_mapping=given) as scope:
        layer(x, training=True)
        normalized = scope.get_current_value(layer.kernel)
        u = scope.get_current_value(layer.vector_u)
    y = ops.moveaxis(ops.reshape(normalized, w.shape), -1, axis)
    return y, {"u": ops.reshape(u, (units,))}


def _run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        kind = _kind()
        return evaluate_on(kind, prepared, lambda arrays: call(arrays, prepared), backward=backward)

    return run


def binding(op: str, label: str, call: Call, model: Model = MODEL, **extra: Any) -> Binding:
    """A Keras binding (declared convention :data:`MODEL` unless ``model`` is given)."""
    return Binding(op, label, FRAMEWORK, _run(call), model, **extra)


BINDINGS = (
    binding(
        "batch_norm",
        "keras.layers.BatchNormalization (training)",
        _batch_norm(train=True, state=False),
    ),
    binding(
        "batch_norm_train",
        "keras.layers.BatchNormalization (training, moving statistics)",
        _batch_norm(train=True, state=True),
    ),
    binding(
        "batch_norm_inference",
        "keras.layers.BatchNormalization (inference)",
        _batch_norm(train=False, state=False),
    ),
    binding("layer_norm", "keras.layers.LayerNormalization", _layer_norm),
    binding("rms_norm", "keras.layers.RMSNormalization", _rms_norm),
    binding(
        "rms_norm",
        "keras.layers.LayerNormalization (rms_scaling=True)",
        _rms_scaling,
        notes="deprecated by Keras, which warns that it scales by the variance, not the RMS",
    ),
    binding("group_norm", "keras.layers.GroupNormalization", _group_norm),
    binding(
        "spectral_norm_train",
        "keras.layers.SpectralNormalization (training)",
        _spectral_norm_train,
        SPECTRAL,
        outputs=("y", "u"),
    ),
)


def _check_backend() -> str | None:
    if BACKEND in _KINDS:
        return None
    return f"KERAS_BACKEND={BACKEND!r}: the suite drives Keras on {', '.join(_KINDS)} only"


def _versions() -> dict[str, str]:
    _kind()
    keras = _keras()
    return {"keras": keras.__version__, "keras backend": keras.backend.backend()}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description=(
        f"Keras 3 normalization layers on the {BACKEND} backend (KERAS_BACKEND), "
        "stateless calls, the backend's autograd"
    ),
    model=MODEL,
    requires=("keras", BACKEND if BACKEND in _KINDS else "jax"),
    check=_check_backend,
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[keras]'",
    replicas_unavailable=(
        "BatchNormalization(synchronized=True) runs on TensorFlow under a tf.distribute "
        "strategy only: the suite does not run it"
    ),
)
