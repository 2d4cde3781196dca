"""A user's own function: every array type, autograd backward, declared conventions, crashes."""

from __future__ import annotations

import pytest

from conformance.api import check
from conformance.checked.cases import cases_for
from conformance.reports.results import Status
from tests.conformance import planted


def test_torch_tensors_and_autograd():
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    result = check(
        planted.layer_norm_torch, "layer_norm", array_type="torch", dtypes=["float32", "float64"]
    )
    assert result.ok
    assert not any(r.forward_only for r in result.results)
    typical = next(r for r in result.results if r.case == "layer_norm/typical")
    assert {o["name"] for o in typical.outputs} == {"y", "dx", "dgamma", "dbeta"}


def test_jax_arrays_and_jax_vjp():
    pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    result = check(
        planted.layer_norm_jax,
        "layer_norm",
        array_type="jax",
        dtypes=["float32"],
        case="layer_norm/outlier-1e4",
    )
    (row,) = result.results
    assert row.status is Status.PASS
    assert {o["name"] for o in row.outputs} == {"y", "dx", "dgamma", "dbeta"}


def test_the_declared_convention_explains_a_difference():
    """A torch-like layer differs from normref's biased running variance, as torch declares."""
    result = check(planted.batch_norm_train_torch, "batch_norm_train", "torch", dtypes=["float64"])
    assert result.ok
    findings = result.findings
    assert findings
    assert all(r.explained_by == {"running_var_correction": 1} for r in findings)


def test_an_exception_fails_its_row_only():
    result = check(planted.layer_norm_crashing_on_size_one, "layer_norm", dtypes=["float32"])
    shapes = {c.id: c.sample.args["x"].shape for c in cases_for("layer_norm")}
    assert result.failures
    for row in result.results:
        if row.kind == "error":  # refusing an input normref refuses is right
            assert row.status is Status.REFUSES
            continue
        crashed = 1 in shapes[row.case]
        assert (row.status is Status.FAIL) == crashed, row.case
        if crashed:
            assert "RuntimeError: cannot normalize" in row.traceback


def _values(op) -> dict[str, list[str]]:
    """The values the suite passes for each argument of ``op`` that is not an array, over its
    cases, in order (``absent`` where a case leaves ``eps`` to the function's default)."""
    import numpy as np

    found: dict[str, set] = {}
    for case in cases_for(op.name):
        given = dict(case.sample.args) | dict(case.sample.kwargs)
        for name, value in given.items():
            if name == "convention" or isinstance(value, np.ndarray) or value is None:
                continue
            found.setdefault(name, set()).add(
                "absent" if case.default_eps and name == "eps" else value
            )

    def order(value):
        return (value == "absent", 0 if value == "absent" else value)

    return {
        name: [v if v == "absent" else repr(v) for v in sorted(values, key=order)]
        for name, values in found.items()
    }


def _arguments_rows() -> list[str]:
    """The table of ``docs/conformance.md`` that says what the suite passes to a function: its
    call and, for each argument that is not an array, the values its cases pass."""
    from conformance.adapters.function import suite_call
    from conformance.checked.ops import CHECKED_OPS

    rows = []
    for op in CHECKED_OPS.values():
        values = []
        for name, found in _values(op).items():
            numbers = [float(v) for v in found if v not in ("absent",) and v[0] not in "'("]
            if len(found) > 6 and len(numbers) == len(found):
                values.append(f"`{name}`: one per case, {min(numbers):.3g} to {max(numbers):.3g}")
            else:
                values.append(f"`{name}`: {', '.join(found)}")
        gradient = suite_call(op, vjp=True).split(" -> ")[1] if op.differentiable else "-"
        rows.append(f"| `{suite_call(op)}` | `{gradient}` | {'; '.join(values) or '-'} |")
    return rows


def test_the_docs_say_what_the_suite_passes_to_a_function():
    """docs/conformance.md lists, per op, the call, the VJP's gradients and the values passed."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text()
    missing = [row for row in _arguments_rows() if row not in docs]
    assert not missing, "\n".join(missing)
