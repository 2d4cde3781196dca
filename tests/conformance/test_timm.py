"""The timm adapter on timm itself, loaded without its package ``__init__`` (which imports
torchvision): weight standardization, AGC, a planted eps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
if importlib.util.find_spec("timm") is None:
    pytest.skip(
        "timm is not installed (pip install --no-deps timm pyyaml)", allow_module_level=True
    )

from conformance.api import run
from conformance.reports.results import Status
from tests.conformance.planted import planted_eps_row

ROOT = Path(__file__).resolve().parents[2]


def test_std_conv2d_is_weight_standardization():
    """StdConv2d standardizes with the biased variance and eps inside the root: normref's.
    Through torch's batch norm in training, which refuses a fan-in of one value."""
    result = run(["timm"], ops=["weight_standardize"], dtypes=["float32", "float64"])
    assert result.ok
    assert {r.status for r in result.results} <= {Status.PASS, Status.NOT_IMPLEMENTED}
    lacking = {r.case for r in result.results if r.status is Status.NOT_IMPLEMENTED}
    assert lacking <= {"weight_standardize/one-sample-groups"}
    typical = next(r for r in result.results if r.case == "weight_standardize/typical")
    assert {o["name"] for o in typical.outputs} == {"y", "dw"}
    versions = result.environment["frameworks"]["timm"]
    assert versions["timm"][0].isdigit()


def test_scaled_std_conv2d_puts_eps_inside_the_root():
    """ScaledStdConv2d divides by sqrt(var + eps) sqrt(N), NFNets by sqrt(max(N var, eps))."""
    (row,) = run(
        ["timm"], dtypes=["float64"], case="scaled_weight_standardize/variance-at-eps"
    ).results
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"scaled_ws_eps_mode": "add"}


def test_adaptive_clip_grad():
    result = run(["timm"], ops=["adaptive_grad_clip"], dtypes=["float32"])
    assert result.ok
    assert all(r.forward_only for r in result.results)


def test_loading_runs_no_package_init():
    """Loading the adapter's modules imports neither torchvision nor timm's __init__, and the
    command line runs timm (exit 0, not 3) where torchvision is missing."""
    code = (
        "import sys\n"
        "sys.modules['torchvision'] = None  # as if not installed: importing it raises\n"
        "from conformance.cli import main\n"
        "code = main(['run', '--framework', 'timm', '--case', 'weight_standardize/typical'])\n"
        "print(code, hasattr(sys.modules['timm'], 'create_model'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert found.stdout.split()[-2:] == ["0", "False"], found.stderr[-2000:]


def test_a_wrong_eps_fails():
    from conformance.adapters.timm import ADAPTER

    row = planted_eps_row(ADAPTER, "timm.layers.LayerNorm", "layer_norm/given-eps")
    assert row.status is Status.FAIL
