"""The benchmark harness: fair interleaving, the target rule, and like-for-like counterparts."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cases import FAMILIES
from benchmarks.frameworks import JAX, TORCH
from benchmarks.report import markdown, summary_markdown
from benchmarks.run import Result
from benchmarks.timing import interleaved_minimum

CASES = [pytest.param(case, id=case.label) for cases in FAMILIES.values() for case in cases]


def test_rounds_start_one_contender_later_each_time():
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_minimum(contenders, repeats=3, warmup=1)
    assert set(times) == set("abc")
    assert calls == ["a", "b", "c", *"abc", *"bca", *"cab"]


def _result(dtype: str, precision: str, vs_torch: float, memory: float) -> Result:
    seconds = {"normref": vs_torch, "generic": None, "torch": 1.0, "jax": None}
    memory_multiples = {"normref": memory, "generic": None, "torch": None, "jax": None}
    return Result("batch_norm", (2, 3), "test", dtype, precision, seconds, memory_multiples)


@pytest.mark.parametrize(
    ("dtype", "precision", "vs_torch", "memory", "met"),
    [
        ("float32", "native", 1.5, 3.0, True),
        ("float32", "native", 1.6, 1.0, False),
        ("float32", "native", 1.0, 3.1, False),
        ("float32", "highest", 3.0, 6.0, True),  # computes a float32 input in float64
        ("float32", "highest", 3.1, 1.0, False),
        ("float64", "highest", 1.6, 1.0, False),  # float64 input: computes in its own dtype
    ],
)
def test_targets_depend_on_the_compute_dtype(dtype, precision, vs_torch, memory, met):
    assert _result(dtype, precision, vs_torch, memory).meets_targets is met


def test_tables_have_a_row_per_result():
    results = [_result("float32", "native", 1.0, 1.0), _result("float64", "native", 2.0, 1.0)]
    for table in (markdown(results), summary_markdown(results)):
        lines = table.strip().splitlines()
        assert len(lines) == 2 + len(results)
        assert len({line.count("|") for line in lines}) == 1


@pytest.mark.parametrize("case", CASES)
def test_cases_sample_their_shape_and_dtype(case):
    sample = case.sample("float32")
    x = sample.args[case.spec.primary]
    assert (x.shape, x.dtype) == (case.shape, np.float32)
    assert case.op in TORCH
    assert case.op in JAX


def _small(case):
    """The case's sample at a small shape of the same layout (same fixed arguments)."""
    shape = tuple(min(size, 8) for size in case.shape)
    spec = case.spec
    sample = spec.sample(np.random.default_rng(0), shape).replace(**case.fixed)
    if "num_groups" in case.fixed:
        sample = sample.replace(num_groups=4)
    return spec, sample


@pytest.mark.parametrize("case", CASES)
def test_torch_counterparts_compute_what_normref_does(case):
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (pip install -e '.[torch]')"
    )
    spec, sample = _small(case)
    expected = spec.call(sample)
    arrays = [torch.asarray(sample.args[name]) for name in spec.differentiable]
    actual = TORCH[case.op](sample)(*arrays).numpy()
    # both float64 of unit-normal data: a few hundred ulps of the output's size
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * (np.abs(expected).max() + 1))


@pytest.mark.parametrize("case", CASES)
def test_jax_counterparts_compute_what_normref_does(case):
    jax = pytest.importorskip("jax", reason="jax is not installed (pip install -e '.[jax]')")
    jax.config.update("jax_enable_x64", True)
    spec, sample = _small(case)
    expected = spec.call(sample)
    arrays = [jax.numpy.asarray(sample.args[name]) for name in spec.differentiable]
    actual = np.asarray(JAX[case.op](sample)(*arrays))
    # both float64 of unit-normal data: a few hundred ulps of the output's size
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * (np.abs(expected).max() + 1))
