"""Conventions are data: presets, lookup by name, validation."""

from __future__ import annotations

import dataclasses

import pytest

from normref import conventions
from normref.conventions import FLAX, KERAS, ONNX, TORCH, Convention, get_convention


def test_presets_by_name():
    for preset in (TORCH, FLAX, KERAS, ONNX):
        assert get_convention(preset.name) is preset
        assert get_convention(preset) is preset
    assert set(conventions.PRESETS) == {
        "normref",
        "torch",
        "flax",
        "keras",
        "onnx",
        "timm",
        "optax",
        "nfnets",
    }


def test_unknown_convention():
    with pytest.raises(ValueError, match=r"convention must be a Convention or one of \['flax'"):
        get_convention("mxnet")


def test_momentum_meanings_agree_on_the_same_update():
    """torch's 0.1 (weight of the batch) is flax's 0.9 (weight of the old value)."""
    assert TORCH.batch_weight(0.1) == pytest.approx(FLAX.batch_weight(0.9))


def test_differences_name_the_fields():
    diff = TORCH.differences(FLAX)
    assert diff["running_var_correction"] == (1, 0)
    assert diff["momentum_meaning"] == ("batch_weight", "old_weight")
    assert "name" not in diff


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TORCH.momentum = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("eps_mode", "inside", "eps_mode must be one of"),
        ("momentum_meaning", "new", "momentum_meaning must be one of"),
        ("running_var_correction", 2, "running_var_correction must be one of"),
        ("variance_algorithm", "welford", "variance_algorithm must be one of"),
        ("momentum", 1.5, r"momentum must be in \[0, 1\]"),
    ],
)
def test_invalid_convention_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TORCH, **{field: value})


def test_a_custom_convention_is_accepted_everywhere():
    mine = dataclasses.replace(TORCH, name="mine", running_var_correction=0)
    assert isinstance(mine, Convention)
    assert get_convention(mine) is mine
