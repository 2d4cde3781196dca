"""Running a kernel's chunks of work on several threads.

The kernels release the GIL and compute any contiguous range of their fixed
chunks, so ranges run side by side on a pool of threads; the split of the
work into chunks never depends on how many threads there are, so neither
does any result. The number of threads is the number of CPUs this process
may run on, or the environment variable ``NORMREF_THREADS`` (checked when
normref is imported).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable
from typing import Any

MIN_PARALLEL_ELEMENTS = 1 << 16
"""Inputs with fewer elements run on the calling thread alone: handing out work would cost more."""


def configured_threads() -> int | None:
    """``NORMREF_THREADS`` as an integer >= 1 (surrounding spaces allowed), or ``None`` where
    it is unset or empty; a :class:`ValueError` naming it for anything else."""
    configured = os.environ.get("NORMREF_THREADS", "").strip()
    if not configured:
        return None
    try:
        count = int(configured)
    except ValueError:
        count = 0
    if count < 1:
        msg = f"NORMREF_THREADS must be an integer >= 1, got {configured!r}"
        raise ValueError(msg)
    return count


configured_threads()  # checked when normref is imported, not first when a large input runs


def thread_count() -> int:
    """Threads a large input runs on: ``NORMREF_THREADS`` (an integer >= 1, read again here
    so that it may change), else the CPUs available (also where it is set to an empty
    string)."""
    configured = configured_threads()
    if configured is not None:
        return configured
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="normref")


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's pool threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


def run_chunks(kernel: Callable[..., Any], chunks: int, elements: int, *args: Any) -> None:
    """``kernel(*args, first, stop)`` over chunks ``0 <= chunk < chunks``, in ranges on threads."""
    workers = min(thread_count(), chunks) if elements >= MIN_PARALLEL_ELEMENTS else 1
    bounds = [chunks * i // workers for i in range(workers + 1)]
    futures = [
        _pool(workers - 1).submit(kernel, *args, bounds[i], bounds[i + 1])
        for i in range(1, workers)
    ]
    kernel(*args, bounds[0], bounds[1])
    for future in futures:
        future.result()
