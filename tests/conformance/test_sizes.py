"""Large cases: reductions at the lengths where kernels change their blocking, and realistic
sizes. A correct float32 implementation that sums in the worst order (a plain sequential loop)
passes at realistic sizes; a kernel whose blocked reduction drops its tail fails there."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.api import check
from conformance.checked.cases import (
    BOUNDARY_LENGTHS,
    DEFAULT_LENGTHS,
    cases_for,
    find_case,
    large_cases,
)
from conformance.checked.ops import get_op
from conformance.reports.results import Status
from normref.registry import REGISTRY


def _sequential_sum(values: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """The float32 sum over ``axis`` in index order, one addition after another (``cumsum``
    adds sequentially: the worst order's error bound, (n - 1) u of the summed magnitudes)."""
    moved = np.moveaxis(values, axis, tuple(range(-len(axis), 0)))
    flat = moved.reshape((*moved.shape[: moved.ndim - len(axis)], -1))
    return np.cumsum(flat, axis=-1, dtype=values.dtype)[..., -1]


def _standardized(x: np.ndarray, axis: tuple[int, ...], eps: float, keep: int | None) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over ``axis`` in x's dtype with sequential sums; with
    ``keep``, the statistics of the first ``keep`` values of each reduction only (the planted
    bug of a blocked reduction that drops its tail)."""
    moved = np.moveaxis(x, axis, tuple(range(-len(axis), 0)))
    flat = moved.reshape((*moved.shape[: moved.ndim - len(axis)], -1))
    used = flat if keep is None else flat[..., :keep]
    n = x.dtype.type(used.shape[-1])
    mean = _sequential_sum(used, (-1,)) / n
    centred = used - mean[..., None]
    var = _sequential_sum(centred * centred, (-1,)) / n
    y = (flat - mean[..., None]) / np.sqrt(var[..., None] + x.dtype.type(eps))
    return np.moveaxis(y.reshape(moved.shape), tuple(range(-len(axis), 0)), axis)


def _layer_norm(keep: int | None = None):
    def layer_norm(x, gamma=None, beta=None, *, axes=(-1,), eps=1e-5):
        axis = tuple(sorted(a % x.ndim for a in axes))
        y = _standardized(x, axis, eps, keep)
        return y * (1 if gamma is None else gamma) + (0 if beta is None else beta)

    return layer_norm


def _rms_norm(keep: int | None = None):
    def rms_norm(x, gamma=None, *, axes=(-1,), eps=1e-6):
        used = x if keep is None else x[..., :keep]
        n = x.dtype.type(used.shape[-1])
        square = _sequential_sum(used * used, (x.ndim - 1,)) / n
        y = x / np.sqrt(square[..., None] + x.dtype.type(eps))
        return y * (1 if gamma is None else gamma)

    return rms_norm


def _channel_norm(groups_of, keep: int | None = None):
    """Batch norm (``groups_of`` = None) or group norm (number of groups) with channels at 1."""

    def normalize(x, gamma, beta, eps, axis, num_groups=None):
        x = np.moveaxis(x, axis, 1)
        n, c = x.shape[:2]
        if num_groups is None:  # batch norm: statistics over every axis but the channel's
            y = _standardized(x, (0, *range(2, x.ndim)), eps, keep)
        else:
            grouped = x.reshape(n, num_groups, -1)
            y = _standardized(grouped, (2,), eps, keep).reshape(x.shape)
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * (1 if gamma is None else gamma.reshape(shape))
        y = y + (0 if beta is None else beta.reshape(shape))
        return np.moveaxis(y, 1, axis)

    if groups_of is None:
        return lambda x, gamma=None, beta=None, *, eps=1e-5, axis=1: normalize(
            x, gamma, beta, eps, axis
        )
    return lambda x, num_groups, gamma=None, beta=None, *, eps=1e-5, axis=1: normalize(
        x, gamma, beta, eps, axis, num_groups
    )


def _statuses(fn, op: str, case: str) -> set[Status]:
    result = check(fn, op, dtypes=["float32"], case=f"{op}/{case}")
    return {r.status for r in result.results}


@pytest.mark.parametrize(
    ("fn", "op", "case"),
    [
        (_layer_norm(), "layer_norm", "large-2x16384"),
        (_rms_norm(), "rms_norm", "large-2x16384"),
        (_channel_norm(None), "batch_norm", "large-32x4x56x56"),
        (_channel_norm(32), "group_norm", "large-2x64x56x56"),
    ],
)
def test_a_correct_sequential_float32_implementation_passes_at_realistic_sizes(fn, op, case):
    """The budgets bound a sum in any order (the sequential one is the worst): a float32 loop
    passes at 16,384 features and at 100,352 values per channel."""
    assert _statuses(fn, op, case) == {Status.PASS}


@pytest.mark.parametrize(
    ("fn", "op", "case"),
    [
        (_layer_norm(keep=64), "layer_norm", "length-65"),
        (_rms_norm(keep=1024), "rms_norm", "length-1025"),
        (_channel_norm(None, keep=4096), "batch_norm", "large-32x4x56x56"),
        (_channel_norm(32, keep=2048), "group_norm", "large-2x64x56x56"),
    ],
)
def test_a_reduction_that_drops_its_tail_fails(fn, op, case):
    """The kernel bugs the small cases miss: a reduction over only the first 64 values of a
    row (layer norm), 1024 (RMS norm), 4096 of a channel (batch norm), 2048 of a group."""
    assert _statuses(fn, op, case) == {Status.FAIL}


def test_the_tail_dropping_layer_norm_passes_every_small_case():
    """Why the large cases exist: at the drawn and edge cases' sizes the bug is invisible."""
    small = [c for c in cases_for("layer_norm") if c.dtypes is None and c.kind != "error"]
    result = check(_layer_norm(keep=64), "layer_norm", dtypes=["float32"])
    by_case = {r.case: r.status for r in result.results}
    assert {by_case[c.id] for c in small} <= {Status.PASS}
    assert by_case["layer_norm/length-65"] is Status.FAIL


@pytest.mark.parametrize("name", [n for n, s in REGISTRY.items() if s.reduction_input])
def test_every_length_case_has_reductions_of_its_length(name):
    op = get_op(name)
    for case in large_cases(op, thorough=True):
        if not case.name.startswith("length-"):
            continue
        length = int(case.name.removeprefix("length-"))
        partition = op.partition(case.sample)
        assert partition is not None, case.id
        assert length == partition.M, case.id


def test_a_default_run_checks_some_lengths_in_float32_and_thorough_every_one():
    default = [c for c in cases_for("layer_norm") if c.name.startswith("length-")]
    assert [int(c.name.removeprefix("length-")) for c in default] == list(DEFAULT_LENGTHS)
    assert all(c.dtypes == ("float32",) for c in default)
    thorough = [c for c in cases_for("layer_norm", thorough=True) if c.name.startswith("length-")]
    assert {int(c.name.removeprefix("length-")) for c in thorough} == set(BOUNDARY_LENGTHS)
    assert all(c.dtypes is None for c in thorough)
    assert find_case("layer_norm/length-8193").sample.args["x"].shape == (2, 8193)
