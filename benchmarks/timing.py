"""Interleaved timing: the only fair way to compare contenders on a noisy machine.

Single timings on a shared machine swing by 3x from run to run. Every
benchmark here therefore runs its contenders in rounds, one call of each per
round in turn, so that a slow period hits all of them alike, and reports the
minimum over rounds (the run least disturbed by anything else).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def interleaved_minimum(
    contenders: dict[str, Callable[[], Any]], *, repeats: int = 7, warmup: int = 1
) -> dict[str, float]:
    """Minimum wall time (seconds) of each contender over ``repeats`` interleaved rounds.

    Each contender is first called ``warmup`` times (compilation, caches,
    allocator), untimed. Results must be computed by the call itself: a
    contender that returns a lazy value must force it (e.g. ``block_until_ready``).
    """
    for call in contenders.values():
        for _ in range(warmup):
            call()
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, call in contenders.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def ratios(times: dict[str, float], baseline: str) -> dict[str, float]:
    """Each time divided by ``times[baseline]`` (> 1: slower than the baseline)."""
    return {name: t / times[baseline] for name, t in times.items()}
