"""Causes that are true: a set of rows that once named a wrong cause, and what they name now.

Every cause a row names reproduced all the implementation's failing rows; a field that fits
one row by coincidence, or a float16 overflow read off the input's magnitude, is not named.
"""

from __future__ import annotations

import pytest

from conformance.api import check, run
from tests.conformance import planted

F64 = ["float64"]


def _leads(result) -> set[str]:
    """The causes the failing rows name (the first part of each diagnosis)."""
    return {row.diagnosis.split("; ")[0] for row in result.failures}


def test_interleaved_groups_are_not_explained_by_an_eps_placement():
    """One row of the interleaved group norm once read "explained by eps_mode='add_std'"."""
    result = check(planted.group_norm_interleaved, "group_norm", dtypes=["float32", "float64"])
    assert result.failures
    for lead in _leads(result):
        assert "eps_mode" not in lead
        assert "interleaved" in lead


def test_a_one_pass_variance_is_not_explained_by_a_fixed_eps():
    """A naive E[x^2] - E[x]^2 once read "explained by fixed_eps=0.001" on one row: the
    variance's arithmetic, and only it, holds every failing row."""
    result = check(planted.batch_norm_naive_variance, "batch_norm", dtypes=["float32", "float64"])
    assert result.failures
    for lead in _leads(result):
        assert "fixed_eps" not in lead
        assert lead.startswith("within the wider budget of")
        assert "variance_algorithm='fast'" in lead


def test_no_cause_fits_a_kernel_that_drops_values():
    """Returning the input unnormalized: nothing reproduces it, and the rows say so."""
    result = check(planted.layer_norm_returns_input, "layer_norm", dtypes=F64)
    assert _leads(result) == {
        "no convention field or structural hypothesis explains every failing row"
    }


def test_torchs_float16_layers_name_their_float16_arithmetic_only():
    """torch 2.13's CPU layer-norm backward sums the bias gradient of float16 input in float16
    (docs/conformance.md): the float16 arithmetic, never a semantic change, is what its failing
    rows name."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    result = run(["torch"], ops=["layer_norm"], dtypes=["float16"])
    assert result.failures
    assert _leads(result) == {
        "within the wider budget of low_precision_compute='input' instead of the declared 'float32'"
    }
    assert {o["name"] for r in result.failures for o in r.outputs if not o["ok"]} == {"dbeta"}
