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
from normref.gradients import (
    AGCGrads,
    adaptive_grad_clip,
    adaptive_grad_clip_tree,
    adaptive_grad_clip_vjp,
    clip_by_global_norm,
    global_norm,
    unitwise_norm,
)
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
from normref.nonlinearities import NFNETS_PUBLISHED_GAMMAS, nonlinearity_gamma
from normref.residual import (
    SignalPropagation,
    SkipInitGrads,
    nf_expected_stds,
    nf_residual,
    signal_propagation,
    skip_init_residual,
    skip_init_residual_vjp,
)
from normref.stats import Comoments, Moments, RunningStats
from normref.weights import (
    ScaledWSGrads,
    SpectralNormResult,
    WeightGrad,
    WeightNormGrads,
    scaled_weight_standardize,
    scaled_weight_standardize_vjp,
    spectral_norm,
    spectral_norm_vjp,
    spectral_norm_weight,
    weight_norm,
    weight_norm_vjp,
    weight_standardize,
    weight_standardize_vjp,
)
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
    "NFNETS_PUBLISHED_GAMMAS",
    "ONNX",
    "TORCH",
    "AGCGrads",
    "Comoments",
    "Convention",
    "Float64UnavailableError",
    "Moments",
    "NormGrads",
    "RunningStats",
    "RunningWhitening",
    "ScaleNormGrads",
    "ScaledWSGrads",
    "SignalPropagation",
    "SkipInitGrads",
    "SpectralNormResult",
    "WeightGrad",
    "WeightNormGrads",
    "__version__",
    "adaptive_grad_clip",
    "adaptive_grad_clip_tree",
    "adaptive_grad_clip_vjp",
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
    "clip_by_global_norm",
    "conventions",
    "ghost_batch_norm",
    "ghost_batch_norm_vjp",
    "global_norm",
    "group_norm",
    "group_norm_vjp",
    "instance_norm",
    "instance_norm_vjp",
    "layer_norm",
    "layer_norm_vjp",
    "nf_expected_stds",
    "nf_residual",
    "nonlinearity_gamma",
    "ops",
    "partition",
    "registry",
    "rms_norm",
    "rms_norm_vjp",
    "running_whitening_update",
    "scaled_weight_standardize",
    "scaled_weight_standardize_vjp",
    "signal_propagation",
    "skip_init_residual",
    "skip_init_residual_vjp",
    "spectral_norm",
    "spectral_norm_vjp",
    "spectral_norm_weight",
    "stats",
    "unitwise_norm",
    "weight_norm",
    "weight_norm_vjp",
    "weight_standardize",
    "weight_standardize_vjp",
]
