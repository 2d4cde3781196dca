"""The batch whitening layers, under the import path they were first published at.

They live in :mod:`normref.layers.whitening`; this module re-exports them so
that ``normref.whitening.batch_whiten`` keeps working.
"""

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
    "RunningWhitening",
    "batch_whiten",
    "batch_whiten_inference",
    "batch_whiten_inference_vjp",
    "batch_whiten_train",
    "batch_whiten_vjp",
    "running_whitening_update",
]
