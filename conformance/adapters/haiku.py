"""dm-haiku: ``BatchNorm``, ``LayerNorm``, ``GroupNorm``, ``RMSNorm`` and ``SpectralNorm``,
each inside ``hk.transform_with_state``; backward by ``jax.vjp``.

Declared convention: ``FRAMEWORK_MODELS["haiku"]``, :data:`normref.conventions.HAIKU`
(``eps`` 1e-5 everywhere, the decay weighing the old value, biased running variance,
statistics of float16 and bfloat16 in their own dtype, ``SpectralNorm``'s vectors
normalized by ``x * rsqrt(sum(x * x) + eps)`` and a zero weight divided by ``sigma = 0``);
``BatchNorm`` computes its variance as ``E[x^2] - E[x]^2`` without a clamp
(:data:`FAST`). Sources are cited in ``docs/conventions.md``.

``BatchNorm`` keeps its running statistics in two zero-debiased exponential moving
averages (``hidden``, ``average``, ``counter``): the case's running statistics are given
as both ``hidden`` and ``average`` with a counter of ``2**30``, where the debiasing divides
by ``1 - decay ** counter = 1``, so that one training step is the plain update
``decay * old + (1 - decay) * batch``, whose ``average`` is read back. Its scale and offset
are passed at call time (``create_scale=False``), in the shape haiku broadcasts them in;
``LayerNorm`` and ``RMSNorm`` take the normalized axes as ``param_axis``; ``GroupNorm``
takes channels at 1 or last; ``SpectralNorm`` normalizes a value (the case's weight with
its unit axis last, every other axis flattened, as haiku reshapes it) and keeps ``u0`` and
``sigma`` in its state (``v`` is not kept: each step starts from ``u``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.adapters.arrays import Evaluation, JaxKind, Native
from conformance.adapters.base import Adapter, Binding, FrameworkLacksError, evaluate_on, unit_axis
from conformance.adapters.replicated import label, sharded
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

FRAMEWORK = "haiku"
MODEL = FRAMEWORK_MODELS["haiku"]
FAST = MODEL.replace(variance_algorithm="fast")
"""``BatchNorm``: ``mean(x * x) - mean(x) ** 2``, not clamped at 0."""

COUNTER = 2**30
"""The EMA counter of given running statistics: ``decay ** COUNTER`` is 0 for every decay
below 1 - 1e-8, so the zero-debiasing divides by 1."""

Call = Callable[[dict[str, Native], Prepared], tuple[Native, dict[str, Native]]]


def _hk() -> Any:
    import haiku as hk

    return hk


def _eps(prepared: Prepared) -> dict[str, float]:
    if prepared.case.default_eps:
        return {}
    return {"eps": prepared.sample.kwargs["eps"]}


def _axes(prepared: Prepared) -> tuple[int, ...]:
    return get_op(prepared.case.op).param_axes(prepared.sample)


def _kept(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with every axis but ``axes`` of size 1 (haiku's broadcast parameter shape)."""
    return tuple(s if a in axes else 1 for a, s in enumerate(shape))


def _ema(value: Native) -> dict[str, Native]:
    import jax.numpy as jnp

    return {"counter": jnp.asarray(COUNTER, jnp.int32), "hidden": value, "average": value}


def _batch_norm(train: bool, state: bool) -> Call:
    across = _batch_norm_across(train, state)
    return lambda arrays, prepared: across(arrays, prepared, None)


def _batch_norm_across(train: bool, state: bool) -> Any:
    """``BatchNorm`` merging its statistics over ``cross_replica_axis`` (``None``: one device)."""

    def call(
        arrays: dict[str, Native], prepared: Prepared, axis_name: str | None
    ) -> tuple[Native, dict[str, Native]]:
        import jax
        import jax.numpy as jnp

        hk = _hk()
        x = arrays["x"]
        channel = _axes(prepared)[0]
        reduced = [a for a in range(x.ndim) if a != channel]
        shape = _kept(x.shape, (channel,))
        batch_weight = prepared.sample.kwargs.get("momentum")
        decay = 0.9 if batch_weight is None else 1.0 - batch_weight  # unused without a step
        given = {
            name: jnp.reshape(arrays[name], shape)
            for name in ("gamma", "beta", "running_mean", "running_var")
            if name in arrays
        }

        def forward(x: Native) -> Native:
            module = hk.BatchNorm(
                False,
                False,
                decay,
                axis=reduced,
                cross_replica_axis=axis_name,
                **_eps(prepared),
            )
            return module(x, train, scale=given.get("gamma"), offset=given.get("beta"))

        stats = {
            "batch_norm/~/mean_ema": _ema(given.get("running_mean", jnp.zeros(shape, x.dtype))),
            "batch_norm/~/var_ema": _ema(given.get("running_var", jnp.ones(shape, x.dtype))),
        }
        transformed = hk.transform_with_state(forward)
        y, new = transformed.apply({}, stats, jax.random.PRNGKey(0), x)
        if not state:
            return y, {}
        return y, {
            "running_mean": jnp.reshape(new["batch_norm/~/mean_ema"]["average"], (-1,)),
            "running_var": jnp.reshape(new["batch_norm/~/var_ema"]["average"], (-1,)),
        }

    return call


def _apply(forward: Callable[[Native], Native], params: dict, x: Native) -> Native:
    return _hk().transform(forward).apply(params, None, x)


def _layer_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    x, axes = arrays["x"], tuple(a % arrays["x"].ndim for a in _axes(prepared))
    shape = _param_shape(x.shape, axes)
    names = (("scale", "gamma"), ("offset", "beta"))
    params = {k: arrays[v].reshape(shape) for k, v in names if v in arrays}

    def forward(x: Native) -> Native:
        module = _hk().LayerNorm(
            axes, "scale" in params, "offset" in params, param_axis=axes, **_eps(prepared)
        )
        return module(x)

    return _apply(forward, {"layer_norm": params} if params else {}, x), {}


def _param_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """haiku's parameter shape for ``param_axis=axes``: the last axis alone is ``(C,)``."""
    return (shape[-1],) if axes == (len(shape) - 1,) else _kept(shape, axes)


def _rms_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    x, axes = arrays["x"], tuple(a % arrays["x"].ndim for a in _axes(prepared))
    gamma = arrays.get("gamma")
    params = (
        {} if gamma is None else {"rms_norm": {"scale": gamma.reshape(_param_shape(x.shape, axes))}}
    )

    def forward(x: Native) -> Native:
        module = _hk().RMSNorm(
            axes, create_scale=gamma is not None, param_axis=axes, **_eps(prepared)
        )
        return module(x)

    return _apply(forward, params, x), {}


def _group_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    x = arrays["x"]
    channel = _axes(prepared)[0] % x.ndim
    if channel == x.ndim - 1:
        data_format, shape = "channels_last", (x.shape[-1],)
    elif channel == 1:
        data_format, shape = "channels_first", (x.shape[1],) + (1,) * (x.ndim - 2)
    else:
        msg = f"haiku's GroupNorm takes channels at axis 1 or last, not at axis {channel}"
        raise FrameworkLacksError(msg)
    names = (("scale", "gamma"), ("offset", "beta"))
    params = {k: arrays[v].reshape(shape) for k, v in names if v in arrays}

    def forward(x: Native) -> Native:
        module = _hk().GroupNorm(
            prepared.sample.args["num_groups"],
            create_scale="scale" in params,
            create_offset="offset" in params,
            data_format=data_format,
            **_eps(prepared),
        )
        return module(x)

    return _apply(forward, {"group_norm": params} if params else {}, x), {}


def _spectral_norm_train(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    import jax
    import jax.numpy as jnp

    hk = _hk()
    axis = unit_axis(prepared)
    w = jnp.moveaxis(arrays["w"], axis, -1)
    u = arrays["u"]

    def forward(w: Native) -> Native:
        module = hk.SpectralNorm(
            eps=prepared.sample.kwargs["eps"], n_steps=prepared.sample.kwargs["n_power_iterations"]
        )
        return module(w, update_stats=True)

    stats = {"spectral_norm": {"u0": u[None, :], "sigma": jnp.ones((), u.dtype)}}
    y, new = hk.transform_with_state(forward).apply({}, stats, jax.random.PRNGKey(0), w)
    state = {"u": new["spectral_norm"]["u0"][0], "sigma": new["spectral_norm"]["sigma"]}
    return jnp.moveaxis(y, -1, axis), state


def _run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        kind = JaxKind()
        return evaluate_on(kind, prepared, lambda arrays: call(arrays, prepared), backward=backward)

    return run


def binding(op: str, label: str, call: Call, model: Model = MODEL, **extra: Any) -> Binding:
    """A haiku binding (declared convention :data:`MODEL` unless ``model`` is given)."""
    return Binding(op, label, FRAMEWORK, _run(call), model, **extra)


BINDINGS = (
    binding("batch_norm", "haiku.BatchNorm (is_training)", _batch_norm(True, False), FAST),
    binding(
        "batch_norm_train",
        "haiku.BatchNorm (is_training, moving averages)",
        _batch_norm(True, True),
        FAST,
    ),
    binding("batch_norm_inference", "haiku.BatchNorm (inference)", _batch_norm(False, False)),
    binding("layer_norm", "haiku.LayerNorm", _layer_norm),
    binding("group_norm", "haiku.GroupNorm", _group_norm),
    binding("rms_norm", "haiku.RMSNorm", _rms_norm),
    binding(
        "spectral_norm_train",
        "haiku.SpectralNorm (update_stats)",
        _spectral_norm_train,
        outputs=("y", "u", "sigma"),
    ),
)


def replica_bindings(replicas: int) -> tuple[Binding, ...]:
    """``BatchNorm(cross_replica_axis=...)`` with its input sharded over ``replicas`` devices."""
    return (
        binding(
            "batch_norm",
            label("haiku.BatchNorm (cross_replica_axis)", replicas),
            sharded(_batch_norm_across(True, False), replicas),
            FAST,
        ),
        binding(
            "batch_norm_train",
            label("haiku.BatchNorm (cross_replica_axis, moving averages)", replicas),
            sharded(_batch_norm_across(True, True), replicas),
            FAST,
        ),
    )


def _versions() -> dict[str, str]:
    import haiku
    import jax

    return {"dm-haiku": haiku.__version__, "jax": jax.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="dm-haiku normalization modules in transform_with_state (jax.vjp backward)",
    model=MODEL,
    requires=("haiku", "jax"),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[haiku]'",
    compiler="jax.jit",
    replicas=replica_bindings,
)
