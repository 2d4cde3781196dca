"""Named normalization layers: each is a partition + an operation + an affine.

:mod:`normref.layers.compose` is the engine that runs a layer (forward and
backward) from those three parts; :mod:`normref.layers.standardization` holds
the standardizing layers (batch, layer, instance, group, ghost batch and RMS
norm) and :mod:`normref.layers.whitening` the batch whitening layers. Every
layer is importable from here and from the top-level package.
"""

from normref.layers.compose import NormGrads, ScaleNormGrads
from normref.layers.standardization import (
    batch_norm,
    batch_norm_inference,
    batch_norm_inference_vjp,
    batch_norm_train,
    batch_norm_train_vjp,
    batch_norm_vjp,
    ghost_batch_norm,
    ghost_batch_norm_vjp,
    group_norm,
    group_norm_vjp,
    instance_norm,
    instance_norm_vjp,
    layer_norm,
    layer_norm_vjp,
    rms_norm,
    rms_norm_vjp,
)
from normref.layers.whitening import (
    RunningWhitening,
    batch_whiten,
    batch_whiten_inference,
    batch_whiten_inference_vjp,
    batch_whiten_train,
    batch_whiten_vjp,
    running_whitening_update,
)

__all__ = [
    "NormGrads",
    "RunningWhitening",
    "ScaleNormGrads",
    "batch_norm",
    "batch_norm_inference",
    "batch_norm_inference_vjp",
    "batch_norm_train",
    "batch_norm_train_vjp",
    "batch_norm_vjp",
    "batch_whiten",
    "batch_whiten_inference",
    "batch_whiten_inference_vjp",
    "batch_whiten_train",
    "batch_whiten_vjp",
    "ghost_batch_norm",
    "ghost_batch_norm_vjp",
    "group_norm",
    "group_norm_vjp",
    "instance_norm",
    "instance_norm_vjp",
    "layer_norm",
    "layer_norm_vjp",
    "rms_norm",
    "rms_norm_vjp",
    "running_whitening_update",
]
