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


def _hypothesis(name, changed, overshoot, total=10):
    return Hypothesis(
        name,
        NORMREF.replace(**changed),
        changed,
        failing=list(overshoot),
        total=total,
        overshoot=dict(overshoot),
    )


BASE_FAILING = {f"row-{i} float16": 3.0 for i in range(5)}
"""Five rows out of budget under the base."""


VALUES = {"correction": 1, "eps_mode": "max", "fixed_eps": 1e-3, "group_affine": "per_group"}
"""A value other than normref's for each field the tests below change."""


def _variation(field, explained, overshoot=3.0):
    """A single-field change that explains the first ``explained`` of the base's failing rows."""
    left = {row: overshoot for row in list(BASE_FAILING)[explained:]}
    value = VALUES[field]
    return _hypothesis(f"normref with {field}={value!r}", {field: value}, left)


def test_the_closest_explains_most_failing_rows_and_more_than_any_other():
    """Four of five failing rows (80 %) and more than any other change: named; three of five,
    or four of five with another change explaining as many, or the base itself: not named."""
    base = _hypothesis("normref (declared)", {}, BASE_FAILING)
    best = _variation("correction", 4)
    other = _variation("eps_mode", 2)
    assert Diagnosis("f", "layer_norm", "normref", [base, best, other]).closest is best
    assert (
        Diagnosis("f", "layer_norm", "normref", [base, _variation("eps_mode", 3)]).closest is None
    )
    rival = _variation("fixed_eps", 4, overshoot=2.0)
    assert Diagnosis("f", "layer_norm", "normref", [base, best, rival]).closest is None
    assert Diagnosis("f", "layer_norm", "normref", [base]).closest is None


def test_a_preset_equal_to_a_change_is_no_rival_of_it():
    """timm's preset is normref with layer norm's eps 1e-6: the same model, not a second one."""
    base = _hypothesis("normref (declared)", {}, BASE_FAILING)
    best = _variation("correction", 4)
    same = _hypothesis("a preset", {"correction": 1}, {r: 3.0 for r in list(BASE_FAILING)[4:]})
    assert Diagnosis("f", "layer_norm", "normref", [base, best, same]).closest is best


def test_the_verdict_names_the_closest_only_where_it_fits():
    base = _hypothesis("normref (declared)", {}, BASE_FAILING)
    found = Diagnosis("f", "layer_norm", "normref", [base, _variation("correction", 4)])
    assert found.verdict == (
        "no convention explains f; the closest, normref with correction=1, explains 4 of the 5 "
        "failing rows"
    )
    scattered = Diagnosis("f", "layer_norm", "normref", [base, _variation("correction", 3)])
    assert "closest" not in scattered.verdict


def test_a_function_that_raises_on_some_cases_has_no_closest_model():
    """normref's layer norm raising on a size-1 axis: every model fails those rows alike (the
    function raised), so no model is named; the rows are listed below the verdict with what
    they raised."""
    found = diagnose(planted.layer_norm_crashing_on_size_one, "layer_norm", dtypes=["float64"])
    assert not found.explaining
    assert found.closest is None
    assert found.verdict.endswith("rows fail under every hypothesis (below)")
    assert all("raised RuntimeError: cannot normalize x" in line for line in found.evidence)


def test_squares_that_overflow_float16_are_accounted_for_by_its_arithmetic():
    """A layer norm summing squares in float16: where inputs reach 1e4 (an outlier) and at
    float16-max (6e4) it is out of budget only in the groups whose squares overflow float16; at a
    scale of 1e4 every group's do, and nothing there tells for or against float16 arithmetic
    (normref's own, scaled, does not overflow): low_precision_compute='input' explains every row,
    and the evidence says how on each of those."""
    found = diagnose(planted.layer_norm_in_input_dtype, "layer_norm", dtypes=["float16"])
    # haiku's preset computes float16 statistics in float16 too: it explains for the same reason
    assert [h.name for h in found.explaining] == [
        "normref with low_precision_compute='input'",
        "haiku preset",
    ]
    assert all(h.changed == {"low_precision_compute": "input"} for h in found.explaining)
    assert found.verdict.endswith(
        "is explained by: normref with low_precision_compute='input', haiku preset"
    )
    evidence = "\n".join(found.evidence)
    assert (
        "layer_norm/outlier-1e4 float16: y: out of budget only in the groups whose squares (up to "
        "1e+08) exceed float16's largest value (6.55e+04): float16 arithmetic overflows there"
    ) in evidence
    assert (
        "layer_norm/scale-1e4 float16: every group's squares exceed float16's largest value: that "
        "arithmetic is undefined there, no evidence either way"
    ) in evidence
    assert (
        "layer_norm/float16-max float16: y: out of budget only in the groups whose squares (up to "
        "3.59e+09) exceed float16's largest value (6.55e+04): float16 arithmetic overflows there"
    ) in evidence
    assert found.to_json()["evidence"] == found.evidence


def test_a_dtype_the_array_type_lacks_is_a_usage_error(capsys):
    with pytest.raises(NothingToDiagnoseError, match=r"does not take bfloat16.*float16"):
        diagnose(planted.layer_norm, "layer_norm", dtypes=["bfloat16"])
    command = ["diagnose", "--impl", "tests.conformance.planted:layer_norm", "--op", "layer_norm"]
    assert main([*command, "--dtypes", "bfloat16"]) == 2
    error = capsys.readouterr().err
    assert "does not take bfloat16" in error
    assert "numpy" in error
