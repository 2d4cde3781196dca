"""Named normalization layers: each is a partition + an operation + an affine.

:mod:`normref.layers.compose` is the engine that runs a layer (forward and
backward) from those three parts; :mod:`normref.layers.standardization` holds
the standardizing layers (batch, layer, instance, group, ghost batch and RMS
norm, mean-only batch norm) and :mod:`normref.layers.whitening` the batch whitening layers;
:mod:`~normref.layers.renormalization` (batch renorm), :mod:`~normref.layers.switchable`
(switchable norm), :mod:`~normref.layers.conditional` (AdaIN) and
:mod:`~normref.layers.local_response` (LRN) the other layers of the literature. Every
layer is importable from here and from the top-level package.
"""

from normref.layers.compose import NormGrads, ScaleNormGrads
from normref.layers.conditional import (
    AdaINGrads,
    adaptive_instance_norm,
    adaptive_instance_norm_vjp,
)
from normref.layers.local_response import local_response_norm, local_response_norm_vjp
from normref.layers.renormalization import (
    batch_renorm,
    batch_renorm_train,
    batch_renorm_train_vjp,
    batch_renorm_vjp,
)
from normref.layers.standardization import (
    MeanOnlyGrads,
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
    mean_only_batch_norm,
    mean_only_batch_norm_vjp,
    rms_norm,
    rms_norm_vjp,
)
from normref.layers.switchable import SwitchableGrads, switchable_norm, switchable_norm_vjp
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
    "AdaINGrads",
    "MeanOnlyGrads",
    "NormGrads",
    "RunningWhitening",
    "ScaleNormGrads",
    "SwitchableGrads",
    "adaptive_instance_norm",
    "adaptive_instance_norm_vjp",
    "batch_norm",
    "batch_norm_inference",
    "batch_norm_inference_vjp",
    "batch_norm_train",
    "batch_norm_train_vjp",
    "batch_norm_vjp",
    "batch_renorm",
    "batch_renorm_train",
    "batch_renorm_train_vjp",
    "batch_renorm_vjp",
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
    "local_response_norm",
    "local_response_norm_vjp",
    "mean_only_batch_norm",
    "mean_only_batch_norm_vjp",
    "rms_norm",
    "rms_norm_vjp",
    "running_whitening_update",
    "switchable_norm",
    "switchable_norm_vjp",
]
