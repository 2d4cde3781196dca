"""timm (pytorch-image-models) normalization layers and adaptive gradient clipping, through
the torch adapter's machinery.

timm's package ``__init__`` imports torchvision, which must be built for the installed torch
(PyPI's torchvision wheels are CUDA builds and do not load beside a CPU torch), but the
modules checked here do not need it: ``timm.layers.std_conv``, ``timm.layers.norm`` and
``timm.utils.agc`` are loaded without executing any package ``__init__`` (:func:`load`),
and where that fails the adapter is skipped with the reason. timm's layers are torch
modules whose defaults differ from torch's: ``LayerNorm`` and ``RmsNorm`` default to ``eps=1e-6``
(``timm/layers/norm.py``), and ``ScaledStdConv2d`` puts its ``eps`` inside the
square root (``timm/layers/std_conv.py``: ``F.batch_norm`` of the weight), so the
declared convention is ``FRAMEWORK_MODELS["timm"]``. ``LayerNorm`` and ``RmsNorm``
take the size of one or more trailing axes; ``GroupNorm`` takes
``(num_channels, num_groups)``, channels first.

Weight standardization (``StdConv2d``, ``ScaledStdConv2d``) happens inside a
convolution's forward: the case's weight, its units first and its fan-in
flattened, is a ``1 x 1`` kernel of ``N`` input channels, and the convolution of
the identity (``N`` one-hot images) returns the standardized weight exactly,
its gradient flowing back unchanged.

``adaptive_clip_grad`` clips ``.grad`` in place under ``torch.no_grad``: it is checked
forward only, on a parameter whose ``.grad`` is the case's gradient, its units along axis 0
(timm's layout: the case's unit axis is moved there and back).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from conformance.adapters.arrays import Native
from conformance.adapters.base import Adapter, Binding, unit_axis
from conformance.adapters.torch import (
    Call,
    Compute,
    channels,
    channels_at_1,
    eps_keyword,
    has_affine,
    module_call,
    normalized_shape,
    on_dtype,
    torch_run,
    trailing,
)
from conformance.checked.cases import Prepared
from conformance.checked.models import FRAMEWORK_MODELS

FRAMEWORK = "timm"
MODEL = FRAMEWORK_MODELS["timm"]


PACKAGES = ("timm", "timm.layers", "timm.utils")
"""timm's packages, whose ``__init__`` (importing torchvision) is not executed."""

MODULES = ("timm.layers.std_conv", "timm.layers.norm", "timm.utils.agc", "timm.version")
"""The modules the adapter uses, none of which needs torchvision."""


def load(name: str) -> Any:
    """timm's module ``name``, loaded without executing the ``__init__`` of its packages.

    Each package of :data:`PACKAGES` not already imported is registered as an empty module
    whose ``__path__`` is timm's directory, so that importing ``name`` runs its own file and
    those it imports (relative imports resolve to timm's files) and no ``__init__``. Where
    timm itself was imported, its modules are used.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.machinery.PathFinder.find_spec("timm")  # finds it, executes nothing
    if spec is None or not spec.submodule_search_locations:
        msg = "timm is not installed"
        raise ModuleNotFoundError(msg)
    root = Path(next(iter(spec.submodule_search_locations)))
    for package in PACKAGES:
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
            module.__package__ = package
            sys.modules[package] = module
    return importlib.import_module(name)


def _check() -> str | None:
    """Why timm's modules cannot be loaded here, or ``None``."""
    try:
        for name in MODULES:
            load(name)
    except Exception as error:  # noqa: BLE001 - any failure to load is the reason to skip
        return f"timm's modules do not load: {type(error).__name__}: {error}"
    return None


def _layers() -> Any:
    """The layers of ``timm.layers`` the adapter binds."""
    return types.SimpleNamespace(
        **{
            name: getattr(load(module), name)
            for module, names in (
                ("timm.layers.std_conv", ("StdConv2d", "ScaledStdConv2d")),
                ("timm.layers.norm", ("LayerNorm", "GroupNorm", "RmsNorm")),
            )
            for name in names
        }
    )


def _layer_norm(prepared: Prepared) -> Compute:
    module = _layers().LayerNorm(
        normalized_shape(prepared), affine=has_affine(prepared), **eps_keyword(prepared)
    )
    return module_call(on_dtype(module, prepared))


def _rms_norm(prepared: Prepared) -> Compute:
    module = _layers().RmsNorm(
        normalized_shape(prepared), affine=has_affine(prepared), **eps_keyword(prepared)
    )
    return module_call(on_dtype(module, prepared))


def _group_norm(prepared: Prepared) -> Compute:
    c, _ = channels(prepared)
    module = _layers().GroupNorm(
        c, prepared.sample.args["num_groups"], affine=has_affine(prepared), **eps_keyword(prepared)
    )
    return module_call(on_dtype(module, prepared))


def _standardized(scaled: bool) -> Call:
    """``StdConv2d`` or ``ScaledStdConv2d`` on the case's weight as a ``1 x 1`` kernel."""

    def call(prepared: Prepared) -> Compute:
        import torch

        shape, axis = prepared.sample.args["w"].shape, unit_axis(prepared)
        units = shape[axis]
        fan_in = int(np.prod(shape)) // units
        eps = prepared.sample.kwargs["eps"]
        layers = _layers()
        if scaled:
            gamma = prepared.sample.kwargs.get("gamma", 1.0)
            module = layers.ScaledStdConv2d(fan_in, units, 1, padding=0, gamma=gamma, eps=eps)
        else:
            module = layers.StdConv2d(fan_in, units, 1, padding=0, eps=eps)
        module = on_dtype(module, prepared)

        def compute(arrays: dict[str, Native]) -> Native:
            from torch.func import functional_call

            w = arrays["w"]
            moved = torch.movedim(w, axis, 0)
            replaced = {"weight": moved.reshape(units, fan_in, 1, 1)}
            if scaled:
                replaced["bias"] = torch.zeros(units, dtype=w.dtype)
                if arrays.get("gain") is not None:
                    replaced["gain"] = arrays["gain"].reshape(units, 1, 1, 1)
            identity = torch.eye(fan_in, dtype=w.dtype).reshape(fan_in, fan_in, 1, 1)
            out = functional_call(module, replaced, (identity,))
            standardized = out.reshape(fan_in, units).T.reshape(moved.shape)
            return torch.movedim(standardized, 0, axis)

        return compute

    return call


def _adaptive_clip_grad(prepared: Prepared) -> Compute:
    import torch

    axis, kwargs = unit_axis(prepared, "grad"), prepared.sample.kwargs
    clip = load("timm.utils.agc").adaptive_clip_grad

    def compute(arrays: dict[str, Native]) -> Native:
        param = torch.nn.Parameter(torch.movedim(arrays["param"], axis, 0).clone())
        param.grad = torch.movedim(arrays["grad"], axis, 0).clone()
        clip([param], clip_factor=kwargs["clipping"], eps=kwargs["eps"])
        return torch.movedim(param.grad, 0, axis)

    return compute


BINDINGS = (
    *(
        Binding(op, label, FRAMEWORK, torch_run(call), MODEL)
        for op, label, call in (
            ("weight_standardize", "timm.layers.StdConv2d (weight)", _standardized(scaled=False)),
            (
                "scaled_weight_standardize",
                "timm.layers.ScaledStdConv2d (weight)",
                _standardized(scaled=True),
            ),
            ("layer_norm", "timm.layers.LayerNorm", trailing(_layer_norm)),
            ("group_norm", "timm.layers.GroupNorm", channels_at_1(_group_norm)),
            ("rms_norm", "timm.layers.RmsNorm", trailing(_rms_norm)),
        )
    ),
    Binding(
        "adaptive_grad_clip",
        "timm.utils.agc.adaptive_clip_grad",
        FRAMEWORK,
        torch_run(_adaptive_clip_grad),
        MODEL,
        backward=False,
        notes="clips .grad in place under no_grad: no backward",
    ),
)


def _versions() -> dict[str, str]:
    import torch

    return {"timm": load("timm.version").__version__, "torch": torch.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="timm.layers normalization modules and timm.utils.agc (torch autograd backward)",
    model=MODEL,
    requires=("timm", "torch"),
    bindings=BINDINGS,
    versions=_versions,
    compiler="torch.compile",
    install_hint="pip install -e '.[torch]' and pip install --no-deps timm pyyaml",
    check=_check,
)
