"""What is benchmarked: registry operations on input shapes taken from real networks.

A :class:`Case` names a registry operation, the shape of its primary input and
the network layer that shape comes from; its arguments are drawn by the
operation's own registry sampler at that shape, so a benchmark runs exactly
what the tests check. A family's cases are listed in :data:`FAMILIES`; an
operation family that lands in the registry adds its list there (and its
framework counterparts in :mod:`benchmarks.frameworks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normref.registry import REGISTRY, OpSpec, Sample

ACTIVATIONS_LARGE = (32, 64, 56, 56)
"""ResNet-50 stage 1 activations (N, C, H, W) at batch 32."""

ACTIVATIONS_DEEP = (8, 256, 28, 28)
"""ResNet stage 2 activations (N, C, H, W) at batch 8."""

TOKENS = (16, 128, 1024)
"""Transformer tokens (batch, sequence, width)."""

GROUP_NORM_GROUPS = 32
"""The number of groups of Wu & He (2018)."""


@dataclass(frozen=True)
class Case:
    """One benchmarked operation on one input shape.

    Attributes
    ----------
    op
        The registry name of the operation.
    shape
        Shape of the operation's primary input.
    source
        Where the shape comes from.
    fixed
        Arguments set instead of drawn (e.g. ``num_groups``).
    quick
        Whether ``--quick`` runs this case.
    """

    op: str
    shape: tuple[int, ...]
    source: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False

    @property
    def spec(self) -> OpSpec:
        """The operation's registry entry."""
        return REGISTRY[self.op]

    def sample(self, dtype: str, seed: int = 0) -> Sample:
        """The registry's sample at :attr:`shape`, its arrays as NumPy arrays of ``dtype``."""
        drawn = self.spec.sample(np.random.default_rng(seed), self.shape).replace(**self.fixed)

        def convert(value: Any) -> Any:
            return value.astype(dtype) if isinstance(value, np.ndarray) else value

        return Sample(
            {k: convert(v) for k, v in drawn.args.items()},
            {k: convert(v) for k, v in drawn.kwargs.items()},
        )

    @property
    def label(self) -> str:
        """``op (shape)``, as the tables print it."""
        return f"{self.op} {self.shape}"


def _activation_cases(op: str, **fixed: Any) -> tuple[Case, ...]:
    return (
        Case(op, ACTIVATIONS_LARGE, "ResNet-50 stage 1, batch 32", fixed),
        Case(op, ACTIVATIONS_DEEP, "ResNet stage 2, batch 8", fixed, quick=True),
    )


STANDARDIZATION_CASES: tuple[Case, ...] = (
    *_activation_cases("batch_norm"),
    *_activation_cases("group_norm", num_groups=GROUP_NORM_GROUPS),
    *_activation_cases("instance_norm"),
    Case("layer_norm", TOKENS, "transformer tokens", quick=True),
    Case("rms_norm", TOKENS, "transformer tokens", quick=True),
)

FAMILIES: dict[str, tuple[Case, ...]] = {"standardization": STANDARDIZATION_CASES}
"""The benchmarked cases of each registry family."""

DTYPES = ("float32", "float64")
QUICK_DTYPES = ("float32",)
PRECISIONS = ("native", "highest")
