"""The docs build with every reference resolved, load nothing from the network, render their
math offline, and document every public name; the tables they generate say what the code does.

The build (``python -m sphinx -W``) runs once for the module; it reuses the examples' figures
that an earlier build made from the same code (``docs/_ext/normref_docs.py``).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests import browser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_NEEDS = {
    "sphinx": "sphinx",
    "myst_parser": "myst-parser",
    "furo": "furo",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "threadpoolctl": "threadpoolctl",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The HTML docs, built with warnings as errors (``nitpicky``: every reference resolves)."""
    for module, package in _NEEDS.items():
        pytest.importorskip(module, reason=f"{package} is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("html")
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


class _Loads(HTMLParser):
    """The addresses a page loads: scripts, stylesheets, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("script", "img", "iframe") and values.get("src"):
            self.addresses.append(values["src"] or "")
        if tag == "link" and values.get("rel") in ("stylesheet", "preload", "icon"):
            self.addresses.append(values.get("href") or "")


def _remote(address: str) -> bool:
    return bool(re.match(r"^(https?:)?//", address))


def test_no_page_loads_anything_from_the_network(built):
    pages = sorted(built.rglob("*.html"))
    assert len(pages) > 20
    remote = {}
    for page in pages:
        parser = _Loads()
        parser.feed(page.read_text())
        found = [a for a in parser.addresses if _remote(a)]
        if found:
            remote[str(page.relative_to(built))] = found
    assert not remote


def test_mathjax_is_shipped_with_the_pages(built):
    spec = (built / "spec.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', spec)
    assert scripts, "the page with formulas loads no MathJax"
    for script in scripts:
        assert (built / script.split("?")[0]).is_file(), script
    assert (built / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_the_figures_are_made_at_build_time(built):
    images = {path.name for path in (built / "_images").glob("*.png")}
    assert {
        "bn_only_accuracy.png",
        "whitening_spectrum.png",
        "agc_loss.png",
        "signal_propagation.png",
        "benchmarks.png",
    } <= images
    # with the table the example printed in that build
    assert "only gamma and beta" in (built / "spec.html").read_text()
    assert not list(DOCS.glob("**/*.png")) or all(
        "_generated" in path.parts or "_build" in path.parts for path in DOCS.glob("**/*.png")
    ), "a figure is checked in: it can drift from the code"


def _documented(built: Path) -> set[str]:
    """The Python names the API pages hold a description of."""
    names: set[str] = set()
    for page in (built / "api").rglob("*.html"):
        names |= set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', page.read_text()))
    return names


def test_every_public_name_is_documented_under_the_name_users_import(built):
    import conformance
    import normref
    from normref import ops, registry, stats

    documented = _documented(built)
    # the presets and the published gammas are documented where they are defined
    defined_elsewhere = {
        "TORCH": "normref.conventions.TORCH",
        "FLAX": "normref.conventions.FLAX",
        "KERAS": "normref.conventions.KERAS",
        "ONNX": "normref.conventions.ONNX",
        "NFNETS_PUBLISHED_GAMMAS": "normref.nonlinearities.NFNETS_PUBLISHED_GAMMAS",
    }
    wanted = {
        defined_elsewhere.get(name, f"normref.{name}")
        for name in normref.__all__
        if not inspect.ismodule(getattr(normref, name)) and not name.startswith("_")
    }
    wanted |= {f"normref.ops.{name}" for name in ops.__all__}
    wanted |= {f"normref.registry.{name}" for name in registry.__all__}
    wanted |= {
        f"normref.stats.{name}"
        for name, value in vars(stats).items()
        if inspect.isfunction(value)
        and value.__module__ == stats.__name__
        and not name.startswith("_")
    }
    wanted |= {f"conformance.{name}" for name in conformance.__all__}
    assert not wanted - documented, sorted(wanted - documented)
    private = {name for name in documented if "normref.layers.standardization" in name}
    assert not private - {"normref.layers.standardization"}, "documented under a private path"


def _public_functions() -> dict[str, object]:
    """normref's and conformance's public functions, by the name users import them by."""
    import conformance
    import normref
    from normref import compiled, conventions, nonlinearities, ops, partition, stats

    found = {
        f"{module.__name__}.{name}": value
        for module in (normref, ops, conformance)
        for name in module.__all__
        if inspect.isfunction(value := getattr(module, name))
    }
    for module in (stats, partition, compiled, conventions, nonlinearities):
        found |= {
            f"{module.__name__}.{name}": value
            for name, value in vars(module).items()
            if inspect.isfunction(value)
            and value.__module__ == module.__name__
            and not name.startswith("_")
        }
    return found


def test_every_public_function_has_examples_and_every_operation_its_paper():
    """The Examples run as doctests (``--doctest-modules`` in pyproject.toml); an operation's
    forward and VJP cite the paper that introduced it."""
    from normref.registry import REGISTRY

    functions = _public_functions()
    assert len(functions) > 100
    without = [name for name, f in functions.items() if "\n    Examples\n    ----" not in f.__doc__]
    assert not without, without
    operations = {f for spec in REGISTRY.values() for f in (spec.forward, spec.vjp)}
    uncited = [
        name
        for name, f in functions.items()
        if f in operations and "\n    References\n    ----" not in f.__doc__
    ]
    assert not uncited, uncited


def _generator():
    """docs/_ext/normref_docs.py, the build's generator of figures and tables."""
    spec = importlib.util.spec_from_file_location("normref_docs", DOCS / "_ext" / "normref_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_of_operations_lists_every_registry_operation_once():
    from normref.registry import REGISTRY

    table = _generator().operations_table()
    names = re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.MULTILINE)
    assert sorted(names) == sorted(REGISTRY)


class _StopError(Exception):
    """Raised by the recording function once it has seen its call."""


def _recorded_calls(op_name: str) -> dict[str, set[str]]:
    """The values the suite passes to a user's function for ``op_name``, per argument that is not
    an array, over its cases, seen by a function that records its call (``absent`` for an
    ``eps`` left out)."""
    from conformance.adapters.function import function_binding
    from conformance.checked.cases import cases_for, prepare
    from conformance.checked.models import NORMREF

    seen: dict[str, set[str]] = {}
    calls: list[tuple[tuple, dict]] = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        raise _StopError

    binding = function_binding(recording, op_name)
    for case in cases_for(op_name):
        prepared = prepare(case, "float64")
        calls.clear()
        with pytest.raises(_StopError):
            binding.run(prepared, NORMREF, False)
        ((args, kwargs),) = calls
        passed = dict(zip(prepared.sample.args, args, strict=True)) | kwargs
        if case.default_eps:
            assert "eps" not in kwargs, case.id
            seen.setdefault("eps", set()).add("absent")
        for name, value in passed.items():
            if name == "convention" or value is None or hasattr(value, "shape"):
                continue
            seen.setdefault(name, set()).add(repr(value))
    return seen


def _table_values(cell: str) -> dict[str, str]:
    """The third cell of a row of the generated table, by argument."""
    if cell == "-":
        return {}
    return dict(re.match(r"`(\w+)`: (.*)", part).groups() for part in cell.split("; "))


def test_the_table_of_what_the_suite_passes_matches_the_calls_it_makes():
    """Every row of the generated table (docs/conformance.md includes it) against the calls a
    recording function receives from the suite on every case of the op."""
    from conformance.adapters.function import suite_call
    from conformance.checked.ops import CHECKED_OPS

    rows = _generator().suite_arguments_rows()
    assert len(rows) == len(CHECKED_OPS)
    for op, row in zip(CHECKED_OPS.values(), rows, strict=True):
        call, _, values = (cell.strip() for cell in row.strip("|").split(" | "))
        assert call == f"`{suite_call(op)}`"
        recorded = _recorded_calls(op.name)
        listed = _table_values(values)
        assert set(listed) == set(recorded), op.name
        for name, text in listed.items():
            span = re.fullmatch(r"one per case, (\S+) to (\S+)", text)
            if span:
                numbers = [float(v) for v in recorded[name]]
                assert span.groups() == (f"{min(numbers):.3g}", f"{max(numbers):.3g}"), op.name
            else:
                assert set(_items(text)) == recorded[name], (op.name, name, text)


def _items(text: str) -> list[str]:
    """The values of a list in the table: ``(-2, -1), (-1,), 0.1`` is three."""
    return re.findall(r"\([^)]*\)|'[^']*'|[^,\s][^,]*", text)


@pytest.mark.skipif(not browser.available(), reason=browser.UNAVAILABLE)
def test_formulas_render_in_a_browser_without_the_network(built):
    """Served from this machine (loopback), the page with formulas renders them, and every
    resource it loads comes from that server."""
    with browser.serving(built) as address, browser.session(1280) as driver:
        driver.get(f"{address}/spec.html")
        browser.wait_for(driver, "return document.querySelectorAll('mjx-container').length > 0")
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded
        assert all(name.startswith(address) for name in loaded), loaded
        text = driver.execute_script("return document.body.innerText")
        assert "\\frac" not in text
        assert driver.execute_script("return document.documentElement.scrollWidth") <= (
            driver.execute_script("return window.innerWidth")
        )
