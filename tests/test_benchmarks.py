"""The benchmark harness: fair interleaving, the target rule, and like-for-like counterparts."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import main as benchmarks_main
from benchmarks.cases import FAMILIES, Case
from benchmarks.devices import NO_GPU_EXIT, missing_gpu
from benchmarks.frameworks import JAX, TORCH
from benchmarks.report import families_markdown, markdown, summary_markdown
from benchmarks.run import Result, median_run, minimum_bytes
from benchmarks.timing import interleaved_minimum
from normref import _fused
from normref._fused import mixture as fused_mixture
from normref._fused import units as fused_units
from normref.registry import BenchmarkInput

CASES = [pytest.param(case, id=case.label) for cases in FAMILIES.values() for case in cases]


@pytest.mark.parametrize(("names", "rounds"), [("abcd", 4), ("abc", 6), ("abcdef", 6), ("ab", 2)])
def test_every_contender_follows_every_other_equally_often(names, rounds):
    """Over a full cycle of rounds (n for an even number n of contenders, 2n for odd), each
    ordered pair of different contenders are neighbours within a round equally often."""
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in names}
    times = interleaved_minimum(contenders, repeats=rounds, warmup=1)
    assert set(times) == set(names)
    warmup, timed = calls[: len(names)], calls[len(names) :]
    assert warmup == list(names)
    rows = [timed[i : i + len(names)] for i in range(0, len(timed), len(names))]
    assert all(sorted(row) == sorted(names) for row in rows)
    followers = collections.Counter(pair for row in rows for pair in itertools.pairwise(row))
    expected = {(a, b) for a in names for b in names if a != b}
    assert set(followers) == expected
    assert len(set(followers.values())) == 1, followers


def _result(dtype: str, precision: str, vs_torch: float, memory: float) -> Result:
    seconds = {"normref": vs_torch, "generic": None, "torch": 1.0, "jax": None}
    memory_multiples = {"normref": memory, "generic": None, "torch": None, "jax": None}
    return Result("batch_norm", (2, 3), "test", dtype, precision, seconds, memory_multiples)


@pytest.mark.parametrize(
    ("dtype", "precision", "vs_torch", "memory", "met"),
    [
        ("float32", "native", 1.0, 0.5, True),
        ("float32", "native", 1.1, 0.1, False),
        ("float32", "native", 0.5, 0.6, False),
        ("float32", "highest", 1.25, 2.0, True),  # computes a float32 input in float64
        ("float32", "highest", 1.3, 0.1, False),
        ("float32", "highest", 1.0, 2.1, False),
        ("float64", "highest", 1.1, 0.1, False),  # float64 input: computes in its own dtype
    ],
)
def test_targets_depend_on_the_compute_dtype(dtype, precision, vs_torch, memory, met):
    assert _result(dtype, precision, vs_torch, memory).meets_targets is met


@pytest.mark.parametrize(
    ("precision", "vs_jax", "met"),
    [("native", 1.0, True), ("native", 1.1, False), ("highest", 1.2, True)],
)
def test_jax_is_a_target_computing_in_the_input_dtype(precision, vs_jax, met):
    result = _result("float32", precision, 1.0, 0.1)
    timed = dataclasses.replace(result, seconds={**result.seconds, "jax": 1.0 / vs_jax})
    assert timed.meets_targets is met


@pytest.mark.parametrize(
    ("precision", "vs_torch", "met"),
    [
        ("native", 1.0, True),
        ("native", 1.1, False),
        ("highest", 1.5, True),
        ("highest", 1.6, False),
    ],
)
def test_whitening_has_targets_of_its_own(precision, vs_torch, met):
    result = dataclasses.replace(_result("float32", precision, vs_torch, 0.1), op="batch_whiten")
    assert result.meets_targets is met


def test_on_cuda_the_verdict_is_the_time_against_torch():
    """Memory is not measured on the GPU: the verdict is the time target alone."""
    on_cuda = dataclasses.replace(
        _result("float32", "native", 1.5, 1.0),
        device="cuda",
        memory={"normref": None, "generic": None, "torch": None, "jax": None},
    )
    assert on_cuda.meets_targets is True
    assert (
        dataclasses.replace(on_cuda, seconds={**on_cuda.seconds, "normref": 1.6}).meets_targets
        is False
    )


def test_a_row_is_reported_from_the_run_of_its_median_ratio():
    runs = [[_result("float32", "native", ratio, 0.1)] for ratio in (1.2, 0.8, 1.0)]
    (chosen,) = median_run(runs)
    assert chosen.ratio("torch") == 1.0
    assert median_run(runs[:2])[0].ratio("torch") == 0.8  # even: the lower middle


def test_the_bytes_a_step_must_move():
    """layer norm with gamma and beta: forward reads x, gamma, beta and writes y; backward
    reads dy, x, gamma, beta and writes dx, d_gamma, d_beta."""
    case = Case("layer_norm", BenchmarkInput((4, 8), "test", compiled=True))
    x, params = 4 * 8 * 4, 2 * 8 * 4
    assert minimum_bytes(case, "float32") == (x + params + x) + (x + x + params + x + params)


def test_no_verdict_without_torch_or_a_memory_figure():
    """The time target is relative to torch: a run without torch cannot meet or miss it."""
    without_torch = dataclasses.replace(
        _result("float32", "native", 1.0, 1.0),
        seconds={"normref": 1.0, "generic": None, "torch": None, "jax": 2.0},
    )
    assert without_torch.meets_targets is None
    without_memory = dataclasses.replace(
        _result("float32", "native", 1.0, 1.0),
        memory={"normref": None, "generic": None, "torch": None, "jax": None},
    )
    assert without_memory.meets_targets is None


def test_targets_are_set_for_every_benchmarked_family():
    seconds = {"normref": 9.0, "generic": None, "torch": 1.0, "jax": None}
    memory = {"normref": 9.0, "generic": None, "torch": None, "jax": None}
    for op, verdict in (
        ("layer_norm", False),
        ("batch_whiten", False),
        ("scaled_weight_standardize", False),
        ("adaptive_grad_clip", False),
        ("skip_init_residual", None),
    ):
        result = Result(op, (2, 3), "test", "float32", "native", seconds, memory)
        assert result.meets_targets is verdict


def _table_lines(table: str) -> list[str]:
    lines = table.strip().splitlines()
    assert len({line.count("|") for line in lines}) == 1, "rows of different widths"
    return lines


def test_tables_have_a_row_per_result():
    results = [_result("float32", "native", 1.0, 1.0), _result("float64", "native", 2.0, 1.0)]
    for table in (markdown(results), summary_markdown(results)):
        assert len(_table_lines(table)) == 2 + len(results)


def test_the_family_table_has_a_row_per_family_with_ranges():
    results = [
        _result("float32", "native", 0.5, 0.2),
        _result("float32", "native", 1.6, 1.5),  # misses the 1.0x time target
        dataclasses.replace(_result("float32", "native", 3.0, 7.0), op="batch_whiten"),
        dataclasses.replace(_result("float32", "native", 1.0, 1.0), op="skip_init_residual"),
    ]
    lines = _table_lines(families_markdown(results))
    assert len(lines) == 2 + 3
    standardization = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert standardization[:3] == ["standardization", "batch_norm", "0.50–1.60"]
    assert standardization[6] == "0.20–1.50"
    assert standardization[-1] == "1 of 2"
    whitening = [cell.strip() for cell in lines[3].split("|")[1:-1]]
    assert (whitening[2], whitening[3], whitening[-1]) == ("3.00", "-", "0 of 1")
    residual = [cell.strip() for cell in lines[4].split("|")[1:-1]]
    assert (residual[0], residual[-1]) == ("residual", "-")  # a family without targets


@pytest.mark.parametrize("case", CASES)
def test_cases_sample_their_shape_dtype_and_layout(case):
    sample = case.sample("float32")
    x = sample.args[case.spec.primary]
    assert (x.shape, x.dtype) == (case.shape, np.float32)
    for name, value in {**case.input.drawn, **case.input.fixed}.items():
        assert sample.kwargs.get(name, sample.args.get(name)) == value
    assert case.op in TORCH
    assert case.op in JAX


def test_a_layout_no_draw_has_is_refused():
    case = Case("weight_standardize", BenchmarkInput((4, 3), "test", drawn={"out_axis": 1}))
    with pytest.raises(
        ValueError, match=r"none of 64 draws of shape \(4, 3\) has \{'out_axis': 1\}"
    ):
        case.sample("float32")


SMALL_SIZES = {"num_groups": 4, "group_size": 4}
"""Fixed arguments that name a count of channels, at the small shapes of the tests below."""


def _small(case, dtype="float64"):
    """The case's sample at a small shape of the same layout (its fixed and drawn arguments)."""
    shape = tuple(min(size, 8) for size in case.shape)
    fixed = {k: SMALL_SIZES.get(k, v) for k, v in case.input.fixed.items()}
    small = case.input._replace(shape=shape, fixed=fixed)
    return case.spec, dataclasses.replace(case, input=small).sample(dtype)


@pytest.mark.parametrize("case", CASES)
def test_generic_path_is_timed_where_the_fused_path_runs(case, monkeypatch):
    """``Case.fused`` says whether normref's fused path runs the operation on the benchmarks'
    float32 input (then both are timed): a layer's kernels, AGC's unit rows, or switchable
    norm's instance moments."""
    pytest.importorskip("numba", reason="numba is not installed (pip install -e '.[fast]')")
    taken = []

    def spy(module, name):
        original = getattr(module, name)

        def spied(*args, **kwargs):
            result = original(*args, **kwargs)
            taken.append(result is not None)
            return result

        monkeypatch.setattr(module, name, spied)

    spy(_fused, "forward")
    spy(fused_units, "unit_rows")
    spy(fused_mixture, "instance_moments")
    spec, sample = _small(case, "float32")
    spec.call(sample)
    assert any(taken) is case.fused


def _cotangent(spec, sample) -> np.ndarray:
    return np.random.default_rng(2).standard_normal(np.shape(spec.call(sample)))


def _assert_same_function(spec, sample, dy, y, grads, framework: str) -> None:
    """The counterpart's output and gradients are normref's, to float64 rounding.

    Both are float64 of unit-normal data, small enough (at most 8 per axis) that each sum
    has at most 512 terms: the output to 256 u of its size plus 1 (the statistics' sums err
    by n u of their terms, relatively, either side); each gradient element sums at most
    every cotangent's terms, each |dy| times factors of order 1, so 256 u of sum|dy| bounds
    its rounding on either side. A counterpart computing another function (another eps, a
    missing term) differs by order 1 of these.
    """
    u = np.finfo(np.float64).eps
    expected = spec.call(sample)
    np.testing.assert_allclose(
        y, expected, rtol=0, atol=256 * u * (np.abs(expected).max() + 1), err_msg=framework
    )
    ours = spec.call_vjp(dy, sample)
    for name, theirs in zip(spec.differentiable, grads, strict=True):
        np.testing.assert_allclose(
            np.reshape(theirs, np.shape(getattr(ours, name))),
            getattr(ours, name),
            rtol=0,
            atol=256 * u * np.abs(dy).sum(),
            err_msg=f"{framework}: d{name}",
        )


@pytest.mark.parametrize("case", CASES)
def test_torch_counterparts_compute_what_normref_does(case):
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    spec, sample = _small(case)
    dy = _cotangent(spec, sample)
    arrays = [torch.tensor(sample.args[name], requires_grad=True) for name in spec.differentiable]
    y = TORCH[case.op](sample)(*arrays)
    y.backward(torch.asarray(dy))
    _assert_same_function(
        spec, sample, dy, y.detach().numpy(), [a.grad.numpy() for a in arrays], "torch"
    )


@pytest.mark.parametrize("case", CASES)
def test_jax_counterparts_compute_what_normref_does(case):
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    spec, sample = _small(case)
    dy = _cotangent(spec, sample)
    arrays = [jax.numpy.asarray(sample.args[name]) for name in spec.differentiable]
    y, pullback = jax.vjp(JAX[case.op](sample), *arrays)
    grads = [np.asarray(g) for g in pullback(jax.numpy.asarray(dy))]
    _assert_same_function(spec, sample, dy, np.asarray(y), grads, "jax")


# ---------------------------------------------------------------------------
# Devices: --device cpu runs the code --device cuda runs; without a GPU, cuda exits 2


NO_GPU = missing_gpu()


def test_device_cpu_runs_the_device_code_and_writes_every_table(tmp_path, capsys):
    """One small case through the device code on the CPU: rows with times, ratios against
    torch, temporaries, the copy-bandwidth share, and the tables."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")
    argv = ["--device", "cpu", "--quick", "--ops", "rms_norm", "--repeats", "1"]
    assert benchmarks_main([*argv, "--frameworks", "torch", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "benchmarks.json").read_text())
    assert document["meta"]["device"] == "cpu"
    rows = document["results"]
    assert [r["precision"] for r in rows] == ["native", "highest"]
    for r in rows:
        assert r["device"] == "cpu"
        assert r["vs_torch"] > 0
        assert r["memory"]["normref"] is not None
        assert r["copy_share"] > 0
    for name in ("benchmarks.md", "summary.md", "families.md"):
        assert (tmp_path / name).read_text().count("rms_norm") >= 1


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is present: the run would go ahead")
def test_without_a_gpu_device_cuda_exits_2_saying_why(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        benchmarks_main(["--device", "cuda", "--quick", "--out", str(tmp_path)])
    assert stopped.value.code == NO_GPU_EXIT == 2
    assert "no GPU to run on" in capsys.readouterr().err


@pytest.mark.skipif(NO_GPU is None, reason="a GPU is present: the script would run its stages")
def test_without_a_gpu_the_gpu_check_exits_2_at_once(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "gpu_check: no GPU to run on" in done.stderr


def test_the_distributed_benchmark_reports_rates_per_worker(capsys):
    """Two small chunks, one round: a row per contender, NumPy's ratio 1, and a verdict."""
    pytest.importorskip("dask.distributed", reason="dask is not installed (pip install '.[dask]')")
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed ('.[report]')")
    from benchmarks import distributed

    assert distributed.main(["--chunks", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "contender" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["numpy", "1 worker", "2 workers"]
    assert rows[0].split("|")[4].strip() == "1.00"
    assert "target: at least 0.5x" in out


def test_a_failing_case_is_reported_and_left_out(tmp_path, capsys, monkeypatch):
    """A case whose operation raises is named with its error; the other rows are written."""
    import benchmarks.__main__ as cli

    def measure(case, dtype, precisions, **options):
        if case.op == "layer_norm":
            raise TypeError("broken")
        return [_result(dtype, p, 1.0, 0.1) for p in precisions]

    monkeypatch.setattr(cli, "measure", measure)
    monkeypatch.setattr(cli, "plot", lambda path, results: None)
    argv = ["--quick", "--ops", "layer_norm,rms_norm", "--dtypes", "float64", "--runs", "2"]
    assert cli.main([*argv, "--frameworks", "torch", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "layer_norm (16, 128, 1024) float64 failed: TypeError('broken')" in captured.err
    assert "layer_norm (16, 128, 1024) float64: failed" in captured.out
    rows = json.loads((tmp_path / "benchmarks.json").read_text())["results"]
    assert [(r["dtype"], r["precision"]) for r in rows] == [
        ("float64", "native"),
        ("float64", "highest"),
    ]
