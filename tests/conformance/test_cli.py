"""The command line: subcommands, report files and exit codes (0 pass, 1 fail, 2 usage error)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cli import main
from tests.conformance import planted

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
    assert page.count("<script") == page.count("<script>")  # inline: the row table's sorting
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
        ["run", "--impl", GOOD, "--op", "rms_norm", "--case", "layer_norm/typical"],
        ["run", "--impl", GOOD, "--op", "layer_norm", "--dtypes", ","],
        ["export-golden", "--out", "golden", "--ops", "softmax"],
        ["export-golden", "--out", "golden", "--convention", "mxnet"],
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
    eps_outside = "tests.conformance.planted:layer_norm_eps_outside"
    assert main([*base, "--impl", eps_outside, "--json", str(path)]) == 0
    assert "explained by: normref with eps_mode='add_std'" in capsys.readouterr().out
    assert json.loads(path.read_text())["hypotheses"]
    assert main([*base, "--impl", "tests.conformance.planted:layer_norm_returns_input"]) == 1
    assert "no convention explains" in capsys.readouterr().out


@pytest.fixture
def flax_missing(monkeypatch):
    """The flax adapter as it is where flax is not installed (and a terminal wide enough for
    the report's lines to stay whole)."""
    import conformance.adapters.flax as flax_adapter

    monkeypatch.setenv("COLUMNS", "250")
    missing = dataclasses.replace(flax_adapter.ADAPTER, requires=("flax_is_not_installed",))
    monkeypatch.setattr(flax_adapter, "ADAPTER", missing)


def test_a_framework_that_is_not_installed_is_nothing_checked_exit_2(flax_missing, capsys):
    """A CI gate that asks for a framework it does not have must not pass with zero rows."""
    assert main(["run", "--framework", "flax"]) == 2
    captured = capsys.readouterr()
    assert "nothing checked: flax not installed" in captured.out
    for text in (captured.out, captured.err):
        assert "flax was not checked: flax_is_not_installed not installed" in text
        assert "pip install -e '.[jax]'" in text  # printed as it is, not as rich markup
    assert "within budget" not in captured.out


def test_a_framework_missing_among_others_is_reported_and_exits_2(flax_missing, tmp_path, capsys):
    """The installed frameworks are still checked and reported; the run is not the one asked
    for, so its exit code is 2, in the saved document and its report too."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    saved = tmp_path / "run.json"
    one = ["--case", "layer_norm/typical", "--dtypes", "float64", "--json", str(saved)]
    assert main(["run", "--framework", "torch,flax", *one]) == 2
    out = capsys.readouterr().out
    assert "not checked: flax not installed (exit code 2); 2 within budget" in out
    document = json.loads(saved.read_text())
    assert document["summary"]["exit_code"] == 2
    assert {r["framework"] for r in document["results"]} == {"torch"}
    assert main(["report", str(saved)]) == 2


def test_an_array_type_that_is_not_installed_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError
    argv = ["run", "--impl", "tests.conformance.planted:layer_norm_jax", *ONE_CASE]
    assert main([*argv, "--array-type", "jax"]) == 2
    err = capsys.readouterr().err
    assert "jax is not installed (pip install -e '.[jax]')" in err
    assert "Traceback" not in err


def test_diagnose_without_a_function_says_so(capsys):
    assert main(["diagnose", "--op", "layer_norm"]) == 2
    assert "diagnose needs --impl module:function" in capsys.readouterr().err


def test_an_error_inside_the_suite_is_internal_not_a_usage_error(monkeypatch, tmp_path, capsys):
    """A ValueError raised while computing (not while reading the command line) is a bug of
    the suite: exit code 3 with its traceback, not 2."""
    import conformance.golden

    def failing(*args, **kwargs):
        msg = "a failure inside the reference"
        raise ValueError(msg)

    monkeypatch.setattr(conformance.golden, "_vector", failing)
    out = tmp_path / "golden"
    assert main(["export-golden", "--out", str(out), "--ops", "layer_norm"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "a failure inside the reference" in err
    assert "internal error" in err
    assert not out.exists()


def test_python_dash_m_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "conformance", "--list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "frameworks:" in done.stdout


def test_impl_finds_a_module_in_the_working_directory(tmp_path):
    """The installed command (whose import path does not hold the working directory, as
    ``python -m``'s does) imports the user's own module from where it runs."""
    command = Path(sys.executable).parent / "normref-conformance"
    if not command.exists():
        pytest.skip("the normref-conformance entry point is not installed beside this Python")
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "norms.py").write_text("from normref import layer_norm as my_layer_norm\n")
    done = subprocess.run(
        [str(command), "run", "--impl", "mypkg.norms:my_layer_norm", *ONE_CASE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 within budget" in done.stdout


def test_run_and_diagnose_leave_the_working_directory_as_it_was(tmp_path):
    """Nothing is written where the commands run (no cache of drawn cases, no database). The
    rms_norm cases are ones whose drawing once wrote a cache there."""
    root = Path(__file__).resolve().parents[2]
    function = ["--impl", "normref:rms_norm", "--op", "rms_norm", "--dtypes", "float64"]
    commands = [["run", *function, "--case", "rms_norm/typical"], ["diagnose", *function]]
    script = (
        "import sys\nfrom conformance.cli import main\n"
        f"sys.exit(max(main(argv) for argv in {commands!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_printed_command_reproduces_each_failing_row(tmp_path, capsys, monkeypatch):
    """Every setting that affects a row is in the command printed to re-run it: the VJP (without
    it a NumPy function is checked forward only), the convention (the row's model), the array
    type, the suite's seed (the data) and the reference's backend."""
    monkeypatch.setenv("COLUMNS", "400")
    first = tmp_path / "first.json"
    settings = ["--impl-vjp", "tests.conformance.planted:layer_norm_vjp_without_mean_term"]
    settings += ["--convention", "torch", "--array-type", "numpy", "--seed", "3"]
    settings += ["--backend", "numpy", "--dtypes", "float64"]
    argv = ["run", "--impl", GOOD, "--op", "layer_norm", *settings, "--json", str(first)]
    assert main(argv) == 1
    commands = [
        line.strip()
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("normref-conformance run")
    ]
    assert commands

    def row_of(path, case):
        (row,) = [r for r in json.loads(path.read_text())["results"] if r["case"] == case]
        numbers = [(o["name"], o["max_ulps"], o["ok"]) for o in row["outputs"]]
        return row["status"], row["model"], row["forward_only"], numbers

    for command in commands:
        words = shlex.split(command)
        for setting in settings[::2]:
            assert setting in words, command
        again = tmp_path / "again.json"
        assert main([*words[1:], "--json", str(again)]) == 1
        case = words[words.index("--case") + 1]
        assert row_of(again, case) == row_of(first, case)


def test_a_function_no_command_line_names_is_re_run_from_python():
    """A lambda cannot be named by --impl: the re-run is the call in Python."""
    from conformance.api import check
    from conformance.reports.summary import reproduce

    result = check(
        lambda x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5: planted.layer_norm_unbiased(
            x, gamma, beta, axes=axes, eps=eps
        ),
        "layer_norm",
        dtypes=["float64"],
        case="layer_norm/typical",
    )
    (row,) = result.failures
    assert reproduce(row, result).startswith("conformance.check(<")
    assert "case='layer_norm/typical'" in reproduce(row, result)


def test_an_unknown_convention_names_every_accepted_one(capsys):
    assert main(["run", "--impl", GOOD, *ONE_CASE, "--convention", "jaxx"]) == 2
    err = capsys.readouterr().err
    for name in ("flax", "keras", "nfnets", "normref", "onnx", "optax", "timm", "torch"):
        assert f"'{name}'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--impl-vjp", GOOD], "--impl-vjp needs --impl"),
        (["run", "--framework", "torch", "--set", "eps_mode=max"], "--set needs --impl"),
        (["diagnose", "--impl-vjp", GOOD, "--op", "layer_norm"], "--impl-vjp needs --impl"),
        ([*ONE_CASE[2:], "--set", "eps_mode=median"], "eps_mode takes one of"),
        ([*ONE_CASE[2:], "--set", "no_such_field=1"], "a change must be field=value"),
        ([*ONE_CASE[2:], "--timeout", "0"], "--timeout must be a positive number"),
    ],
)
def test_options_that_cannot_apply_are_usage_errors(argv, message, capsys):
    if argv[0] not in ("run", "diagnose"):
        argv = ["run", "--impl", GOOD, "--op", "layer_norm", *argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_signature_that_cannot_take_the_ops_arguments_is_a_usage_error(capsys):
    """layer_norm takes axes=; a function taking axis= once ran and reported 60 failures."""
    argv = ["run", "--impl", "tests.conformance.hostile:takes_axis", "--op", "layer_norm"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "got an unexpected keyword argument 'axes'" in err
    assert "takes_axis(x, gamma=None, beta=None, *, axis=-1, eps=1e-05)" in err
    assert "the suite calls layer_norm(x, gamma, beta, *, axes, eps) -> y" in err


def test_a_module_that_does_not_import_is_a_usage_error_naming_the_file_and_line(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "broken_norms.py").write_text("def layer_norm(x:\n")
    (tmp_path / "raising_norms.py").write_text("import numpy\nundefined_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, where in (("broken_norms", "line 1"), ("raising_norms", "line 2")):
        assert main(["run", "--impl", f"{module}:layer_norm", "--op", "layer_norm"]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / module}.py" in err
        assert where in err
        assert "Traceback" not in err
    assert main(["run", "--impl", "raising_norms:f", "--op", "layer_norm"]) == 2
    assert "NameError: name 'undefined_name' is not defined" in capsys.readouterr().err


def test_a_run_in_which_nothing_was_checked_exits_2(capsys):
    """NumPy has no bfloat16: every row is "not implemented"; the run says why and exits 2."""
    argv = ["run", "--impl", GOOD, *ONE_CASE[:2], "--dtypes", "bfloat16", "--in-process"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "nothing checked (exit code 2)" in captured.out
    assert "nothing was checked (exit code 2): tests.conformance.planted:layer_norm does not " in (
        captured.err
    )


@pytest.mark.parametrize(
    "document",
    [
        "[]",
        '{"schema": "normref-golden", "schema_version": 2, "vectors": []}',
        '{"schema": "normref-conformance-results", "schema_version": 3}',
        '{"schema": "normref-conformance-results", "schema_version": 3, "results": [{"op": 1}]}',
        '{"schema": \n',
    ],
)
def test_report_of_a_file_that_is_not_a_results_document_is_a_usage_error(
    document, tmp_path, capsys
):
    path = tmp_path / "not-results.json"
    path.write_text(document)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {path}" in err
    assert "Traceback" not in err
    if document.endswith("\n"):
        assert "line 2" in err  # where the JSON breaks off


def test_export_golden_refuses_a_directory_that_is_not_empty_unless_forced(tmp_path, capsys):
    """--force replaces the contents whole: nothing stale stays beside the new manifest."""
    out = tmp_path / "golden"
    out.mkdir()
    (out / "stale.npz").write_bytes(b"old")
    argv = ["export-golden", "--out", str(out), "--ops", "center", "--dtypes", "float64"]
    assert main(argv) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (out / "stale.npz").exists()
    assert main([*argv, "--force"]) == 0
    assert not (out / "stale.npz").exists()
    assert (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden"]


def test_set_adjusts_the_convention_and_the_rerun_command_keeps_it(capsys, monkeypatch):
    """A layer norm whose default eps is 1e-6: out of budget on the default-eps case as normref,
    explained once the preset is adjusted; the re-run command carries --set."""
    monkeypatch.setenv("COLUMNS", "400")
    argv = ["run", "--impl", "tests.conformance.planted:layer_norm_default_eps_1e6"]
    argv += ["--op", "layer_norm", "--dtypes", "float64", "--in-process"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "layer_norm_eps=1e-06 instead of the declared 1e-05" in out
    assert main([*argv, "--set", "layer_norm_eps=1e-6"]) == 0
    assert "1 differs by convention" in capsys.readouterr().out
    broken = ["--set", "layer_norm_eps=1e-6", "--set", "correction=1"]
    assert main([*argv, *broken]) == 1
    commands = [
        line.strip()
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("normref-conformance run")
    ]
    assert commands
    assert all("--set layer_norm_eps=1e-6 --set correction=1" in c for c in commands)
