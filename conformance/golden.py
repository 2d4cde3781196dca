"""Golden vectors: the cases, their exact results and error bounds, for any language.

``export_golden(out)`` writes, for every case of every op at every dtype it runs
at (the reduction lengths of a default run included, its realistic sizes left out:
their vectors would be tens of megabytes each), one
NPZ file with the inputs (rounded to the dtype), the output's cotangent
``dy``, the exact outputs and gradients, for each of them the exact values
rounded once to the dtype ``rounded_<name>`` (infinite where they overflow)
and the bound ``bound_<name>`` on ``|actual - exact|`` element by element; and one
``manifest.json`` that lists every file with its op, case, dtype, parameters,
tolerance, SHA-256 and the normref version. All arrays are stored as float64:
every stored input is exactly representable in its dtype, so a C++, Rust or
Julia implementation converts them exactly, runs, and compares without Python.

An input normref refuses, as a case (a group of one sample) or only once rounded
to the dtype (a mean of 1e4 in float16 leaves every group of PCA whitening
constant, where its gradient does not exist), is an entry with ``"expect":
"error"``, the message and ``"error_in"`` (``"forward"``, or ``"backward"``: the
file then holds ``dy`` too), as ``run`` treats it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conformance.bounds.budgets import arithmetic_of, compute_dtype, element_bounds
from conformance.checked.backends import Backend, get_backend
from conformance.checked.cases import cases_for, prepare
from conformance.checked.formats import round_to
from conformance.checked.models import Model, model_of
from conformance.checked.ops import CHECKED_OPS, get_op, implementation_keywords
from conformance.judging.reference import Refusal, model_sample, reference_or_refusal

GOLDEN_SCHEMA = "normref-conformance-golden"
GOLDEN_VERSION = 2
"""2: ``rounded_<name>`` arrays, the rule as ``run`` applies it, and the momentum written in the
exported convention's meaning (version 1 had neither array nor meaning)."""

PASSING_RULE = (
    "an element passes where actual == rounded_<name> (the exact value rounded once to the "
    "dtype, infinite where that overflows), or actual == expected_<name> (infinite exact "
    "values), or both are NaN, or |actual - expected_<name>| <= bound_<name>; a vector passes "
    "when every element of every output and gradient does"
)
"""How an implementation's output is judged against a vector: as ``run`` judges a row."""


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
        "keywords": _keywords(sample.kwargs, model),
        "inputs": sorted(arrays),
        "default_eps": case.default_eps,
    }
    if "momentum" in sample.kwargs:
        # "batch_weight": the new batch's weight (torch); "old_weight": the old value's (flax)
        entry["momentum_meaning"] = model.convention.momentum_meaning
    result = reference_or_refusal(prepared, model, backend=backend)
    if isinstance(result, Refusal):
        if result.where == "backward":
            arrays["dy"] = prepared.dy
        entry.update(expect="error", error=result.error, error_in=result.where)
        return arrays, entry
    arrays["dy"] = prepared.dy
    arithmetic = arithmetic_of(model, dtype)
    budgets = {}
    for name, exact in result.values.items():
        bounds = element_bounds(result.terms, name, exact, dtype, arithmetic)
        arrays[f"expected_{name}"] = exact
        arrays[f"rounded_{name}"] = round_to(exact, dtype)
        arrays[f"bound_{name}"] = bounds.bound
        with np.errstate(over="ignore"):  # a bound beyond the largest float is "inf" ulps
            budgets[name] = _largest_budget(bounds.bound / bounds.unit)
    entry.update(
        expect="values",
        outputs=[n for n in result.values if op.direction(n) != "backward"],
        gradients=[n for n in result.values if op.direction(n) == "backward"],
        differentiable=list(op.differentiable),
        tolerance={"rule": PASSING_RULE, "max_budget_ulps": budgets},
    )
    return arrays, entry


def _keywords(kwargs: dict[str, Any], model: Model) -> dict[str, Any]:
    """The call's keywords as JSON, as the implementation takes them (a momentum in the model's
    meaning)."""
    return {k: _json_value(v) for k, v in implementation_keywords(kwargs, model).items()}


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
    force: bool = False,
) -> Path:
    """Write the golden vectors of ``ops`` at ``dtypes`` under ``convention`` (the reference on
    ``backend``) into ``out``, a new or empty directory; return the manifest's path.

    A directory that is not empty is refused (:class:`FileExistsError`) unless ``force``,
    which replaces its contents whole: the vectors are written into a new directory beside it,
    which then takes its place, so that no stale vector stays next to a new manifest. Every
    vector is computed before anything is written, so an error leaves ``out`` as it was; each
    file is written under a temporary name and renamed, and the manifest comes last: a
    directory with a manifest holds every file it lists.

    Examples
    --------
    >>> import numpy as np
    >>> import normref
    >>> import os, tempfile
    >>> import conformance
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = os.path.join(folder, 'golden')
    ...     manifest = conformance.export_golden(out, ops=['rms_norm'], dtypes=['float32'])
    ...     print(manifest.name, sorted(os.listdir(out)))
    manifest.json ['manifest.json', 'rms_norm']
    """
    import normref

    reference = get_backend(backend)
    model = model_of(convention)
    files: dict[str, bytes] = {}
    vectors = []
    for op in ops if ops is not None else list(CHECKED_OPS):
        # realistic sizes are left out: their vectors would be tens of megabytes each
        for case in cases_for(op, suite_seed=seed, realistic=False):
            for dtype in (d for d in dtypes if case.runs_at(d)):
                arrays, entry = _vector(case, dtype, model, reference)
                buffer = io.BytesIO()
                # numpy's stubs read a dict's keys as possibly savez's allow_pickle (NumPy >= 2.1)
                np.savez(buffer, **arrays)  # type: ignore[arg-type]
                data = buffer.getvalue()
                entry["file"] = f"{op}/{case.name}.{dtype}.npz"
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                files[entry["file"]] = data
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
    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    root = Path(out)
    occupied = root.is_dir() and any(root.iterdir())
    if occupied and not force:
        msg = f"{root} is not empty: write into a new or empty directory, or pass force=True"
        raise FileExistsError(msg)
    target = root.with_name(f".{root.name}.new") if occupied else root
    if target != root:
        shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        _replace(target / relative, data)
    _replace(target / "manifest.json", text.encode())
    if target != root:
        old = root.with_name(f".{root.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(root, old)
        os.replace(target, root)
        shutil.rmtree(old)
    return root / "manifest.json"


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)
