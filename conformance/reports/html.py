"""The HTML report: one self-contained page (inline CSS and SVG, no scripts, no downloads)."""

from __future__ import annotations

import html
import math
from collections import Counter

from conformance.reports.results import RunResult, Status
from conformance.reports.summary import (
    SYMBOLS,
    Section,
    case_line,
    cell_status,
    cell_text,
    dtypes_of,
    header,
    matrix,
    not_checked,
    reproduce,
    sections,
    ulps,
)

COLOURS = {
    Status.PASS: "#2e7d32",
    Status.CONVENTION: "#f9a825",
    Status.FAIL: "#c62828",
    Status.NOT_IMPLEMENTED: "#9e9e9e",
    Status.REFUSES: "#66bb6a",
    Status.ACCEPTS: "#8e24aa",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; font-size: 0.9em; }
th { background: #f3f3f3; }
td.cell { color: white; font-weight: 600; text-align: right; }
.dim { color: #777; }
code { background: #f5f5f5; padding: 0 0.2em; }
li { margin: 0.3em 0; }
"""

LOWEST = -8
HIGHEST = 4


def _e(text: object) -> str:
    return html.escape(str(text))


def _budget_shares(run: RunResult) -> dict[Status, Counter]:
    """Per status: how many outputs used each decade of their budget (error / bound)."""
    shares: dict[Status, Counter] = {s: Counter() for s in Status}
    for row in run.results:
        for output in row.outputs:
            used = ulps(output["used"])
            if math.isnan(used):
                continue
            if used <= 0:
                decade = LOWEST
            elif math.isinf(used):
                decade = HIGHEST
            else:
                decade = math.floor(math.log10(used))
            shares[row.status][min(max(decade, LOWEST), HIGHEST)] += 1
    return shares


def histogram_svg(run: RunResult, width: int = 640, height: int = 220) -> str:
    """An SVG histogram of every output's error as a share of its budget, stacked by status."""
    shares = _budget_shares(run)
    decades = list(range(LOWEST, HIGHEST + 1))
    totals = {d: sum(c[d] for c in shares.values()) for d in decades}
    peak = max(totals.values(), default=0) or 1
    left, bottom, top = 40, height - 40, 10
    bar = (width - left - 10) / len(decades)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="error as a share of the budget">'
        )
    ]
    for i, decade in enumerate(decades):
        x = left + i * bar
        y: float = bottom
        for status in Status:
            count = shares[status][decade]
            if not count:
                continue
            h = (bottom - top) * count / peak
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[status]}"><title>{count} outputs, {status.label}, error '
                f"10^{decade} to 10^{decade + 1} of the budget</title></rect>"
            )
        label = "≤1e-8" if decade == LOWEST else f"1e{decade}"
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{bottom + 14}" font-size="10" '
            f'text-anchor="middle">{label}</text>'
        )
    budget_x = left + (0 - LOWEST) * bar
    parts.append(
        f'<line x1="{budget_x:.1f}" y1="{top}" x2="{budget_x:.1f}" y2="{bottom}" '
        f'stroke="#c62828" stroke-dasharray="4 3"/>'
    )
    parts.append(
        f'<text x="{budget_x + 4:.1f}" y="{top + 10}" font-size="10" fill="#c62828">budget</text>'
    )
    parts.append(
        f'<text x="{left}" y="{height - 8}" font-size="11">error / bound of each output '
        f"(outputs: {sum(totals.values())}; tallest bar {peak})</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _section_html(section: Section, run: RunResult) -> list[str]:
    parts = [f"<h2>{_e(section.title)} ({section.rows} rows)</h2>", "<ul>"]
    for group in section.groups:
        parts.append(
            f"<li><b>{_e(group.implementation)}</b> <code>{_e(group.op)}</code> "
            f"({_e(group.extent)}): {_e(group.text)}"
        )
        worst = group.worst
        if section.shows_worst and worst is not None:
            row, output = worst
            parts.append(f"<br><span class='dim'>worst: {_e(case_line(row, output))}</span>")
            if section.shows_rerun:
                parts.append(
                    f"<br><span class='dim'>re-run: <code>{_e(reproduce(row, run))}</code></span>"
                )
        if group.rows[0].traceback:
            parts.append(f"<pre>{_e(group.rows[0].traceback)}</pre>")
        parts.append("</li>")
    parts.append("</ul>")
    return parts


def to_html(run: RunResult) -> str:
    """The run as a self-contained HTML page."""
    dtypes = dtypes_of(run)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>normref conformance report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>normref conformance report</h1>",
        "<table>",
        *[f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in header(run)],
        *[
            f"<tr><th>not checked</th><td><strong style='color: {COLOURS[Status.FAIL]}'>"
            f"{_e(line)}</strong></td></tr>"
            for line in not_checked(run)
        ],
        "</table>",
        "<h2>Implementation × op × dtype</h2>",
        "<table><tr><th>implementation</th><th>op</th>",
        *[f"<th>{_e(d)}</th>" for d in dtypes],
        "</tr>",
    ]
    for (implementation, op), cells in matrix(run).items():
        parts.append(f"<tr><td>{_e(implementation)}</td><td>{_e(op)}</td>")
        for dtype in dtypes:
            counts = cells.get(dtype)
            status = cell_status(counts) if counts else None
            if counts is None or status is None:
                parts.append("<td>·</td>")
                continue
            parts.append(
                f"<td class='cell' style='background:{COLOURS[status]}' "
                f"title='{_e(status.label)}'>{_e(cell_text(counts))}</td>"
            )
        parts.append("</tr>")
    parts.append("</table>")
    parts.append(
        "<p class='dim'>" + ", ".join(f"{SYMBOLS[s]} {_e(s.label)}" for s in Status) + "</p>"
    )
    parts += ["<h2>Error distribution</h2>", histogram_svg(run)]
    for section in sections(run):
        parts += _section_html(section, run)
    totals = ", ".join(f"{n} {Status(k).label}" for k, n in run.counts.items() if n)
    parts.append(f"<p><b>Total</b>: {_e(totals)} (exit code {run.exit_code}).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
