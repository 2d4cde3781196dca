"""What the registry records about one operation: :class:`OpSpec`, and its samples.

See :mod:`normref.registry` for the property names and how the records are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from normref.partition import (
    Partition,
)

Rng = Any  # numpy.random.Generator, supplied by the caller


class Sample(NamedTuple):
    """Arguments of one call: ``args`` (positional-or-keyword, in order) and ``kwargs``."""

    args: dict[str, Any]
    kwargs: dict[str, Any]

    def replace(self, **changes: Any) -> Sample:
        """A copy with some arguments (positional or keyword) replaced."""
        args = {k: changes.pop(k) if k in changes else v for k, v in self.args.items()}
        return Sample(args, {**self.kwargs, **changes})


class ErrorCase(NamedTuple):
    """An invalid input: how to derive it from a valid sample, and what must be raised."""

    description: str
    modify: Callable[[Sample], Sample]
    exception: type[Exception]
    match: str


@dataclass(frozen=True)
class OpSpec:
    """One operation of normref (see the module docstring)."""

    name: str
    family: str
    forward: Callable[..., Any]
    vjp: Callable[..., Any]
    arrays: tuple[str, ...]
    differentiable: tuple[str, ...]
    sample: Callable[..., Sample]
    partition: Callable[[Sample], Partition] | None = None
    affine_args: tuple[str, ...] = ()
    properties: frozenset[str] = frozenset()
    errors: tuple[ErrorCase, ...] = ()

    @property
    def primary(self) -> str:
        """Name of the main input (the first array argument: ``x``, ``w``, ``grad``, ...)."""
        return self.arrays[0]

    def call(self, sample: Sample) -> Any:
        """The forward on ``sample``."""
        return self.forward(*sample.args.values(), **sample.kwargs)

    def call_vjp(self, dy: Any, sample: Sample) -> Any:
        """The VJP on cotangent ``dy`` and ``sample``."""
        return self.vjp(dy, *sample.args.values(), **sample.kwargs)

    def without_affine(self, sample: Sample) -> Sample:
        """``sample`` with the affine parameters set to ``None``."""
        return sample.replace(**dict.fromkeys(self.affine_args))
