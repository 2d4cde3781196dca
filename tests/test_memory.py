"""Where normref works in place, and how much memory it holds.

Functions convert their inputs to the compute dtype, or read them a block at a
time (:mod:`normref._lib.in_place`, :mod:`normref.ops.sample_blocks`), and work
in those: an affine applied to an output in place. These tests check that piece
against the plain expression, that inputs stay as they were in both precision
modes and dtypes (where a conversion is a copy and where it is not), and the
peak memory of the benchmarked families on NumPy against the targets of the
benchmarks.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cases import Case
from benchmarks.memory import output_bytes, traced, traced_temporaries
from benchmarks.run import MEMORY_TARGETS
from normref import _fused
from normref.affine import affine
from normref.registry import REGISTRY, BenchmarkInput
from tests.registry_cases import on_backend
from tests.support import Backend


def test_affine_overwrites_its_input_only_when_asked():
    rng = np.random.default_rng(1)
    x_hat, gamma, beta = rng.standard_normal((4, 3, 2)), rng.standard_normal(3), np.ones(3)
    kept = x_hat.copy()
    expected = x_hat * gamma[:, None] + beta[:, None]
    np.testing.assert_array_equal(affine(np, x_hat, gamma, beta, (1,)), expected)
    np.testing.assert_array_equal(x_hat, kept)
    result = affine(np, x_hat, gamma, beta, (1,), overwrite=True)
    assert result is x_hat
    np.testing.assert_array_equal(result, expected)


# ---------------------------------------------------------------------------
# Inputs stay as they were where the work is done in place


IN_PLACE_OPS = [
    "batch_whiten",
    "zca_whiten",
    "iter_norm_whiten",
    "scaled_weight_standardize",
    "weight_standardize",
    "adaptive_grad_clip",
    "orthogonal_weight_norm",
    "oni_weight_norm",
    "switchable_norm",
    "local_response_norm",
]


@pytest.mark.parametrize("name", IN_PLACE_OPS)
@pytest.mark.parametrize("precision", ["highest", "native"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_stay_as_they_were(name, precision, dtype, backend: Backend):
    """float32 in ``"highest"``: the converted copies are worked in; otherwise the inputs
    themselves are read, and only arrays the function made are written."""
    spec = REGISTRY[name]
    drawn = spec.sample(np.random.default_rng(3)).replace(precision=precision)
    arrays = [k for k, v in drawn.args.items() if isinstance(v, np.ndarray)]
    sample = on_backend(drawn, backend, dtype)
    primary = backend.to_numpy(sample.args[spec.primary])
    dy = backend.asarray(np.random.default_rng(4).standard_normal(primary.shape), dtype)
    before = {k: backend.to_numpy(sample.args[k]).copy() for k in arrays}
    dy_before = backend.to_numpy(dy).copy()
    spec.call(sample)
    spec.call_vjp(dy, sample)
    for k, v in before.items():
        np.testing.assert_array_equal(backend.to_numpy(sample.args[k]), v, err_msg=k)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_before)


# ---------------------------------------------------------------------------
# Peak memory on NumPy (tracemalloc), float32 input, as the benchmarks measure it


def _kernel_case(op: str, *, compiled: bool) -> Case:
    """``op`` on a 3x3 conv kernel of 128 units of 64 channels, units first."""
    shape = (128, 64, 3, 3)
    return Case(op, BenchmarkInput(shape, "test", drawn={"out_axis": 0}, compiled=compiled))


MEMORY_CASES = [
    pytest.param(
        Case("batch_whiten", BenchmarkInput((64, 32, 8, 8), "test", {"group_size": 8})),
        id="whiten-8",
    ),
    pytest.param(
        Case("batch_whiten", BenchmarkInput((64, 32, 8, 8), "test", {"group_size": 32})),
        id="whiten-32",
    ),
    pytest.param(_kernel_case("orthogonal_weight_norm", compiled=False), id="own"),
    pytest.param(_kernel_case("oni_weight_norm", compiled=False), id="oni"),
    pytest.param(_kernel_case("scaled_weight_standardize", compiled=False), id="scaled-ws"),
    pytest.param(_kernel_case("centered_weight_norm", compiled=True), id="centred-wn"),
    pytest.param(
        # large against the blocks of instances it is computed in (normref._lib.in_place)
        Case("switchable_norm", BenchmarkInput((8, 256, 28, 28), "test")),
        id="switchable",
    ),
    pytest.param(
        # large against the blocks of positions it is computed in (normref._lib.in_place)
        Case("local_response_norm", BenchmarkInput((8, 96, 27, 27), "test", {"size": 5})),
        id="lrn",
    ),
    pytest.param(_kernel_case("adaptive_grad_clip", compiled=True), id="agc"),
    pytest.param(
        Case("batch_norm", BenchmarkInput((16, 32, 12, 12), "test", compiled=True)), id="batch-norm"
    ),
    pytest.param(
        # its batch statistics from the kernels, then batch norm's kernels
        Case("batch_renorm", BenchmarkInput((16, 32, 12, 12), "test", compiled=True)),
        id="batch-renorm",
    ),
    pytest.param(
        # large enough that the kernels' fixed scratch (cascade stacks of 64 chunks) is small
        Case(
            "group_norm", BenchmarkInput((8, 64, 28, 28), "test", {"num_groups": 8}, compiled=True)
        ),
        id="group-norm",
    ),
    pytest.param(_kernel_case("weight_standardize", compiled=True), id="ws"),
    # few long rows: the parameters' partial sums of the fused path are held to x / 8 each
    pytest.param(
        Case("layer_norm", BenchmarkInput((16, 131072), "test", compiled=True)),
        id="layer-norm-long-rows",
    ),
]


@pytest.mark.parametrize("case", MEMORY_CASES)
@pytest.mark.parametrize(("precision", "kind"), [("native", "input"), ("highest", "float64")])
def test_peak_memory_meets_the_targets(case: Case, precision, kind):
    """Forward and backward each hold temporaries (their peak minus their outputs) of at most
    0.5x the input's size computing in float32 and 2x computing it in float64, the
    benchmarks' targets."""
    if (case.op == "scaled_weight_standardize" or case.fused) and not _fused.available():
        pytest.skip(f"{case.op} meets the memory targets on its fused path, which needs numba")
    spec = case.spec
    sample = case.sample("float32").replace(precision=precision)
    x = sample.args[spec.primary]
    dy = np.ones_like(x)
    for what, call in (
        ("forward", lambda: spec.call(sample)),
        ("backward", lambda: spec.call_vjp(dy, sample)),
    ):
        call()  # untraced: a first call may compile the fused kernels, whose memory is not the op's
        multiple = traced_temporaries(call) / x.nbytes
        assert multiple <= MEMORY_TARGETS[kind], f"{case.op} {what}: {multiple:.2f}x the input"


def test_temporaries_are_the_peak_less_the_outputs():
    """A call holding a scratch array of 3 MB while it makes two outputs of 1 MB each: a peak
    of 5 MB (tracemalloc counts every NumPy buffer) of which 3 MB are temporaries."""
    mb = 1 << 20

    def call() -> tuple[np.ndarray, np.ndarray]:
        first = np.ones(mb // 8)
        scratch = np.ones(3 * mb // 8)
        second = first + scratch[: mb // 8]
        del scratch
        return first, second

    peak, outputs = traced(call)
    assert outputs == 2 * mb
    assert 5 * mb <= peak < 5 * mb + 64 * 1024
    assert 3 * mb <= traced_temporaries(call) < 3 * mb + 64 * 1024
    assert output_bytes((np.ones(3), None, [np.ones(2, np.float32)])) == 3 * 8 + 2 * 4
