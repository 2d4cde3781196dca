"""The examples run and show what they claim (the linear signal-propagation laws are also
tested in tests/test_residual.py on the same simulation).

Each paper's example runs in ``--fast`` mode into a temporary directory; its numbers are
checked against the criteria its issue states, with the expected values derived here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from examples import check_my_layer_norm, signal_propagation

_PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def _require(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(
            module, reason=f"{_PACKAGES[module]} is not installed (pip install -e '.[examples]')"
        )


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The examples' matrices are small: one BLAS thread computes them as fast as two, and
    unlike two it does not slow to a crawl where other processes share the cores."""
    threadpoolctl = pytest.importorskip(
        "threadpoolctl", reason="threadpoolctl is not installed (pip install -e '.[report]')"
    )
    with threadpoolctl.threadpool_limits(1):
        yield


def _assert_figures(figures: list[Path], directory: Path, names: set[str]) -> None:
    assert {path.name for path in figures} == {f"{name}.png" for name in names}
    for path in figures:
        assert path.parent == directory
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_the_conformance_example_passes_the_right_function_and_diagnoses_the_slip(capsys):
    outcome = check_my_layer_norm.main()
    assert outcome["layer_norm"].ok
    slip = outcome["layer_norm_eps_on_std"]
    assert not slip.ok
    assert all("eps_mode='add_std'" in row.diagnosis for row in slip.failures)
    # the fields that only widen the budget are not named beside eps_mode, and alternatives
    # read as alternatives, not as causes that all apply
    for row in slip.failures:
        assert "variance_algorithm" not in row.diagnosis, row.diagnosis
        assert "stash_dtype" not in row.diagnosis, row.diagnosis
        assert row.diagnosis.count("explained by") == 1, row.diagnosis
    explaining = [h.name for h in outcome["diagnosis"].explaining]
    assert explaining == ["normref with eps_mode='add_std'"]
    lines = capsys.readouterr().out.splitlines()
    # the output leads with the one diagnosis, then each function's verdict
    assert lines[0].endswith("is explained by: normref with eps_mode='add_std'")
    assert lines[1].startswith("  layer_norm: conforms")
    assert lines[2].startswith("  layer_norm_eps_on_std: ")
    assert len(lines) == 3


def test_signal_propagation_follows_the_laws_and_shows_the_mean_shift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At the last block: linear branches within 2% of 2^l, 1 + l and 1 + l alpha^2 (exact in
    expectation), ReLU branches within 10% (approximate); the NF-ResNet-50 block inputs
    within 10% of the recursion beta_0 = 1, beta_{l+1}^2 = 1 + alpha^2 after a transition
    block and beta_l^2 + alpha^2 otherwise.

    Mean shift: with Scaled WS the rows of the weights sum to zero, so the branch adds no
    channel mean and the squared channel mean stays at the sampling level of a batch mean,
    E[x_l^2] / batch. Without WS, gamma * relu(z) has mean gamma / sqrt(2 pi) and the weights
    turn it into channel means of squared size alpha^2 / (pi - 1) per block (~0.12 here):
    far above that level.
    """
    _require("matplotlib")
    result = signal_propagation.main(["--fast", "--out", str(tmp_path)])
    settings = result["settings"]
    depth, alpha = settings.depth, settings.alpha
    laws = {"plain": 2.0**depth, "normalized": 1.0 + depth, "normalizer_free": 1 + depth * alpha**2}
    for kind, law in laws.items():
        linear, relu = (result["mean_square"][k][-1] for k in (kind, f"relu_{kind}"))
        assert abs(linear / law - 1) <= 0.02, (kind, linear, law)
        assert abs(relu / law - 1) <= 0.10, (f"relu_{kind}", relu, law)

    expected, variance = [], 1.0
    for blocks in (3, 4, 6, 3):
        for block in range(blocks):
            expected.append(math.sqrt(variance))
            variance = 1 + alpha**2 if block == 0 else variance + alpha**2
    measured = result["nf_resnet50"]["measured"]
    np.testing.assert_allclose(measured, expected, rtol=0.10)

    with_ws = result["squared_mean"]["relu_normalizer_free"]
    without_ws = result["squared_mean"]["relu_normalizer_free_no_ws"]
    sampling_level = result["mean_square"]["relu_normalizer_free"] / settings.batch
    assert np.all(with_ws <= 2 * sampling_level), with_ws
    assert np.all(without_ws[1:] >= 0.5 * alpha**2 / (math.pi - 1)), without_ws
    assert without_ws[-1] >= 10 * with_ws[-1]

    _assert_figures(
        result["figures"],
        tmp_path,
        {
            "signal_propagation",
            "signal_propagation_mean_shift",
            "signal_propagation_nf_resnet50",
        },
    )
    out = capsys.readouterr().out
    rows = out.split("E[x_l^2] per residual block")[1].strip().splitlines()[1 : depth + 3]
    assert rows[0].split()[0] == "block"
    assert [row.split()[0] for row in rows[1:]] == [str(level) for level in range(depth + 1)]
    assert f"The laws at block {depth}" in out
    assert "NF-ResNet-50 stages" in out


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        signal_propagation.mean_squares("layer_normalized", 0, depth=1)
    with pytest.raises(ValueError, match="has no law"):
        signal_propagation.law("relu_normalizer_free_no_ws", 1, 0.5)


def test_training_only_batch_norm_beats_as_many_random_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frankle et al.: accuracy (a) all parameters >= (b) only gamma and beta > (c) two
    random weights per channel > chance (10%), (b) and (c) training the same number of
    parameters (two per hidden channel)."""
    _require("sklearn", "matplotlib")
    from examples import bn_only

    result = bn_only.main(["--fast", "--out", str(tmp_path)])
    accuracy = result["accuracy"]
    assert accuracy["all"] >= accuracy["bn_only"] > accuracy["random_control"] > 0.10, accuracy
    channels = 4 * 128  # hidden layers x width
    assert result["trainable"]["bn_only"] == result["trainable"]["random_control"] == 2 * channels
    assert result["gamma_near_zero"]["random_control"] == 0.0  # gamma frozen at 1
    _assert_figures(result["figures"], tmp_path, {"bn_only_gamma_histogram", "bn_only_accuracy"})
    out = capsys.readouterr().out
    for label in bn_only.LABELS.values():
        assert label in out


def test_an_unknown_bn_only_run_is_refused() -> None:
    from examples import bn_only

    with pytest.raises(ValueError, match="run must be one of"):
        bn_only.trainable_masks("gamma_only", {"bn0.gamma": np.ones(2)}, np.random.default_rng(0))


def test_adaptive_gradient_clipping_keeps_a_large_learning_rate_stable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without AGC the loss diverges (is not finite or rises above a thousand times its
    start) or ends above its start; with AGC it ends below half its start."""
    _require("sklearn", "matplotlib")
    from examples import agc

    result = agc.main(["--fast", "--out", str(tmp_path)])
    for curve in result["no_agc"]:
        losses = np.asarray(curve.losses)
        diverged = not np.all(np.isfinite(losses)) or losses.max() > 1e3 * losses[0]
        assert diverged or losses[-1] > losses[0], losses
    for curve in result["agc"]:
        assert np.all(np.isfinite(curve.losses))
        assert curve.losses[-1] < curve.losses[0] / 2, curve.losses
    _assert_figures(result["figures"], tmp_path, {"agc_loss"})
    out = capsys.readouterr().out
    assert "without clipping" in out
    assert "AGC, lambda = 0.01" in out


def test_the_final_layer_is_left_unclipped() -> None:
    from examples import agc

    params = {"dense0.w": np.ones((3, 2)), "output.w": np.ones((2, 4)), "output.b": np.zeros(4)}
    grads = {name: 100 * np.ones_like(value) for name, value in params.items()}
    clipped = agc.clip_gradients(grads, params)
    for name in ("output.w", "output.b"):
        np.testing.assert_array_equal(clipped[name], grads[name])
    # each unit (column) of dense0.w has norm sqrt(3); its gradient's is clipped to 0.01 of it
    np.testing.assert_allclose(np.linalg.norm(clipped["dense0.w"], axis=0), 0.01 * math.sqrt(3))


def test_whitening_makes_the_covariance_the_identity_and_pca_swaps_axes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ZCA, PCA and Cholesky: every whitening W has W (C + eps I) W^T = I, so the output
    covariance W C W^T has the eigenvalues lambda / (lambda + eps) of the input's lambda: the
    identity but for eps, which the criterion sets aside (within 1e-6). ZCA keeps each output
    feature on its axis from batch to batch; PCA's axes swap."""
    _require("sklearn", "matplotlib")
    from examples import whitening

    result = whitening.main(["--fast", "--out", str(tmp_path)])
    smallest = result["input_spectrum"].min()
    for method in ("zca", "pca", "cholesky"):
        assert result["max_from_eps_spectrum"][method] <= 1e-6, method
        assert result["max_from_identity"][method] <= whitening.EPS / smallest + 1e-6, method
    stability = result["axis_stability"]
    assert stability["zca"] > 0.9
    assert stability["pca"] < 0.5 * stability["zca"]
    _assert_figures(result["figures"], tmp_path, {"whitening_spectrum", "whitening_axis_swapping"})
    out = capsys.readouterr().out
    for label in whitening.LABELS.values():
        assert label in out
