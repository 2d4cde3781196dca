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
        "haiku",
        "equinox",
    }


def test_unknown_convention():
    with pytest.raises(
        ValueError, match=r"convention must be a Convention or one of \['equinox', 'flax'"
    ):
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


def _default(function, name="eps"):
    import inspect

    return inspect.signature(function).parameters[name].default


def test_normrefs_preset_is_what_its_functions_do_by_default():
    """NORMREF records normref's own defaults: each field equals the default of the argument
    it stands for (a preset's literal could drift from a function's signature)."""
    import normref

    defaults = {
        "batch_norm_eps": _default(normref.batch_norm),
        "layer_norm_eps": _default(normref.layer_norm),
        "group_norm_eps": _default(normref.group_norm),
        "instance_norm_eps": _default(normref.instance_norm),
        "rms_norm_eps": _default(normref.rms_norm),
        "eps_mode": _default(normref.batch_norm, "eps_mode"),
        "weight_norm_eps": _default(normref.weight_norm),
        "global_norm_eps": _default(normref.clip_by_global_norm),
        "power_iteration_order": _default(normref.spectral_norm, "order"),
        "l2_eps_mode": _default(normref.spectral_norm, "eps_mode"),
        "scaled_ws_eps_mode": _default(normref.scaled_weight_standardize, "eps_mode"),
        "nonlinearity_gammas": _default(normref.gamma_scaled_nonlinearity, "gammas"),
    }
    assert {k: getattr(conventions.NORMREF, k) for k in defaults} == defaults
    assert conventions.NORMREF.running_var_correction == 0
    assert conventions.NORMREF.variance_algorithm == "two_pass"


def test_a_convention_field_outside_its_choices_is_refused():
    with pytest.raises(ValueError, match=r"zero_norm must be one of \('guarded', 'ieee'\)"):
        dataclasses.replace(TORCH, zero_norm="nan")
    with pytest.raises(ValueError, match="global_norm_eps must be a finite number >= 0"):
        dataclasses.replace(TORCH, global_norm_eps=-1e-6)
