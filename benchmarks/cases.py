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


MAX_DRAWS = 64
"""Seeds tried for a sample with the arguments a case names in :attr:`Case.drawn`."""


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
    variant
        What tells this case from others of the same operation and shape
        (e.g. ``"group_size=16"``), shown after the operation's name.
    drawn
        Arguments the drawn sample must have, where the sampler draws them
        along with the data that depends on them (e.g. a weight's
        ``out_axis``): seeds 0, 1, ... are tried until one gives them.
    fused
        Whether normref has a fused NumPy path for the operation, so that its
        generic path is timed too.
    """

    op: str
    shape: tuple[int, ...]
    source: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    variant: str = ""
    drawn: Mapping[str, Any] = field(default_factory=dict)
    fused: bool = False

    @property
    def spec(self) -> OpSpec:
        """The operation's registry entry."""
        return REGISTRY[self.op]

    def _draw(self) -> Sample:
        for seed in range(MAX_DRAWS):
            drawn = self.spec.sample(np.random.default_rng(seed), self.shape)
            if all(drawn.kwargs.get(k, drawn.args.get(k)) == v for k, v in self.drawn.items()):
                return drawn.replace(**self.fixed)
        msg = f"{self.label}: no seed below {MAX_DRAWS} draws a sample with {dict(self.drawn)}"
        raise ValueError(msg)

    def sample(self, dtype: str) -> Sample:
        """The registry's sample at :attr:`shape`, its arrays as NumPy arrays of ``dtype``."""
        drawn = self._draw()

        def convert(value: Any) -> Any:
            return value.astype(dtype) if isinstance(value, np.ndarray) else value

        return Sample(
            {k: convert(v) for k, v in drawn.args.items()},
            {k: convert(v) for k, v in drawn.kwargs.items()},
        )

    @property
    def name(self) -> str:
        """The operation's name and the case's :attr:`variant`, as the tables print it."""
        return f"{self.op} ({self.variant})" if self.variant else self.op

    @property
    def label(self) -> str:
        """``name (shape)``, as progress messages print it."""
        return f"{self.name} {self.shape}"


def _activation_cases(op: str, **fixed: Any) -> tuple[Case, ...]:
    return (
        Case(op, ACTIVATIONS_LARGE, "ResNet-50 stage 1, batch 32", fixed, fused=True),
        Case(op, ACTIVATIONS_DEEP, "ResNet stage 2, batch 8", fixed, quick=True, fused=True),
    )


STANDARDIZATION_CASES: tuple[Case, ...] = (
    *_activation_cases("batch_norm"),
    *_activation_cases("group_norm", num_groups=GROUP_NORM_GROUPS),
    *_activation_cases("instance_norm"),
    Case("layer_norm", TOKENS, "transformer tokens", quick=True, fused=True),
    Case("rms_norm", TOKENS, "transformer tokens", quick=True, fused=True),
)

WHITENING_ACTIVATIONS = (128, 64, 8, 8)
"""Activations (N, C, H, W) of a small convolutional network, as in the DBN experiments."""

WHITENING_GROUP_SIZES = (16, 64)
"""Channels whitened jointly: DBN's usual group size, and all 64 channels in one group."""

WHITENING_CASES: tuple[Case, ...] = tuple(
    Case(
        "batch_whiten",
        WHITENING_ACTIVATIONS,
        "DBN layer (ZCA), 64 channels",
        {"group_size": k},
        quick=k == WHITENING_GROUP_SIZES[0],
        variant=f"group_size={k}",
    )
    for k in WHITENING_GROUP_SIZES
)

CONV_KERNEL = (256, 256, 3, 3)
"""A 3x3 convolution kernel (out, in, H, W) with 256 channels in and out (ResNet stage 3)."""

_OIHW = {"out_axis": 0}

WEIGHT_CASES: tuple[Case, ...] = (
    Case(
        "weight_standardize",
        CONV_KERNEL,
        "3x3 conv kernel, OIHW",
        drawn=_OIHW,
        fused=True,
        quick=True,
    ),
    Case(
        "scaled_weight_standardize",
        CONV_KERNEL,
        "3x3 conv kernel, OIHW",
        drawn=_OIHW,
        fused=True,
        quick=True,
    ),
)

GRADIENT_CASES: tuple[Case, ...] = (
    Case("adaptive_grad_clip", CONV_KERNEL, "3x3 conv kernel, OIHW", drawn=_OIHW, quick=True),
)

FAMILIES: dict[str, tuple[Case, ...]] = {
    "standardization": STANDARDIZATION_CASES,
    "whitening": WHITENING_CASES,
    "weights": WEIGHT_CASES,
    "gradients": GRADIENT_CASES,
}
"""The benchmarked cases of each registry family."""

DTYPES = ("float32", "float64")
QUICK_DTYPES = ("float32",)
PRECISIONS = ("native", "highest")
