"""The terminal report (rich): a progress bar during the run, then tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from conformance.reports.results import RunResult, Status
from conformance.reports.summary import (
    SYMBOLS,
    banner,
    case_line,
    cell_status,
    cell_text,
    dtypes_of,
    header,
    matrix,
    not_checked,
    not_implemented,
    reproduce,
    sections,
    title,
)

BANNER_STYLES = {
    "fails": "bold white on red",
    "incomplete": "bold black on yellow",
    "conventions": "bold black on yellow",
    "passes": "bold white on green",
}
"""The verdict banner's style per :class:`~conformance.reports.summary.Banner` kind."""

STYLES = {
    Status.PASS: "green",
    Status.CONVENTION: "yellow",
    Status.FAIL: "bold red",
    Status.NOT_IMPLEMENTED: "dim",
    Status.REFUSES: "green",
    Status.ACCEPTS: "magenta",
}


def console(**options: Any) -> Any:
    """A rich console (on stderr for progress, stdout for the report, by default)."""
    from rich.console import Console

    return Console(**options)


@contextmanager
def progress_bar(out: Any = None, what: str = "checking") -> Iterator[Callable[[int, str], None]]:
    """A progress bar; yields the ``progress(total, label)`` callback the runner calls."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[label]}"),
        console=out or console(stderr=True),
        transient=True,
    )
    task = bar.add_task(what, total=None, label="")

    def advance(total: int, label: str) -> None:
        if total:
            bar.update(task, total=total, completed=0)
        else:
            bar.update(task, advance=1, label=label[-70:])

    with bar:
        yield advance


def print_report(run: RunResult, out: Any = None, *, limit: int = 15) -> None:
    """Print the run: facts, the op x dtype matrix, findings, failures, error-path values.

    Every string that comes from the data (names, explanations, tracebacks) is escaped, so
    that rich prints it as it is (``'.[jax]'`` is not a style).
    """
    from rich.markup import escape
    from rich.table import Table

    out = out or console()
    outcome = banner(run)
    out.print(
        f"[{BANNER_STYLES[outcome.kind]}] {escape(outcome.headline)} [/] {escape(outcome.detail)}",
        highlight=False,
    )
    out.print(f"[dim]{escape(title(run))}", highlight=False)
    facts = Table.grid(padding=(0, 2))
    for key, value in header(run):
        facts.add_row(f"[bold]{escape(key)}", escape(value))
    out.print(facts)
    for line in not_checked(run):
        out.print(f"[bold red]{escape(line)}", highlight=False)

    dtypes = dtypes_of(run)
    table = Table(title="rows per status", title_justify="left")
    table.add_column("implementation")
    table.add_column("op")
    for dtype in dtypes:
        table.add_column(escape(dtype), justify="right")
    for (implementation, op), cells in matrix(run).items():
        row = [escape(implementation), escape(op)]
        for dtype in dtypes:
            counts = cells.get(dtype)
            status = cell_status(counts) if counts else None
            text = cell_text(counts) if counts else "·"
            row.append(f"[{STYLES[status]}]{text}" if status else text)
        table.add_row(*row)
    if run.results:
        out.print(table)
        legend = ", ".join(f"{SYMBOLS[s]} {s.label}" for s in Status)
        out.print(f"[dim]{legend}")
    for line in not_implemented(run):
        out.print(f"[dim]not implemented: {escape(line)}", highlight=False)

    for section in sections(run):
        style = STYLES[section.status]
        out.print(f"\n[{style}]{section.title}[/] ({section.rows} rows)")
        for group in section.groups[:limit]:
            out.print(
                f"  [bold]{escape(group.who)}[/] ({escape(group.extent)}): {escape(group.text)}",
                highlight=False,
            )
            worst = group.worst
            if worst is not None and section.shows_worst:
                worst_row, output = worst
                out.print(f"    worst: {escape(case_line(worst_row, output))}", highlight=False)
                if section.shows_rerun:
                    out.print(f"    [dim]{escape(reproduce(worst_row, run))}", highlight=False)
            if group.rows[0].traceback:
                last = group.rows[0].traceback.strip().splitlines()[-1]
                out.print(f"    [dim]{escape(last)}", highlight=False)
        if len(section.groups) > limit:
            more = len(section.groups) - limit
            out.print(f"  ... and {more} more groups (see the JSON/HTML report)")
    totals = ", ".join(f"{n} {Status(k).label}" for k, n in run.counts.items() if n)
    style = "green" if run.ok else "bold red"
    out.print(f"\n[{style}]{totals or 'no rows'}[/] in {run.seconds:.1f} s")
    for line in not_checked(run):
        out.print(f"[bold red]{escape(line)}", highlight=False)
