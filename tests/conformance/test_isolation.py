"""The suite survives what it checks: hangs, crashes, exits and writes into inputs fail their row.

On the command line implementations run in a worker process; these tests start it (each
spawn imports NumPy and the suite again: a second or more), so they run one case each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.api import check
from conformance.cli import main
from conformance.judging.isolation import Worker
from tests.conformance import hostile

ROOT = Path(__file__).resolve().parents[2]
ONE_CASE = ["--op", "layer_norm", "--case", "layer_norm/typical", "--dtypes", "float32,float64"]


def _rows(path: Path) -> dict[str, dict]:
    return {r["dtype"]: r for r in json.loads(path.read_text())["results"]}


def _run(function: str, tmp_path: Path, *more: str) -> tuple[int, dict[str, dict]]:
    path = tmp_path / "run.json"
    impl = f"tests.conformance.hostile:{function}"
    code = main(["run", "--impl", impl, *ONE_CASE, "--json", str(path), *more])
    return code, _rows(path)


def test_a_hang_is_a_failing_row_and_the_run_goes_on(tmp_path):
    """float16 first (the first call, which may compile, has more time), then the float32 call
    times out; the worker is killed and a new one checks the float64 row."""
    started = time.perf_counter()
    code, rows = _run(
        "hangs_on_float32", tmp_path, "--timeout", "1", "--dtypes", "float16,float32,float64"
    )
    assert code == 1
    assert rows["float32"]["status"] == "fail"
    assert rows["float32"]["diagnosis"] == "timed out after 1 s"
    assert rows["float16"]["status"] == rows["float64"]["status"] == "pass"
    assert time.perf_counter() - started < 100


def test_an_abort_is_a_failing_row_naming_the_signal(tmp_path):
    code, rows = _run("aborts_on_float32", tmp_path)
    assert code == 1
    assert rows["float32"]["diagnosis"] == ("crashed: the worker process was killed by SIGABRT (6)")
    assert rows["float64"]["status"] == "pass"


def test_an_exit_is_a_failing_row_not_the_end_of_the_run(tmp_path, capsys, monkeypatch):
    """SystemExit(0) once ended the run with exit code 0 and no report."""
    monkeypatch.setenv("COLUMNS", "250")
    code, rows = _run("exits", tmp_path)
    assert code == 1
    assert {r["diagnosis"] for r in rows.values()} == {"raised SystemExit: 0"}
    assert "raised SystemExit: 0" in capsys.readouterr().out


def test_an_exit_in_this_process_fails_its_row_too():
    result = check(hostile.exits, "layer_norm", dtypes=["float64"], case="layer_norm/typical")
    assert [r.diagnosis for r in result.failures] == ["raised SystemExit: 0"]


def test_writing_into_an_input_fails_the_row(tmp_path):
    """In a worker and in this process alike; the values are right, the write is the finding."""
    code, rows = _run("writes_into_x", tmp_path)
    assert code == 1
    for row in rows.values():
        assert row["diagnosis"] == "modifies its input x"
        assert row["modified_inputs"] == ["x"]
    result = check(
        hostile.writes_into_x, "layer_norm", dtypes=["float64"], case="layer_norm/typical"
    )
    assert [r.diagnosis for r in result.failures] == ["modifies its input x"]


def test_writing_into_a_torch_tensor_fails_the_row():
    """torch's functional batch norm updates the running statistics it is given in place: the
    values are torch's convention, the write is the finding."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    result = check(
        hostile.torch_batch_norm_train_in_place,
        "batch_norm_train",
        "torch",
        array_type="torch",
        dtypes=["float64"],
        case="batch_norm_train/typical",
    )
    (row,) = result.failures
    assert row.diagnosis == "modifies its inputs running_mean, running_var"
    assert row.modified_inputs == ["running_mean", "running_var"]


def test_the_suites_cases_are_not_changed_by_an_implementation_that_writes_into_them():
    from conformance.checked.cases import find_case

    case = find_case("layer_norm/typical")
    before = case.sample.args["x"].copy()
    check(hostile.writes_into_x, "layer_norm", dtypes=["float64"], case="layer_norm/typical")
    assert np.array_equal(case.sample.args["x"], before)


def test_a_result_of_another_form_says_what_was_expected():
    result = check(
        hostile.returns_statistics, "layer_norm", dtypes=["float64"], case="layer_norm/typical"
    )
    (row,) = result.failures
    assert row.diagnosis == (
        "raised ReturnFormatError: a function for layer_norm must return one array, y, as "
        "normref's does; it returned a tuple of 3 (statistics or other values are not outputs "
        "of layer_norm)"
    )


def test_a_worker_is_reused_across_calls_and_restarted_after_a_crash():
    from conformance.adapters.function import function_binding
    from conformance.checked.cases import find_case, prepare
    from conformance.checked.models import NORMREF
    from conformance.judging.isolation import Recipe
    from conformance.judging.rows import ImplementationFailedError

    worker = Worker(timeout=30)
    try:
        prepared = prepare(find_case("layer_norm/typical"), "float64")
        recipe = Recipe(impl="tests.conformance.hostile:aborts_on_float32", op="layer_norm")
        worker.call(recipe, prepared, NORMREF, False)
        first = worker._process.pid
        worker.call(recipe, prepared, NORMREF, False)
        assert worker._process.pid == first
        with pytest.raises(ImplementationFailedError, match="SIGABRT"):
            worker.call(recipe, prepare(find_case("layer_norm/typical"), "float32"), NORMREF, False)
        worker.call(recipe, prepared, NORMREF, False)
        assert worker._process.pid != first
        assert function_binding(hostile.aborts_on_float32, "layer_norm").label == (
            "tests.conformance.hostile:aborts_on_float32"
        )
    finally:
        worker.close()


def test_ctrl_c_writes_the_partial_report_and_exits_130(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the worker ignores it, the
    run stops, the rows done are reported and written."""
    path = tmp_path / "partial.json"
    command = [sys.executable, "-m", "conformance", "run", "--impl"]
    command += ["tests.conformance.hostile:sleeps", "--op", "layer_norm", "--dtypes", "float64"]
    command += ["--json", str(path)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(6)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted after" in err
    assert "Traceback" not in err
    document = json.loads(path.read_text())
    assert document["interrupted"] is True
    assert document["summary"]["exit_code"] == 130
    assert len(document["results"]) < 22
    assert "interrupted" in out


def test_diagnose_survives_a_hang(capsys):
    """The row that hangs times out once (its outcome is kept for every hypothesis)."""
    started = time.perf_counter()
    argv = ["diagnose", "--impl", "tests.conformance.hostile:hangs_on_one_case"]
    argv += ["--op", "layer_norm", "--dtypes", "float32", "--timeout", "1"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "timed out" in out
    assert time.perf_counter() - started < 120
