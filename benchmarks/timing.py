"""Interleaved timing: the only fair way to compare contenders on a noisy machine.

Single timings on a shared machine swing by 3x from run to run. Every
benchmark here therefore runs its contenders in rounds, one call of each per
round in turn, so that a slow period hits all of them alike, and reports the
minimum over rounds (the run least disturbed by anything else). Each round
starts one contender later than the previous one: a contender that leaves
work behind (a thread pool still spinning, caches full of its own data)
then slows a different successor each round instead of always the same one.
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
    names = list(contenders)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(repeats):
        first = round_ % len(names)
        for name in names[first:] + names[:first]:
            start = time.perf_counter()
            contenders[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def ratios(times: dict[str, float], baseline: str) -> dict[str, float]:
    """Each time divided by ``times[baseline]`` (> 1: slower than the baseline)."""
    return {name: t / times[baseline] for name, t in times.items()}
