"""The Keras 3 adapter end to end (jax backend): float64 computed in float32, the deprecated
``rms_scaling`` failing as RMS norm, the training step, spectral normalization, a planted eps."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("keras") is None:  # not imported here: the adapter picks the backend
    pytest.skip("keras is not installed (pip install -e '.[keras]')", allow_module_level=True)

from conformance.api import run
from conformance.reports.results import Status
from tests.conformance.planted import planted_eps_row

ROOT = Path(__file__).resolve().parents[2]


def _rows(case: str, dtype: str):
    return run(["keras"], dtypes=[dtype], case=case).results


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "jax") == "tensorflow",
    reason="the tensorflow backend keeps float64",
)
def test_float64_layers_compute_in_float32():
    """Keras's type promotion maps float64 to float32 on the jax backend: the output is
    float64, its accuracy float32's."""
    (row,) = _rows("layer_norm/typical", "float64")
    assert row.status is Status.CONVENTION
    assert row.explained_by == {"stash_dtype": "float32"}
    y = next(o for o in row.baseline if o["name"] == "y")
    assert y["dtype"] == "float64"
    assert float(y["max_ulps"]) > 1e6


def test_rms_scaling_is_not_rms_norm():
    """LayerNormalization(rms_scaling=True) divides by the centred variance: it fails as RMS
    norm, where RMSNormalization passes."""
    rows = {r.implementation: r for r in _rows("rms_norm/typical", "float32")}
    assert rows["keras.layers.RMSNormalization"].status is Status.PASS
    scaling = rows["keras.layers.LayerNormalization (rms_scaling=True)"]
    assert scaling.status is Status.FAIL
    assert "no convention field or structural hypothesis explains" in scaling.diagnosis


def test_batch_norm_training_step_and_default_eps():
    rows = {
        r.case: r
        for r in run(["keras"], ops=["batch_norm_train"], dtypes=["float32"]).results
        if r.case in ("batch_norm_train/typical", "batch_norm_train/default-eps")
    }
    typical = rows["batch_norm_train/typical"]
    assert typical.status is Status.PASS
    assert {o["name"] for o in typical.outputs} >= {"y", "running_mean", "running_var", "dx"}
    assert rows["batch_norm_train/default-eps"].explained_by == {"batch_norm_eps": 1e-3}


def test_spectral_normalization_skips_an_all_zero_kernel():
    """Keras keeps u where the kernel is all zero (it skips the step); its normalized weight
    there is the zero kernel, as normref's."""
    (row,) = _rows("spectral_norm_train/zero-weight", "float32")
    assert row.status is Status.FAIL
    assert {o["name"] for o in row.outputs if not o["ok"]} == {"u"}


def test_a_wrong_eps_fails():
    from conformance.adapters.keras import ADAPTER

    row = planted_eps_row(ADAPTER, "keras.layers.LayerNormalization", "layer_norm/given-eps")
    assert row.status is Status.FAIL


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="tensorflow is not installed (pip install -e '.[tf-keras]')",
)
def test_keras_backend_is_honoured():
    """KERAS_BACKEND=tensorflow: float64 stays float64, the row passes."""
    code = (
        "from conformance.api import run\n"
        "r = run(['keras'], dtypes=['float64'], case='layer_norm/typical')\n"
        "print(r.environment['frameworks']['keras']['keras backend'], r.results[0].status.value)"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert found.stdout.split() == ["tensorflow", "pass"]
