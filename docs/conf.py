"""Sphinx configuration for the normref documentation.

``pip install -e ".[docs]"`` installs what the build needs; ``python -m sphinx -W docs
docs/_build`` builds it. The figures (from the examples' ``--fast`` runs and the benchmark
results kept in ``docs/data``) and the tables that list operations (from the registry) are
made at build time by the ``normref_docs`` extension in ``docs/_ext``.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

project = "normref"
author = "the normref developers"
copyright = "the normref developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "myst_parser",
    # MathJax shipped with the docs (the package's name has hyphens: it is loaded by path)
    "sphinx-mathjax-offline",
    "normref_docs",
]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_generated", "data"]

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
# optional libraries that modules import at their top (the compiled kernels, Dask, the pytest
# plugin): mocked, so that a machine without them builds the same pages
autodoc_mock_imports = ["numba", "dask", "distributed", "pytest"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = "normref"
html_static_path = ["_static"]
html_css_files = ["normref.css"]
html_theme_options = {"navigation_with_keys": True}

nitpicky = True
# classes of other libraries: no inventory of theirs is fetched (the build runs offline)
nitpick_ignore = [
    ("py:class", "collections.abc.Callable"),
    ("py:class", "numpy.ndarray"),
    ("py:class", "numpy.random.Generator"),
]
