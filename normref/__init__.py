"""normref: the numerical reference for normalization in deep learning.

Every normalization is an Array-API function with a forward and a
hand-derived backward (``*_vjp``) that runs unchanged on NumPy, CuPy,
array-api-strict, PyTorch, JAX and Dask arrays. See :mod:`normref.layers`
for the named layers, :mod:`normref.ops` for the operations on the canonical
``(G, M, D)`` layout, :mod:`normref.partition` for how layers group elements,
:mod:`normref.stats` for mergeable moments and running statistics, and
:mod:`normref.conventions` for the frameworks' choices as data.
:mod:`normref.whitening` holds the batch whitening layers.
"""

from normref import conventions, ops, partition, registry, stats
from normref._layer import NormGrads, ScaleNormGrads
from normref._namespace import Float64UnavailableError
from normref.conventions import FLAX, KERAS, ONNX, TORCH, Convention
from normref.layers import (
    batch_norm,
    batch_norm_inference,
    batch_norm_inference_vjp,
    batch_norm_train,
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
from normref.stats import Comoments, Moments, RunningStats
from normref.whitening import (
    RunningWhitening,
    batch_whiten,
    batch_whiten_inference,
    batch_whiten_inference_vjp,
    batch_whiten_train,
    batch_whiten_vjp,
    running_whitening_update,
)

__version__ = "0.1.0"

__all__ = [
    "FLAX",
    "KERAS",
    "ONNX",
    "TORCH",
    "Comoments",
    "Convention",
    "Float64UnavailableError",
    "Moments",
    "NormGrads",
    "RunningStats",
    "RunningWhitening",
    "ScaleNormGrads",
    "__version__",
    "batch_norm",
    "batch_norm_inference",
    "batch_norm_inference_vjp",
    "batch_norm_train",
    "batch_norm_vjp",
    "batch_whiten",
    "batch_whiten_inference",
    "batch_whiten_inference_vjp",
    "batch_whiten_train",
    "batch_whiten_vjp",
    "conventions",
    "ghost_batch_norm",
    "ghost_batch_norm_vjp",
    "group_norm",
    "group_norm_vjp",
    "instance_norm",
    "instance_norm_vjp",
    "layer_norm",
    "layer_norm_vjp",
    "ops",
    "partition",
    "registry",
    "rms_norm",
    "rms_norm_vjp",
    "running_whitening_update",
    "stats",
]
