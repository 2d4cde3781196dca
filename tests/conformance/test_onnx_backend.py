"""ONNX backend-test export: ONNX's own loader finds every directory, onnxruntime runs each,
and the exported tolerance separates a correct runtime from a wrong output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conformance.api import run
from conformance.cli import main
from conformance.onnx_backend import KIND, export_onnx_backend, read_test

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[onnx]')")
onnxruntime = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')"
)
from onnx.backend.test.loader import load_model_tests


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-backend")
    return out, export_onnx_backend(out)


def _allclose(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> bool:
    """``numpy.testing.assert_allclose``'s rule, which ONNX's runner applies: within
    ``atol + rtol |expected|`` element by element, NaN equal to NaN, infinities to themselves."""
    expected = np.asarray(expected, np.float64)
    with np.errstate(invalid="ignore"):
        close = np.abs(actual - expected) <= atol + rtol * np.abs(expected)
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    return bool(np.all(close | same))


def _run(directory):
    """The test as ONNX's backend-test runner runs it: the graph's inputs in order from
    ``input_<i>.pb``, the outputs compared with ``output_<i>.pb`` within the test's ``atol``
    and ``rtol``; with onnxruntime's CPU provider."""
    model, inputs, expected, atol, rtol = read_test(directory)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in model.graph.input]
    outputs = session.run(None, dict(zip(names, inputs, strict=True)))
    within = [
        _allclose(np.asarray(a, np.float64), e, atol, rtol)
        for a, e in zip(outputs, expected, strict=True)
    ]
    return outputs, expected, all(within)


def test_onnx_loader_reads_every_exported_test(exported):
    out, written = exported
    loaded = load_model_tests(str(out), kind=KIND)
    assert sorted(t.name for t in loaded) == sorted(w.path.name for w in written)
    atols = {t.name: t.atol for t in loaded}  # the loader reads each test's data.json
    assert all(atols[w.path.name] == w.atol for w in written)
    assert all(t.rtol == 0.0 for t in loaded)


def test_every_operator_is_exported(exported):
    _, written = exported
    operators = {w.operator for w in written}
    assert {
        "BatchNormalization-15",
        "InstanceNormalization-6",
        "LayerNormalization-17",
        "GroupNormalization-21",
        "MeanVarianceNormalization-13",
        "LpNormalization-1",
    } <= operators
    if "RMSNormalization" in {s.name for s in onnx.defs.get_all_schemas()}:
        assert "RMSNormalization-23" in operators


def test_onnxruntime_passes_where_the_suite_passes_it(exported):
    """A backend test is the suite's budget as one absolute bound: every case the suite's own
    onnxruntime rows pass, the exported test passes too (the typical case of every operator
    among them)."""
    _, written = exported
    suite = run(["onnxruntime"], dtypes=["float32"])
    passing = {
        (r.case, r.implementation.removeprefix("onnxruntime "))
        for r in suite.results
        if r.status.value == "pass"
    }
    checked = 0
    for test in written:
        _, _, ok = _run(test.path)
        if (test.case, test.operator) in passing or test.case.endswith("/typical"):
            assert ok, f"{test.path.name}: onnxruntime outside the exported tolerance"
            checked += 1
    assert checked >= 20


def test_a_wrong_expected_output_fails_its_test(exported, tmp_path):
    """The tolerance is not vacuous: the same test with its expected output a thousandth off
    fails against the same runtime."""
    from onnx import numpy_helper

    _, written = exported
    test = next(t for t in written if t.case == "layer_norm/typical")
    assert _run(test.path)[2]
    copy = tmp_path / test.path.name
    shutil.copytree(test.path, copy)
    expected = read_test(copy)[2][0]
    wrong = numpy_helper.from_array((expected * (1 + 1e-3)).astype(expected.dtype))
    (copy / "test_data_set_0" / "output_0.pb").write_bytes(wrong.SerializeToString())
    assert not _run(copy)[2]


def test_the_command_line_writes_them(tmp_path, capsys):
    code = main(
        ["export-golden", "--format", "onnx-backend", "--ops", "layer_norm", "--out", str(tmp_path)]
    )
    assert code == 0
    assert "ONNX backend tests" in capsys.readouterr().out
    assert any((tmp_path / KIND).iterdir())
