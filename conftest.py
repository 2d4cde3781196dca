"""Doctest collection: the modules that need an optional library at import time are left out
where it is not installed (their tests under ``tests/`` skip with the reason)."""

from __future__ import annotations

import importlib.util

_NEEDS = {
    "normref/_fused/kernels.py": "numba",
    "normref/_lib/dask_tree.py": "dask",
}

collect_ignore = [
    path for path, module in _NEEDS.items() if importlib.util.find_spec(module) is None
]
