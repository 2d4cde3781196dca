"""The terms of any checked op's outputs, by its kind of computation.

Each kind of :class:`normref.registry.Kind` has one builder of its terms
(:mod:`conformance.bounds.terms` for the layers, :mod:`~conformance.bounds.terms_weights`
for the operations on weights and gradients, :mod:`~conformance.bounds.terms_whitening`
for the whitening family and the orthogonalizing weights, :mod:`~conformance.bounds.terms_layers`
for the other layers of the literature); :mod:`conformance.bounds.budgets` holds each kind's
operation counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from conformance.bounds import terms_layers, terms_weights, terms_whitening
from conformance.bounds.terms import OpTerms, op_terms
from conformance.checked.models import Model
from conformance.checked.ops import CheckedOp
from normref.registry import Kind, Sample

TermBuilder = Callable[[Any, Sample, "np.ndarray | None", Any], OpTerms]

BUILDERS: dict[Kind, TermBuilder] = {
    Kind.CENTERING: op_terms,
    Kind.STANDARDIZING: op_terms,
    Kind.SCALING: op_terms,
    Kind.RMS_SCALING: op_terms,
    Kind.GIVEN_STATISTICS: op_terms,
    Kind.SCALED_STANDARDIZING: terms_weights.scaled_ws_terms,
    Kind.WEIGHT_NORMALIZING: terms_weights.weight_norm_terms,
    Kind.SPECTRAL_NORMALIZING: terms_weights.spectral_terms,
    Kind.SPECTRAL_STEP: terms_weights.spectral_train_terms,
    Kind.ADAPTIVE_CLIPPING: terms_weights.agc_terms,
    Kind.UNIT_NORM: terms_weights.unit_norm_terms,
    Kind.GLOBAL_CLIPPING: terms_weights.global_clip_terms,
    Kind.RESIDUAL: terms_weights.residual_terms,
    Kind.NONLINEARITY: terms_weights.nonlinearity_terms,
    Kind.WHITENING: terms_whitening.whitening_terms,
    Kind.GIVEN_WHITENING: terms_whitening.whitening_inference_terms,
    Kind.RENORMALIZING: terms_layers.renorm_terms,
    Kind.SWITCHABLE: terms_layers.switchable_terms,
    Kind.ADAPTIVE_INSTANCE: terms_layers.adain_terms,
    Kind.LOCAL_RESPONSE: terms_layers.lrn_terms,
    Kind.CENTRED_WEIGHT_NORMALIZING: terms_weights.centred_weight_norm_terms,
    Kind.ORTHOGONALIZING: terms_whitening.orthogonal_terms,
}
"""The builder of each kind's terms: ``build(op, sample, dy, model)``."""


def terms_of(op: CheckedOp, sample: Sample, dy: np.ndarray | None, model: Model) -> OpTerms:
    """The terms behind ``op``'s outputs (and gradients, given ``dy``) on a float64 ``sample``
    under ``model``."""
    return BUILDERS[op.kind](op, sample, dy, model)
