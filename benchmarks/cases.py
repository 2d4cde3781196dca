"""What is benchmarked: registry operations on input shapes taken from real networks.

A :class:`Case` names a registry operation, the shape of its primary input and
the network layer that shape comes from: each is one of the operation's
registry benchmark inputs (:attr:`normref.registry.OpSpec.benchmarks`). Its
arguments are drawn by the operation's own registry sampler at that shape, so
a benchmark runs exactly what the tests check. An operation added to the
registry with benchmark inputs is benchmarked (its framework counterparts go
in :mod:`benchmarks.frameworks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normref.registry import REGISTRY, OpSpec, Sample

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


def _cases(spec: OpSpec) -> tuple[Case, ...]:
    return tuple(
        Case(
            spec.name,
            bench.shape,
            bench.description,
            dict(bench.fixed),
            quick=bench.quick,
            variant=bench.variant,
            drawn=dict(bench.drawn),
            fused=bench.compiled,
        )
        for bench in spec.benchmarks
    )


FAMILIES: dict[str, tuple[Case, ...]] = {}
"""The benchmarked cases of each registry family, from the registry's benchmark inputs
(:attr:`normref.registry.OpSpec.benchmarks`)."""
for _spec in REGISTRY.values():
    if _spec.benchmarks:
        FAMILIES[_spec.family] = FAMILIES.get(_spec.family, ()) + _cases(_spec)

DTYPES = ("float32", "float64")
QUICK_DTYPES = ("float32",)
PRECISIONS = ("native", "highest")
