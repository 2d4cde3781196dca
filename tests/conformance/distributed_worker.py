"""One process of the torch.distributed batch norm test (``test_distributed.py``).

``python -m tests.conformance.distributed_worker RANK WORLD PORT IN OUT MODE``: takes its
shard of ``IN``'s input along axis 0, computes batch norm's forward and VJP with statistics
merged across the processes (gloo, localhost), and writes its outputs to ``OUT``. ``MODE``
``moments``: each shard's normref moments (count, mean, M2, float64) are all-gathered and
merged with ``normref.stats.merge``; ``naive``: the shards' float32 sums and sums of squares
are all-reduced and the variance is ``E[x^2] - E[x]^2``.
"""

from __future__ import annotations

import datetime
import functools
import sys

import numpy as np
import torch
import torch.distributed as dist

from normref import stats


def _all_sum(values: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    dist.all_reduce(tensor)
    return tensor.numpy()


def _moments(
    x: np.ndarray, axes: tuple[int, ...], world: int
) -> tuple[np.ndarray, np.ndarray, int]:
    local = stats.moments(x, axes)
    parts = []
    for value in (np.asarray(local.mean), np.asarray(local.m2), np.asarray([float(local.count)])):
        gathered = [torch.zeros(value.shape, dtype=torch.float64) for _ in range(world)]
        dist.all_gather(gathered, torch.from_numpy(value.astype(np.float64)))
        parts.append([g.numpy() for g in gathered])
    merged = functools.reduce(
        stats.merge,
        [stats.Moments(int(c[0]), m, q) for m, q, c in zip(*parts, strict=True)],
    )
    return np.asarray(merged.mean), np.asarray(stats.variance(merged)), merged.count


def main(rank: int, world: int, port: int, source: str, out: str, mode: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    data = np.load(source)
    channel = int(data["axis"])
    x = np.array_split(data["x"], world, axis=0)[rank]
    dy = np.array_split(data["dy"], world, axis=0)[rank]
    eps, dtype = float(data["eps"]), data["x"].dtype
    axes = tuple(a for a in range(x.ndim) if a != channel)
    shape = [1 if a in axes else s for a, s in enumerate(x.shape)]
    gamma, beta = data["gamma"].reshape(shape), data["beta"].reshape(shape)
    if mode == "moments":
        mean, var, n = _moments(x, axes, world)
        mean, var = mean.reshape(shape), var.reshape(shape)
        work = np.float64
    else:
        x32 = x.astype(np.float32)
        sums = _all_sum(np.stack([x32.sum(axis=axes), (x32 * x32).sum(axis=axes)]))
        n = int(_all_sum(np.asarray([x.size // x.shape[channel]], np.int64))[0])
        mean = (sums[0] / np.float32(n)).reshape(shape)
        var = (sums[1] / np.float32(n)).reshape(shape) - mean * mean
        work = np.float32
    s = np.sqrt(var.astype(work) + work(eps))
    xhat = (x.astype(work) - mean.astype(work)) / s
    y = gamma.astype(work) * xhat + beta.astype(work)
    g = dy.astype(work)
    sums = _all_sum(np.stack([g.sum(axis=axes), (g * xhat).sum(axis=axes)]).astype(work))
    dbeta, dgamma = sums[0], sums[1]
    dx = gamma.astype(work) / s * (g - dbeta.reshape(shape) / n - xhat * dgamma.reshape(shape) / n)
    np.savez(
        out,
        y=y.astype(dtype),
        dx=dx.astype(dtype),
        dgamma=dgamma.astype(dtype),
        dbeta=dbeta.astype(dtype),
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port = (int(a) for a in sys.argv[1:4])
    main(rank, world, port, sys.argv[4], sys.argv[5], sys.argv[6])
