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

from dataclasses import dataclass
from typing import Any

import numpy as np

from normref.registry import REGISTRY, BenchmarkInput, OpSpec, Sample


@dataclass(frozen=True)
class Case:
    """One benchmarked operation on one of its registry benchmark inputs."""

    op: str
    input: BenchmarkInput

    @property
    def spec(self) -> OpSpec:
        """The operation's registry entry."""
        return REGISTRY[self.op]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the operation's primary input."""
        return self.input.shape

    @property
    def source(self) -> str:
        """Where the shape comes from."""
        return self.input.description

    @property
    def quick(self) -> bool:
        """Whether ``--quick`` runs this case."""
        return self.input.quick

    @property
    def variant(self) -> str:
        """What tells this case from others of the same operation and shape."""
        return self.input.variant

    @property
    def fused(self) -> bool:
        """Whether normref's compiled path runs the operation, so that its generic path is
        timed too."""
        return self.input.compiled

    def sample(self, dtype: str) -> Sample:
        """The registry's sample at :attr:`shape` (with the input's drawn and fixed
        arguments), its arrays as NumPy arrays of ``dtype``."""
        drawn = self.spec.draw(self.input, np.random.default_rng(0))

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
    return tuple(Case(spec.name, bench) for bench in spec.benchmarks)


FAMILIES: dict[str, tuple[Case, ...]] = {}
"""The benchmarked cases of each registry family, from the registry's benchmark inputs
(:attr:`normref.registry.OpSpec.benchmarks`)."""
for _spec in REGISTRY.values():
    if _spec.benchmarks:
        FAMILIES[_spec.family] = FAMILIES.get(_spec.family, ()) + _cases(_spec)

DTYPES = ("float32", "float64")
QUICK_DTYPES = ("float32",)
PRECISIONS = ("native", "highest")
