"""Results: one row per (implementation, case, dtype), a run's summary, and its JSON form.

The JSON form is versioned (:data:`SCHEMA_VERSION`) and described by the JSON
Schema ``conformance/reports/schemas/results-v3.json``; it records the normref
version and everything needed to re-run a row (the case id and seed).
Version 3 added each row's ``modified_inputs`` and the run's ``interrupted``;
documents of version 2 read with none and ``False``. Documents of version 1
(``results-v1.json``) still read: their outputs' ``reference_ulps``, in ulps
of the exact values, is not in the unit of the budget and cannot be converted
to it, so it is dropped, and ``reference_bound_ulps`` and
``nonfinite_mismatches`` (not recorded) are ``None``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA = "normref-conformance-results"
INTERRUPTED = 130
"""The exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)."""
SCHEMA_VERSION = 3
"""The version of the results document this code writes."""
READABLE_VERSIONS = (1, 2, 3)
"""The versions :meth:`RunResult.from_json` reads (an earlier one upgraded on reading)."""


class Status(str, Enum):
    """The verdict on one row."""

    PASS = "pass"
    """Every output within budget of normref's own definition."""
    CONVENTION = "convention"
    """Not within budget of normref's definition, but within budget of the declared convention,
    and named fields of it explain the difference."""
    FAIL = "fail"
    """Out of budget under the declared convention too, or an exception."""
    NOT_IMPLEMENTED = "not_implemented"
    """The framework lacks the op, the dtype or the layout."""
    REFUSES = "refuses"
    """An input normref refuses (a group of one sample), refused too."""
    ACCEPTS = "accepts"
    """An input normref refuses, for which the implementation returns a value (reported)."""

    @property
    def label(self) -> str:
        """How reports name the status."""
        return _LABELS[self]

    @property
    def failing(self) -> bool:
        """Whether the status makes the run fail (exit code 1)."""
        return self is Status.FAIL


_LABELS = {
    Status.PASS: "within budget",
    Status.CONVENTION: "differs by convention",
    Status.FAIL: "fails",
    Status.NOT_IMPLEMENTED: "not implemented",
    Status.REFUSES: "refuses, as normref",
    Status.ACCEPTS: "returns a value where normref refuses",
}


@dataclass
class CaseResult:
    """One implementation on one case at one dtype (the JSON schema documents each field)."""

    implementation: str
    framework: str
    op: str
    case: str
    kind: str
    seed: int
    dtype: str
    status: Status
    model: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    baseline: list[dict[str, Any]] = field(default_factory=list)
    explanation: str | None = None
    explained_by: dict[str, Any] | None = None
    evidence: str | None = None
    diagnosis: str | None = None
    forward_only: bool = False
    group_size: int | None = None
    conditioning: float | None = None
    conditioning_measure: str | None = None
    description: str = ""
    traceback: str | None = None
    seconds: float = 0.0
    modified_inputs: list[str] = field(default_factory=list)
    causes: Any = field(default=None, repr=False, compare=False)
    """A failing row's candidate causes while its run settles them (not part of the JSON)."""

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        row = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "causes"}
        row["status"] = self.status.value
        if self.conditioning is not None and not _finite(self.conditioning):
            row["conditioning"] = str(self.conditioning)
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> CaseResult:
        """The row back from :meth:`to_json`."""
        values = dict(row)
        values["status"] = Status(values["status"])
        values["outputs"] = [_upgraded(o) for o in values.get("outputs", [])]
        values["baseline"] = [_upgraded(o) for o in values.get("baseline", [])]
        if isinstance(values.get("conditioning"), str):
            values["conditioning"] = float(values["conditioning"])
        return cls(**values)

    def worst(self) -> dict[str, Any] | None:
        """The output that used most of its budget: under normref's definition for a row that
        differs by convention (how far it is from normref), else under the verdict's model."""
        outputs = (
            self.baseline if self.status is Status.CONVENTION and self.baseline else (self.outputs)
        )
        return max(outputs, key=lambda o: float(o["used"]), default=None)


def _upgraded(output: dict[str, Any]) -> dict[str, Any]:
    """An output of a version 1 document in version 2's fields (see the module docstring)."""
    if "reference_ulps" not in output:
        return output
    upgraded = {k: v for k, v in output.items() if k != "reference_ulps"}
    upgraded.setdefault("reference_bound_ulps", None)
    upgraded.setdefault("nonfinite_mismatches", None)
    return upgraded


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass
class RunResult:
    """A run: its settings and environment, the implementations and every row."""

    results: list[CaseResult]
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    implementations: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status."""
        found = Counter(r.status.value for r in self.results)
        return {s.value: found.get(s.value, 0) for s in Status}

    @property
    def complete(self) -> bool:
        """Every framework asked for was checked (none of them is missing here)."""
        return not self.skipped

    @property
    def checked(self) -> bool:
        """Some row was checked: not every row is "not implemented" (and there are rows)."""
        return any(r.status is not Status.NOT_IMPLEMENTED for r in self.results)

    @property
    def ok(self) -> bool:
        """Every framework asked for was checked, something was, it ran to the end, and no row
        fails."""
        return self.complete and self.checked and not self.interrupted and not self.failures

    @property
    def exit_code(self) -> int:
        """130 for a run stopped by Ctrl-C; 2 when a framework asked for was not checked (not
        installed: the run is not the one asked for, whatever its rows say) or nothing was
        checked (every row "not implemented"); else 1 when a row fails, else 0."""
        if self.interrupted:
            return INTERRUPTED
        if not self.complete or not self.checked:
            return 2
        return 1 if self.failures else 0

    def not_implemented_reasons(self) -> list[str]:
        """Why rows are "not implemented", each reason once."""
        return list(
            dict.fromkeys(r.explanation or "" for r in self.by_status(Status.NOT_IMPLEMENTED))
        )

    def by_status(self, status: Status) -> list[CaseResult]:
        """The rows with ``status``."""
        return [r for r in self.results if r.status is status]

    @property
    def failures(self) -> list[CaseResult]:
        """The failing rows."""
        return self.by_status(Status.FAIL)

    @property
    def findings(self) -> list[CaseResult]:
        """The rows that differ by convention."""
        return self.by_status(Status.CONVENTION)

    def to_json(self) -> dict[str, Any]:
        """The run as a JSON document of the versioned schema."""
        import normref

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "normref_version": normref.__version__,
            "settings": self.settings,
            "environment": self.environment,
            "seconds": self.seconds,
            "implementations": self.implementations,
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "summary": {"counts": self.counts, "exit_code": self.exit_code},
            "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, document: Any) -> RunResult:
        """A run back from :meth:`to_json`, or from a document of an earlier version of
        :data:`READABLE_VERSIONS` (:class:`ValueError` for another schema, or a document of
        this one whose contents are not a run's)."""
        if not isinstance(document, dict):
            msg = f"not a {SCHEMA} document: a JSON {type(document).__name__}, not an object"
            raise ValueError(msg)  # noqa: TRY004 - every document that is not a run's is a ValueError
        version = document.get("schema_version")
        if document.get("schema") != SCHEMA or version not in READABLE_VERSIONS:
            versions = " or ".join(str(v) for v in READABLE_VERSIONS)
            msg = (
                f"not a {SCHEMA} document of version {versions}: schema="
                f"{document.get('schema')!r}, schema_version={document.get('schema_version')!r}"
            )
            raise ValueError(msg)
        try:
            return cls._read(document)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            msg = f"not a {SCHEMA} document: its contents do not read ({type(error).__name__}: {error})"
            raise ValueError(msg) from None

    @classmethod
    def _read(cls, document: dict[str, Any]) -> RunResult:
        return cls(
            results=[CaseResult.from_json(r) for r in document["results"]],
            settings=document.get("settings", {}),
            environment=document.get("environment", {}),
            implementations=document.get("implementations", []),
            skipped=document.get("skipped", []),
            seconds=document.get("seconds", 0.0),
            interrupted=bool(document.get("interrupted", False)),
        )

    def json_text(self) -> str:
        """:meth:`to_json` as the text of a JSON file."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.json_text())

    @classmethod
    def read_json(cls, path: str | Path) -> RunResult:
        """Read a run written by :meth:`write_json`."""
        return cls.from_json(json.loads(Path(path).read_text()))
