"""The timm adapter's weight standardization: timm itself where installed, else a stand-in
rewritten from timm's source, to check how the adapter reaches the standardized weight."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from conformance.api import run
from conformance.reports.results import Status

STAND_IN = Path(__file__).parent / "stub_timm"


@pytest.fixture
def timm(monkeypatch):
    """timm, or the stand-in when timm is not installed (removed again afterwards)."""
    if importlib.util.find_spec("timm") is not None:
        yield "timm"
        return
    monkeypatch.syspath_prepend(str(STAND_IN))
    yield "stand-in"
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        del sys.modules[name]


def test_std_conv2d_is_weight_standardization(timm):
    """StdConv2d standardizes with the biased variance and eps inside the root: normref's.
    Through torch's batch norm in training, which refuses a fan-in of one value."""
    result = run(["timm"], ops=["weight_standardize"], dtypes=["float32", "float64"])
    assert result.ok
    assert {r.status for r in result.results} <= {Status.PASS, Status.NOT_IMPLEMENTED}
    lacking = {r.case for r in result.results if r.status is Status.NOT_IMPLEMENTED}
    assert lacking <= {"weight_standardize/one-sample-groups"}
    typical = next(r for r in result.results if r.case == "weight_standardize/typical")
    assert {o["name"] for o in typical.outputs} == {"y", "dw"}


def test_scaled_std_conv2d_puts_eps_inside_the_root(timm):
    """ScaledStdConv2d divides by sqrt(var + eps) sqrt(N), NFNets by sqrt(max(N var, eps)):
    the difference shows where N var is near eps."""
    result = run(
        ["timm"],
        ops=["scaled_weight_standardize"],
        dtypes=["float64"],
        case="scaled_weight_standardize/variance-at-eps",
    )
    (row,) = result.results
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"scaled_ws_eps_mode": "add"}
    assert {o["name"] for o in row.outputs} == {"y", "dw", "dgain"}
