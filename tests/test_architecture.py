"""The tree keeps its shape: one place per operation, no import cycles, a public boundary.

* An op's name, as a string literal of code, appears among the modules of
  ``normref`` and ``conformance`` only in its registry entry's module, its
  implementation's module and ``__all__`` lists (adapters, which map an op to a
  framework's function, are not counted; nor are docstrings, which show calls).
* Neither package has an import cycle, including imports made inside functions.
* Nothing outside ``normref`` (and ``tests``) imports its private modules.
* The conformance suite's stages depend one way: what is checked knows nothing
  of the error bounds, adapters, judging or reports; adapters nothing of
  judging or reports.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from normref.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("normref", "conformance")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of both packages that ``name`` imports, anywhere in its code."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            found |= {m for m in submodules if m in MODULES} or {base}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def _stage(module: str) -> str:
    parts = module.split(".")
    return (
        ".".join(parts[:2]) if len(parts) > 2 or (module in MODULES and len(parts) == 2) else module
    )


@pytest.mark.parametrize(
    ("stage", "forbidden"),
    [
        (
            "conformance.checked",
            {"conformance.bounds", "conformance.adapters", "conformance.judging"},
        ),
        ("conformance.bounds", {"conformance.adapters", "conformance.judging"}),
        ("conformance.adapters", {"conformance.judging", "conformance.reports"}),
        ("conformance.reports", {"conformance.judging", "conformance.adapters"}),
    ],
)
def test_the_suite_stages_depend_one_way(stage: str, forbidden: set[str]):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.startswith(stage + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    )
    assert wrong == []


def test_normref_imports_nothing_of_the_suite():
    assert not [
        m
        for m, targets in GRAPH.items()
        if m.startswith("normref") and any(t.startswith("conformance") for t in targets)
    ]


PRIVATE_IMPORT = re.compile(
    r"^\s*(from\s+normref(\.\w+)*\._\w+|from\s+normref(\.\w+)*\s+import\s+.*\b_\w+|"
    r"import\s+normref(\.\w+)*\._\w+)",
    re.MULTILINE,
)


def test_nothing_outside_normref_imports_its_private_modules():
    offenders = []
    for folder in ("conformance", "benchmarks", "examples", "docs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            offenders += [
                f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
                for m in PRIVATE_IMPORT.finditer(path.read_text())
            ]
    assert offenders == []


def _literals(path: Path, name: str) -> int:
    """How many string literals of ``path``'s code are exactly ``name``, outside ``__all__``
    (a docstring that shows a call is documentation, not a literal ``name``)."""
    tree = ast.parse(path.read_text())
    exported = {
        id(c)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for c in ast.walk(node.value)
    }
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == name and id(node) not in exported
    )


def _allowed(name: str) -> set[str]:
    spec = REGISTRY[name]
    modules = {spec.forward.__module__, *(() if spec.vjp is None else (spec.vjp.__module__,))}
    entry = next(
        family.__name__
        for family in (
            importlib.import_module(m) for m in MODULES if m.startswith("normref.registry.")
        )
        if any(s.name == name for s in getattr(family, "REGISTRY_ENTRIES", ()))
    )
    return {entry, *modules}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_an_op_name_is_written_in_its_entry_and_implementation_only(name: str):
    allowed = _allowed(name)
    found = []
    for module, path in MODULES.items():
        if module.startswith("conformance.adapters.") or module in allowed:
            continue
        if _literals(path, name):
            found.append(module)
    assert found == [], f"{name!r} is written in {found}; it belongs in {sorted(allowed)}"


def test_the_registry_entries_name_real_implementations():
    """The implementation modules the test above allows are where the functions live."""
    for spec in REGISTRY.values():
        assert inspect.getmodule(spec.forward) is not None, spec.name
