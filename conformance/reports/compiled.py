"""What compiled kernels do differently from eager ones: each compiled row against its twin."""

from __future__ import annotations

from conformance.reports.results import RunResult

SUFFIX = " (compiled)"
"""How a compiled implementation's label ends (:meth:`conformance.adapters.base.Adapter.compiled_bindings`)."""


def compiled_differences(result: RunResult) -> list[str]:
    """One line per compiled row whose verdict (status, or the model that explains it)
    differs from the same implementation's eager row on that case and dtype, or one line
    saying there is none; nothing where the run has no compiled rows."""
    rows = {(r.implementation, r.case, r.dtype): r for r in result.results}
    compiled = [r for r in result.results if r.implementation.endswith(SUFFIX)]
    if not compiled:
        return []
    lines = []
    for row in compiled:
        eager = rows.get((row.implementation.removesuffix(SUFFIX), row.case, row.dtype))
        if eager is None:
            continue
        if (eager.status, eager.model) != (row.status, row.model):
            lines.append(
                f"{row.implementation} {row.case} {row.dtype}: {row.status.value} "
                f"({row.model}) compiled, {eager.status.value} ({eager.model}) eager"
            )
    if not lines:
        return [f"compiled kernels: the same verdict as eager on all {len(compiled)} rows"]
    return [f"compiled kernels differ from eager on {len(lines)} of {len(compiled)} rows:", *lines]
