"""timm (pytorch-image-models) normalization layers, through the torch adapter's machinery.

Optional: where timm is not installed the adapter is skipped with that reason.
timm imports torchvision, which must be built for the installed torch (the same
release, CPU or CUDA build alike); PyPI's torchvision wheels are CUDA builds
and do not load beside a CPU torch. So far the adapter has been checked only
against a stand-in of ``StdConv2d`` and ``ScaledStdConv2d`` rewritten from
timm's source (``tests/conformance/stub_timm``), not against timm itself. timm's layers are torch modules whose defaults
differ from torch's: ``LayerNorm`` and ``RmsNorm`` default to ``eps=1e-6``
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
"""

from __future__ import annotations

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


def _layers() -> Any:
    import timm.layers

    return timm.layers


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


BINDINGS = tuple(
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
)


def _versions() -> dict[str, str]:
    import timm
    import torch

    return {"timm": timm.__version__, "torch": torch.__version__}


ADAPTER = Adapter(
    name=FRAMEWORK,
    description="timm.layers normalization modules (torch autograd backward)",
    model=MODEL,
    requires=("timm", "torch"),
    bindings=BINDINGS,
    versions=_versions,
    compiler="torch.compile",
    install_hint=(
        "pip install timm, with a torchvision built for the installed torch (same release, "
        "CPU or CUDA build alike: PyPI's torchvision wheels need a CUDA torch)"
    ),
)
