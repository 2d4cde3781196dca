"""The terminal report: rich prints the data as it is."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from conformance.reports import print_report
from conformance.reports.results import CaseResult, RunResult, Status


def test_the_terminal_prints_every_data_string_as_it_is():
    """Names, diagnoses, tracebacks and reasons are data, not rich markup: an install hint
    ``'.[jax]'`` or a message with brackets prints whole."""
    markup = "[jax] [bold]x[/bold] [/]"
    row = CaseResult(
        implementation=f"impl {markup}",
        framework="function (numpy)",
        op="layer_norm",
        case="layer_norm/typical",
        kind="edge",
        seed=0,
        dtype="float32",
        status=Status.FAIL,
        model="normref",
        diagnosis=f"raised ValueError: {markup}",
        traceback=f"Traceback (most recent call last):\nValueError: {markup}",
    )
    skipped = [{"framework": "flax", "reason": "flax not installed (pip install -e '.[jax]')"}]
    result = RunResult(
        [row], settings={"implementation": f"impl {markup}", "dtypes": ["float32"]}, skipped=skipped
    )
    out = StringIO()
    print_report(result, Console(file=out, width=400))
    text = out.getvalue()
    for shown in (
        f"implementation  impl {markup}",
        f"impl {markup}: layer_norm",
        f"raised ValueError: {markup}",
        f"    ValueError: {markup}",
        "pip install -e '.[jax]'",
    ):
        assert shown in text
