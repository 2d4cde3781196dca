"""What every example shares on its way out: the ``--fast`` / ``--out`` command line, the
printed table and the saved PNG figures.

matplotlib is imported only when a figure is drawn (with the Agg backend: no display
needed), so that the examples' simulations can be imported without it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """``--fast`` (a smaller run, under 30 s, for the tests) and ``--out DIR`` (where the
    PNG figures go, created if missing; default the current directory)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--fast", action="store_true", help="a smaller, quicker run (used by the tests)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(), help="directory for the PNG figures (default: .)"
    )
    return parser.parse_args(argv)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (already formatted cells) under ``headers``, columns right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    print(title)
    for line in (headers, *rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    print()


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless ``number`` is 1: "1 seed", "3 seeds"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def new_figure(columns: int = 1, *, width: float = 6.0, height: float = 4.5) -> Figure:
    """A figure of ``columns`` side-by-side axes (``figure.axes``) on matplotlib's Agg canvas
    (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(1, columns)
    return figure


def save_figure(figure: Figure, out: Path, name: str) -> Path:
    """Save ``figure`` as ``out/name.png`` (creating ``out``) and return the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=110)
    return path
