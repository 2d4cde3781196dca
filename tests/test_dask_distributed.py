"""Population statistics on a ``dask.distributed`` cluster, over more data than its workers hold.

Two worker processes with a memory limit of 256 MiB each reduce a 640 MiB data
set that exists nowhere whole: each 4 MiB chunk is generated on a worker
from its seed, reduced to moments and comoments, and released. Spilling and
pausing are off, so a worker that held the data would pass its limit and be
killed (and the computation fail) instead of writing to disk; each worker's
peak resident memory is checked against the limit afterwards. The result is
checked against a streamed two-pass float64 NumPy computation that
regenerates the same chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

dask = pytest.importorskip("dask", reason="dask is not installed (pip install -e '.[dask]')")
distributed = pytest.importorskip(
    "dask.distributed", reason="dask.distributed is not installed (pip install -e '.[dask]')"
)
da = pytest.importorskip("dask.array", reason="dask is not installed (pip install -e '.[dask]')")

import array_api_compat.dask.array as dask_namespace

from normref import stats
from normref.partition import whitening_partition
from tests.support import assert_close_to_scale

CHUNKS = 160
ROWS = 32768
"""Samples per chunk: a chunk of ``ROWS x CHANNELS`` float64 values is 4 MiB."""
CHANNELS = 16
GROUP_SIZE = 4
WORKERS = 2
MEMORY_LIMIT = 256 * 2**20
"""Per worker; a worker process holds about 65 MiB of code and libraries before any data."""
TIMEOUT_S = 120


def generate_chunk(seed: int) -> np.ndarray:
    """Chunk ``seed`` of the data set: channels with offsets and correlated within groups."""
    z = np.random.default_rng([2024, seed]).standard_normal((ROWS, CHANNELS))
    fixed = np.random.default_rng(2024)
    mixing = np.eye(CHANNELS) + 0.5 * fixed.standard_normal((CHANNELS, CHANNELS))
    offsets = 3.0 + np.arange(CHANNELS) / 4.0
    return z @ mixing + offsets


def _data_set() -> da.Array:
    parts = [
        da.from_delayed(dask.delayed(generate_chunk)(seed), (ROWS, CHANNELS), dtype=np.float64)
        for seed in range(CHUNKS)
    ]
    return da.concatenate(parts, axis=0)


def _streamed_two_pass() -> dict[str, np.ndarray]:
    """Mean, m2, group cross products and mean |x| in float64, chunk by chunk, without Dask."""
    total = np.zeros(CHANNELS)
    absolute = np.zeros(CHANNELS)
    for seed in range(CHUNKS):
        chunk = generate_chunk(seed)
        total += chunk.sum(axis=0)
        absolute += np.abs(chunk).sum(axis=0)
    n = CHUNKS * ROWS
    mean = total / n
    m2 = np.zeros(CHANNELS)
    groups = CHANNELS // GROUP_SIZE
    cross = np.zeros((groups, GROUP_SIZE, GROUP_SIZE))
    for seed in range(CHUNKS):
        deviations = generate_chunk(seed) - mean
        m2 += (deviations * deviations).sum(axis=0)
        for g in range(groups):
            block = deviations[:, g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
            cross[g] += block.T @ block
    return {"mean": mean, "m2": m2, "cross": cross, "mean_abs": absolute / n}


def _peak_resident_bytes() -> int | None:
    """The calling process's peak resident memory (Linux's ``VmHWM``; ``None`` elsewhere).

    Not ``getrusage``'s ``ru_maxrss``: a spawned worker inherits in it the
    resident size of the process that forked it, before its ``exec``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


NO_SPILLING = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
}


def test_population_statistics_of_more_data_than_the_cluster_holds():
    x = _data_set()
    assert x.nbytes > WORKERS * MEMORY_LIMIT
    moments = stats.moments(x, 0)
    comoments = stats.comoments(
        whitening_partition(x.shape, GROUP_SIZE).to_canonical(dask_namespace, x)
    )
    with (
        dask.config.set(NO_SPILLING),
        distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            memory_limit=MEMORY_LIMIT,
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        futures = client.compute([moments.mean, moments.m2, comoments.mean, comoments.cross])
        distributed.wait(futures, timeout=TIMEOUT_S)
        mean, m2, group_mean, cross = client.gather(futures)
        peaks = client.run(_peak_resident_bytes)
    assert len(peaks) == WORKERS
    for worker, peak in peaks.items():
        # where the peak is not known, the nanny's termination at 95% of the limit is the check
        assert peak is None or peak < MEMORY_LIMIT, f"{worker} peaked at {peak / 2**20:.0f} MiB"

    expected = _streamed_two_pass()
    n = CHUNKS * ROWS
    assert moments.count == comoments.count == n
    # Every figure is a sum of n terms; the float64 rounding of each side:
    # - normref: each chunk's two-pass sums (ROWS terms: at most ROWS u of the sum of
    #   |terms|), then at most CHUNKS - 1 merges on a chunk's way up the tree, each a
    #   few u (8 u allowed) of |mean| and, through the difference of the means it
    #   merges, of m2 times the conditioning |mean| / std;
    # - the reference: the same ROWS u per chunk, then CHUNKS running additions.
    u = np.finfo(np.float64).eps
    conditioning = 1.0 + np.max(np.abs(expected["mean"]) / np.sqrt(expected["m2"] / n))
    rtol = (2 * ROWS + CHUNKS + 8 * CHUNKS) * u * conditioning
    assert_close_to_scale(mean, expected["mean"], expected["mean_abs"], rtol=rtol, what="mean")
    assert_close_to_scale(m2, expected["m2"], expected["m2"], rtol=rtol, what="m2")
    assert_close_to_scale(
        group_mean.reshape(-1), expected["mean"], expected["mean_abs"], rtol=rtol, what="means"
    )
    # an entry of a cross-product matrix is at most sqrt(m2_i m2_j) (Cauchy-Schwarz),
    # which bounds the sum of |products| that its rounding errors scale with
    diagonal = np.stack([np.diagonal(c) for c in expected["cross"]])
    scale = np.sqrt(diagonal[:, :, None] * diagonal[:, None, :])
    assert_close_to_scale(cross, expected["cross"], scale, rtol=rtol, what="cross")
