"""Flax (linen): BatchNorm with mutable ``batch_stats``, LayerNorm, GroupNorm, InstanceNorm,
RMSNorm, WeightNorm, SpectralNorm; backward by ``jax.vjp``.

Declared convention: ``FRAMEWORK_MODELS["flax"]``, :data:`normref.conventions.FLAX`
(momentum 0.99 as the weight of the old value, biased running variance, ``eps``
1e-5 for batch norm and 1e-6 for the others, the fast variance
``max(0, E[x^2] - E[x]^2)``, float32 statistics, and an output dtype promoted
with the parameters') with WeightNorm's and SpectralNorm's normalization
``x * rsqrt(sum(x * x) + 1e-12)``. The modules run with flax's defaults:
parameters and batch statistics in float32 (float64 for float64 input),
``use_fast_variance=True``, ``force_float32_reductions=True``. Sources are
cited in ``docs/conventions.md``.

WeightNorm and SpectralNorm wrap a module whose one parameter, ``kernel``, is
the case's weight. SpectralNorm flattens every axis but the last into the
fan-in, so the unit axis is moved last and back; it keeps ``u`` and ``sigma``
in ``batch_stats`` (not ``v``: each step starts from ``u``) and has no evaluation
without an iteration, so it checks the training step only.

Layouts: BatchNorm takes the channel axis as ``axis`` and InstanceNorm as
``feature_axes``; LayerNorm and RMSNorm take the normalized axes as both
``reduction_axes`` and ``feature_axes`` (so their parameters have the
normalized axes' shape, as normref's); GroupNorm needs channels last, so the
channel axis is moved there and back.
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

FRAMEWORK = "flax"
MODEL = FRAMEWORK_MODELS["flax"]

Call = Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]


def param_dtype(dtype: str) -> str:
    """flax's default ``param_dtype`` is float32; float64 input gets float64 parameters."""
    return "float64" if dtype == "float64" else "float32"


def _linen() -> Any:
    import flax.linen as nn

    return nn


def _common(arrays: dict[str, Native], prepared: Prepared, *, bias: bool = True) -> dict:
    import jax.numpy as jnp

    options: dict[str, Any] = {
        "use_scale": "gamma" in arrays,
        "param_dtype": getattr(jnp, param_dtype(prepared.dtype)),
    }
    if bias:
        options["use_bias"] = "beta" in arrays
    if not prepared.case.default_eps:
        options["epsilon"] = prepared.sample.kwargs["eps"]
    return options


def _params(arrays: dict[str, Native]) -> dict[str, Native]:
    return {k: arrays[v] for k, v in (("scale", "gamma"), ("bias", "beta")) if v in arrays}


def _axes(prepared: Prepared) -> tuple[int, ...]:
    return get_op(prepared.case.op).param_axes(prepared.sample)


def _batch_norm(train: bool, state: bool) -> Call:
    across = _batch_norm_across(train, state)
    return lambda arrays, prepared: across(arrays, prepared, None)


def _batch_norm_across(train: bool, state: bool) -> Any:
    """``BatchNorm`` merging its statistics over ``axis_name`` (``None``: one device)."""

    def call(
        arrays: dict[str, Native], prepared: Prepared, axis_name: str | None
    ) -> tuple[Native, dict[str, Native]]:
        import jax.numpy as jnp

        x = arrays["x"]
        features = (x.shape[_axes(prepared)[0]],)
        dtype = getattr(jnp, param_dtype(prepared.dtype))
        stats = {
            "mean": arrays.get("running_mean", jnp.zeros(features, dtype)),
            "var": arrays.get("running_var", jnp.ones(features, dtype)),
        }
        momentum = prepared.sample.kwargs.get("momentum")
        extra = {} if momentum is None else {"momentum": 1.0 - momentum}  # weight of the old
        module = _linen().BatchNorm(
            use_running_average=not train,
            axis=_axes(prepared)[0],
            axis_name=axis_name,
            **extra,
            **_common(arrays, prepared),
        )
        variables = {"params": _params(arrays), "batch_stats": stats}
        if not train:
            return module.apply(variables, x), {}
        y, updates = module.apply(variables, x, mutable=["batch_stats"])
        if not state:
            return y, {}
        new = updates["batch_stats"]
        return y, {"running_mean": new["mean"], "running_var": new["var"]}

    return call


def _layer_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    axes = _axes(prepared)
    module = _linen().LayerNorm(reduction_axes=axes, feature_axes=axes, **_common(arrays, prepared))
    return module.apply({"params": _params(arrays)}, arrays["x"]), {}


def _rms_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    axes = _axes(prepared)
    module = _linen().RMSNorm(
        reduction_axes=axes, feature_axes=axes, **_common(arrays, prepared, bias=False)
    )
    return module.apply({"params": _params(arrays)}, arrays["x"]), {}


def _instance_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    module = _linen().InstanceNorm(feature_axes=_axes(prepared), **_common(arrays, prepared))
    return module.apply({"params": _params(arrays)}, arrays["x"]), {}


def _group_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax.numpy as jnp

    axis = _axes(prepared)[0]
    x = jnp.moveaxis(arrays["x"], axis, -1)
    module = _linen().GroupNorm(
        num_groups=prepared.sample.args["num_groups"], **_common(arrays, prepared)
    )
    y = module.apply({"params": _params(arrays)}, x)
    return jnp.moveaxis(y, -1, axis), {}


def _holder(shape: tuple[int, ...]) -> Any:
    """A module whose call returns its one parameter, ``kernel``, of ``shape``."""
    import flax.linen as nn  # not _linen(): mypy takes a module's class, not a variable's, as a base

    class Kernel(nn.Module):
        @nn.compact
        def __call__(self) -> Native:
            return self.param("kernel", nn.initializers.zeros, shape)

    return Kernel()


def _weight_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    v, g = arrays["v"], arrays.get("g")
    module = _linen().WeightNorm(
        _holder(v.shape), feature_axes=unit_axis(prepared), use_scale=g is not None
    )
    params: dict[str, Any] = {"layer_instance": {"kernel": v}}
    if g is not None:
        params["layer_instance/kernel/scale"] = g
    return module.apply({"params": params}), {}


def _spectral_norm_train(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax.numpy as jnp

    axis = unit_axis(prepared)
    w, u = jnp.moveaxis(arrays["w"], axis, -1), arrays["u"]
    module = _linen().SpectralNorm(
        _holder(w.shape),
        n_steps=prepared.sample.kwargs["n_power_iterations"],
        epsilon=prepared.sample.kwargs["eps"],
    )
    stats = {
        "layer_instance/kernel/u": u[None, :],
        "layer_instance/kernel/sigma": jnp.ones((), u.dtype),
    }
    y, updates = module.apply(
        {"params": {"layer_instance": {"kernel": w}}, "batch_stats": stats},
        update_stats=True,
        mutable=["batch_stats"],
    )
    new = updates["batch_stats"]
    state = {"u": new["layer_instance/kernel/u"][0], "sigma": new["layer_instance/kernel/sigma"]}
    return jnp.moveaxis(y, -1, axis), state


def _run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        return evaluate_on(
            JaxKind(),
            prepared,
            lambda arrays: call(arrays, prepared),
            backward=backward,
            param_dtype=param_dtype,
        )

    return run


def binding(op: str, label: str, call: Call, **extra: Any) -> Binding:
    """A flax binding (declared convention :data:`MODEL`, parameters per :func:`param_dtype`)."""
    return Binding(op, label, FRAMEWORK, _run(call), MODEL, param_dtype=param_dtype, **extra)


BINDINGS = (
    binding("batch_norm", "flax.linen.BatchNorm", _batch_norm(train=True, state=False)),
    binding(
        "batch_norm_train",
        "flax.linen.BatchNorm (mutable batch_stats)",
        _batch_norm(train=True, state=True),
    ),
    binding(
        "batch_norm_inference",
        "flax.linen.BatchNorm (use_running_average)",
        _batch_norm(train=False, state=False),
    ),
    binding("layer_norm", "flax.linen.LayerNorm", _layer_norm),
    binding("instance_norm", "flax.linen.InstanceNorm", _instance_norm),
    binding("group_norm", "flax.linen.GroupNorm", _group_norm),
    binding("rms_norm", "flax.linen.RMSNorm", _rms_norm),
    binding("weight_norm", "flax.linen.WeightNorm", _weight_norm),
    binding(
        "spectral_norm_train",
        "flax.linen.SpectralNorm (update_stats)",
        _spectral_norm_train,
        outputs=("y", "u", "sigma"),
    ),
)


def replica_bindings(replicas: int) -> tuple[Binding, ...]:
    """``BatchNorm(axis_name=...)`` with its input sharded over ``replicas`` devices."""
    name = "flax.linen.BatchNorm (axis_name)"
    return (
        binding(
            "batch_norm", label(name, replicas), sharded(_batch_norm_across(True, False), replicas)
        ),
        binding(
            "batch_norm_train",
            label(f"{name[:-1]}, mutable batch_stats)", replicas),
            sharded(_batch_norm_across(True, True), replicas),
        ),
    )


def _versions() -> dict[str, str]:
    import flax
    import jax

    return {"flax": flax.__version__, "jax": jax.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="Flax linen normalization modules and weight wrappers (jax.vjp backward)",
    model=MODEL,
    requires=("flax", "jax"),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[jax]'",
    compiler="jax.jit",
    replicas=replica_bindings,
)
