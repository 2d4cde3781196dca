"""Golden vectors: the cases, their exact results and error bounds, for any language.

``export_golden(out)`` writes, for every case of every op at every dtype, one
NPZ file with the inputs (rounded to the dtype), the output's cotangent
``dy``, the exact outputs and gradients, and for each of them the bound
``bound_<name>`` on ``|actual - exact|`` element by element; and one
``manifest.json`` that lists every file with its op, case, dtype, parameters,
tolerance, SHA-256 and the normref version. All arrays are stored as float64:
every stored input is exactly representable in its dtype, so a C++, Rust or
Julia implementation converts them exactly, runs, and compares without Python.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conformance.backends import Backend, get_backend
from conformance.cases import cases_for
from conformance.models import Model, model_of
from conformance.ops import CHECKED_OPS, get_op
from conformance.reference import expected, model_sample, prepare
from conformance.tolerances import arithmetic_of, compute_dtype, element_bounds

GOLDEN_SCHEMA = "normref-conformance-golden"
GOLDEN_VERSION = 1


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _vector(
    case: Any, dtype: str, model: Model, backend: Backend
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    op = get_op(case.op)
    prepared = prepare(case, dtype)
    sample = model_sample(prepared, model)
    arrays = {
        f"input_{k}": np.asarray(v, dtype=np.float64)
        for k, v in sample.args.items()
        if isinstance(v, np.ndarray)
    }
    entry: dict[str, Any] = {
        "op": case.op,
        "case": case.id,
        "kind": case.kind,
        "description": case.description,
        "seed": case.seed,
        "dtype": dtype,
        "compute_dtype": compute_dtype(model, dtype),
        "arguments": {
            k: _json_value(v) for k, v in sample.args.items() if not isinstance(v, np.ndarray)
        },
        "keywords": {k: _json_value(v) for k, v in sample.kwargs.items()},
        "inputs": sorted(arrays),
        "default_eps": case.default_eps,
    }
    if case.kind == "error":
        entry["expect"] = "error"
        entry["error"] = case.error
        return arrays, entry
    result = expected(prepared, model, backend=backend)
    arrays["dy"] = prepared.dy
    arithmetic = arithmetic_of(model, dtype)
    budgets = {}
    for name, exact in result.values.items():
        bounds = element_bounds(result.terms, name, exact, dtype, arithmetic)
        arrays[f"expected_{name}"] = exact
        arrays[f"bound_{name}"] = bounds.bound
        budgets[name] = _largest_budget(bounds.bound / bounds.unit)
    entry.update(
        expect="values",
        outputs=[n for n in result.values if op.direction(n) != "backward"],
        gradients=[n for n in result.values if op.direction(n) == "backward"],
        differentiable=list(op.differentiable),
        tolerance={
            "rule": "|actual - expected_<name>| <= bound_<name> for every element; NaN where "
            "expected is NaN",
            "max_budget_ulps": budgets,
        },
    )
    return arrays, entry


def _largest_budget(ulps: np.ndarray) -> float | str:
    """The largest budget in ulps, as JSON: ``"inf"`` where the input leaves a value
    undetermined, ``"nan"`` where every expected value is NaN."""
    known = ulps[~np.isnan(ulps)]
    if not known.size:
        return "nan"
    value = float(np.max(known))
    return value if math.isfinite(value) else str(value)


def export_golden(
    out: str | Path,
    *,
    ops: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float16", "bfloat16", "float32", "float64"),
    convention: Any = None,
    seed: int = 0,
    backend: str | Backend | None = None,
) -> Path:
    """Write the golden vectors of ``ops`` at ``dtypes`` under ``convention`` (the reference on
    ``backend``); return the manifest's path."""
    import normref

    reference = get_backend(backend)
    model = model_of(convention)
    root = Path(out)
    vectors = []
    for op in ops if ops is not None else list(CHECKED_OPS):
        for case in cases_for(op, suite_seed=seed):
            for dtype in dtypes:
                arrays, entry = _vector(case, dtype, model, reference)
                buffer = io.BytesIO()
                np.savez(buffer, **arrays)
                data = buffer.getvalue()
                relative = Path(op) / f"{case.name}.{dtype}.npz"
                (root / op).mkdir(parents=True, exist_ok=True)
                (root / relative).write_bytes(data)
                entry["file"] = relative.as_posix()
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                vectors.append(entry)
    manifest = {
        "schema": GOLDEN_SCHEMA,
        "schema_version": GOLDEN_VERSION,
        "normref_version": normref.__version__,
        "convention": model.to_json(),
        "convention_name": model.name,
        "seed": seed,
        "storage": "every array is float64; inputs are exactly representable in their dtype",
        "vectors": vectors,
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n")
    return path
