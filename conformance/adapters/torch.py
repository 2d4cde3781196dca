"""PyTorch: ``torch.nn.functional``, the ``torch.nn`` modules and ``torch.nn.utils``, forward and
autograd backward.

Declared convention: ``FRAMEWORK_MODELS["torch"]``, :data:`normref.conventions.TORCH`
(momentum 0.1 as the weight of the batch, unbiased running variance, ``eps``
inside the square root, float32 statistics for float16/bfloat16, output in the
input's dtype, ``RMSNorm``'s ``eps=None`` meaning float32's machine epsilon,
float64's for float64 input) with ``clip_grad_norm_``'s ``eps`` of 1e-6 and a
division by a zero norm carried out (NaN); ``parametrizations.spectral_norm``
iterates ``u`` first. The sources each fact was read from are cited in
``docs/conventions.md``.

Weights: ``torch._weight_norm`` (the kernel of both weight-norm APIs) and
``parametrizations.weight_norm``, ``parametrizations.spectral_norm`` and the legacy
``spectral_norm`` (evaluation mode: the stored ``u`` and ``v``; training mode:
one power-iteration step, whose new ``u`` and ``v`` are read back from the
buffers it updates in place), all on a module holding the case's weight;
``clip_grad_norm_`` on two parameters whose ``.grad`` are the case's gradients.
``torch._weight_norm``'s ``dim`` is the unit axis as a non-negative number:
``dim=-1`` means the whole tensor there.

Layouts: torch takes the channel axis at 1 and normalizes trailing axes; a
case with its channel elsewhere, or normalized axes that are not trailing,
is moved there (``movedim``/``permute``, exact) and back. Module parameters
and buffers are replaced by the case's tensors with
``torch.func.functional_call``, so autograd reaches them and the running
statistics' update is read back from the tensors the module updated in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.adapters.arrays import Evaluation, Native, TorchKind
from conformance.adapters.base import (
    Adapter,
    Binding,
    FrameworkLacksError,
    evaluate_on,
    unit_axis,
)
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS, Model
from conformance.checked.ops import get_op

FRAMEWORK = "torch"
MODEL = FRAMEWORK_MODELS["torch"]
U_FIRST = MODEL.replace(power_iteration_order="u_first")
"""``parametrizations.spectral_norm``: ``u <- n(W v)``, then ``v <- n(W^T u)``."""

Call = Callable[[dict[str, Native], Prepared], Native | tuple[Native, dict[str, Native]]]


def _torch() -> Any:
    import torch

    return torch


def _eps(prepared: Prepared) -> dict[str, float]:
    """``eps`` as a keyword, or nothing when the case calls with the default."""
    if prepared.case.default_eps:
        return {}
    return {"eps": prepared.sample.kwargs["eps"]}


def _channel_axis(prepared: Prepared) -> int:
    return get_op(prepared.case.op).param_axes(prepared.sample)[0]


def _channels_at_1(call: Call) -> Call:
    """Move the channel axis to 1 for ``call`` and back."""

    def moved(arrays: dict[str, Native], prepared: Prepared) -> Any:
        torch = _torch()
        axis = _channel_axis(prepared)
        x = torch.movedim(arrays["x"], axis, 1)
        result = call({**arrays, "x": x}, prepared)
        if isinstance(result, tuple):
            return torch.movedim(result[0], 1, axis), result[1]
        return torch.movedim(result, 1, axis)

    return moved


def _trailing(call: Callable[[dict[str, Native], Prepared], Native]) -> Call:
    """Permute the normalized axes to the end (in order) for ``call`` and back."""

    def moved(arrays: dict[str, Native], prepared: Prepared) -> Any:
        axes = get_op(prepared.case.op).param_axes(prepared.sample)
        x = arrays["x"]
        order = [a for a in range(x.ndim) if a not in axes] + list(axes)
        inverse = sorted(range(x.ndim), key=order.__getitem__)
        y = call({**arrays, "x": x.permute(order)}, prepared)
        return y.permute(inverse)

    return moved


def _normalized_shape(prepared: Prepared) -> list[int]:
    axes = get_op(prepared.case.op).param_axes(prepared.sample)
    return [prepared.sample.args["x"].shape[a] for a in axes]


def _module(kind: str, ndim: int) -> Any:
    """``torch.nn.BatchNorm{1,2,3}d`` or ``InstanceNorm{1,2,3}d`` for an input of rank ``ndim``."""
    dims = {"BatchNorm": {2: 1, 3: 1, 4: 2, 5: 3}, "InstanceNorm": {3: 1, 4: 2, 5: 3}}[kind]
    if ndim not in dims:
        msg = f"torch.nn has no {kind} for input of rank {ndim}"
        raise FrameworkLacksError(msg)
    return getattr(_torch().nn, f"{kind}{dims[ndim]}d")


def _affine(arrays: dict[str, Native]) -> dict[str, Native]:
    return {k: arrays[v] for k, v in (("weight", "gamma"), ("bias", "beta")) if v in arrays}


def _call_module(module: Any, arrays: dict[str, Native], x: Native, **buffers: Native) -> Native:
    from torch.func import functional_call

    return functional_call(module, {**_affine(arrays), **buffers}, (x,))


# ----------------------------------------------------------------------------- batch norm


def _f_batch_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.batch_norm(
        arrays["x"],
        None,
        None,
        arrays.get("gamma"),
        arrays.get("beta"),
        training=True,
        **_eps(prepared),
    )


def _nn_batch_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    x = arrays["x"]
    module = _module("BatchNorm", x.ndim)(
        x.shape[1], affine="gamma" in arrays, track_running_stats=False, **_eps(prepared)
    ).train()
    return _call_module(module, arrays, x)


def _nn_batch_norm_train(
    arrays: dict[str, Native], prepared: Prepared
) -> tuple[Native, dict[str, Native]]:
    x = arrays["x"]
    mean, var = arrays["running_mean"].clone(), arrays["running_var"].clone()
    module = _module("BatchNorm", x.ndim)(
        x.shape[1],
        affine="gamma" in arrays,
        momentum=prepared.sample.kwargs["momentum"],  # torch: the weight of the new batch
        **_eps(prepared),
    ).train()
    y = _call_module(module, arrays, x, running_mean=mean, running_var=var)
    return y, {"running_mean": mean, "running_var": var}


def _f_batch_norm_eval(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.batch_norm(
        arrays["x"],
        arrays["running_mean"],
        arrays["running_var"],
        arrays.get("gamma"),
        arrays.get("beta"),
        training=False,
        **_eps(prepared),
    )


def _nn_batch_norm_eval(arrays: dict[str, Native], prepared: Prepared) -> Native:
    x = arrays["x"]
    module = _module("BatchNorm", x.ndim)(
        x.shape[1], affine="gamma" in arrays, **_eps(prepared)
    ).eval()
    return _call_module(
        module, arrays, x, running_mean=arrays["running_mean"], running_var=arrays["running_var"]
    )


# ----------------------------------------------------------------------------- other layers


def _f_instance_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.instance_norm(
        arrays["x"],
        weight=arrays.get("gamma"),
        bias=arrays.get("beta"),
        use_input_stats=True,
        **_eps(prepared),
    )


def _nn_instance_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    x = arrays["x"]
    module = _module("InstanceNorm", x.ndim)(
        x.shape[1], affine="gamma" in arrays, **_eps(prepared)
    ).train()
    return _call_module(module, arrays, x)


def _f_group_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.group_norm(
        arrays["x"],
        prepared.sample.args["num_groups"],
        arrays.get("gamma"),
        arrays.get("beta"),
        **_eps(prepared),
    )


def _nn_group_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    x = arrays["x"]
    module = _torch().nn.GroupNorm(
        prepared.sample.args["num_groups"], x.shape[1], affine="gamma" in arrays, **_eps(prepared)
    )
    return _call_module(module, arrays, x)


def _f_layer_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.layer_norm(
        arrays["x"],
        _normalized_shape(prepared),
        arrays.get("gamma"),
        arrays.get("beta"),
        **_eps(prepared),
    )


def _nn_layer_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    module = _torch().nn.LayerNorm(
        _normalized_shape(prepared),
        elementwise_affine="gamma" in arrays,
        bias="beta" in arrays,
        **_eps(prepared),
    )
    return _call_module(module, arrays, arrays["x"])


def _f_rms_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    f = _torch().nn.functional
    return f.rms_norm(
        arrays["x"], _normalized_shape(prepared), arrays.get("gamma"), **_eps(prepared)
    )


def _nn_rms_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    module = _torch().nn.RMSNorm(
        _normalized_shape(prepared), elementwise_affine="gamma" in arrays, **_eps(prepared)
    )
    return _call_module(module, arrays, arrays["x"])


# ----------------------------------------------------------------------------- weights


def _holding(w: Native) -> Any:
    """A module whose parameter ``weight`` is a copy of ``w`` and whose call returns it."""
    import torch  # not _torch(): mypy takes a module's class, not a variable's, as a base

    class Weight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(w.detach().clone())

        def forward(self) -> Native:
            return self.weight

    return Weight()


def _per_unit(g: Native, ndim: int, axis: int) -> Native:
    """A per-unit parameter ``(O,)`` in torch's ``(O, 1, ..., 1)`` layout."""
    return g.reshape([-1 if a == axis else 1 for a in range(ndim)])


def _weight_norm_kernel(arrays: dict[str, Native], prepared: Prepared) -> Native:
    v, axis = arrays["v"], unit_axis(prepared)
    g = arrays.get("g")
    if g is None:  # the unit-norm direction: g = 1 in every unit
        g = _torch().ones(v.shape[axis], dtype=v.dtype)
    return _torch()._weight_norm(v, _per_unit(g, v.ndim, axis), axis)


def _weight_norm_parametrization(arrays: dict[str, Native], prepared: Prepared) -> Native:
    from torch.func import functional_call

    v, axis = arrays["v"], unit_axis(prepared)
    module = _holding(v)
    _torch().nn.utils.parametrizations.weight_norm(module, dim=axis)
    g = arrays.get("g")
    if g is None:
        g = _torch().ones(v.shape[axis], dtype=v.dtype)
    replaced = {
        "parametrizations.weight.original0": _per_unit(g, v.ndim, axis),
        "parametrizations.weight.original1": v,
    }
    return functional_call(module, replaced, ())


def _spectral(legacy: bool, train: bool) -> Call:
    """Spectral norm of the case's weight from its ``u`` and ``v``: the legacy hook or the
    parametrization with the case's ``eps``, its power-iteration steps in training mode
    (state read back)."""

    def call(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict[str, Native]]:
        from torch.func import functional_call

        w, axis = arrays["w"], unit_axis(prepared)
        u, v = arrays["u"].clone(), arrays["v"].clone()
        module = _holding(w)
        utils = _torch().nn.utils
        options = {"dim": axis, "eps": prepared.sample.kwargs["eps"]}
        if train:  # evaluation mode runs no step (torch refuses n_power_iterations=0)
            options["n_power_iterations"] = prepared.sample.kwargs["n_power_iterations"]
        if legacy:
            utils.spectral_norm(module, **options)
            names = ("weight_orig", "weight_u", "weight_v")
        else:
            utils.parametrizations.spectral_norm(module, **options)
            prefix = "parametrizations.weight"
            names = (f"{prefix}.original", f"{prefix}.0._u", f"{prefix}.0._v")
        module.train(train)
        y = functional_call(module, dict(zip(names, (w, u, v), strict=True)), ())
        return y, ({"u": u, "v": v} if train else {})

    return call


def _clip_grad_norm(arrays: dict[str, Native], prepared: Prepared) -> tuple[Native, dict]:
    torch = _torch()
    params = []
    for name in ("grad", "bias_grad"):
        param = torch.nn.Parameter(torch.zeros_like(arrays[name]))
        param.grad = arrays[name].clone()
        params.append(param)
    torch.nn.utils.clip_grad_norm_(params, prepared.sample.kwargs["max_norm"])
    return params[0].grad, {"clipped_bias_grad": params[1].grad}


# ----------------------------------------------------------------------------- bindings


def lacks(error: BaseException) -> str | None:
    """Why a torch error means the framework lacks this input, or ``None`` (a real failure)."""
    text = str(error)
    if isinstance(error, (RuntimeError, NotImplementedError)) and "not implemented for" in text:
        return text.splitlines()[0]
    if isinstance(error, ValueError) and text.startswith("Expected more than 1 "):
        # torch's batch and instance norm in training refuse one value per channel (or
        # spatial element), whose biased variance, 0, normalizes to beta
        return text.splitlines()[0]
    return None


def torch_run(call: Call) -> Callable[[Prepared, Model, bool], Evaluation]:
    """A binding's ``run`` for ``call(arrays, prepared)`` on torch tensors."""

    def run(prepared: Prepared, _model: Model, backward: bool) -> Evaluation:
        def fn(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
            result = call(arrays, prepared)
            return result if isinstance(result, tuple) else (result, {})

        try:
            return evaluate_on(TorchKind(), prepared, fn, backward=backward)
        except Exception as error:
            reason = lacks(error)
            if reason is None:
                raise
            raise FrameworkLacksError(reason) from error

    return run


def binding(op: str, label: str, call: Call, **extra: Any) -> Binding:
    """A torch binding (declared convention :data:`MODEL`)."""
    return Binding(op, label, FRAMEWORK, torch_run(call), MODEL, **extra)


BINDINGS = (
    binding("batch_norm", "torch.nn.functional.batch_norm", _channels_at_1(_f_batch_norm)),
    binding("batch_norm", "torch.nn.BatchNormNd", _channels_at_1(_nn_batch_norm)),
    binding(
        "batch_norm_train", "torch.nn.BatchNormNd (train)", _channels_at_1(_nn_batch_norm_train)
    ),
    binding(
        "batch_norm_inference",
        "torch.nn.functional.batch_norm (eval)",
        _channels_at_1(_f_batch_norm_eval),
    ),
    binding(
        "batch_norm_inference", "torch.nn.BatchNormNd (eval)", _channels_at_1(_nn_batch_norm_eval)
    ),
    binding("layer_norm", "torch.nn.functional.layer_norm", _trailing(_f_layer_norm)),
    binding("layer_norm", "torch.nn.LayerNorm", _trailing(_nn_layer_norm)),
    binding("instance_norm", "torch.nn.functional.instance_norm", _channels_at_1(_f_instance_norm)),
    binding("instance_norm", "torch.nn.InstanceNormNd", _channels_at_1(_nn_instance_norm)),
    binding("group_norm", "torch.nn.functional.group_norm", _channels_at_1(_f_group_norm)),
    binding("group_norm", "torch.nn.GroupNorm", _channels_at_1(_nn_group_norm)),
    binding("rms_norm", "torch.nn.functional.rms_norm", _trailing(_f_rms_norm)),
    binding("rms_norm", "torch.nn.RMSNorm", _trailing(_nn_rms_norm)),
    binding("weight_norm", "torch._weight_norm", _weight_norm_kernel),
    binding(
        "weight_norm", "torch.nn.utils.parametrizations.weight_norm", _weight_norm_parametrization
    ),
    binding(
        "spectral_norm",
        "torch.nn.utils.spectral_norm (eval)",
        _spectral(legacy=True, train=False),
    ),
    binding(
        "spectral_norm",
        "torch.nn.utils.parametrizations.spectral_norm (eval)",
        _spectral(legacy=False, train=False),
    ),
    binding(
        "spectral_norm_train",
        "torch.nn.utils.spectral_norm (train)",
        _spectral(legacy=True, train=True),
        outputs=("y", "u", "v"),
    ),
    Binding(
        "spectral_norm_train",
        "torch.nn.utils.parametrizations.spectral_norm (train)",
        FRAMEWORK,
        torch_run(_spectral(legacy=False, train=True)),
        U_FIRST,
        outputs=("y", "u", "v"),
    ),
    binding("clip_by_global_norm", "torch.nn.utils.clip_grad_norm_", _clip_grad_norm),
)


def _versions() -> dict[str, str]:
    return {"torch": _torch().__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="PyTorch: torch.nn.functional, torch.nn modules, torch.nn.utils (autograd backward)",
    model=MODEL,
    requires=("torch",),
    bindings=BINDINGS,
    versions=_versions,
    install_hint="pip install -e '.[torch]'",
)
