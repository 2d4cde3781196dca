"""Reports of a run: a terminal table (rich), Markdown, a self-contained HTML page, JSON.

Every report is rendered from a :class:`~conformance.reports.results.RunResult`, so a
run saved as JSON renders again later (``normref-conformance report``).
"""

from conformance.reports.html import to_html
from conformance.reports.markdown import to_markdown
from conformance.reports.summary import not_checked
from conformance.reports.terminal import print_report, progress_bar

__all__ = ["not_checked", "print_report", "progress_bar", "to_html", "to_markdown"]
