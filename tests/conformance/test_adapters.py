"""Every framework adapter follows CONTRIBUTING.md's checklist: its module declares what it
needs, the conventions page cites its framework, and it has tests of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.adapters import ADAPTERS, get_adapter
from conformance.checked.ops import CHECKED_OPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_adapter_declares_what_it_needs_and_binds_known_ops(name: str):
    adapter = get_adapter(name)
    assert adapter.name == name
    assert adapter.requires, f"{name} lists no module it needs"
    assert adapter.install_hint, f"{name} says nowhere how to install what it needs"
    assert set(adapter.ops()) <= set(CHECKED_OPS)
    assert all(b.framework == name for b in adapter.bindings)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_adapter_has_tests_and_cited_conventions(name: str):
    module = ADAPTERS[name][0].rpartition(".")[2]
    assert (ROOT / "tests" / "conformance" / f"test_{module}.py").is_file()
    conventions = (ROOT / "docs" / "conventions.md").read_text()
    heading = re.compile(rf"^## .*\b{module}\b", re.MULTILINE | re.IGNORECASE)
    assert heading.search(conventions), f"docs/conventions.md has no section on {module}"


def test_listing_the_adapters_imports_no_framework():
    """An adapter module imports its framework inside its bindings only, so that listing the
    adapters (``--list``) works without any framework installed."""
    modules = sorted({module for module, _ in ADAPTERS.values()})
    frameworks = (
        "torch",
        "jax",
        "flax",
        "optax",
        "onnx",
        "onnxruntime",
        "timm",
        "keras",
        "haiku",
        "equinox",
        "tf_keras",
        "tensorflow",
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(f for f in {frameworks!r} if f in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "[]"
