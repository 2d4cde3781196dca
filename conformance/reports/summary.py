"""What every report shows, computed once: the status matrix, findings, failures."""

from __future__ import annotations

import math
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.reports.results import CaseResult, RunResult, Status

ORDER = (
    Status.FAIL,
    Status.CONVENTION,
    Status.ACCEPTS,
    Status.PASS,
    Status.REFUSES,
    Status.NOT_IMPLEMENTED,
)
"""Statuses from the most to the least important: a cell shows its first present one."""

SYMBOLS = {
    Status.PASS: "✓",
    Status.CONVENTION: "≈",
    Status.FAIL: "✗",
    Status.NOT_IMPLEMENTED: "–",
    Status.REFUSES: "⊘",
    Status.ACCEPTS: "!",
}
"""One character per status, for the matrix."""


def cell_status(counts: Counter) -> Status | None:
    """The status a matrix cell shows: the most important present."""
    return next((s for s in ORDER if counts.get(s)), None)


def cell_text(counts: Counter) -> str:
    """A matrix cell: each present status's symbol and count, most important first."""
    return " ".join(f"{counts[s]}{SYMBOLS[s]}" for s in ORDER if counts.get(s)) or "·"


def dtypes_of(run: RunResult) -> list[str]:
    """The run's dtypes, in the order of its settings (or of appearance)."""
    listed = list(run.settings.get("dtypes") or [])
    return listed + sorted({r.dtype for r in run.results} - set(listed))


def _cells(run: RunResult) -> dict[tuple[str, str], dict[str, Counter]]:
    table: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in run.results:
        table[(r.implementation, r.op)][r.dtype][r.status] += 1
    return table


def matrix(run: RunResult) -> dict[tuple[str, str], dict[str, Counter]]:
    """(implementation, op) -> dtype -> statuses' counts, for the pairs with a row that is not
    "not implemented" (the others are :func:`not_implemented`'s lines)."""
    return {
        key: cells
        for key, cells in _cells(run).items()
        if any(set(c) != {Status.NOT_IMPLEMENTED} for c in cells.values())
    }


def ulps(value: Any) -> float:
    """An ulp count from JSON (``"inf"`` for a non-finite error)."""
    return float(value)


def format_ulps(value: Any) -> str:
    """An ulp count, compactly."""
    number = ulps(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.3g}"


@dataclass
class Group:
    """Rows of one framework with the same explanation (or diagnosis): one finding, however many
    of the framework's implementations (``torch.nn.functional.layer_norm``,
    ``torch.nn.LayerNorm``) share it."""

    framework: str
    text: str
    rows: list[CaseResult] = field(default_factory=list)

    @property
    def implementations(self) -> list[str]:
        """The implementations that share it, in the order of their rows."""
        return list(dict.fromkeys(r.implementation for r in self.rows))

    @property
    def ops(self) -> list[str]:
        """The ops of its rows, in order."""
        return list(dict.fromkeys(r.op for r in self.rows))

    @property
    def who(self) -> str:
        """Its implementations, and ops, in one line: ``torch.nn.functional.layer_norm,
        torch.nn.LayerNorm: layer_norm``."""
        return f"{', '.join(self.implementations)}: {', '.join(self.ops)}"

    @property
    def dtypes(self) -> list[str]:
        """The dtypes of its rows."""
        return sorted({r.dtype for r in self.rows})

    @property
    def extent(self) -> str:
        """How many rows, at which dtypes."""
        rows = "1 row" if len(self.rows) == 1 else f"{len(self.rows)} rows"
        return f"{rows}, {', '.join(self.dtypes)}"

    @property
    def worst(self) -> tuple[CaseResult, dict[str, Any]] | None:
        """The row and output that used most of the budget."""
        best = None
        for row in self.rows:
            output = row.worst()
            if output is not None and (
                best is None or ulps(output["used"]) > ulps(best[1]["used"])
            ):
                best = (row, output)
        return best


def grouped(rows: list[CaseResult], text: Callable[[CaseResult], str]) -> list[Group]:
    """``rows`` grouped by framework and ``text(row)``."""
    groups: dict[tuple[str, str], Group] = {}
    for row in rows:
        value = text(row)
        key = (row.framework, value)
        if key not in groups:
            groups[key] = Group(row.framework, value)
        groups[key].rows.append(row)
    return list(groups.values())


@dataclass(frozen=True)
class Section:
    """A part of a report: the groups of rows of one status worth reading."""

    status: Status
    title: str
    groups: list[Group]

    @property
    def rows(self) -> int:
        """How many rows its groups hold."""
        return sum(len(g.rows) for g in self.groups)

    @property
    def shows_worst(self) -> bool:
        """Whether each group shows its worst element (not for values on refused inputs)."""
        return self.status is not Status.ACCEPTS

    @property
    def shows_rerun(self) -> bool:
        """Whether each group shows the command that re-runs its worst row."""
        return self.status is Status.FAIL


def sections(run: RunResult) -> list[Section]:
    """The failures, then the values returned on refused inputs, then the findings (rows that
    differ by convention), where present: what needs fixing first."""
    found = [
        Section(Status.FAIL, "Fails", failures(run)),
        Section(Status.ACCEPTS, "Returns a value where normref refuses", error_paths(run)),
        Section(Status.CONVENTION, "Differs by convention", findings(run)),
    ]
    return [s for s in found if s.groups]


def findings(run: RunResult) -> list[Group]:
    """The rows that differ by convention, grouped by what explains them."""
    return grouped(run.findings, lambda r: r.explanation or "")


def failures(run: RunResult) -> list[Group]:
    """The failing rows, grouped by their diagnosis."""
    return grouped(run.failures, lambda r: r.diagnosis or "")


def error_paths(run: RunResult) -> list[Group]:
    """Rows on inputs normref refuses where the implementation returns a value, per case."""
    return grouped(
        run.by_status(Status.ACCEPTS), lambda r: f"{r.case}: {r.description}: {r.explanation}"
    )


@dataclass(frozen=True)
class Banner:
    """The run's outcome in a few words, for the top of a report: ``kind`` is ``"fails"``,
    ``"incomplete"`` (interrupted, or not everything asked for was checked), ``"conventions"``
    (no row fails; some differ by convention or return a value where normref refuses) or
    ``"passes"``."""

    kind: str
    headline: str
    detail: str


def banner(run: RunResult) -> Banner:
    """The verdict at the top of a report."""
    counts = Counter(r.status for r in run.results)
    checked = sum(n for s, n in counts.items() if s is not Status.NOT_IMPLEMENTED)
    if counts[Status.FAIL]:
        implementations = len({r.implementation for r in run.failures})
        unfinished = (
            " The run is not complete (see below)." if run.interrupted or not run.complete else ""
        )
        return Banner(
            "fails",
            "Fails",
            f"{counts[Status.FAIL]} of {checked} checked rows fail, in {implementations} "
            f"implementation{'s' if implementations > 1 else ''}: see Fails below.{unfinished}",
        )
    if run.interrupted or not run.complete or not run.checked:
        return Banner("incomplete", "Not complete", verdict(run))
    noted = [f"{counts[s]} {s.label}" for s in (Status.ACCEPTS, Status.CONVENTION) if counts[s]]
    if noted:
        return Banner(
            "conventions",
            "Passes, with differences by convention",
            f"No row fails; {' and '.join(noted)}: each explained below.",
        )
    return Banner("passes", "Passes", f"All {checked} checked rows are within budget.")


def title(run: RunResult) -> str:
    """What the report is about: the frameworks checked, or the function."""
    frameworks = run.settings.get("frameworks") or []
    named = ", ".join(frameworks) or str(run.settings.get("implementation") or "")
    if not named:
        named = ", ".join(dict.fromkeys(r.framework for r in run.results)) or "nothing"
    return f"normref conformance report: {named}"


def not_implemented(run: RunResult) -> list[str]:
    """One line per framework: the ops it has no implementation of (their rows are left out
    of the matrix)."""
    missing: dict[str, list[str]] = {}
    for (implementation, op), cells in _cells(run).items():
        if all(set(c) == {Status.NOT_IMPLEMENTED} for c in cells.values()):
            missing.setdefault(implementation, []).append(op)
    return [f"{who} has no {', '.join(ops)}" for who, ops in missing.items()]


def output_line(output: dict[str, Any]) -> str:
    """One output's numbers: max and p99 error, and the worst element: its budget, the values
    there and the input; or, at a non-finite exact value, what normref and the implementation
    give there."""
    where = output.get("worst_index")
    at = tuple(where) if where is not None else "-"
    numbers = (
        f"{output['name']} ({output['direction']}): max {format_ulps(output['max_ulps'])} "
        f"ulp, p99 {format_ulps(output['p99_ulps'])} ulp"
    )
    actual, expected = output.get("actual"), output.get("expected")
    if expected is not None and not math.isfinite(float(expected)):
        parts = [f"{numbers} at {at}: normref gives {_value(expected)} there, got {_value(actual)}"]
    else:
        parts = [f"{numbers}, budget {format_ulps(output['budget_ulps'])} ulp at {at}"]
        if actual is not None:
            parts.append(f"got {actual!s}, exact {expected!s}")
    if output.get("input_value") is not None:
        parts.append(f"input there {output['input_value']!s}")
    mismatches = output.get("nonfinite_mismatches") or 0
    if mismatches and (expected is None or math.isfinite(float(expected))):
        parts.append(
            f"{mismatches} elements elsewhere where normref gives NaN or infinity and the "
            "implementation another value"
        )
    if output.get("problem"):
        parts.append(str(output["problem"]))
    return "; ".join(parts)


def _value(value: Any) -> str:
    """A value from JSON as reports write it (NaN for a NaN, which JSON holds as "nan")."""
    if value is None:
        return "nothing"
    number = float(value)
    return "NaN" if math.isnan(number) else str(number)


def case_line(row: CaseResult, output: dict[str, Any]) -> str:
    """Where the worst error of ``row`` was, with its numbers, the input's conditioning, the
    reference's own share of the budget there and any evidence for the explanation."""
    text = f"{row.case} {row.dtype}: {output_line(output)}"
    if row.conditioning is not None:
        measure = row.conditioning_measure or "|mean|/std"
        text += f"; input {measure} up to {format_ulps(row.conditioning)}"
        reference = output.get("reference_bound_ulps")
        if reference is not None and math.isfinite(ulps(reference)):
            text += (
                f"; of the budget there, {format_ulps(reference)} ulp is the float64 reference's "
                "own error bound"
            )
    if row.evidence:
        text += f"; {row.evidence}"
    return text


def header(run: RunResult) -> list[tuple[str, str]]:
    """The run's facts: versions, settings, duration, outcome."""
    import normref

    env = run.environment
    versions = ", ".join(
        dict.fromkeys(
            f"{k} {v}" for fw in env.get("frameworks", {}).values() for k, v in fw.items()
        )
    )
    settings = run.settings
    facts = [
        ("started", env.get("started") or "not recorded (a document of an earlier version)"),
        ("normref", normref.__version__),
        ("frameworks", versions or ", ".join(settings.get("frameworks", [])) or "-"),
        ("implementation", settings.get("implementation", "")),
        (
            "ops",
            ", ".join(settings.get("ops", []))
            if isinstance(settings.get("ops"), list)
            else str(settings.get("op", "")),
        ),
        ("dtypes", ", ".join(dtypes_of(run))),
        ("seed", str(settings.get("seed", 0))),
        ("python", f"{env.get('python', '')} on {env.get('platform', '')}"),
        ("time", f"{run.seconds:.1f} s"),
        (
            "forward only",
            ", ".join(i["implementation"] for i in run.implementations if not i.get("backward")),
        ),
        ("verdict", verdict(run)),
    ]
    return [(k, v) for k, v in facts if v]


def verdict(run: RunResult) -> str:
    """The run's outcome in one line: first whether it was interrupted (exit code 130) and what
    was not checked (exit code 2), then how many rows have each status that occurs, most
    important first."""
    parts = []
    if run.interrupted:
        parts.append("interrupted: the rows done before Ctrl-C (exit code 130)")
    if not run.complete:
        missing = ", ".join(s["framework"] for s in run.skipped)
        what = "nothing checked" if not run.results else "not checked"
        parts.append(f"{what}: {missing} not installed (exit code 2)")
    elif not run.checked and not run.interrupted:
        parts.append(
            "nothing checked (exit code 2)"
            if run.results
            else "nothing checked: no row to run (exit code 2)"
        )
    counts = Counter(r.status for r in run.results)
    parts += [f"{counts[s]} {s.label}" for s in ORDER if counts[s]]
    return "; ".join(parts)


def not_checked(run: RunResult) -> list[str]:
    """One line per framework asked for that was not checked, with why and how to install it;
    and where nothing was checked, why each row is not implemented."""
    lines = [f"{s['framework']} was not checked: {s['reason']}" for s in run.skipped]
    if run.complete and not run.checked and not run.interrupted:
        reasons = "; ".join(run.not_implemented_reasons()) or "no row matches the selection"
        lines.append(f"nothing was checked (exit code 2): {reasons}")
    return lines


def reproduce(row: CaseResult, run: RunResult) -> str:
    """The command that re-runs ``row`` alone with every setting of the run that affects it;
    for a function or a convention no command line can name, the call in Python."""
    settings = run.settings
    common = [
        "--case",
        row.case,
        "--dtypes",
        row.dtype,
        "--seed",
        str(settings.get("seed", 0)),
        "--backend",
        str(settings.get("backend", "numpy")),
    ]
    if not row.framework.startswith("function"):
        return shlex.join(["normref-conformance", "run", "--framework", row.framework, *common])
    # a document of an earlier version records the function's label alone
    impl = settings.get("impl", row.implementation)
    convention = settings.get("convention")
    vjp = settings.get("impl_vjp")
    array_type = str(settings.get("array_type", "numpy"))
    unnamed = (
        impl is None
        or (settings.get("vjp") and vjp is None)
        or ("convention" in settings and convention is None)
    )
    if unnamed:
        return (
            f"conformance.check(<{row.implementation}>, {row.op!r}, convention=<{row.model}>, "
            f"vjp={'<its VJP>' if settings.get('vjp') else None}, array_type={array_type!r}, "
            f"dtypes=[{row.dtype!r}], case={row.case!r}, seed={settings.get('seed', 0)!r}, "
            f"backend={settings.get('backend', 'numpy')!r})"
        )
    command = ["normref-conformance", "run", "--impl", str(impl), "--op", row.op]
    if convention is not None:
        command += ["--convention", convention]
    for change in settings.get("changes") or []:
        command += ["--set", change]
    if vjp is not None:
        command += ["--impl-vjp", vjp]
    return shlex.join([*command, "--array-type", array_type, *common])
