"""timm (pytorch-image-models) normalization layers, through the torch adapter's machinery.

Optional: timm pins its own torch; where it is not installed the adapter is
skipped with that reason. timm's layers are torch modules whose defaults
differ from torch's: ``LayerNorm`` and ``RmsNorm`` default to ``eps=1e-6``
(``timm/layers/norm.py``), so the declared convention is torch's with those
defaults. ``LayerNorm`` and ``RmsNorm`` take the size of one or more trailing
axes; ``GroupNorm`` takes ``(num_channels, num_groups)``, channels first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from conformance.adapters.base import Adapter, Binding
from conformance.adapters.torch import (
    _call_module,
    _channels_at_1,
    _eps,
    _normalized_shape,
    _trailing,
    torch_run,
)
from conformance.arrays import Native
from conformance.models import Model
from conformance.reference import Prepared
from normref.conventions import TORCH

FRAMEWORK = "timm"
MODEL = Model(dataclasses.replace(TORCH, name="timm", layer_norm_eps=1e-6, rms_norm_eps=1e-6))


def _layers() -> Any:
    import timm.layers

    return timm.layers


def _layer_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    module = _layers().LayerNorm(
        _normalized_shape(prepared), affine="gamma" in arrays, **_eps(prepared)
    )
    return _call_module(module, arrays, arrays["x"])


def _rms_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    module = _layers().RmsNorm(
        _normalized_shape(prepared), affine="gamma" in arrays, **_eps(prepared)
    )
    return _call_module(module, arrays, arrays["x"])


def _group_norm(arrays: dict[str, Native], prepared: Prepared) -> Native:
    x = arrays["x"]
    module = _layers().GroupNorm(
        x.shape[1], prepared.sample.args["num_groups"], affine="gamma" in arrays, **_eps(prepared)
    )
    return _call_module(module, arrays, x)


BINDINGS = tuple(
    Binding(op, label, FRAMEWORK, torch_run(call), MODEL)
    for op, label, call in (
        ("layer_norm", "timm.layers.LayerNorm", _trailing(_layer_norm)),
        ("group_norm", "timm.layers.GroupNorm", _channels_at_1(_group_norm)),
        ("rms_norm", "timm.layers.RmsNorm", _trailing(_rms_norm)),
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
    install_hint="pip install timm; timm pins a torch of its own, other than this project's",
)
