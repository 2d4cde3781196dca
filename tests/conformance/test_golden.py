"""Golden vectors: what is written can be read back, verified and checked against, without normref."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import normref
from conformance.golden import export_golden
from tests.conformance import planted


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    path = export_golden(
        out, ops=["layer_norm", "batch_norm_train"], dtypes=["bfloat16", "float32"]
    )
    return out, json.loads(path.read_text())


def test_the_manifest_records_what_each_vector_is(golden):
    _, manifest = golden
    assert manifest["schema"] == "normref-conformance-golden"
    assert manifest["normref_version"] == normref.__version__
    assert manifest["convention_name"] == "normref"
    entry = next(v for v in manifest["vectors"] if v["case"] == "layer_norm/typical")
    assert set(entry) >= {"op", "case", "seed", "dtype", "keywords", "tolerance", "sha256", "file"}
    assert entry["keywords"] == {"axes": [-1], "eps": 1e-5}
    assert entry["tolerance"]["max_budget_ulps"]["y"] > 0.5


def test_files_match_their_checksums_and_inputs_their_dtype(golden):
    out, manifest = golden
    for entry in manifest["vectors"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    entry = next(v for v in manifest["vectors"] if v["dtype"] == "bfloat16")
    with np.load(out / entry["file"]) as arrays:
        x = arrays["input_x"]
    as_float32 = x.astype(np.float32).view(np.uint32)
    assert np.all(as_float32 & 0xFFFF == 0), "bfloat16 values keep 16 low bits of float32 zero"


def test_an_implementation_checks_itself_from_the_files_alone(golden):
    """An independent float64 layer norm, fed the stored inputs, is within the stored bounds."""
    out, manifest = golden
    checked = 0
    for entry in manifest["vectors"]:
        if entry["op"] != "layer_norm" or entry["expect"] != "values" or entry["default_eps"]:
            continue
        with np.load(out / entry["file"]) as arrays:
            inputs = {k[len("input_") :]: arrays[k] for k in entry["inputs"]}
            y = planted.layer_norm(
                inputs["x"], inputs.get("gamma"), inputs.get("beta"), **entry["keywords"]
            )
            assert np.all(_passes(y, arrays, "y")), entry["case"]
        checked += 1
    assert checked > 20


def _passes(actual: np.ndarray, arrays, name: str) -> np.ndarray:
    """The manifest's rule, written out: equal to the rounded or the exact value, both NaN, or
    within the bound."""
    expected, rounded, bound = (
        arrays[f"{kind}_{name}"] for kind in ("expected", "rounded", "bound")
    )
    with np.errstate(invalid="ignore"):
        within = np.abs(actual - expected) <= bound
    both_nan = np.isnan(actual) & np.isnan(expected)
    return (actual == rounded) | (actual == expected) | both_nan | within


def test_the_correctly_rounded_answer_passes_every_vector(tmp_path):
    """NumPy's own rounding of the exact values to float16 and float32 (overflowing to infinity
    where float16 cannot hold them, as at float16-max) passes by the manifest's rule."""
    manifest = json.loads(
        export_golden(
            tmp_path, ops=["center", "scale", "batch_norm_train"], dtypes=["float16", "float32"]
        ).read_text()
    )
    overflowed = 0
    for entry in manifest["vectors"]:
        if entry["expect"] != "values":
            continue
        with np.load(tmp_path / entry["file"]) as arrays:
            for name in entry["outputs"] + entry["gradients"]:
                with np.errstate(over="ignore"):
                    rounded = arrays[f"expected_{name}"].astype(entry["dtype"]).astype(np.float64)
                overflowed += int(
                    np.sum(np.isinf(rounded) & np.isfinite(arrays[f"expected_{name}"]))
                )
                assert np.all(_passes(rounded, arrays, name)), (entry["case"], entry["dtype"], name)
    assert overflowed > 0, "no vector exercises a rounding that overflows"


def test_momentum_is_written_in_the_exported_conventions_meaning(tmp_path):
    """flax's momentum is the old value's weight: the stored keyword is 1 - the batch's weight,
    and the stored running mean is momentum * old + (1 - momentum) * the batch's mean."""
    manifest = json.loads(
        export_golden(
            tmp_path, ops=["batch_norm_train"], dtypes=["float64"], convention="flax"
        ).read_text()
    )
    entry = next(v for v in manifest["vectors"] if v["case"] == "batch_norm_train/typical")
    assert entry["momentum_meaning"] == "old_weight"
    momentum = entry["keywords"]["momentum"]
    with np.load(tmp_path / entry["file"]) as arrays:
        x, old = arrays["input_x"], arrays["input_running_mean"]
        batch_mean = x.mean(axis=tuple(a for a in range(x.ndim) if a != 1))
        expected = momentum * old + (1 - momentum) * batch_mean
        np.testing.assert_allclose(arrays["expected_running_mean"], expected, rtol=1e-12)


def test_error_paths_are_marked(tmp_path):
    """PCA whitening's gradient does not exist at repeated eigenvalues."""
    manifest = json.loads(
        export_golden(tmp_path, ops=["pca_whiten"], dtypes=["float64"]).read_text()
    )
    errors = [v for v in manifest["vectors"] if v["expect"] == "error"]
    assert errors
    assert all("repeated eigenvalues" in v["error"] for v in errors)


def test_an_op_with_state_has_every_output(tmp_path):
    """A training step of spectral norm: the weight, the new u, v and sigma, and the weight's
    gradient, each with its bound; an error-free vector stores them all."""
    manifest = json.loads(
        export_golden(tmp_path, ops=["spectral_norm_train"], dtypes=["float32"]).read_text()
    )
    entry = next(v for v in manifest["vectors"] if v["case"] == "spectral_norm_train/typical")
    assert entry["outputs"] == ["y", "u", "v", "sigma"]
    assert entry["gradients"] == ["dw"]
    with np.load(tmp_path / entry["file"]) as arrays:
        assert {f"bound_{n}" for n in ("y", "u", "v", "sigma", "dw")} <= set(arrays.files)
        assert arrays["expected_sigma"].shape == ()


def test_the_default_export_covers_every_op_and_dtype(tmp_path):
    """``export-golden --out DIR`` as documented: every op at every dtype, inputs normref refuses
    only once rounded (a mean of 1e4 in float16 and bfloat16 leaves every group of PCA
    whitening and decorrelation constant) as error entries, and nothing but the listed files."""
    from conformance.checked.ops import CHECKED_OPS
    from conformance.cli import main

    assert main(["export-golden", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    vectors = manifest["vectors"]
    assert {(v["op"], v["dtype"]) for v in vectors} == {
        (op, dtype) for op in CHECKED_OPS for dtype in ("float16", "bfloat16", "float32", "float64")
    }
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {v["file"] for v in vectors} | {"manifest.json"}
    by_key = {(v["case"], v["dtype"]): v for v in vectors}
    for op in ("pca_whiten", "decorrelate"):
        for dtype in ("float16", "bfloat16"):
            entry = by_key[(f"{op}/mean-1e4", dtype)]
            assert (entry["expect"], entry["error_in"]) == ("error", "backward")
            assert entry["error"].startswith(f"at {dtype}: ")
            assert "repeated eigenvalues" in entry["error"]
            with np.load(tmp_path / entry["file"]) as arrays:
                assert {"input_x", "dy"} <= set(arrays.files)
        assert by_key[(f"{op}/mean-1e4", "float32")]["expect"] == "values"


def test_an_export_that_fails_leaves_the_directory_as_it_was(tmp_path, monkeypatch):
    """Every vector is computed before anything is written: a failure half-way through leaves
    the earlier export whole (its manifest and every file it lists)."""
    import conformance.golden

    export_golden(tmp_path, ops=["rms_norm"], dtypes=["float32"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    vector, calls = conformance.golden._vector, []

    def failing_after_ten(*args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            msg = "a failure half-way through"
            raise ValueError(msg)
        return vector(*args, **kwargs)

    monkeypatch.setattr(conformance.golden, "_vector", failing_after_ten)
    with pytest.raises(ValueError, match="half-way"):
        export_golden(tmp_path, ops=["layer_norm", "rms_norm"], dtypes=["float32", "float64"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
