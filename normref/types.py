"""The types of normref's signatures: arrays, their namespaces, and the precision argument."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from normref.conventions import Convention

Array: TypeAlias = Any
"""An array of any Array API library: NumPy, CuPy, array-api-strict, PyTorch, JAX or Dask.

The libraries' arrays share no static type (the standard specifies behaviour,
not a class), so this is an alias of ``Any``, kept to say what an argument is.
"""

Namespace: TypeAlias = Any
"""The Array API namespace of some arrays (``array_api_compat.array_namespace``)."""

PresetName = Literal["normref", "torch", "flax", "keras", "onnx", "timm", "optax", "nfnets"]
"""The names of the presets of :mod:`normref.conventions`."""

Precision: TypeAlias = Literal["highest", "native"] | PresetName | Convention
"""How an operation computes: ``"highest"`` (float64, rounded once to the output dtype),
``"native"`` (in the input's dtype), or a convention to model (a preset's name or a
:class:`~normref.conventions.Convention`): its compute dtype for float16/bfloat16 input, its
variance algorithm and its output dtype rule."""
