"""``diagnose``: the presets it tries, how it ranks hypotheses, rows no hypothesis explains, and
dtypes the array type lacks."""

from __future__ import annotations

import pytest

from conformance.checked.models import FRAMEWORK_MODELS, NORMREF
from conformance.cli import main
from conformance.diagnosis import (
    Diagnosis,
    Hypothesis,
    NothingToDiagnoseError,
    diagnose,
    hypotheses,
)
from tests.conformance import planted

TORCH = FRAMEWORK_MODELS["torch"].name
FLAX = FRAMEWORK_MODELS["flax"].name


def _explaining(fn, op, convention=None):
    # float64 alone: every semantic difference below (a running variance's n/(n-1), which value
    # the momentum weighs, eps 1e-5 against 1e-6) is far outside float64's budget
    return diagnose(fn, op, convention=convention, dtypes=["float64"]).explaining


def _presets(op):
    return {h.name.removesuffix(" preset") for h in hypotheses(op) if h.preset}


def test_the_one_field_change_of_the_declared_convention_ranks_before_a_preset():
    """Declared torch, running variance biased: torch's one change (running_var_correction=0)
    first; normref's preset differs from torch in that field alone for batch norm (both 1e-5,
    two-pass, float32 statistics, the input's dtype out), so it ties and comes next."""
    found = _explaining(planted.batch_norm_train_biased_batch_weight, "batch_norm_train", "torch")
    assert [h.name for h in found[:2]] == [
        f"{TORCH} with running_var_correction=0",
        "normref preset",
    ]
    assert found[1].changed == {"running_var_correction": 0}


def test_a_preset_ranks_by_its_differences_from_the_declared_convention():
    """Declared flax, momentum taken as the batch's weight: flax's one change first; normref's
    preset also explains, but differs from flax in three fields relevant to batch norm."""
    found = _explaining(planted.batch_norm_train_biased_batch_weight, "batch_norm_train", "flax")
    assert found[0].name == f"{FLAX} with momentum_meaning='batch_weight'"
    normref = next(h for h in found if h.name == "normref preset")
    # FLAX: momentum weighs the old value, fast clamped variance, the output promoted
    assert normref.changed == {
        "momentum_meaning": "batch_weight",
        "variance_algorithm": "two_pass",
        "output_dtype": "input",
    }
    assert found.index(normref) > 0


def test_presets_without_the_op_are_not_tried():
    """normref's definition with momentum swapped: flax's semantics, but normref's one change
    ranks first, and optax and the NFNets code, which have no batch norm, are not tried."""
    found = _explaining(planted.batch_norm_train_biased_old_weight, "batch_norm_train")
    assert found[0].name == "normref with momentum_meaning='old_weight'"
    flax = next(h for h in found if h.name == "flax preset")
    assert flax.changed["momentum_meaning"] == "old_weight"
    assert len(flax.changed) > 1
    assert {"optax", "nfnets", "timm"}.isdisjoint(_presets("batch_norm_train"))


def test_a_default_eps_of_1e6():
    """normref's one change and timm's preset (torch with layer norm's eps 1e-6) differ from
    normref in that field alone: the variation first, then timm; flax, three fields off, later;
    optax and the NFNets code have no layer norm."""
    found = _explaining(planted.layer_norm_default_eps_1e6, "layer_norm")
    names = [h.name for h in found]
    assert names[:2] == ["normref with layer_norm_eps=1e-06", "timm preset"]
    assert names.index("flax preset") > 1
    assert not {"optax preset", "nfnets preset"} & set(names)


def test_the_presets_tried_are_those_that_have_the_op():
    """An adapter's bindings decide for its preset; a weights-and-gradients field of the op set
    otherwise than normref adds the op (the NFNets code's unit-wise norm, which no adapter runs);
    normref's definition always."""
    layers = {"normref", "torch", "flax", "keras", "onnx", "haiku", "equinox"}
    assert _presets("layer_norm") == layers | {"timm"}
    assert _presets("batch_norm_train") == layers | {"tf-keras"}
    assert _presets("weight_standardize") == {"normref", "timm"}
    # timm clips with torch's clip_grad_norm_, so its preset has torch's global-norm eps
    assert _presets("clip_by_global_norm") == {"normref", "torch", "optax", "timm"}
    assert _presets("gamma_scaled_nonlinearity") == {"normref", "nfnets"}
    assert _presets("adaptive_grad_clip") == {"normref", "optax", "nfnets", "timm"}


def test_a_declared_convention_without_the_op_is_still_tried():
    tried = hypotheses("batch_norm", FRAMEWORK_MODELS["optax"])
    assert tried[0].name == f"{FRAMEWORK_MODELS['optax'].name} (declared)"
    assert tried[0].changed == {}


def _hypothesis(name, changed, overshoot):
    return Hypothesis(
        name, NORMREF, changed, failing=list(overshoot), total=4, overshoot=dict(overshoot)
    )


def test_an_exact_tie_goes_to_the_base():
    """Leaving out the same rows by as much, a change is no evidence: the base is the closest;
    a change that leaves them out by less is closer, one that leaves them by more is not."""
    rows = {"a float16": 3.0, "b float16": float("inf")}
    base = _hypothesis("normref (declared)", {}, rows)
    variation = _hypothesis("normref with eps_mode='max'", {"eps_mode": "max"}, rows)
    assert Diagnosis("f", "layer_norm", "normref", [variation, base]).closest is base
    nearer = _hypothesis(
        "normref with eps_mode='max'", {"eps_mode": "max"}, {**rows, "a float16": 2.0}
    )
    assert Diagnosis("f", "layer_norm", "normref", [base, nearer]).closest is nearer
    further = _hypothesis(
        "normref with eps_mode='max'", {"eps_mode": "max"}, {**rows, "a float16": 5.0}
    )
    assert Diagnosis("f", "layer_norm", "normref", [base, further]).closest is base


def test_a_function_that_raises_on_some_cases_is_closest_to_its_own_definition():
    """normref's layer norm raising on a size-1 axis: every model fails those rows alike (the
    function raised), so the closest is the definition it follows, not an arbitrary change."""
    found = diagnose(planted.layer_norm_crashing_on_size_one, "layer_norm", dtypes=["float64"])
    assert not found.explaining
    assert found.closest.changed == {}
    assert "raised" in found.verdict


def test_rows_that_fail_under_every_hypothesis_are_given_with_their_diagnosis():
    """A layer norm summing squares in float16: where they exceed 65504 (inputs of 1e4 and
    float16's largest), every hypothesis fails; low_precision_compute='input', whose budget is
    the float16 arithmetic's, comes closest on those rows."""
    found = diagnose(planted.layer_norm_in_input_dtype, "layer_norm", dtypes=["float16"])
    assert not found.explaining
    assert found.closest.changed == {"low_precision_compute": "input"}
    overflowing = ["outlier-1e4", "scale-1e4", "float16-max"]
    assert list(found.unexplained) == [f"layer_norm/{case} float16" for case in overflowing]
    assert all("overflow" in text for text in found.unexplained.values())
    assert (
        "the closest, normref with low_precision_compute='input', explains all rows but 3, "
        "which fail under every hypothesis: layer_norm/outlier-1e4 float16 (the squares"
    ) in found.verdict
    assert found.to_json()["unexplained"] == found.unexplained


def test_a_dtype_the_array_type_lacks_is_a_usage_error(capsys):
    with pytest.raises(NothingToDiagnoseError, match=r"does not take bfloat16.*float16"):
        diagnose(planted.layer_norm, "layer_norm", dtypes=["bfloat16"])
    command = ["diagnose", "--impl", "tests.conformance.planted:layer_norm", "--op", "layer_norm"]
    assert main([*command, "--dtypes", "bfloat16"]) == 2
    error = capsys.readouterr().err
    assert "does not take bfloat16" in error
    assert "numpy" in error


def test_the_verdict_says_which_of_the_closest_rows_fail_under_every_hypothesis():
    rows = {"a float16": 3.0, "b float16": float("inf")}
    hypothesis = _hypothesis("normref with eps_mode='max'", {"eps_mode": "max"}, rows)
    unexplained = {"b float16": "y: non-finite values where the exact result is finite"}
    verdict = Diagnosis("f", "layer_norm", "normref", [hypothesis], unexplained).verdict
    assert verdict == (
        "no convention explains f: the closest, normref with eps_mode='max', leaves 2 of 4 rows "
        "out of budget; out of budget under every hypothesis (1): b float16 (y: non-finite "
        "values where the exact result is finite)"
    )
