"""The Markdown report: the same content as the terminal's, as text for a page or an issue."""

from __future__ import annotations

from conformance.reports.results import RunResult, Status
from conformance.reports.summary import (
    SYMBOLS,
    banner,
    case_line,
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


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(run: RunResult, *, limit: int = 50) -> str:
    """The run as a Markdown document."""
    outcome = banner(run)
    lines = [
        f"# {_escape(title(run))}",
        "",
        f"**{outcome.headline}.** {_escape(outcome.detail)}",
        "",
    ]
    lines += [f"- **{k}**: {_escape(v)}" for k, v in header(run)]
    lines += [f"- **{_escape(line)}**" for line in not_checked(run)]
    dtypes = dtypes_of(run)
    lines += ["", "## Rows per status", ""]
    lines.append("| implementation | op | " + " | ".join(dtypes) + " |")
    lines.append("|---|---|" + "---:|" * len(dtypes))
    for (implementation, op), cells in matrix(run).items():
        values = [cell_text(cells[d]) if d in cells else "·" for d in dtypes]
        lines.append(f"| {_escape(implementation)} | {op} | " + " | ".join(values) + " |")
    lines += ["", ", ".join(f"{SYMBOLS[s]} {s.label}" for s in Status), ""]
    lines += [f"Not implemented: {_escape(line)}." for line in not_implemented(run)]
    lines += [""] if not_implemented(run) else []

    for section in sections(run):
        lines += [f"## {section.title}", ""]
        for group in section.groups[:limit]:
            lines.append(f"- **{_escape(group.who)}** ({group.extent}): {_escape(group.text)}")
            worst = group.worst
            if worst is not None and section.shows_worst:
                row, output = worst
                lines.append(f"  - worst: {case_line(row, output)}")
                if section.shows_rerun:
                    lines.append(f"  - re-run: `{reproduce(row, run)}`")
            if group.rows[0].traceback:
                lines += [
                    "",
                    "  ```",
                    *[f"  {t}" for t in group.rows[0].traceback.strip().splitlines()[-6:]],
                    "  ```",
                ]
        if len(section.groups) > limit:
            lines.append(f"- ... and {len(section.groups) - limit} more (see the JSON report)")
        lines.append("")
    counts = ", ".join(f"{n} {Status(k).label}" for k, n in run.counts.items() if n)
    lines += [f"**Total**: {counts} (exit code {run.exit_code}).", ""]
    return "\n".join(lines)
