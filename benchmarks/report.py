"""Benchmark output: a terminal table (row by row, as results come), Markdown, JSON and a plot."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.run import (
    CUDA_TIME_TARGET,
    FAMILY_TIME_TARGETS,
    JAX_TIME_TARGET,
    MEMORY_TARGETS,
    TIME_TARGETS,
    Result,
    compute_kind,
)
from normref.registry import REGISTRY

COLUMNS = (
    ("op", 40),
    ("shape", 18),
    ("dtype", 8),
    ("precision", 9),
    ("normref ms", 11),
    ("torch ms", 9),
    ("jax ms", 9),
    ("x torch", 8),
    ("x jax", 7),
    ("generic x torch", 16),
    ("mem normref", 12),
    ("mem generic", 12),
    ("mem torch", 10),
    ("mem jax", 8),
    ("of copy bw", 10),
    ("targets", 7),
)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def targets_text(result: Result) -> str:
    """Whether the row meets the targets: ``met``, ``MISSED`` (with ``compiled path off`` where
    the operation's compiled path did not run because numba is not installed) or ``-``."""
    if result.meets_targets is None:
        return "-"
    if result.meets_targets:
        return "met"
    return "MISSED, compiled path off" if result.compiled_path == "off" else "MISSED"


def _cells(result: Result) -> list[str]:
    return [
        result.name,
        str(result.shape),
        result.dtype,
        result.precision,
        _ms(result.seconds["normref"]),
        _ms(result.seconds["torch"]),
        _ms(result.seconds["jax"]),
        _times(result.ratio("torch")),
        _times(result.ratio("jax")),
        _times(result.ratio("torch", mine="generic")),
        *(_times(result.memory[k]) for k in ("normref", "generic", "torch", "jax")),
        _times(result.copy_share),
        targets_text(result),
    ]


def header() -> str:
    """The terminal table's header line."""
    return " ".join(name.rjust(width) for name, width in COLUMNS)


def row(result: Result) -> str:
    """One terminal table line."""
    return " ".join(
        cell.rjust(width) for cell, (_, width) in zip(_cells(result), COLUMNS, strict=True)
    )


def markdown(results: Iterable[Result]) -> str:
    """The table in Markdown (times in ms, ratios and memory multiples as plain numbers;
    memory is one call's temporaries, ``of copy bw`` the bytes the row must move per second
    of its time over those of a copy of its input, timed alongside)."""
    names = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = (
    "op",
    "shape",
    "dtype",
    "precision",
    "x torch",
    "x jax",
    "mem normref",
    "of copy bw",
    "targets",
)


def summary_markdown(results: Iterable[Result]) -> str:
    """The table's main columns in Markdown: normref's time relative to torch and jax, its memory."""
    chosen = [i for i, (name, _) in enumerate(COLUMNS) if name in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(COLUMNS[i][0] for i in chosen) + " |", "|" + "---|" * len(chosen)]
    for r in results:
        cells = _cells(r)
        lines.append("| " + " | ".join(cells[i] for i in chosen) + " |")
    return "\n".join(lines) + "\n"


def _span(values: Iterable[float | None]) -> str:
    """``low–high`` of the values that are not ``None`` (one value once; ``-`` for none)."""
    found = [v for v in values if v is not None]
    if not found:
        return "-"
    low, high = f"{min(found):.2f}", f"{max(found):.2f}"
    return low if low == high else f"{low}–{high}"


FAMILY_COLUMNS = (
    "family",
    "operations",
    "x torch, native",
    "x torch, highest",
    "x jax, native",
    "x jax, highest",
    "mem float32, native",
    "mem float32, highest",
    "targets met",
)


def families_markdown(results: Sequence[Result]) -> str:
    """One line per registry family: ranges of normref's time ratios and float32 memory, targets.

    Each range runs over the family's rows (shapes, variants and both dtypes for
    the ratios); memory is one call's temporaries as a multiple of a float32 input.
    """
    lines = ["| " + " | ".join(FAMILY_COLUMNS) + " |", "|" + "---|" * len(FAMILY_COLUMNS)]
    families = dict.fromkeys(REGISTRY[r.op].family for r in results)
    for family in families:
        rows = [r for r in results if REGISTRY[r.op].family == family]

        def chosen(precision: str, dtype: str | None = None, rows: list[Result] = rows) -> list:
            return [r for r in rows if r.precision == precision and dtype in (None, r.dtype)]

        verdicts = [r.meets_targets for r in rows if r.meets_targets is not None]
        cells = [
            family,
            ", ".join(dict.fromkeys(r.name for r in rows)),
            *(
                _span(r.ratio(other) for r in chosen(p))
                for other in ("torch", "jax")
                for p in ("native", "highest")
            ),
            *(
                _span(r.memory["normref"] for r in chosen(p, "float32"))
                for p in ("native", "highest")
            ),
            f"{sum(verdicts)} of {len(verdicts)}" if verdicts else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TARGETS_TEXT = (
    "targets: time at most {t_in}x torch (and {t_jax}x jax) and temporaries (peak minus "
    "outputs) at most {m_in}x the input where normref computes in the input dtype "
    "(precision='native', or float64 input); {t_64}x torch and {m_64}x where it computes a "
    "narrower input in float64 (precision='highest'); whitening {w_in}x and {w_64}x torch; "
    "on CUDA {t_cuda}x torch"
).format(
    t_in=TIME_TARGETS["input"],
    t_jax=JAX_TIME_TARGET,
    m_in=MEMORY_TARGETS["input"],
    t_64=TIME_TARGETS["float64"],
    m_64=MEMORY_TARGETS["float64"],
    w_in=FAMILY_TIME_TARGETS["whitening"]["input"],
    w_64=FAMILY_TIME_TARGETS["whitening"]["float64"],
    t_cuda=CUDA_TIME_TARGET,
)


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Every result with its ratios and target verdict, and the run's metadata."""
    rows = [
        {
            **asdict(r),
            "vs_torch": r.ratio("torch"),
            "vs_jax": r.ratio("jax"),
            "generic_vs_torch": r.ratio("torch", mine="generic"),
            "compute": compute_kind(r.dtype, r.precision),
            "meets_targets": r.meets_targets,
        }
        for r in results
    ]
    targets = {
        "time_vs_torch": TIME_TARGETS,
        "time_vs_torch_by_family": FAMILY_TIME_TARGETS,
        "time_vs_jax_in_input_dtype": JAX_TIME_TARGET,
        "time_vs_torch_cuda": CUDA_TIME_TARGET,
        "temporaries_multiple": MEMORY_TARGETS,
    }
    path.write_text(json.dumps({"meta": meta, "targets": targets, "results": rows}, indent=1))


def read_json(path: Path) -> tuple[list[Result], dict[str, Any]]:
    """The results and the metadata of a file written by :func:`write_json`."""
    document = json.loads(path.read_text())
    fields = Result.__dataclass_fields__
    results = [
        Result(**{**{k: v for k, v in row.items() if k in fields}, "shape": tuple(row["shape"])})
        for row in document["results"]
    ]
    return results, document["meta"]


RATIO_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50)


FRAMEWORKS = ("torch", "jax")
"""The frameworks normref's time is compared with, one panel each where they ran."""


def plot(path: Path, results: Sequence[Result]) -> None:
    """Horizontal bars of normref's time relative to each framework that ran (a panel each,
    side by side), one bar per row, with the time targets; normref's own times where no
    framework ran. The title says what ran, and where the compiled path was off."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [f for f in FRAMEWORKS if any(r.ratio(f) is not None for r in results)]
    labels = [f"{r.name} {r.shape} {r.dtype} {r.precision}" for r in results]
    panels = len(ran) or 1
    figure, axes = plt.subplots(
        1,
        panels,
        figsize=(3.0 + 3.5 * panels, 1.6 + 0.17 * len(results)),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    colours = ["tab:blue" if r.precision == "native" else "tab:orange" for r in results]
    rows = range(len(results))
    for ax, other in zip(axes[0], ran or [None], strict=True):
        if other is None:
            values = [1e3 * r.seconds["normref"] for r in results]
            ax.set_xlabel("normref time (ms)")
        else:
            values = [r.ratio(other) or 0.0 for r in results]
            ax.set_xlabel(f"normref time / {other} time")
        ax.barh(rows, values, color=colours)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if other is not None:
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(RATIO_TICKS))
            ax.axvline(1.0, color="black", linewidth=0.8)
        if other == "torch":
            for kind, style in (("input", "--"), ("float64", ":")):
                ax.axvline(TIME_TARGETS[kind], color="tab:red", linestyle=style, linewidth=0.8)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_yticks(rows, labels, fontsize=7)
    axes[0, 0].set_ylim(len(results) - 0.5, -0.5)
    what = (
        f"normref forward + backward relative to {' and '.join(ran)}"
        if ran
        else "normref forward + backward time (no framework to compare with ran)"
    )
    notes = [results[0].device.upper() if results else "CPU", "blue: native, orange: highest"]
    if "torch" in ran:
        notes.append("red lines: the time targets")
    if any(r.compiled_path == "off" for r in results):
        notes.append("compiled path off: numba is not installed")
    figure.suptitle(f"{what}\n({'; '.join(notes)})", fontsize=10)
    figure.savefig(path, dpi=120)
    plt.close(figure)
