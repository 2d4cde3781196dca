"""Adapters: one module per framework, each declaring its convention and its bindings.

A framework is imported only when one of its bindings runs; listing the
adapters (``normref-conformance --list``) imports none of them.
"""

from __future__ import annotations

import importlib

from conformance.adapters.base import Adapter, Binding, FrameworkLacksError

ADAPTERS: dict[str, tuple[str, str]] = {
    "torch": ("conformance.adapters.torch", "ADAPTER"),
    "flax": ("conformance.adapters.flax", "ADAPTER"),
    "optax": ("conformance.adapters.optax", "ADAPTER"),
    "nfnets": ("conformance.adapters.nfnets", "ADAPTER"),
    "onnxruntime": ("conformance.adapters.onnx", "ONNXRUNTIME"),
    "onnx-reference": ("conformance.adapters.onnx", "ONNX_REFERENCE"),
    "timm": ("conformance.adapters.timm", "ADAPTER"),
    "keras": ("conformance.adapters.keras", "ADAPTER"),
    "haiku": ("conformance.adapters.haiku", "ADAPTER"),
    "equinox": ("conformance.adapters.equinox", "ADAPTER"),
    "tf-keras": ("conformance.adapters.tf_keras", "ADAPTER"),
}
"""Every framework the suite checks: its module and the adapter's name in it."""


def get_adapter(name: str) -> Adapter:
    """The adapter of framework ``name`` (:class:`ValueError` listing them otherwise)."""
    try:
        module, attribute = ADAPTERS[name]
    except KeyError:
        msg = f"framework must be one of {sorted(ADAPTERS)}, got {name!r}"
        raise ValueError(msg) from None
    return getattr(importlib.import_module(module), attribute)


__all__ = ["ADAPTERS", "Adapter", "Binding", "FrameworkLacksError", "get_adapter"]
