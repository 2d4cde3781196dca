"""Batch norm over 3 processes with torch.distributed (gloo, localhost): each shard's normref
moments, all-gathered and merged with ``normref.stats.merge``, reproduce the single-process
forward and VJP within the suite's budget; all-reduced float32 sums and sums of squares do
not, on a mean of 1e4."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from conformance.adapters.arrays import Evaluation
from conformance.adapters.base import Binding
from conformance.checked.cases import find_case, prepare
from conformance.judging.runner import check_row
from conformance.reports.results import Status

ROOT = Path(__file__).resolve().parents[2]
WORLD = 3  # a batch of 4 splits unevenly: 2, 1, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed(case_id: str, mode: str, tmp_path: Path) -> Evaluation:
    prepared = prepare(find_case(case_id), "float32")
    args, kwargs = prepared.sample.args, prepared.sample.kwargs
    source = tmp_path / f"{mode}-in.npz"
    np.savez(
        source,
        x=args["x"].astype(np.float32),
        dy=prepared.dy.astype(np.float32),
        gamma=args["gamma"].astype(np.float32),
        beta=args["beta"].astype(np.float32),
        eps=kwargs["eps"],
        axis=kwargs["axis"] % args["x"].ndim,
    )
    port = _free_port()
    outs = [tmp_path / f"{mode}-{rank}.npz" for rank in range(WORLD)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.conformance.distributed_worker",
                str(rank),
                str(WORLD),
                str(port),
                str(source),
                str(outs[rank]),
                mode,
            ],
            cwd=ROOT,
        )
        for rank in range(WORLD)
    ]
    try:
        codes = [w.wait(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert codes == [0] * WORLD
    shards = [np.load(o) for o in outs]
    values = {
        "y": np.concatenate([s["y"] for s in shards]).astype(np.float64),
        "dx": np.concatenate([s["dx"] for s in shards]).astype(np.float64),
        "dgamma": shards[0]["dgamma"].astype(np.float64),
        "dbeta": shards[0]["dbeta"].astype(np.float64),
    }
    return Evaluation(values, dict.fromkeys(values, "float32"))


def _row(case_id: str, mode: str, tmp_path: Path):
    evaluation = _distributed(case_id, mode, tmp_path)
    binding = Binding(
        "batch_norm",
        f"torch.distributed ({mode}, {WORLD} processes)",
        "torch.distributed",
        lambda _prepared, _model, _backward: evaluation,
    )
    return check_row(binding, find_case(case_id), "float32")


@pytest.mark.parametrize("case_id", ["batch_norm/typical", "batch_norm/mean-1e4"])
def test_merged_moments_reproduce_the_single_process_batch_norm(case_id: str, tmp_path):
    row = _row(case_id, "moments", tmp_path)
    assert row.status is Status.PASS, row.diagnosis
    assert {o["name"] for o in row.outputs} == {"y", "dx", "dgamma", "dbeta"}


def test_sums_of_squares_fail_on_a_large_mean(tmp_path):
    assert _row("batch_norm/typical", "naive", tmp_path).status is Status.PASS
    row = _row("batch_norm/mean-1e4", "naive", tmp_path)
    assert row.status is Status.FAIL
    assert {o["name"] for o in row.outputs if not o["ok"]} >= {"y", "dx"}
