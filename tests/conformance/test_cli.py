"""The command line: subcommands, report files and exit codes (0 pass, 1 fail, 2 usage error)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conformance.cli import main

GOOD = "tests.conformance.planted:layer_norm"
UNBIASED = "tests.conformance.planted:layer_norm_unbiased"
ONE_CASE = ["--op", "layer_norm", "--dtypes", "float32", "--case", "layer_norm/outlier-1e4"]


def test_list_names_every_framework_and_what_it_covers(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "flax", "optax", "nfnets", "onnxruntime", "onnx-reference", "timm"):
        assert f"  {name} (" in out
    assert "torch.nn.functional.layer_norm" in out
    assert "(forward only)" in out


def test_a_passing_function_exits_0_and_writes_every_report(tmp_path, capsys):
    files = {kind: tmp_path / f"out.{kind}" for kind in ("json", "markdown", "html")}
    code = main(
        ["run", "--impl", GOOD, "--op", "layer_norm", "--dtypes", "float32,float64"]
        + [arg for kind, path in files.items() for arg in (f"--{kind}", str(path))]
    )
    assert code == 0
    assert "within budget" in capsys.readouterr().out
    document = json.loads(files["json"].read_text())
    assert document["summary"]["exit_code"] == 0
    assert files["markdown"].read_text().startswith("# normref conformance report")
    page = files["html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert "<script" not in page
    assert "src=" not in page
    assert "<link" not in page


def test_a_failing_function_exits_1(capsys):
    assert main(["run", "--impl", UNBIASED, *ONE_CASE]) == 1
    out = capsys.readouterr().out
    assert "fails" in out
    assert "correction=1" in out
    assert "normref-conformance run --impl" in out  # how to re-run the failing row


def test_one_case_runs_alone(tmp_path):
    path = tmp_path / "one.json"
    assert main(["run", "--impl", GOOD, *ONE_CASE, "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["results"]
    assert [(r["case"], r["dtype"]) for r in rows] == [("layer_norm/outlier-1e4", "float32")]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--impl", GOOD],  # no --op
        ["run", "--impl", GOOD, "--op", "softmax"],
        ["run", "--impl", "tests.conformance.planted:nothing", "--op", "layer_norm"],
        ["run", "--impl", "no_such_module:f", "--op", "layer_norm"],
        ["run", "--impl", GOOD, "--op", "layer_norm", "--framework", "torch"],
        ["run", "--framework", "mxnet"],
        ["run", "--framework", "torch", "--dtypes", "float8"],
        ["run", "--framework", "torch", "--case", "layer_norm/nope"],
        ["run", "--no-such-option"],
        ["report", "no-such-results.json"],
        ["diagnose", "--op", "layer_norm"],
        [],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err or not argv


def test_report_renders_a_saved_run_with_its_exit_code(tmp_path, capsys):
    saved, page = tmp_path / "run.json", tmp_path / "again.html"
    assert main(["run", "--impl", UNBIASED, *ONE_CASE, "--json", str(saved)]) == 1
    capsys.readouterr()
    assert main(["report", str(saved), "--html", str(page)]) == 1
    assert "correction=1" in capsys.readouterr().out
    assert "correction=1" in page.read_text()


def test_diagnose_exits_0_when_a_convention_explains_and_1_when_none_does(tmp_path, capsys):
    base = ["diagnose", "--op", "layer_norm", "--dtypes", "float64"]
    path = tmp_path / "diagnosis.json"
    assert main([*base, "--impl", UNBIASED, "--json", str(path)]) == 0
    assert "explained by: normref with correction=1" in capsys.readouterr().out
    assert json.loads(path.read_text())["hypotheses"]
    assert main([*base, "--impl", "tests.conformance.planted:layer_norm_returns_input"]) == 1
    assert "no convention explains" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_a_framework_that_is_not_installed_is_skipped_with_the_reason(capsys):
    assert main(["run", "--framework", "timm"]) == 0
    assert "skipped timm: timm not installed" in capsys.readouterr().out


def test_python_dash_m_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "conformance", "--list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "frameworks:" in done.stdout
