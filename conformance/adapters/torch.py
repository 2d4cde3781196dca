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

``local_response_norm`` and ``LocalResponseNorm`` (the window of an even size has its
extra channel before the centre: ``lrn_window="torch"``).

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

import contextlib
import os
from collections.abc import Callable, Iterator
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

Compute = Callable[[dict[str, Native]], Native | tuple[Native, dict[str, Native]]]
"""The framework's computation on a case's tensors (its output, or the output and state)."""
Call = Callable[[Prepared], Compute]
"""A binding's setup for a case (modules built, arguments read) returning its computation:
the setup stays outside a compiled region, which holds the computation alone."""


def _torch() -> Any:
    import torch

    return torch


DEVICES = ("cpu", "cuda")
"""Where the torch adapter runs its layers (``run --device``)."""

DEVICE_VARIABLE = "NORMREF_CONFORMANCE_TORCH_DEVICE"
"""The environment variable naming the device (unset: the CPU): the suite's worker
processes, started fresh (``spawn``), inherit it."""


def device() -> str:
    """The device the torch adapter computes on (:data:`DEVICE_VARIABLE`)."""
    chosen = os.environ.get(DEVICE_VARIABLE, "cpu")
    if chosen not in DEVICES:
        msg = f"{DEVICE_VARIABLE} must be one of {DEVICES}, got {chosen!r}"
        raise ValueError(msg)
    return chosen


def cuda_missing() -> str | None:
    """Why torch cannot run on a CUDA GPU here, or ``None`` where it can."""
    try:
        torch = _torch()
    except ImportError:
        return "torch is not installed (pip install -e '.[torch]')"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} finds no CUDA device"
    return None


@contextlib.contextmanager
def on_device(chosen: str) -> Iterator[None]:
    """Within the block, the torch adapter computes on ``chosen`` (``"cpu"`` or ``"cuda"``), in
    this process and in the workers it starts."""
    if chosen not in DEVICES:
        msg = f"device must be one of {DEVICES}, got {chosen!r}"
        raise ValueError(msg)
    before = os.environ.get(DEVICE_VARIABLE)
    os.environ[DEVICE_VARIABLE] = chosen
    try:
        yield
    finally:
        if before is None:
            del os.environ[DEVICE_VARIABLE]
        else:
            os.environ[DEVICE_VARIABLE] = before


def eps_keyword(prepared: Prepared) -> dict[str, float]:
    """``eps`` as a keyword, or nothing when the case calls with the default."""
    if prepared.case.default_eps:
        return {}
    return {"eps": prepared.sample.kwargs["eps"]}


def _channel_axis(prepared: Prepared) -> int:
    return get_op(prepared.case.op).param_axes(prepared.sample)[0]


def channels(prepared: Prepared) -> tuple[int, int]:
    """The number of channels and the rank of the case's ``x``."""
    x = prepared.sample.args["x"]
    return x.shape[_channel_axis(prepared)], x.ndim


def channels_at_1(call: Call) -> Call:
    """Move the channel axis to 1 for ``call`` and back."""

    def bound(prepared: Prepared) -> Compute:
        torch, axis, compute = _torch(), _channel_axis(prepared), call(prepared)

        def moved(arrays: dict[str, Native]) -> Any:
            result = compute({**arrays, "x": torch.movedim(arrays["x"], axis, 1)})
            if isinstance(result, tuple):
                return torch.movedim(result[0], 1, axis), result[1]
            return torch.movedim(result, 1, axis)

        return moved

    return bound


def trailing(call: Callable[[Prepared], Callable[[dict[str, Native]], Native]]) -> Call:
    """Permute the normalized axes to the end (in order) for ``call`` and back."""

    def bound(prepared: Prepared) -> Compute:
        axes = get_op(prepared.case.op).param_axes(prepared.sample)
        ndim = prepared.sample.args["x"].ndim
        order = [a for a in range(ndim) if a not in axes] + list(axes)
        inverse = sorted(range(ndim), key=order.__getitem__)
        compute = call(prepared)

        def moved(arrays: dict[str, Native]) -> Any:
            return compute({**arrays, "x": arrays["x"].permute(order)}).permute(inverse)

        return moved

    return bound


def normalized_shape(prepared: Prepared) -> list[int]:
    axes = get_op(prepared.case.op).param_axes(prepared.sample)
    return [prepared.sample.args["x"].shape[a] for a in axes]


def _module(kind: str, ndim: int) -> Any:
    """``torch.nn.BatchNorm{1,2,3}d`` or ``InstanceNorm{1,2,3}d`` for an input of rank ``ndim``."""
    dims = {"BatchNorm": {2: 1, 3: 1, 4: 2, 5: 3}, "InstanceNorm": {3: 1, 4: 2, 5: 3}}[kind]
    if ndim not in dims:
        msg = f"torch.nn has no {kind} for input of rank {ndim}"
        raise FrameworkLacksError(msg)
    return getattr(_torch().nn, f"{kind}{dims[ndim]}d")


def has_affine(prepared: Prepared) -> bool:
    return prepared.sample.args.get("gamma") is not None


def _affine(arrays: dict[str, Native]) -> dict[str, Native]:
    return {k: arrays[v] for k, v in (("weight", "gamma"), ("bias", "beta")) if v in arrays}


def module_call(module: Any, x_name: str = "x", **buffers: str) -> Compute:
    """``module`` on the case's ``x`` with its affine (and ``buffers``: module buffer -> case
    tensor) taken from the case's tensors (``torch.func.functional_call``)."""

    def compute(arrays: dict[str, Native]) -> Native:
        from torch.func import functional_call

        tensors = {**_affine(arrays), **{b: arrays[a] for b, a in buffers.items()}}
        return functional_call(module, tensors, (arrays[x_name],))

    return compute


def on_dtype(module: Any, prepared: Prepared) -> Any:
    """``module`` with its parameters and buffers in the case's dtype."""
    return module.to(getattr(_torch(), prepared.dtype))


# ----------------------------------------------------------------------------- batch norm


def _f_batch_norm(prepared: Prepared) -> Compute:
    f, eps = _torch().nn.functional, eps_keyword(prepared)
    return lambda arrays: f.batch_norm(
        arrays["x"], None, None, arrays.get("gamma"), arrays.get("beta"), training=True, **eps
    )


def _nn_batch_norm(prepared: Prepared) -> Compute:
    c, ndim = channels(prepared)
    module = _module("BatchNorm", ndim)(
        c, affine=has_affine(prepared), track_running_stats=False, **eps_keyword(prepared)
    ).train()
    return module_call(on_dtype(module, prepared))


def _nn_batch_norm_train(prepared: Prepared) -> Compute:
    c, ndim = channels(prepared)
    module = _module("BatchNorm", ndim)(
        c,
        affine=has_affine(prepared),
        momentum=prepared.sample.kwargs["momentum"],  # torch: the weight of the new batch
        **eps_keyword(prepared),
    ).train()
    module = on_dtype(module, prepared)

    def compute(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
        from torch.func import functional_call

        # the module updates its running statistics in place: copies of the case's
        mean, var = arrays["running_mean"].clone(), arrays["running_var"].clone()
        tensors = {**_affine(arrays), "running_mean": mean, "running_var": var}
        y = functional_call(module, tensors, (arrays["x"],))
        return y, {"running_mean": mean, "running_var": var}

    return compute


def _f_batch_norm_eval(prepared: Prepared) -> Compute:
    f, eps = _torch().nn.functional, eps_keyword(prepared)
    return lambda arrays: f.batch_norm(
        arrays["x"],
        arrays["running_mean"],
        arrays["running_var"],
        arrays.get("gamma"),
        arrays.get("beta"),
        training=False,
        **eps,
    )


def _nn_batch_norm_eval(prepared: Prepared) -> Compute:
    c, ndim = channels(prepared)
    module = _module("BatchNorm", ndim)(
        c, affine=has_affine(prepared), **eps_keyword(prepared)
    ).eval()
    return module_call(
        on_dtype(module, prepared), running_mean="running_mean", running_var="running_var"
    )


# ----------------------------------------------------------------------------- other layers


def _f_instance_norm(prepared: Prepared) -> Compute:
    f, eps = _torch().nn.functional, eps_keyword(prepared)
    return lambda arrays: f.instance_norm(
        arrays["x"],
        weight=arrays.get("gamma"),
        bias=arrays.get("beta"),
        use_input_stats=True,
        **eps,
    )


def _nn_instance_norm(prepared: Prepared) -> Compute:
    c, ndim = channels(prepared)
    module = _module("InstanceNorm", ndim)(c, affine=has_affine(prepared), **eps_keyword(prepared))
    return module_call(on_dtype(module.train(), prepared))


def _f_group_norm(prepared: Prepared) -> Compute:
    f, eps = _torch().nn.functional, eps_keyword(prepared)
    groups = prepared.sample.args["num_groups"]
    return lambda arrays: f.group_norm(
        arrays["x"], groups, arrays.get("gamma"), arrays.get("beta"), **eps
    )


def _nn_group_norm(prepared: Prepared) -> Compute:
    c, _ = channels(prepared)
    module = _torch().nn.GroupNorm(
        prepared.sample.args["num_groups"], c, affine=has_affine(prepared), **eps_keyword(prepared)
    )
    return module_call(on_dtype(module, prepared))


def _f_layer_norm(prepared: Prepared) -> Compute:
    f, eps, shape = _torch().nn.functional, eps_keyword(prepared), normalized_shape(prepared)
    return lambda arrays: f.layer_norm(
        arrays["x"], shape, arrays.get("gamma"), arrays.get("beta"), **eps
    )


def _nn_layer_norm(prepared: Prepared) -> Compute:
    module = _torch().nn.LayerNorm(
        normalized_shape(prepared),
        elementwise_affine=has_affine(prepared),
        bias=prepared.sample.args.get("beta") is not None,
        **eps_keyword(prepared),
    )
    return module_call(on_dtype(module, prepared))


def _f_rms_norm(prepared: Prepared) -> Compute:
    f, eps, shape = _torch().nn.functional, eps_keyword(prepared), normalized_shape(prepared)
    return lambda arrays: f.rms_norm(arrays["x"], shape, arrays.get("gamma"), **eps)


def _nn_rms_norm(prepared: Prepared) -> Compute:
    module = _torch().nn.RMSNorm(
        normalized_shape(prepared), elementwise_affine=has_affine(prepared), **eps_keyword(prepared)
    )
    return module_call(on_dtype(module, prepared))


def _lrn_arguments(prepared: Prepared) -> dict[str, Any]:
    kwargs = prepared.sample.kwargs
    return {
        "size": prepared.sample.args["size"],
        "alpha": kwargs["alpha"],
        "beta": kwargs["beta"],
        "k": kwargs["k"],
    }


def _f_local_response_norm(prepared: Prepared) -> Compute:
    f, arguments = _torch().nn.functional, _lrn_arguments(prepared)
    return lambda arrays: f.local_response_norm(arrays["x"], **arguments)


def _nn_local_response_norm(prepared: Prepared) -> Compute:
    module = _torch().nn.LocalResponseNorm(**_lrn_arguments(prepared))
    return lambda arrays: module(arrays["x"])


# ----------------------------------------------------------------------------- weights


def _holding(shape: tuple[int, ...], prepared: Prepared) -> Any:
    """A module with a parameter ``weight`` of ``shape`` (in the case's dtype) whose call
    returns it; the case's weight replaces it in each call."""
    import torch  # not _torch(): mypy takes a module's class, not a variable's, as a base

    class Weight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(
                torch.zeros(shape, dtype=getattr(torch, prepared.dtype))
            )

        def forward(self) -> Native:
            return self.weight

    return Weight()


def _per_unit(g: Native, ndim: int, axis: int) -> Native:
    """A per-unit parameter ``(O,)`` in torch's ``(O, 1, ..., 1)`` layout."""
    return g.reshape([-1 if a == axis else 1 for a in range(ndim)])


def _unit_gain(arrays: dict[str, Native], axis: int) -> Native:
    """The case's ``g``, or 1 in every unit (the unit-norm direction) where it has none."""
    v, g = arrays["v"], arrays.get("g")
    if g is None:
        g = _torch().ones(v.shape[axis], dtype=v.dtype)
    return _per_unit(g, v.ndim, axis)


def _weight_norm_kernel(prepared: Prepared) -> Compute:
    axis, torch = unit_axis(prepared), _torch()
    return lambda arrays: torch._weight_norm(arrays["v"], _unit_gain(arrays, axis), axis)


def _weight_norm_parametrization(prepared: Prepared) -> Compute:
    axis = unit_axis(prepared)
    module = _holding(prepared.sample.args["v"].shape, prepared)
    _torch().nn.utils.parametrizations.weight_norm(module, dim=axis)

    def compute(arrays: dict[str, Native]) -> Native:
        from torch.func import functional_call

        replaced = {
            "parametrizations.weight.original0": _unit_gain(arrays, axis),
            "parametrizations.weight.original1": arrays["v"],
        }
        return functional_call(module, replaced, ())

    return compute


def _spectral(legacy: bool, train: bool) -> Call:
    """Spectral norm of the case's weight from its ``u`` and ``v``: the legacy hook or the
    parametrization with the case's ``eps``, its power-iteration steps in training mode
    (state read back)."""

    def call(prepared: Prepared) -> Compute:
        axis = unit_axis(prepared)
        module = _holding(prepared.sample.args["w"].shape, prepared)
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

        def compute(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
            from torch.func import functional_call

            # a training step writes its new vectors into them: copies of the case's
            u, v = arrays["u"].clone(), arrays["v"].clone()
            y = functional_call(module, dict(zip(names, (arrays["w"], u, v), strict=True)), ())
            return y, ({"u": u, "v": v} if train else {})

        return compute

    return call


def _clip_grad_norm(prepared: Prepared) -> Compute:
    torch, max_norm = _torch(), prepared.sample.kwargs["max_norm"]

    def compute(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
        params = []
        for name in ("grad", "bias_grad"):
            param = torch.nn.Parameter(torch.zeros_like(arrays[name]))
            param.grad = arrays[name].clone()
            params.append(param)
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return params[0].grad, {"clipped_bias_grad": params[1].grad}

    return compute


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
        try:
            compute = call(prepared)

            def fn(arrays: dict[str, Native]) -> tuple[Native, dict[str, Native]]:
                result = compute(arrays)
                return result if isinstance(result, tuple) else (result, {})

            return evaluate_on(TorchKind(device()), prepared, fn, backward=backward)
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
    binding("batch_norm", "torch.nn.functional.batch_norm", channels_at_1(_f_batch_norm)),
    binding("batch_norm", "torch.nn.BatchNormNd", channels_at_1(_nn_batch_norm)),
    binding(
        "batch_norm_train", "torch.nn.BatchNormNd (train)", channels_at_1(_nn_batch_norm_train)
    ),
    binding(
        "batch_norm_inference",
        "torch.nn.functional.batch_norm (eval)",
        channels_at_1(_f_batch_norm_eval),
    ),
    binding(
        "batch_norm_inference", "torch.nn.BatchNormNd (eval)", channels_at_1(_nn_batch_norm_eval)
    ),
    binding("layer_norm", "torch.nn.functional.layer_norm", trailing(_f_layer_norm)),
    binding("layer_norm", "torch.nn.LayerNorm", trailing(_nn_layer_norm)),
    binding("instance_norm", "torch.nn.functional.instance_norm", channels_at_1(_f_instance_norm)),
    binding("instance_norm", "torch.nn.InstanceNormNd", channels_at_1(_nn_instance_norm)),
    binding("group_norm", "torch.nn.functional.group_norm", channels_at_1(_f_group_norm)),
    binding("group_norm", "torch.nn.GroupNorm", channels_at_1(_nn_group_norm)),
    binding("rms_norm", "torch.nn.functional.rms_norm", trailing(_f_rms_norm)),
    binding("rms_norm", "torch.nn.RMSNorm", trailing(_nn_rms_norm)),
    binding(
        "local_response_norm",
        "torch.nn.functional.local_response_norm",
        channels_at_1(_f_local_response_norm),
    ),
    binding(
        "local_response_norm", "torch.nn.LocalResponseNorm", channels_at_1(_nn_local_response_norm)
    ),
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
    compiler="torch.compile",
    replicas_unavailable=(
        "torch.nn.SyncBatchNorm runs only on CUDA, with 2 or more GPUs (one process per GPU, "
        "torch.distributed): the suite's replicas are host devices"
    ),
)
