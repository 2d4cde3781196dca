"""``python -m benchmarks.distributed``: population statistics on a ``dask.distributed`` cluster.

:func:`normref.stats.moments` (per-channel mean and ``m2``) and
:func:`normref.stats.comoments` (whitening groups' means and cross products)
of one data set, held in the workers' memory, on ``LocalCluster``\\ s of 1 and
2 single-threaded worker processes, against the same functions on the same
data as one NumPy array in this process on one thread: input bytes per second
per worker, and their ratio to NumPy's (the target is at least
:data:`TARGET`). The three contenders run interleaved in rounds (both
clusters are up throughout), each figure the minimum over rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

from benchmarks.timing import interleaved_minimum

TARGET = 0.5
"""Bytes per second per worker that a cluster aims at, relative to one NumPy thread's."""

CHANNELS = 64
GROUP_SIZE = 16
ROWS = 16384
"""Samples per chunk: a chunk of ``ROWS x CHANNELS`` float64 values is 8 MiB."""


def generate_chunk(seed: int) -> np.ndarray:
    """Chunk ``seed`` of the data set: channels with offsets of their own."""
    rng = np.random.default_rng([2024, seed])
    return rng.standard_normal((ROWS, CHANNELS)) + np.arange(CHANNELS)


def _statistics(xp: Any, x: Any) -> tuple[Any, ...]:
    """Moments over the samples and comoments of the whitening groups, as arrays."""
    from normref import stats
    from normref.partition import whitening_partition

    moments = stats.moments(x, 0)
    comoments = stats.comoments(whitening_partition(x.shape, GROUP_SIZE).to_canonical(xp, x))
    return moments.mean, moments.m2, comoments.mean, comoments.cross


def measure(chunks: int, repeats: int) -> dict[str, Any]:
    """Seconds (minimum over ``repeats`` interleaved rounds) and bytes per second per worker
    of NumPy on one thread and of clusters of 1 and 2 workers, on ``chunks`` chunks."""
    import array_api_compat.dask.array as dask_namespace
    import array_api_compat.numpy as numpy_namespace
    import dask
    import dask.array as da
    import threadpoolctl
    from dask import distributed

    def data_set() -> Any:
        parts = [
            da.from_delayed(dask.delayed(generate_chunk)(seed), (ROWS, CHANNELS), dtype=float)
            for seed in range(chunks)
        ]
        return da.concatenate(parts, axis=0)

    data = np.concatenate([generate_chunk(seed) for seed in range(chunks)])
    clusters = {
        workers: distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        for workers in (1, 2)
    }
    clients = {workers: distributed.Client(cluster) for workers, cluster in clusters.items()}
    try:
        held = {}
        for workers, client in clients.items():
            # generated on the workers and held in their memory before any timing
            held[workers] = client.persist(data_set())
            distributed.wait(held[workers])

        def on_cluster(workers: int) -> Any:
            graph = _statistics(dask_namespace, held[workers])
            return lambda: clients[workers].gather(clients[workers].compute(list(graph)))

        def on_numpy() -> None:
            with threadpoolctl.threadpool_limits(1):
                _statistics(numpy_namespace, data)

        seconds = interleaved_minimum(
            {"numpy": on_numpy, "1 worker": on_cluster(1), "2 workers": on_cluster(2)},
            repeats=repeats,
        )
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters.values():
            cluster.close()
    per_worker = {
        "numpy": data.nbytes / seconds["numpy"],
        "1 worker": data.nbytes / seconds["1 worker"],
        "2 workers": data.nbytes / seconds["2 workers"] / 2,
    }
    return {"bytes": data.nbytes, "seconds": seconds, "bytes_per_s_per_worker": per_worker}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__)
    parser.add_argument("--chunks", type=int, default=32, help="8 MiB chunks (default 32)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    result = measure(args.chunks, args.repeats)
    numpy_rate = result["bytes_per_s_per_worker"]["numpy"]
    print(
        f"{result['bytes'] / 2**20:.0f} MiB of float64, {args.chunks} chunks, "
        f"{CHANNELS} channels (whitening groups of {GROUP_SIZE}); 1-minute load "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print("| contender | seconds | MB/s per worker | x NumPy (one thread) |")
    print("|---|---|---|---|")
    for name, rate in result["bytes_per_s_per_worker"].items():
        print(
            f"| {name} | {result['seconds'][name]:.3f} | {rate / 1e6:.0f} | "
            f"{rate / numpy_rate:.2f} |"
        )
    met = all(
        result["bytes_per_s_per_worker"][k] >= TARGET * numpy_rate
        for k in ("1 worker", "2 workers")
    )
    print(
        f"target: at least {TARGET}x NumPy's bytes per second per worker: {'met' if met else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
