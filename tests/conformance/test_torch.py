"""The torch adapter end to end: the default run, its findings, and torch's float16 kernels."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from conformance.api import run
from conformance.reports.results import Status
from normref.registry import REGISTRY


@pytest.fixture(scope="module")
def default_run():
    """``normref-conformance run --framework torch``: every op, float32 and float64."""
    return run(["torch"])


def test_the_default_run_passes_within_two_minutes(default_run):
    assert default_run.ok, [
        (r.implementation, r.case, r.dtype, r.diagnosis) for r in default_run.failures
    ]
    assert default_run.seconds < 120
    assert default_run.settings["dtypes"] == ["float32", "float64"]
    assert default_run.counts["pass"] > 400
    assert all(r.framework == "torch" for r in default_run.results)


def test_unbiased_running_variance_is_a_finding(default_run):
    rows = [r for r in default_run.results if r.op == "batch_norm_train" and r.kind != "error"]
    findings = [r for r in rows if r.status is Status.CONVENTION]
    assert findings
    assert all(r.explained_by == {"running_var_correction": 1} for r in findings)
    assert all({o["name"] for o in r.baseline} == {"running_var"} for r in findings)


def test_rms_norm_default_eps_is_the_machine_epsilon(default_run):
    rows = [r for r in default_run.results if r.case == "rms_norm/default-eps"]
    assert {r.implementation for r in rows} == {"torch.nn.functional.rms_norm", "torch.nn.RMSNorm"}
    for row in rows:
        assert row.status is Status.CONVENTION
        assert row.explained_by == {"rms_norm_eps": None}


def test_ops_torch_lacks_are_not_implemented(default_run):
    ops = {r.op for r in default_run.results}
    lacking = {
        op
        for op in ops
        if all(r.status is Status.NOT_IMPLEMENTED for r in default_run.results if r.op == op)
    }
    layers = {"center", "scale", "rms_scale", "standardize", "ghost_batch_norm"}
    weights = {"weight_standardize", "scaled_weight_standardize", "skip_init_residual"}
    gradients = {"adaptive_grad_clip", "unitwise_norm", "gamma_scaled_nonlinearity"}
    whitening = {name for name, spec in REGISTRY.items() if spec.family == "whitening"}
    literature = {
        "conditional_batch_norm",
        "conditional_instance_norm",
        "mean_only_batch_norm",
        "batch_renorm",
        "batch_renorm_train",
        "switchable_norm",
        "adaptive_instance_norm",
        "centered_weight_norm",
        "orthogonal_weight_norm",
        "oni_weight_norm",
        "gradient_centralize",
    }
    assert lacking == layers | weights | gradients | whitening | literature


def test_local_response_norm_passes_with_an_even_window(default_run):
    """torch's window of an even size has its extra channel before the centre, normref's
    default; forward and backward within budget."""
    rows = [r for r in default_run.results if r.op == "local_response_norm"]
    assert {r.implementation for r in rows} == {
        "torch.nn.functional.local_response_norm",
        "torch.nn.LocalResponseNorm",
    }
    assert all(r.status is Status.PASS for r in rows), [(r.case, r.diagnosis) for r in rows]
    even = [r for r in rows if r.case == "local_response_norm/even-window"]
    assert even
    assert all({o["name"] for o in r.outputs} == {"y", "dx"} for r in even)


def test_groups_of_one_sample(default_run):
    """A lone sample's biased variance is 0: torch's layer norm returns beta, as normref; its
    batch norm refuses one value per channel in training (it lacks the input), where normref
    computes, and so does its training step, whose running variance is unbiased (normref
    under torch's convention refuses it too)."""
    by_case = {(r.implementation, r.case): r for r in default_run.results if r.dtype == "float32"}
    layer = by_case[("torch.nn.LayerNorm", "layer_norm/one-sample-groups")]
    assert layer.status is Status.PASS
    for implementation, case in (
        ("torch.nn.functional.batch_norm", "batch_norm/one-sample-groups"),
        ("torch.nn.BatchNormNd (train)", "batch_norm_train/one-sample-groups"),
    ):
        row = by_case[(implementation, case)]
        assert row.status is Status.NOT_IMPLEMENTED
        assert "Expected more than 1 value per channel" in row.explanation


def test_layer_norm_reduces_d_beta_of_bfloat16_in_bfloat16():
    """torch 2.13's CPU layer-norm backward sums the bias gradient of bfloat16 input in
    bfloat16: outside the float32-statistics budget, within the bfloat16 one."""
    result = run(["torch"], ops=["layer_norm"], dtypes=["bfloat16"], case="layer_norm/typical")
    for row in result.results:
        assert row.status is Status.FAIL
        assert {o["name"] for o in row.outputs if not o["ok"]} == {"dbeta"}
        assert "low_precision_compute='input'" in row.diagnosis


def _findings(default_run, op: str) -> dict[str, set]:
    """For each implementation of ``op``: the fields explaining its rows that differ."""
    found: dict[str, set] = {}
    for row in default_run.results:
        if row.op == op and row.status is Status.CONVENTION:
            found.setdefault(row.implementation, set()).update(row.explained_by)
    return found


def test_clip_grad_norm_divides_by_the_norm_plus_1e_6(default_run):
    """torch's clip_grad_norm_ is max_norm / (norm + 1e-6): visible in float64 everywhere it
    clips, in float32 only where the norm is comparable to 1e-6."""
    rows = [r for r in default_run.results if r.op == "clip_by_global_norm"]
    assert {r.status for r in rows} <= {Status.PASS, Status.CONVENTION}
    findings = [r for r in rows if r.status is Status.CONVENTION]
    assert all(r.explained_by == {"global_norm_eps": 1e-6} for r in findings)
    assert {r.case for r in findings if r.dtype == "float32"} == {"clip_by_global_norm/small-norm"}
    assert all(r.forward_only for r in rows)


def test_spectral_norm_power_iteration_orders(default_run):
    """The legacy spectral_norm iterates v first, as normref; the parametrization u first. Both
    divide a zero weight by sigma = 0 (NaN) where normref leaves it unscaled."""
    found = _findings(default_run, "spectral_norm_train")
    assert found["torch.nn.utils.spectral_norm (train)"] == {"zero_norm"}
    assert found["torch.nn.utils.parametrizations.spectral_norm (train)"] == {
        "zero_norm",
        "power_iteration_order",
    }
    evaluation = _findings(default_run, "spectral_norm")
    assert all(fields == {"zero_norm"} for fields in evaluation.values())
    state = next(
        r
        for r in default_run.results
        if r.case == "spectral_norm_train/typical" and "parametrizations" in r.implementation
    )
    assert {o["name"] for o in state.outputs} == {"y", "u", "v", "dw"}
    assert {o["direction"] for o in state.outputs if o["name"] in ("u", "v")} == {"state"}


def test_weight_norm_of_a_zero_unit_is_nan(default_run):
    """torch computes g v / ||v|| without eps: NaN for a zero unit, where normref gives 0."""
    rows = [r for r in default_run.results if r.op == "weight_norm"]
    findings = [r for r in rows if r.status is Status.CONVENTION]
    assert {r.case for r in findings} == {"weight_norm/zero-unit"}
    assert all(r.explained_by == {"zero_norm": "ieee"} for r in findings)
    assert {r.implementation for r in findings} == {
        "torch._weight_norm",
        "torch.nn.utils.parametrizations.weight_norm",
    }
