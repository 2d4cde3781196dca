"""The examples run and show what they claim (the signal-propagation laws are tested in
tests/test_residual.py on the same simulation)."""

from __future__ import annotations

import pytest

from examples import check_my_layer_norm, signal_propagation


def test_the_conformance_example_passes_the_right_function_and_diagnoses_the_slip(capsys):
    outcome = check_my_layer_norm.main()
    assert outcome["layer_norm"].ok
    slip = outcome["layer_norm_eps_on_std"]
    assert not slip.ok
    assert all("eps_mode='add_std'" in row.diagnosis for row in slip.failures)
    # the fields that only widen the budget are not named beside eps_mode, and alternatives
    # read as alternatives, not as causes that all apply
    for row in slip.failures:
        assert "variance_algorithm" not in row.diagnosis, row.diagnosis
        assert "stash_dtype" not in row.diagnosis, row.diagnosis
        assert row.diagnosis.count("explained by") == 1, row.diagnosis
    explaining = [h.name for h in outcome["diagnosis"].explaining]
    assert explaining == ["normref with eps_mode='add_std'"]
    assert "explained by: normref with eps_mode='add_std'" in capsys.readouterr().out


def test_the_signal_propagation_example_prints_a_row_per_block(capsys):
    signal_propagation.main(["--depth", "3"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 + 4
    assert rows[0].split() == ["block", *signal_propagation.KINDS, "1", "+", "l", "alpha^2"]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        signal_propagation.mean_squares("layer_normalized", 0, depth=1)
