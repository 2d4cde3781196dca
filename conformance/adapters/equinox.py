"""Equinox: ``nn.LayerNorm``, ``GroupNorm``, ``RMSNorm``, ``BatchNorm``, ``SpectralNorm`` and
``WeightNorm``; backward by ``jax.vjp``.

Declared convention: ``FRAMEWORK_MODELS["equinox"]``, :data:`normref.conventions.EQUINOX`
(``eps`` 1e-5 everywhere, momentum weighing the old value, biased two-pass variances, float32
statistics for float16 and bfloat16, ``SpectralNorm`` iterating ``u`` first with
``x / max(norm, eps)``, ``WeightNorm`` without ``eps``, a zero norm divided by);
``BatchNorm`` computes its statistics in the input's dtype (:data:`BATCH`). Sources are
cited in ``docs/conventions.md``.

Equinox's layers act on one example: they are ``jax.vmap``-ed over the leading axes. Each
module is built with the case's dtype (``dtype=``) and its parameters replaced by the
case's (``eqx.tree_at``). ``LayerNorm`` and ``RMSNorm`` normalize the whole example (the
normalized axes are moved last, the others flattened into the mapped axis); ``GroupNorm``
and ``BatchNorm`` take the example's channels first. ``RMSNorm`` is built without its
default bias (normref's RMS norm has none). ``BatchNorm`` runs with ``mode="batch"``
(batch statistics in training; the default ``"ema"`` normalizes with the updated running
averages instead), its state holding the case's running statistics as the hidden averages
with a counter of 0, where inference divides them by 1. ``SpectralNorm`` and ``WeightNorm``
wrap a module whose weight, its unit axis first, is the case's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.adapters.arrays import Evaluation, JaxKind, Native
from conformance.adapters.base import Adapter, Binding, evaluate_on, unit_axis
from conformance.adapters.replicated import label, sharded
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

FRAMEWORK = "equinox"
MODEL = FRAMEWORK_MODELS["equinox"]
BATCH = MODEL.replace(low_precision_compute="input")
"""``BatchNorm``: no promotion, statistics in the input's dtype."""

Call = Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]


def _eqx() -> Any:
    import equinox as eqx

    return eqx


def _eps(prepared: Prepared) -> dict[str, float]:
    if prepared.case.default_eps:
        return {}
    return {"eps": prepared.sample.kwargs["eps"]}


def _axes(prepared: Prepared) -> tuple[int, ...]:
    x = prepared.sample.args["x"]
    return tuple(a % x.ndim for a in get_op(prepared.case.op).param_axes(prepared.sample))


def _dtype(prepared: Prepared) -> Any:
    import jax.numpy as jnp

    return getattr(jnp, prepared.dtype)


def _with(module: Any, arrays: dict[str, Native], names: dict[str, str]) -> Any:
    """``module`` with its attributes ``names`` (equinox's -> the case's) set to the case's."""
    found = [(attr, arrays[name]) for attr, name in names.items() if name in arrays]
    if not found:
        return module
    return _eqx().tree_at(
        lambda m: tuple(getattr(m, a) for a, _ in found), module, tuple(v for _, v in found)
    )


_AFFINE = {"weight": "gamma", "bias": "beta"}


def _per_example(norm: str) -> Call:
    """``LayerNorm`` or ``RMSNorm`` of the normalized axes, mapped over the others."""

    def call(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
        import jax
        import jax.numpy as jnp

        x, axes = arrays["x"], _axes(prepared)
        order = [a for a in range(x.ndim) if a not in axes] + list(axes)
        moved = jnp.transpose(x, order)
        shape = moved.shape[len(order) - len(axes) :]
        flat = moved.reshape((-1, *shape))
        affine = {"use_weight": "gamma" in arrays}
        if norm == "LayerNorm":
            affine["use_bias"] = "beta" in arrays
        else:
            affine["use_bias"] = False
        module = getattr(_eqx().nn, norm)(shape, dtype=_dtype(prepared), **affine, **_eps(prepared))
        y = jax.vmap(_with(module, arrays, _AFFINE))(flat)
        inverse = sorted(range(x.ndim), key=order.__getitem__)
        return jnp.transpose(y.reshape(moved.shape), inverse), {}

    return call


def _channels_first(x: Native, channel: int) -> Native:
    import jax.numpy as jnp

    return jnp.moveaxis(x, channel, 1)


def _group_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax
    import jax.numpy as jnp

    channel = _axes(prepared)[0]
    x = _channels_first(arrays["x"], channel)
    module = _eqx().nn.GroupNorm(
        prepared.sample.args["num_groups"],
        x.shape[1],
        channelwise_affine="gamma" in arrays,
        dtype=_dtype(prepared),
        **_eps(prepared),
    )
    y = jax.vmap(_with(module, arrays, _AFFINE))(x)
    return jnp.moveaxis(y, 1, channel), {}


def _batch_norm(train: bool, state: bool) -> Call:
    across = _batch_norm_across(train, state)
    return lambda arrays, prepared: across(arrays, prepared, None)


def _batch_norm_across(train: bool, state: bool) -> Any:
    """``BatchNorm`` over the mapped examples and, given ``axis_name``, over the replicas."""

    def call(
        arrays: dict[str, Native], prepared: Prepared, axis_name: str | None
    ) -> tuple[Native, dict[str, Native]]:
        import jax
        import jax.numpy as jnp

        eqx = _eqx()
        channel = _axes(prepared)[0]
        x = _channels_first(arrays["x"], channel)
        batch_weight = prepared.sample.kwargs.get("momentum")
        momentum = 0.99 if batch_weight is None else 1.0 - batch_weight  # the old value's
        module, stats = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
            x.shape[1],
            axis_name="batch" if axis_name is None else (axis_name, "batch"),
            channelwise_affine="gamma" in arrays,
            momentum=momentum,
            mode="batch",
            dtype=_dtype(prepared),
            **_eps(prepared),
        )
        if "running_mean" in arrays:
            given = (arrays["running_mean"], arrays["running_var"])
            stats = stats.set(module.batch_state_index, given)
        module = _with(module, arrays, _AFFINE)
        y, new = jax.vmap(
            lambda example, s: module(example, s, inference=not train),
            axis_name="batch",
            in_axes=(0, None),
            out_axes=(0, None),
        )(x, stats)
        y = jnp.moveaxis(y, 1, channel)
        if not state:
            return y, {}
        mean, var = new.get(module.batch_state_index)
        return y, {"running_mean": mean, "running_var": var}

    return call


def _holder(weight: Native) -> Any:
    """A module whose one array, ``weight``, is what its call returns."""
    eqx = _eqx()

    class Weight(eqx.Module):  # type: ignore[name-defined]
        weight: Any

        def __call__(self, _x: Any) -> Native:
            return self.weight

    return Weight(weight)


def _spectral(train: bool) -> Call:
    def call(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
        import jax
        import jax.numpy as jnp

        eqx = _eqx()
        axis = unit_axis(prepared)
        w = jnp.moveaxis(arrays["w"], axis, 0)
        steps = prepared.sample.kwargs["n_power_iterations"]
        module, stats = eqx.nn.make_with_state(eqx.nn.SpectralNorm)(
            _holder(jax.lax.stop_gradient(w)),
            "weight",
            num_power_iterations=max(steps, 1),
            eps=prepared.sample.kwargs["eps"],
            key=jax.random.PRNGKey(0),
        )
        stats = stats.set(module.uv_index, (arrays["u"], arrays["v"]))
        module = eqx.tree_at(lambda m: m.layer.weight, module, w)
        y, new = module(jnp.zeros(()), stats, inference=not train)
        if not train:
            return jnp.moveaxis(y, 0, axis), {}
        u, v = new.get(module.uv_index)
        return jnp.moveaxis(y, 0, axis), {"u": u, "v": v}

    return call


def _weight_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax.numpy as jnp

    axis = unit_axis(prepared)
    v = jnp.moveaxis(arrays["v"], axis, 0)
    module = _eqx().nn.WeightNorm(_holder(v), "weight", axis=0)
    g = arrays.get("g")
    if g is None:  # the unit-norm direction: g = 1 in every unit
        g = jnp.ones(v.shape[0], v.dtype)
    module = _eqx().tree_at(lambda m: m.g, module, g.reshape(module.g.shape))
    return jnp.moveaxis(module(jnp.zeros(())), 0, axis), {}


def _run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        kind = JaxKind()
        return evaluate_on(kind, prepared, lambda arrays: call(arrays, prepared), backward=backward)

    return run


def binding(op: str, label: str, call: Call, model: Model = MODEL, **extra: Any) -> Binding:
    """An equinox binding (declared convention :data:`MODEL` unless ``model`` is given)."""
    return Binding(op, label, FRAMEWORK, _run(call), model, **extra)


BINDINGS = (
    binding("layer_norm", "equinox.nn.LayerNorm", _per_example("LayerNorm")),
    binding("group_norm", "equinox.nn.GroupNorm", _group_norm),
    binding("rms_norm", "equinox.nn.RMSNorm (use_bias=False)", _per_example("RMSNorm")),
    binding("batch_norm", "equinox.nn.BatchNorm (mode='batch')", _batch_norm(True, False), BATCH),
    binding(
        "batch_norm_train",
        "equinox.nn.BatchNorm (mode='batch', state)",
        _batch_norm(True, True),
        BATCH,
    ),
    binding(
        "batch_norm_inference",
        "equinox.nn.BatchNorm (mode='batch', inference)",
        _batch_norm(False, False),
        BATCH,
    ),
    binding("spectral_norm", "equinox.nn.SpectralNorm (inference)", _spectral(False)),
    binding(
        "spectral_norm_train",
        "equinox.nn.SpectralNorm (training)",
        _spectral(True),
        outputs=("y", "u", "v"),
    ),
    binding("weight_norm", "equinox.nn.WeightNorm", _weight_norm),
)


def replica_bindings(replicas: int) -> tuple[Binding, ...]:
    """``BatchNorm(axis_name=(replicas, batch))`` with its input sharded over ``replicas``
    devices."""
    name = "equinox.nn.BatchNorm (mode='batch', axis_name)"
    return (
        binding(
            "batch_norm",
            label(name, replicas),
            sharded(_batch_norm_across(True, False), replicas, check_vma=False),
            BATCH,
        ),
        binding(
            "batch_norm_train",
            label(f"{name[:-1]}, state)", replicas),
            sharded(_batch_norm_across(True, True), replicas, check_vma=False),
            BATCH,
        ),
    )


def _versions() -> dict[str, str]:
    import equinox
    import jax

    return {"equinox": equinox.__version__, "jax": jax.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="Equinox normalization layers, vmapped over the batch (jax.vjp backward)",
    model=MODEL,
    requires=("equinox", "jax"),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[equinox]'",
    compiler="jax.jit",
    replicas=replica_bindings,
)
