"""What the docs make at build time, so that it cannot drift from the code.

* the figures of the examples, from their ``--fast`` runs (BLAS on one thread), with the
  tables they print;
* the benchmark figure, from the results kept as data in ``docs/data/benchmarks.json``;
* the tables that list operations (from :data:`normref.registry.REGISTRY`) and what the
  conformance suite passes to a function (from its cases).

Everything goes to ``docs/_generated/`` (not in git), which the pages include. The
examples' figures are kept there under a key: the hash of the code they run (``examples/``
and ``normref/``) and matplotlib's version; a build whose key matches reuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
BENCHMARK_DATA = DOCS / "data" / "benchmarks.json"

EXAMPLES = ("bn_only", "signal_propagation", "agc", "whitening")
"""The examples whose ``--fast`` runs make the figures (``python -m examples.<name>``)."""

FAMILIES = {
    "standardization": "Standardization",
    "whitening": "Whitening",
    "weights": "Weights",
    "gradients": "Gradients",
    "residual": "Residual networks",
}
"""The registry's families, in the order the table of operations shows them."""


def _code_key() -> str:
    """A hash of the code the examples run, and of matplotlib's version."""
    import matplotlib

    digest = hashlib.sha256(matplotlib.__version__.encode())
    for folder in ("examples", "normref"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def example_figures(out: Path = GENERATED / "examples") -> list[Path]:
    """Run each example's ``--fast`` mode into ``out`` (unless the figures there were made by
    the same code): its PNG figures, and the tables it prints as ``<example>.txt``."""
    key_file = out / "key"
    key = _code_key()
    if key_file.exists() and key_file.read_text() == key:
        return sorted(out.glob("*.png"))
    from threadpoolctl import threadpool_limits

    out.mkdir(parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)
    for old in out.glob("*"):
        old.unlink()
    for name in EXAMPLES:
        module = importlib.import_module(f"examples.{name}")
        printed = io.StringIO()
        # the examples' matrices are small: one BLAS thread is as fast, and steadier
        with threadpool_limits(1), contextlib.redirect_stdout(printed):
            module.main(["--fast", "--out", str(out)])
        (out / f"{name}.txt").write_text(printed.getvalue())
    key_file.write_text(key)
    return sorted(out.glob("*.png"))


def benchmark_figure(out: Path = GENERATED / "benchmarks") -> Path:
    """The benchmarks' figure of time ratios, from ``docs/data/benchmarks.json``, and beside it
    the tables per family (``families.md``) and per row (``rows.md``) and the run's description
    (``run.md``)."""
    from benchmarks.report import families_markdown, markdown, plot, read_json

    results, meta = read_json(BENCHMARK_DATA)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "benchmarks.png"
    plot(path, results)
    (out / "families.md").write_text(families_markdown(results))
    (out / "rows.md").write_text(markdown(results))
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    load = meta["load_average_1min"]
    cores = "one CPU" if meta["single_core"] else f"{meta['cpu_count']} CPUs"
    (out / "run.md").write_text(
        f"Measured on {meta['date']}, {meta['cpu']}, on {cores}, with {versions}; compiled "
        f"path {'on' if meta['fused_path'] else 'off'}; {meta['repeats']} interleaved rounds, "
        f"the fastest of each kept; 1-minute load {load['start']:.1f} at the start of the run, "
        f"{load['end']:.1f} at its end; the run took {meta['seconds']:.0f} s.\n"
    )
    return path


def _function_role(function: Any) -> str:
    """A MyST reference to ``function`` under the name users import, or its name in code."""
    import normref
    import normref.ops

    name = function.__name__
    for module in (normref, normref.ops):
        if getattr(module, name, None) is function:
            return f"{{py:func}}`{module.__name__}.{name}`"
    return f"`{name}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def operations_table() -> str:
    """The registry's operations by family: the function, what it computes, its kind of
    computation, and whether it has a VJP and runs on Dask arrays."""
    from normref.registry import REGISTRY

    lines = []
    for family, title in FAMILIES.items():
        specs = [s for s in REGISTRY.values() if s.family == family]
        lines += [
            f"(operations-{family})=",
            f"## {title}",
            "",
            "| operation | function | what it computes | kind | VJP | Dask |",
            "|---|---|---|---|---|---|",
        ]
        for spec in specs:
            lines.append(
                f"| `{spec.name}` | {_function_role(spec.forward)} | {_cell(spec.summary)} | "
                f"`{spec.kind.name.lower()}` | {'yes' if spec.vjp else 'no'} | "
                f"{'yes' if spec.capabilities.dask else 'no'} |"
            )
        lines.append("")
    missing = {s.family for s in REGISTRY.values()} - set(FAMILIES)
    if missing:
        msg = f"the docs' table of operations has no heading for the families {sorted(missing)}"
        raise ValueError(msg)
    return "\n".join(lines)


def _passed_values(op: Any) -> dict[str, list[str]]:
    """The values the suite passes for each argument of ``op`` that is not an array, over its
    cases, in order (``absent`` where a case leaves ``eps`` to the function's default)."""
    import numpy as np

    from conformance.checked.cases import cases_for

    found: dict[str, set[Any]] = {}
    for case in cases_for(op.name):
        given = dict(case.sample.args) | dict(case.sample.kwargs)
        for name, value in given.items():
            if name == "convention" or isinstance(value, np.ndarray) or value is None:
                continue
            found.setdefault(name, set()).add(
                "absent" if case.default_eps and name == "eps" else value
            )

    def order(value: Any) -> tuple[bool, Any]:
        return (value == "absent", 0 if value == "absent" else value)

    return {
        name: [v if v == "absent" else repr(v) for v in sorted(values, key=order)]
        for name, values in found.items()
    }


def suite_arguments_rows() -> list[str]:
    """The rows of the table that says what the suite passes to a function: per checked op, its
    call, the VJP's gradients and, for each argument that is not an array, the values its cases
    pass (a range where there are more than six numbers)."""
    from conformance.adapters.function import suite_call
    from conformance.checked.ops import CHECKED_OPS

    rows = []
    for op in CHECKED_OPS.values():
        values = []
        for name, found in _passed_values(op).items():
            numbers = [float(v) for v in found if v != "absent" and v[0] not in "'("]
            if len(found) > 6 and len(numbers) == len(found):
                values.append(f"`{name}`: one per case, {min(numbers):.3g} to {max(numbers):.3g}")
            else:
                values.append(f"`{name}`: {', '.join(found)}")
        gradient = suite_call(op, vjp=True).split(" -> ")[1] if op.differentiable else "-"
        rows.append(f"| `{suite_call(op)}` | `{gradient}` | {'; '.join(values) or '-'} |")
    return rows


def suite_arguments_table() -> str:
    """:func:`suite_arguments_rows` under their header."""
    header = [
        "| the suite calls | the VJP returns | values passed (over the cases) |",
        "|---|---|---|",
    ]
    return "\n".join([*header, *suite_arguments_rows()]) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` holds it already (Sphinx rereads what changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(_app: Any = None) -> None:
    """Make everything the pages include (the ``builder-inited`` hook)."""
    _write_if_changed(GENERATED / "operations.md", operations_table())
    _write_if_changed(GENERATED / "suite_arguments.md", suite_arguments_table())
    example_figures()
    benchmark_figure()


def _object_at(path: str) -> Any:
    """The object a dotted ``path`` names (``None`` where it names none)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                found = getattr(found, name)
        except AttributeError:
            return None
        return found
    return None


_SHARED_VALUES = (int, float, str, bytes, bool, type(None))
"""Values that many names hold alike: a reference to one is not resolved by identity."""


def _documented_names(env: Any) -> dict[int, str]:
    """The objects the pages document, by identity, to the name they are documented under."""
    if not hasattr(env, "normref_documented"):
        env.normref_documented = {}
        for name in env.get_domain("py").objects:
            found = _object_at(name)
            if found is not None and not isinstance(found, _SHARED_VALUES):
                env.normref_documented.setdefault(id(found), name)
    return env.normref_documented


def resolve_by_identity(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """A Python reference to an object under another name than the one it is documented under
    (``normref.layers.standardization.batch_norm``, or ``fixup_scale`` in ``normref.residual``,
    both documented as ``normref.batch_norm``): the reference to the documented name."""
    if node.get("refdomain") != "py":
        return None
    target, module, cls = node["reftarget"], node.get("py:module"), node.get("py:class")
    candidates = [f"{module}.{cls}.{target}", f"{module}.{target}", target]
    # a docstring shown under another name (``conformance.cases_for``) refers to the names of
    # the module it is written in (``conformance.checked.cases``)
    written = re.search(r"docstring of ([\w.]+)", node.source or "")
    if written:
        parts = written[1].split(".")
        prefixes = [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]
        # the module the docstring is written in: that of the innermost object that knows it
        defined = next(
            (
                getattr(_object_at(prefix), "__module__", None)
                for prefix in prefixes
                if getattr(_object_at(prefix), "__module__", None)
            ),
            None,
        )
        candidates += [f"{prefix}.{target}" for prefix in [*prefixes[1:], defined] if prefix]
    domain = env.get_domain("py")
    for candidate in candidates:
        if "None" in candidate.split("."):
            continue
        if candidate in domain.objects:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, "obj", candidate, node, contnode
            )
        found = _object_at(candidate)
        if found is None or isinstance(found, _SHARED_VALUES):
            continue
        documented = _documented_names(env).get(id(found))
        if documented is not None:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, "obj", documented, node, contnode
            )
    return None


_PROSE = ("attribute", "property", "data")
"""What autodoc documents whose docstring is prose: napoleon would read ``text: more`` in it
as a type and a description."""
_kept: dict[int, list[str]] = {}


def _keep_prose(_app: Any, what: str, _name: str, _obj: Any, _options: Any, lines: list[str]):
    if what in _PROSE:
        _kept[id(lines)] = list(lines)


def _restore_prose(_app: Any, _what: str, _name: str, _obj: Any, _options: Any, lines: list[str]):
    if id(lines) in _kept:
        lines[:] = _kept.pop(id(lines))


def setup(app: Any) -> dict[str, Any]:
    """Register the hook that generates the included files, the resolution of references by
    identity, and napoleon's leaving attributes' docstrings as they are."""
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_by_identity)
    app.connect("autodoc-process-docstring", _keep_prose, priority=100)
    app.connect("autodoc-process-docstring", _restore_prose, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
