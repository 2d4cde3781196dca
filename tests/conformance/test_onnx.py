"""The onnxruntime and onnx-reference adapters, forward only, on the cases of their findings."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")

from conformance.api import run
from conformance.reports.results import Status


def _rows(framework: str, case: str, dtype: str):
    return run([framework], ops=[case.split("/")[0]], dtypes=[dtype], case=case).results


def test_group_normalization_18_takes_one_scale_per_group():
    # 15 channels in 3 groups: one scale per group cannot hold 15 different ones
    rows = {r.implementation: r for r in _rows("onnxruntime", "group_norm/odd-3", "float32")}
    opset18 = rows["onnxruntime GroupNormalization-18 (scale and bias per group)"]
    assert opset18.status is Status.CONVENTION
    assert opset18.explained_by == {"group_affine": "per_group"}
    assert rows["onnxruntime GroupNormalization-21"].status is Status.PASS
    assert all(r.forward_only and {o["name"] for o in r.outputs} == {"y"} for r in rows.values())


def test_float32_attributes_and_stash_type():
    """ONNX attributes are float32 (eps = 9.99999974738e-06) and stash_type=1 computes the
    statistics of float64 input in float32."""
    (batch,) = _rows("onnxruntime", "batch_norm_inference/typical", "float64")
    assert batch.explained_by == {"scalar_dtype": "float32"}
    rows = _rows("onnxruntime", "group_norm/typical", "float64")
    opset21 = next(r for r in rows if "21" in r.implementation)
    assert opset21.explained_by == {"stash_dtype": "float32"}


def test_unclamped_fast_variance_gives_nan():
    rows = _rows("onnxruntime", "group_norm/mean-1e4", "float32")
    opset21 = next(r for r in rows if "21" in r.implementation)
    assert opset21.status is Status.FAIL
    assert "non-finite" in opset21.diagnosis


def test_the_reference_evaluator_computes_float16_in_float16():
    """Its squares overflow float16 where they exceed 65504: the float16 arithmetic is named,
    and the evidence says the row fails only in the groups whose squares overflow it."""
    (row,) = _rows("onnx-reference", "layer_norm/float16-max", "float16")
    assert row.status is Status.FAIL
    assert row.diagnosis.startswith(
        "within the wider budget of low_precision_compute='input' instead of the declared"
    )
    assert "exceed float16's largest value (6.55e+04): float16 arithmetic overflows" in (
        row.evidence
    )


def test_onnxruntime_lrn_loses_the_window_after_an_outlier():
    """Past a square of 1e8 the other channels' squares are lost: the window's sum is carried
    from channel to channel (the square entering added, the leaving one subtracted) and
    cancels; a NaN likewise reaches channels beyond its window. An even size is refused."""
    (outlier,) = _rows("onnxruntime", "local_response_norm/outlier-1e4", "float32")
    assert outlier.status is Status.FAIL
    (nan,) = _rows("onnxruntime", "local_response_norm/nan", "float32")
    assert nan.status is Status.FAIL
    assert "non-finite values where the exact result is finite" in nan.diagnosis
    (typical,) = _rows("onnxruntime", "local_response_norm/typical", "float32")
    assert typical.status is Status.PASS
    (even,) = _rows("onnxruntime", "local_response_norm/even-window", "float32")
    assert even.status is Status.NOT_IMPLEMENTED
    assert "odd size" in even.explanation


def test_the_reference_evaluator_lrn_loops_over_the_batch_not_the_channels():
    """``onnx.reference``'s LRN sums the window of channel ``c`` only for ``c`` below the batch
    size (its loop runs over ``x.shape[0]``): with 6 channels and 4 samples, two channels are
    not normalized; a single sample and several channels index out of range."""
    (typical,) = _rows("onnx-reference", "local_response_norm/typical", "float32")
    assert typical.status is Status.FAIL
    (one_channel,) = _rows("onnx-reference", "local_response_norm/size-1-axis-1", "float32")
    assert one_channel.status is Status.FAIL
    assert "IndexError" in one_channel.diagnosis
