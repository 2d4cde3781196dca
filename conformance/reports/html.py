"""The HTML report: one self-contained page (inline CSS, SVG and script; nothing downloaded).

From the top: the verdict banner, the run's facts, the failures, the values returned where
normref refuses, the findings (rows that differ by convention), the status of every
implementation, op and dtype, the error distribution, and every row in a table that sorts
and filters. Every colour that carries text has a contrast of at least 4.5:1 with it (WCAG
AA), and a legend says what each means.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Any

from conformance.reports.results import CaseResult, RunResult, Status
from conformance.reports.summary import (
    ORDER,
    SYMBOLS,
    Section,
    banner,
    case_line,
    cell_status,
    cell_text,
    dtypes_of,
    format_ulps,
    header,
    matrix,
    not_checked,
    not_implemented,
    reproduce,
    sections,
    title,
    ulps,
)

COLOURS = {
    Status.PASS: "#2e7d32",
    Status.CONVENTION: "#995c00",
    Status.FAIL: "#c62828",
    Status.NOT_IMPLEMENTED: "#616161",
    Status.REFUSES: "#00695c",
    Status.ACCEPTS: "#6a1b9a",
}
"""Each status's colour: a background for white text, or text on white (contrast >= 4.5:1
either way)."""

BANNER_COLOURS = {
    "fails": COLOURS[Status.FAIL],
    "incomplete": COLOURS[Status.NOT_IMPLEMENTED],
    "conventions": COLOURS[Status.CONVENTION],
    "passes": COLOURS[Status.PASS],
}
"""The verdict banner's background per :class:`~conformance.reports.summary.Banner` kind."""

TEXT = "#1a1a1a"
DIM = "#595959"
"""Body text and secondary text, on white."""

DOCS_URL: str | None = None
"""Where normref's docs are published (their root, ending in ``/``); ``None``: the copy of the
docs beside the installed package (``docs/_build`` if built, else the pages' sources)."""

SECTION_IDS = {
    Status.FAIL: "fails",
    Status.ACCEPTS: "returns-where-normref-refuses",
    Status.CONVENTION: "differs-by-convention",
}

STYLE = f"""
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; margin: 0 auto; padding: 1.5em; color: {TEXT};
  max-width: 80em; line-height: 1.4; }}
h1 {{ font-size: 1.6em; margin: 0.2em 0; overflow-wrap: anywhere; }}
h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
a {{ color: #0b57d0; }}
.banner {{ color: white; padding: 0.8em 1em; border-radius: 6px; font-size: 1.1em; }}
.banner strong {{ font-size: 1.2em; margin-right: 0.5em; }}
.meta, .dim {{ color: {DIM}; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
table {{ border-collapse: collapse; margin: 0.6em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; font-size: 0.9em; vertical-align: top; }}
th {{ background: #f3f3f3; text-align: left; }}
td.cell {{ color: white; font-weight: 600; text-align: right; white-space: nowrap; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
code, pre {{ background: #f5f5f5; overflow-wrap: anywhere; white-space: pre-wrap; }}
code {{ padding: 0 0.2em; }}
pre {{ padding: 0.5em; }}
li {{ margin: 0.5em 0; overflow-wrap: anywhere; }}
.status {{ color: white; border-radius: 3px; padding: 0 0.35em; white-space: nowrap; }}
.legend span.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 0.8em;
  vertical-align: -0.1em; border-radius: 2px; }}
details > summary {{ cursor: pointer; font-weight: 600; }}
#rows th {{ cursor: pointer; user-select: none; }}
#rows th[aria-sort=ascending]::after {{ content: " ▲"; }}
#rows th[aria-sort=descending]::after {{ content: " ▼"; }}
#rows {{ width: 100%; }}
#rows td {{ font-size: 0.85em; }}
#rows td.where, #rows td.rerun {{ overflow-wrap: anywhere; min-width: 9em; }}
#rows .status {{ white-space: normal; display: inline-block; }}
#rows td.rerun code {{ font-size: 0.85em; }}
.controls {{ margin: 0.6em 0; display: flex; gap: 1em; flex-wrap: wrap; align-items: center; }}
"""

SCRIPT = """
(function () {
  var table = document.getElementById('rows');
  if (!table) { return; }
  var body = table.tBodies[0];
  var filter = document.getElementById('row-filter');
  var status = document.getElementById('row-status');
  var shown = document.getElementById('rows-shown');
  function apply() {
    var text = filter.value.toLowerCase(), wanted = status.value, count = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var visible = (!wanted || row.dataset.status === wanted) &&
        (!text || row.textContent.toLowerCase().indexOf(text) >= 0);
      row.hidden = !visible;
      if (visible) { count += 1; }
    });
    shown.textContent = count;
  }
  filter.addEventListener('input', apply);
  status.addEventListener('change', apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
        other.removeAttribute('aria-sort');
      });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var numeric = th.dataset.type === 'number';
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort || a.cells[column].textContent;
        var y = b.cells[column].dataset.sort || b.cells[column].textContent;
        if (numeric) {
          var p = parseFloat(x), q = parseFloat(y);
          if (isNaN(p) || isNaN(q)) { return isNaN(p) - isNaN(q); }  // rows without a number last
          return ascending ? p - q : q - p;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
  apply();
})();
"""

LOWEST = -8
HIGHEST = 4
"""The histogram's bins: one per decade of error / budget, from below 10^(LOWEST + 1) (0
included) to 10^HIGHEST and above (infinity included)."""

OUTPUT_STATUSES = (Status.PASS, Status.CONVENTION, Status.FAIL)
OUTPUT_LABELS = {
    Status.PASS: "within budget",
    Status.CONVENTION: "within budget of the convention only",
    Status.FAIL: "out of budget",
}
"""An output's own status: within budget of the row's model; out of normref's budget but
within the declared convention's; or out of budget."""


def _e(text: object) -> str:
    return html.escape(str(text))


def _docs_href(page: str, anchor: str = "") -> str | None:
    """The address of a page of normref's docs (:data:`DOCS_URL`, else the copy beside the
    package), or ``None`` where there is none."""
    if DOCS_URL is not None:
        return f"{DOCS_URL}{page}.html{anchor}"
    import normref

    docs = Path(normref.__file__).resolve().parents[1] / "docs"
    built = docs / "_build" / f"{page}.html"
    if built.is_file():
        return built.as_uri() + anchor
    source = docs / f"{page}.md"
    return source.as_uri() if source.is_file() else None


def _link(text: str, page: str, anchor: str = "") -> str:
    href = _docs_href(page, anchor)
    return f"<a href='{_e(href)}'>{_e(text)}</a>" if href else f"{_e(text)} (normref's docs)"


def output_status(row: CaseResult, output: dict[str, Any]) -> Status:
    """The status of one output of ``row`` (:data:`OUTPUT_LABELS`)."""
    if not output["ok"]:
        return Status.FAIL
    if row.status is Status.CONVENTION and any(
        b["name"] == output["name"] and not b["ok"] for b in row.baseline
    ):
        return Status.CONVENTION
    return Status.PASS


def _decade(used: float) -> int:
    if used <= 0:
        return LOWEST
    if math.isinf(used):
        return HIGHEST
    return min(max(math.floor(math.log10(used)), LOWEST), HIGHEST)


def _bin_label(decade: int) -> str:
    """What a bin holds, as its tooltip and its axis say it."""
    if decade == LOWEST:
        return f"below 1e{LOWEST + 1}"
    if decade == HIGHEST:
        return f"1e{HIGHEST} or more"
    return f"1e{decade} to 1e{decade + 1}"


def budget_shares(run: RunResult) -> tuple[dict[Status, Counter], int]:
    """Per output status: how many outputs used each decade of their budget (error / bound);
    and how many outputs have no finite ratio to show."""
    shares: dict[Status, Counter] = {s: Counter() for s in OUTPUT_STATUSES}
    unshown = 0
    for row in run.results:
        for output in row.outputs:
            used = ulps(output["used"])
            if math.isnan(used):
                unshown += 1
                continue
            shares[output_status(row, output)][_decade(used)] += 1
    return shares, unshown


def _nice_step(peak: int) -> int:
    """A step for the y axis: 1, 2 or 5 times a power of ten, about four steps to ``peak``."""
    raw = max(peak / 4, 1)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def histogram_svg(run: RunResult, width: int = 720, height: int = 260) -> str:
    """An SVG histogram of every output's error as a share of its budget, stacked by the
    output's own status, with a y axis of counts and the budget marked."""
    shares, _ = budget_shares(run)
    decades = list(range(LOWEST, HIGHEST + 1))
    totals = {d: sum(c[d] for c in shares.values()) for d in decades}
    peak = max(totals.values(), default=0) or 1
    step = _nice_step(peak)
    top_count = step * math.ceil(peak / step)
    left, right, top, bottom = 56, 12, 22, height - 44
    bar = (width - left - right) / len(decades)
    scale = (bottom - top) / top_count
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="histogram of each output\'s error as a share of its budget" '
            f'style="max-width: 100%; height: auto">'
        )
    ]
    for tick in range(0, top_count + 1, step):
        level = bottom - tick * scale
        parts.append(
            f'<line x1="{left}" y1="{level:.1f}" x2="{width - right}" y2="{level:.1f}" '
            f'stroke="#e0e0e0"/><text x="{left - 6}" y="{level + 4:.1f}" font-size="11" '
            f'text-anchor="end" '
            f'fill="{TEXT}">{tick}</text>'
        )
    parts.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" font-size="11" fill="{TEXT}" '
        f'text-anchor="middle" transform="rotate(-90 14 {(top + bottom) / 2:.1f})">outputs</text>'
    )
    for i, decade in enumerate(decades):
        x = left + i * bar
        y: float = bottom
        for status in OUTPUT_STATUSES:
            count = shares[status][decade]
            if not count:
                continue
            h = count * scale
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[status]}"><title>{count} outputs {OUTPUT_LABELS[status]}, '
                f"error / budget {_bin_label(decade)}</title></rect>"
            )
        if totals[decade]:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                f'text-anchor="middle" fill="{TEXT}">{totals[decade]}</text>'
            )
    for i in range(1, len(decades)):
        x = left + i * bar
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle" '
            f'fill="{TEXT}">1e{LOWEST + i}</text>'
        )
    budget_x = left + (0 - LOWEST) * bar
    parts.append(
        f'<line x1="{budget_x:.1f}" y1="{top}" x2="{budget_x:.1f}" y2="{bottom}" '
        f'stroke="{COLOURS[Status.FAIL]}" stroke-dasharray="4 3"/>'
        f'<text x="{budget_x + 4:.1f}" y="{top + 10}" font-size="11" '
        f'fill="{COLOURS[Status.FAIL]}">budget</text>'
        f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" stroke="{TEXT}"/>'
        f'<text x="{(left + width) / 2:.0f}" y="{height - 8}" font-size="11" text-anchor="middle" '
        f'fill="{TEXT}">error / budget of each output (left bin: below 1e{LOWEST + 1}, zero '
        f"included; right bin: 1e{HIGHEST} or more)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _swatch(colour: str) -> str:
    return f"<span class='swatch' style='background:{colour}'></span>"


def _status_badge(status: Status) -> str:
    return (
        f"<span class='status' style='background:{COLOURS[status]}'>{SYMBOLS[status]} "
        f"{_e(status.label)}</span>"
    )


def _section_html(section: Section, run: RunResult) -> list[str]:
    colour = COLOURS[section.status]
    parts = [
        f"<section id='{SECTION_IDS[section.status]}'>",
        f"<h2 style='color:{colour}'>{_e(section.title)} ({section.rows} rows)</h2>",
        "<ul>",
    ]
    for group in section.groups:
        parts.append(
            f"<li><b>{_e(', '.join(group.implementations))}</b>: "
            f"<code>{_e(', '.join(group.ops))}</code> ({_e(group.extent)}): {_e(group.text)}"
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
    parts += ["</ul>", "</section>"]
    return parts


def _matrix_html(run: RunResult) -> list[str]:
    dtypes = dtypes_of(run)
    parts = [
        "<section id='matrix'><h2>Rows per implementation, op and dtype</h2>",
        "<div class='scroll'><table><tr><th>implementation</th><th>op</th>",
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
    parts.append("</table></div>")
    parts.append(
        "<p class='legend'>A cell counts its rows by status (its colour: the first of "
        + ", then ".join(_e(s.label) for s in ORDER)
        + "):"
        + "".join(f"{_swatch(COLOURS[s])}{SYMBOLS[s]} {_e(s.label)}" for s in ORDER)
        + "</p>"
    )
    parts += [f"<p>Not implemented: {_e(line)}.</p>" for line in not_implemented(run)]
    parts.append("</section>")
    return parts


def _histogram_html(run: RunResult) -> list[str]:
    _, unshown = budget_shares(run)
    parts = [
        "<section id='errors'><h2>Error distribution</h2>",
        (
            "<p>Each output of each row (y, a statistic, a gradient), by its largest error as a share "
            "of its budget; right of the dashed line, out of budget.</p>"
        ),
        histogram_svg(run),
        "<p class='legend'>Each output's own status:"
        + "".join(f"{_swatch(COLOURS[s])}{_e(OUTPUT_LABELS[s])}" for s in OUTPUT_STATUSES)
        + "</p>",
    ]
    if unshown:
        parts.append(f"<p class='dim'>{unshown} outputs without a finite ratio are not shown.</p>")
    parts.append("</section>")
    return parts


ROW_COLUMNS = (
    ("status", "text"),
    ("implementation", "text"),
    ("case", "text"),
    ("dtype", "text"),
    ("worst output", "text"),
    ("max ulp", "number"),
    ("budget ulp", "number"),
    ("error / budget", "number"),
    ("worst element", "text"),
    ("re-run", "text"),
)


def _number_cell(value: Any) -> str:
    if value is None:
        return "<td class='num' data-sort='NaN'>-</td>"
    number = ulps(value)
    key = "Infinity" if number == math.inf else repr(number)  # as JavaScript reads numbers
    return f"<td class='num' data-sort='{key}'>{_e(format_ulps(value))}</td>"


def _breakable(text: str, after: str) -> str:
    """``text`` escaped, where a line may break after each ``after`` (a dotted name, a case id)."""
    return _e(text).replace(after, f"{after}<wbr>")


def _row_html(row: CaseResult, run: RunResult) -> str:
    output = row.worst()
    if output is None:
        numbers = [_number_cell(None)] * 3
        where, name = "-", "-"
    else:
        numbers = [_number_cell(output[k]) for k in ("max_ulps", "budget_ulps", "used")]
        index = output.get("worst_index")
        at = tuple(index) if index is not None else "-"
        name = f"{output['name']} ({output['direction']})"
        where = f"at {at}: got {output.get('actual')}, exact {output.get('expected')}"
    rerun = (
        "-" if row.status is Status.NOT_IMPLEMENTED else f"<code>{_e(reproduce(row, run))}</code>"
    )
    cells = [
        f"<td data-sort='{ORDER.index(row.status)}'>{_status_badge(row.status)}</td>",
        f"<td>{_breakable(row.implementation, '.')}</td>",
        f"<td>{_breakable(row.case, '/')}</td>",
        f"<td>{_e(row.dtype)}</td>",
        f"<td>{_e(name)}</td>",
        *numbers,
        f"<td class='where'>{_e(where)}</td>",
        f"<td class='rerun'>{rerun}</td>",
    ]
    return f"<tr data-status='{row.status.value}'>{''.join(cells)}</tr>"


def _rows_html(run: RunResult) -> list[str]:
    present = [s for s in ORDER if any(r.status is s for r in run.results)]
    options = "".join(f"<option value='{s.value}'>{_e(s.label)}</option>" for s in present)
    headers = "".join(
        f"<th data-type='{kind}' scope='col'>{_e(name)}</th>" for name, kind in ROW_COLUMNS
    )
    return [
        "<section id='every-row'><h2>Every row</h2>",
        (
            "<details><summary>Show every row: its status, errors in ulps, budget, worst element "
            "and the command that re-runs it (click a heading to sort)</summary>"
        ),
        "<div class='controls'>",
        "<label>filter <input id='row-filter' type='search' placeholder='text in the row'></label>",
        (
            f"<label>status <select id='row-status'><option value=''>any</option>{options}"
            "</select></label>"
        ),
        (
            f"<span class='dim'><span id='rows-shown'>{len(run.results)}</span> of "
            f"{len(run.results)} rows shown</span>"
        ),
        "</div>",
        f"<div class='scroll'><table id='rows'><thead><tr>{headers}</tr></thead><tbody>",
        *[_row_html(row, run) for row in run.results],
        "</tbody></table></div></details></section>",
    ]


def to_html(run: RunResult) -> str:
    """The run as a self-contained HTML page."""
    outcome = banner(run)
    started = run.environment.get("started")
    name = title(run)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>{_e(name)}</h1>",
        (
            f"<div class='banner' role='status' style='background:{BANNER_COLOURS[outcome.kind]}'>"
            f"<strong>{_e(outcome.headline)}</strong> {_e(outcome.detail)}</div>"
        ),
        "<p class='meta'>"
        + (
            f"Run started <time datetime='{_e(started)}'>{_e(started)}</time>"
            if started
            else "Start of the run not recorded (a document of an earlier version)"
        )
        + f" · {_link('what the verdicts mean', 'conformance', '#verdicts')}"
        + f" · {_link('the conventions of the frameworks', 'conventions')}</p></header>",
        "<section id='facts'><h2>The run</h2><div class='scroll'><table>",
        *[f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in header(run) if k != "started"],
        *[
            f"<tr><th>not checked</th><td><strong style='color: {COLOURS[Status.FAIL]}'>"
            f"{_e(line)}</strong></td></tr>"
            for line in not_checked(run)
        ],
        "</table></div></section>",
    ]
    for section in sections(run):
        parts += _section_html(section, run)
    parts += _matrix_html(run)
    parts += _histogram_html(run)
    parts += _rows_html(run)
    totals = ", ".join(f"{n} {Status(k).label}" for k, n in run.counts.items() if n)
    parts.append(f"<p><b>Total</b>: {_e(totals)} (exit code {run.exit_code}).</p>")
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
