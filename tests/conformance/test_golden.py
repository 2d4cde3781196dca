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
            error = np.abs(y - arrays["expected_y"])
            same = np.isnan(y) & np.isnan(arrays["expected_y"])
            assert np.all(same | (error <= arrays["bound_y"])), entry["case"]
        checked += 1
    assert checked > 20


def test_error_paths_are_marked(golden):
    _, manifest = golden
    errors = [v for v in manifest["vectors"] if v["expect"] == "error"]
    assert errors
    assert all("at least 2 samples per group" in v["error"] for v in errors)


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
